//! INTERFACE SKETCH (to be implemented): the per-session bridge task.
//!
//! A bridge owns the sockets of its legs and relays between them; the session layer
//! talks to it only through `BridgeHandle`, and hears from it through `MediaEvent`s.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::MaskMode;
use crate::digit::{Digit, DigitMethod};
use crate::leg::{LegRole, SessionId};
use crate::media::ports::LegSockets;
use crate::media::LegParams;

/// Settings of a bridge, from `[media]`.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub holdback_ms: u32,
    pub mask_mode: MaskMode,
    pub rtp_timeout: Duration,
}

/// What a bridge tells the session layer.
#[derive(Debug)]
pub enum MediaEvent {
    /// The customer pressed a key (reported exactly once per key press).
    Digit {
        session: SessionId,
        digit: Digit,
        method: DigitMethod,
    },
    /// No RTP from a bridged leg for `rtp_timeout`.
    RtpTimeout { session: SessionId, role: LegRole },
}

/// A leg handed to the bridge.
pub struct LegMedia {
    pub sockets: LegSockets,
    pub params: LegParams,
}

/// The control plane's handle on one bridge task. Dropping it stops the task.
pub struct BridgeHandle {
    _tx: mpsc::UnboundedSender<()>,
}
