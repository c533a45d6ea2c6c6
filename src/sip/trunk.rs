//! The seam between the SIP endpoint and the session layer.
//!
//! The endpoint calls a `TrunkHandler` when a leg asks to join, comes up, changes its media
//! or ends; the session layer drives the endpoint back through `TrunkCommand`s (hang up a
//! leg). The handler's methods are synchronous and quick: they must not block.

use std::net::SocketAddr;

use crate::leg::{LegRole, SessionId};
use crate::media::ports::LegSockets;
use crate::media::LegParams;

/// What the endpoint knows of an INVITE that arrives on the trunk.
#[derive(Clone, Debug)]
pub struct InviteInfo {
    /// The user part of the Request-URI (the DNIS, e.g. `+61390001042`).
    pub dnis: String,
    /// Where the INVITE came from (the transport's source address).
    pub source: SocketAddr,
    pub call_id: String,
}

/// The handler's yes to an INVITE.
#[derive(Clone, Debug)]
pub struct Admission {
    pub session: SessionId,
    pub role: LegRole,
}

/// The handler's no: the final response the endpoint sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    /// Seconds for a `Retry-After` header (503 at capacity).
    pub retry_after: Option<u32>,
}

/// Why a leg ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegEnd {
    /// The peer sent BYE.
    Bye,
    /// The peer cancelled the INVITE before it was answered.
    Cancelled,
    /// The answer was never acknowledged, or a transaction timed out.
    Timeout,
    /// tonewall hung the leg up (after a `TrunkCommand::HangUp`).
    HungUp,
    /// Setting the leg up failed locally (no media port, no acceptable codec).
    SetupFailed,
}

/// A leg whose INVITE was answered and acknowledged.
pub struct LegUp {
    pub session: SessionId,
    pub role: LegRole,
    /// The leg's RTP/RTCP sockets, bound on the port pair advertised in the SDP answer.
    pub sockets: LegSockets,
    pub params: LegParams,
}

/// Implemented by the session layer.
pub trait TrunkHandler: Send + Sync + 'static {
    /// An INVITE arrived for `invite.dnis`: admit it as a leg of a session or reject it.
    /// The handler counts the rejection in metrics and raises any alarm itself.
    fn admit(&self, invite: &InviteInfo) -> Result<Admission, Rejection>;
    /// The leg is answered and acknowledged (ACK received): media can flow.
    fn leg_up(&self, up: LegUp);
    /// A re-INVITE changed the leg's media (hold, resume, new address or codec).
    fn leg_media(&self, session: &SessionId, role: LegRole, params: LegParams);
    /// The leg is gone (after `admit` said yes), for whatever reason.
    fn leg_ended(&self, session: &SessionId, role: LegRole, why: LegEnd);
    /// The outcome of a `TrunkCommand::HandBack`: `ok` when the carrier reported the
    /// customer transferred (final NOTIFY 2xx). Reported once, after both legs were released
    /// (their `leg_ended` come first).
    fn handed_back(&self, _session: &SessionId, _ok: bool) {}
}

/// What the session layer asks of the endpoint.
#[derive(Clone, Debug)]
pub enum TrunkCommand {
    /// Hang the leg up: BYE when established, a final error response when still ringing.
    /// The endpoint then reports `leg_ended(.., LegEnd::HungUp)`.
    HangUp { session: SessionId, role: LegRole },
    /// Hand the customer back (SPEC §2.8): REFER the customer leg to `target` (a SIP URI,
    /// e.g. `sip:rep1@sim.example`), then BYE both legs once the REFER's outcome is known
    /// (final NOTIFY, REFER refused, 8 s without a final NOTIFY, or the customer leg gone).
    /// The endpoint reports each leg's `leg_ended(.., LegEnd::HungUp)` and then
    /// `handed_back(ok)`.
    HandBack { session: SessionId, target: String },
}
