//! tonewall: an on-demand secure call platform.
//!
//! The crate is layered as DESIGN.md §1 draws it: `sip` (trunk signalling), `media` (the hot
//! RTP path), `session` (the secure session state machine, DNIS pool, fields), `carrier`
//! (third-party call control adapters), `payment` (gateways) and `api` (REST, SSE, UI).
//! `server` wires them together for `tonewall serve`.

pub mod api;
pub mod audit;
pub mod carrier;
pub mod config;
pub mod demo;
pub mod digit;
pub mod leg;
pub mod media;
pub mod metrics;
pub mod payment;
pub mod server;
pub mod session;
pub mod sim;
pub mod sip;
pub mod webhook;
