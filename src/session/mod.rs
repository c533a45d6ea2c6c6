//! The secure session: state machine, DNIS pool, fields and payment hand-off.
//!
//! Must never: let an unmasked digit out of `fields`; block the SIP or media tasks.

pub mod dnis;
pub mod events;
pub mod fields;
pub mod manager;
pub mod orchestrator;
pub mod state;
