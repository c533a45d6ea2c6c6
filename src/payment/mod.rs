//! Payment gateways.
