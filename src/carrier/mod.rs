//! Third-party call control: one trait, `Carrier`, that every adapter implements, and the
//! normalised call events they report. `manual` has no adapter (the legs dial the DNIS by
//! themselves); `broadworks` drives BroadWorks Xsi-Actions and follows Xsi-Events.
//!
//! Must never: see card digits; block the session manager (every action is an async call
//! the orchestrator awaits in its own task); log a password.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::{CarrierConfig, CarrierKind};

pub mod broadworks;

/// What a carrier action can fail with. Never carries a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// The carrier answered with an error status (Xsi: `ErrorInfo`).
    #[error("carrier refused {action}: HTTP {status}: {summary}")]
    Refused {
        action: &'static str,
        status: u16,
        summary: String,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("carrier unreachable during {action}: {detail}")]
    Unreachable {
        action: &'static str,
        detail: String,
    },
    /// An answer we could not read.
    #[error("carrier answered {action} with an unreadable body: {detail}")]
    BadResponse {
        action: &'static str,
        detail: String,
    },
    /// This carrier has no such action.
    #[error("{action} is not supported by this carrier")]
    Unsupported { action: &'static str },
}

impl CarrierError {
    /// A short machine-readable word for session reasons and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CarrierError::Refused { .. } => "refused",
            CarrierError::Unreachable { .. } => "unreachable",
            CarrierError::BadResponse { .. } => "bad_response",
            CarrierError::Unsupported { .. } => "unsupported",
        }
    }
}

pub type CarrierResult<T> = Result<T, CarrierError>;

/// Where a call on a user's line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Alerting,
    Active,
    Held,
    Released,
    /// Anything else the carrier reports (e.g. Xsi `Detached`).
    Other,
}

/// A call on a user's line, as the carrier lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub call_id: String,
    pub state: CallState,
    /// The far end's address (`tel:+61…` or `sip:…`), when known.
    pub remote: Option<String>,
}

/// What happened to a call (normalised from the carrier's own event types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    /// Ringing: an outgoing call is being placed or an incoming one offered.
    Alerting,
    Answered,
    Held,
    Retrieved,
    /// Transferred or forwarded away from this user's line.
    Redirected,
    Released,
    /// Anything else about the call (e.g. the remote party changed).
    Updated,
}

/// One normalised call event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEvent {
    /// The carrier user whose line the call is on.
    pub user: String,
    pub call_id: String,
    pub kind: CallEventKind,
    pub remote: Option<String>,
    /// The carrier's id of the event (Xsi `eventID`), for de-duplication.
    pub event_id: String,
}

/// What the adapter's event stream carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CarrierEvent {
    Call(CallEvent),
    /// The event stream dropped; events may have been missed until `StreamRestored`.
    StreamLost,
    /// A new stream is up, subscriptions renewed, and calls re-read: any call that vanished
    /// while the stream was down has been reported `Released`.
    StreamRestored,
}

/// A carrier adapter: third-party call control on users' lines.
///
/// `user` is the carrier's user id of a line (BroadWorks: the Xsi `userId`), `call` the
/// carrier's id of a call on it (Xsi `callId`), `address` a number or URI to dial.
pub trait Carrier: Send + Sync + 'static {
    /// The `[[carrier]] id` this adapter serves.
    fn id(&self) -> &str;
    /// Put the call on hold.
    fn hold<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<()>>;
    /// Take the call off hold (Xsi `Talk`).
    fn resume<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<()>>;
    /// Have the user's line dial `address`; the new call's id.
    fn originate<'a>(
        &'a self,
        user: &'a str,
        address: &'a str,
    ) -> BoxFuture<'a, CarrierResult<String>>;
    /// Send the call's far end to `address`; the user's half of the call is released.
    fn blind_transfer<'a>(
        &'a self,
        user: &'a str,
        call: &'a str,
        address: &'a str,
    ) -> BoxFuture<'a, CarrierResult<()>>;
    /// Release the call.
    fn hang_up<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<()>>;
    /// Release the user's active call and retrieve the held one, where the carrier has it.
    fn reconnect<'a>(&'a self, user: &'a str) -> BoxFuture<'a, CarrierResult<()>>;
    /// The calls on the user's line.
    fn calls<'a>(&'a self, user: &'a str) -> BoxFuture<'a, CarrierResult<Vec<CallInfo>>>;
    /// One call on the user's line.
    fn call<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<CallInfo>>;
    /// Make sure events for the user's line are followed (subscribes on first use and keeps
    /// the subscription through stream recovery).
    fn watch<'a>(&'a self, user: &'a str) -> BoxFuture<'a, CarrierResult<()>>;
    /// The normalised event stream (every watched user's calls).
    fn events(&self) -> broadcast::Receiver<CarrierEvent>;
    /// Where to send a call so that it rings the user's line (a SIP URI for a REFER), if
    /// the carrier routes such a URI; `None`: hand-back is not possible.
    fn user_uri(&self, user: &str) -> Option<String>;
    /// Stop following events and release what the carrier holds for this adapter (Xsi:
    /// delete the event channel), on a clean shutdown. Best effort; the default does nothing.
    fn close<'a>(&'a self) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A tenant's carrier: no call control, or an adapter.
#[derive(Clone)]
pub enum Adapter {
    /// No third-party call control: the legs dial the DNIS by themselves.
    Manual,
    /// Third-party call control through this adapter; dial `dial_prefix` before a DNIS.
    Controlled {
        carrier: Arc<dyn Carrier>,
        dial_prefix: String,
    },
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adapter::Manual => f.write_str("Manual"),
            Adapter::Controlled { carrier, .. } => write!(f, "Controlled({})", carrier.id()),
        }
    }
}

/// Build the adapter for one `[[carrier]]` (reads the password from its environment
/// variable). Must be called inside a tokio runtime: real adapters start their event task.
pub fn build(c: &CarrierConfig) -> anyhow::Result<Adapter> {
    match c.kind {
        CarrierKind::Manual => Ok(Adapter::Manual),
        CarrierKind::Broadworks => Ok(Adapter::Controlled {
            carrier: Arc::new(broadworks::Broadworks::from_config(c)?),
            dial_prefix: c.dial_prefix.clone().unwrap_or_default(),
        }),
    }
}
