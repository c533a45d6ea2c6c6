//! Prometheus metrics (SPEC §7).
