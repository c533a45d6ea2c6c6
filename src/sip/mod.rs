//! SIP trunk signalling (SPEC §6): message parsing and building, sans-IO transactions and
//! dialogs, SDP offer/answer, the UDP/TCP transport, and the trunk endpoint that turns
//! INVITEs on a DNIS into legs.
//!
//! Must never: know about fields, payments or carriers; decide whether a leg is admitted
//! (that is `TrunkHandler::admit`).

pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod trunk;
