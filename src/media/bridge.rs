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

/// Commands from the control plane to a bridge task.
pub enum BridgeCommand {
    Attach { role: LegRole, leg: LegMedia },
    Update { role: LegRole, params: LegParams },
}

/// The control plane's handle on one bridge task. Dropping it stops the task (and the
/// task drops the legs' sockets, which returns their ports to the pool).
pub struct BridgeHandle {
    tx: mpsc::UnboundedSender<BridgeCommand>,
}

impl BridgeHandle {
    /// Start a bridge with its first leg, which is parked (sent silence every ptime) until
    /// the second leg is attached. Must be called inside a tokio runtime.
    pub fn spawn(
        session: SessionId,
        role: LegRole,
        leg: LegMedia,
        config: BridgeConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> BridgeHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = (session, role, leg, config, events, rx);
        BridgeHandle { tx }
    }

    /// Attach the second leg: from now on the two legs are bridged.
    pub fn attach(&self, role: LegRole, leg: LegMedia) {
        let _ = self.tx.send(BridgeCommand::Attach { role, leg });
    }

    /// A re-INVITE changed a leg's media (hold/resume/new address/codec).
    pub fn update(&self, role: LegRole, params: LegParams) {
        let _ = self.tx.send(BridgeCommand::Update { role, params });
    }
}
