//! The per-session bridge: it owns the legs' sockets, parks the first leg (silence every
//! ptime) until the second is attached, then relays both ways through `relay` —
//! customer→representative through the hold-back buffer and its `Inspector` — and reports
//! digits and RTP timeouts as `MediaEvent`s. A bridge lives on one media thread of the
//! `engine`; the session layer talks to it only through `BridgeHandle`; dropping the handle
//! removes the bridge, which drops the sockets (and so returns the ports to the pool).
//!
//! Symmetric RTP: a leg's peer address is latched from its first valid RTP packet (until
//! then tonewall sends to the SDP address); later packets from other sources are ignored
//! until a re-INVITE changes the leg's address. Nothing is sent to a leg on hold
//! (`sendonly`/`inactive`, or `c=0.0.0.0`), and a leg on hold is not timed out.
//! RTCP is terminated (read and discarded, none sent; see `rtp`).
//!
//! Must never: allocate, lock or look up a map per packet; block; format a digit. Packet
//! counters are kept locally and flushed to `metrics` about once a second.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use tokio::sync::mpsc;

use crate::config::MaskMode;
use crate::digit::{Digit, DigitMethod};
use crate::leg::{LegRole, SessionId};
use crate::media::engine::{Engine, EngineCmd, SocketKind};
use crate::media::holdback::{Holdback, Inspector, PacketInfo};
use crate::media::masker::Masker;
use crate::media::ports::{LegSockets, PortLease};
use crate::media::press::PressDedup;
use crate::media::relay::{LegCodec, Relay, Step};
use crate::media::rtp::{self, RtpPacket};
use crate::media::{Direction, LegParams};

/// Settings of a bridge, from `[media]`.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub holdback_ms: u32,
    pub mask_mode: MaskMode,
    pub rtp_timeout: Duration,
    /// Replace in-band DTMF per `mask_mode` (true in production). `false` is for tests
    /// only (the in-band detector still reports digits; payloads leave untouched).
    pub masking: bool,
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

/// The control plane's handle on one bridge. Dropping it removes the bridge from its
/// media thread (which drops the legs' sockets, returning their ports to the pool).
pub struct BridgeHandle {
    /// (media thread, bridge id); `None` if the bridge could not be started.
    at: Option<(usize, u64)>,
}

impl BridgeHandle {
    /// Start a bridge with its first leg, which is parked (sent silence every ptime) until
    /// the second leg is attached, with the in-band DTMF masker (`config.mask_mode`,
    /// `config.masking`) on the customer→representative path.
    pub fn spawn(
        session: SessionId,
        role: LegRole,
        leg: LegMedia,
        config: BridgeConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> BridgeHandle {
        let masker = Masker::new(config.mask_mode, config.masking);
        BridgeHandle::spawn_with_inspector(session, role, leg, config, events, Box::new(masker))
    }

    /// `spawn` with the inspector every customer→representative packet passes before it
    /// leaves the hold-back buffer (the in-band DTMF detector and masker).
    pub fn spawn_with_inspector(
        session: SessionId,
        role: LegRole,
        leg: LegMedia,
        config: BridgeConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
        inspector: Box<dyn Inspector>,
    ) -> BridgeHandle {
        let at = match Bridge::new(session, role, leg, config, events, inspector) {
            Ok(bridge) => Engine::global().add(Box::new(bridge)),
            Err(e) => {
                tracing::warn!(error = %e, "bridge: cannot take the leg's sockets");
                None
            }
        };
        BridgeHandle { at }
    }

    fn send(&self, cmd: BridgeCommand) {
        if let Some((worker, id)) = self.at {
            Engine::global().send(worker, EngineCmd::Command { id, cmd });
        }
    }

    /// Attach the second leg: from now on the two legs are bridged.
    pub fn attach(&self, role: LegRole, leg: LegMedia) {
        self.send(BridgeCommand::Attach { role, leg });
    }

    /// A re-INVITE changed a leg's media (hold/resume/new address/codec).
    pub fn update(&self, role: LegRole, params: LegParams) {
        self.send(BridgeCommand::Update { role, params });
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        if let Some((worker, id)) = self.at.take() {
            Engine::global().send(worker, EngineCmd::Remove { id });
        }
    }
}

/// Largest datagram handled (silence frames are built in a buffer this size).
const BUF: usize = 2048;
const METRICS_EVERY: Duration = Duration::from_secs(1);

struct Leg {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    _lease: PortLease,
    params: LegParams,
    latched: Option<SocketAddr>,
    last_rx: Instant,
    timed_out: bool,
    registered: bool,
}

impl Leg {
    fn new(leg: LegMedia, now: Instant) -> io::Result<Leg> {
        let LegSockets { rtp, rtcp, lease } = leg.sockets;
        Ok(Leg {
            rtp: UdpSocket::from_std(rtp),
            rtcp: UdpSocket::from_std(rtcp),
            _lease: lease,
            params: leg.params,
            latched: None,
            last_rx: now,
            timed_out: false,
            registered: false,
        })
    }

    fn on_hold(&self) -> bool {
        self.params.remote.is_none()
            || matches!(
                self.params.direction,
                Direction::SendOnly | Direction::Inactive
            )
    }

    /// Where to send to this leg, `None` while it is on hold.
    fn dest(&self) -> Option<SocketAddr> {
        if self.on_hold() {
            None
        } else {
            self.latched.or(self.params.remote)
        }
    }

    /// Whether the leg is expected to send RTP (so silence from it is a timeout).
    fn expects_rtp(&self) -> bool {
        self.params.remote.is_some() && self.params.direction == Direction::SendRecv
    }

    fn send(&self, pkt: &[u8]) -> bool {
        match self.dest() {
            Some(to) => self.rtp.send_to(pkt, to).is_ok(),
            None => false,
        }
    }
}

#[derive(Default)]
struct Counters {
    to_rep: u64,
    to_customer: u64,
    masked_rfc4733: u64,
    masked_inband: u64,
}

impl Counters {
    fn flush(&mut self) {
        let flush = |name: &'static str, label: &'static str, value: &'static str, n: &mut u64| {
            if *n > 0 {
                metrics::counter!(name, label => value).increment(*n);
                *n = 0;
            }
        };
        flush(
            "tonewall_rtp_packets_total",
            "direction",
            "customer_to_rep",
            &mut self.to_rep,
        );
        flush(
            "tonewall_rtp_packets_total",
            "direction",
            "rep_to_customer",
            &mut self.to_customer,
        );
        flush(
            "tonewall_dtmf_masked_total",
            "method",
            "rfc4733",
            &mut self.masked_rfc4733,
        );
        flush(
            "tonewall_dtmf_masked_total",
            "method",
            "inband",
            &mut self.masked_inband,
        );
    }
}

pub(crate) struct Bridge {
    session: SessionId,
    config: BridgeConfig,
    events: mpsc::UnboundedSender<MediaEvent>,
    customer: Option<Leg>,
    rep: Option<Leg>,
    /// customer → representative (strips telephone-events).
    to_rep: Relay,
    /// representative → customer.
    to_customer: Relay,
    holdback: Holdback,
    inspector: Box<dyn Inspector>,
    presses: PressDedup,
    counters: Counters,
    next_silence: Instant,
    next_check: Instant,
    next_metrics: Instant,
    check_every: Duration,
}

fn rand_u32() -> u32 {
    rand::random()
}

impl Bridge {
    fn new(
        session: SessionId,
        role: LegRole,
        leg: LegMedia,
        config: BridgeConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
        inspector: Box<dyn Inspector>,
    ) -> io::Result<Bridge> {
        let now = Instant::now();
        let codec = LegCodec::from(&leg.params);
        let leg = Leg::new(leg, now)?;
        let relay = |strip| Relay::new(codec, codec, strip, rand_u32(), rand::random(), rand_u32());
        let check_every = (config.rtp_timeout / 4).clamp(Duration::from_millis(10), METRICS_EVERY);
        let holdback = Holdback::new(
            Duration::from_millis(u64::from(config.holdback_ms)),
            Holdback::capacity_for(config.holdback_ms),
            now,
        );
        let (customer, rep) = match role {
            LegRole::Customer => (Some(leg), None),
            LegRole::Rep => (None, Some(leg)),
        };
        Ok(Bridge {
            session,
            config,
            events,
            customer,
            rep,
            to_rep: relay(true),
            to_customer: relay(false),
            holdback,
            inspector,
            presses: PressDedup::new(),
            counters: Counters::default(),
            next_silence: now,
            next_check: now + check_every,
            next_metrics: now + METRICS_EVERY,
            check_every,
        })
    }

    fn bridged(&self) -> bool {
        self.customer.is_some() && self.rep.is_some()
    }

    fn parked(&self) -> Option<&Leg> {
        match (&self.customer, &self.rep) {
            (Some(l), None) | (None, Some(l)) => Some(l),
            _ => None,
        }
    }

    pub(crate) fn next_deadline(&self) -> Instant {
        let mut d = self.next_check.min(self.next_metrics);
        if self.parked().is_some() {
            d = d.min(self.next_silence);
        }
        if let Some(h) = self.holdback.next_due() {
            d = d.min(h);
        }
        d
    }

    /// Register the legs' sockets not registered yet with the media thread's poller.
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: impl Fn(SocketKind) -> Token,
        interest: Interest,
    ) {
        for (role, leg) in [
            (LegRole::Customer, self.customer.as_mut()),
            (LegRole::Rep, self.rep.as_mut()),
        ] {
            let Some(leg) = leg else { continue };
            if leg.registered {
                continue;
            }
            let rtp = registry.register(&mut leg.rtp, token(SocketKind::Rtp(role)), interest);
            let rtcp = registry.register(&mut leg.rtcp, token(SocketKind::Rtcp(role)), interest);
            if let Err(e) = rtp.and(rtcp) {
                tracing::warn!(session = %self.session, error = %e, "bridge: cannot poll a leg");
            }
            leg.registered = true;
        }
    }

    /// Read a readable socket until it would block, relaying every packet.
    pub(crate) fn drain(&mut self, kind: SocketKind, buf: &mut [u8]) {
        loop {
            let leg = match kind {
                SocketKind::Rtp(LegRole::Customer) | SocketKind::Rtcp(LegRole::Customer) => {
                    self.customer.as_ref()
                }
                SocketKind::Rtp(LegRole::Rep) | SocketKind::Rtcp(LegRole::Rep) => self.rep.as_ref(),
            };
            let Some(leg) = leg else { return };
            let r = match kind {
                SocketKind::Rtp(_) => leg.rtp.recv_from(buf),
                // RTCP is terminated: read and discarded.
                SocketKind::Rtcp(_) => leg.rtcp.recv_from(buf),
            };
            match (r, kind) {
                (Ok((n, from)), SocketKind::Rtp(role)) => {
                    self.on_rtp(role, &mut buf[..n], from, Instant::now());
                }
                (Ok(_), SocketKind::Rtcp(_)) => {}
                (Err(e), _) if e.kind() == io::ErrorKind::Interrupted => {}
                (Err(_), _) => return,
            }
        }
    }

    /// The bridge is being removed: deregister and flush its counters.
    pub(crate) fn finish(&mut self, registry: &Registry) {
        for leg in [self.customer.as_mut(), self.rep.as_mut()]
            .into_iter()
            .flatten()
        {
            if leg.registered {
                let _ = registry.deregister(&mut leg.rtp);
                let _ = registry.deregister(&mut leg.rtcp);
            }
        }
        self.counters.flush();
        tracing::debug!(session = %self.session, "bridge ended");
    }

    pub(crate) fn command(&mut self, cmd: BridgeCommand, now: Instant) {
        match cmd {
            BridgeCommand::Attach { role, leg } => {
                let slot = match role {
                    LegRole::Customer => &mut self.customer,
                    LegRole::Rep => &mut self.rep,
                };
                if slot.is_some() {
                    tracing::warn!(session = %self.session, %role, "bridge: leg attached twice");
                    return;
                }
                match Leg::new(leg, now) {
                    Ok(l) => *slot = Some(l),
                    Err(e) => {
                        tracing::warn!(session = %self.session, error = %e, "bridge: attach failed");
                        return;
                    }
                }
                for l in [&mut self.customer, &mut self.rep].into_iter().flatten() {
                    l.last_rx = now;
                    l.timed_out = false;
                }
                self.sync_codecs();
            }
            BridgeCommand::Update { role, params } => {
                let slot = match role {
                    LegRole::Customer => &mut self.customer,
                    LegRole::Rep => &mut self.rep,
                };
                let Some(l) = slot else { return };
                if l.params.remote != params.remote {
                    l.latched = None;
                }
                l.params = params;
                l.last_rx = now;
                l.timed_out = false;
                self.sync_codecs();
            }
        }
    }

    fn sync_codecs(&mut self) {
        if let Some(c) = &self.customer {
            let c = LegCodec::from(&c.params);
            self.to_rep.set_from(c);
            self.to_customer.set_to(c);
        }
        if let Some(r) = &self.rep {
            let r = LegCodec::from(&r.params);
            self.to_customer.set_from(r);
            self.to_rep.set_to(r);
        }
    }

    fn on_rtp(&mut self, role: LegRole, buf: &mut [u8], from: SocketAddr, now: Instant) {
        let leg = match role {
            LegRole::Customer => self.customer.as_mut(),
            LegRole::Rep => self.rep.as_mut(),
        };
        let Some(leg) = leg else { return };
        if rtp::is_rtcp(buf) || RtpPacket::new_checked(&*buf).is_err() {
            return; // garbage or muxed RTCP: ignored, never latched
        }
        match leg.latched {
            Some(peer) if peer != from => return,
            Some(_) => {}
            None => leg.latched = Some(from),
        }
        leg.last_rx = now;
        leg.timed_out = false;
        if !self.bridged() {
            return; // parked: nobody to relay to
        }
        match role {
            LegRole::Customer => match self.to_rep.step(buf, now) {
                Step::Forward { payload } => {
                    let ts = RtpPacket::new_unchecked(&*buf).timestamp();
                    let info = PacketInfo {
                        codec: self.to_rep.to().codec,
                        timestamp: ts,
                        arrived: now,
                    };
                    if self.holdback.is_full() {
                        self.release_oldest();
                    }
                    self.holdback
                        .push(buf, payload, info, self.inspector.as_mut());
                    self.poll_inspector(now);
                    self.release_due(now);
                }
                Step::Event(Some(digit)) => {
                    self.counters.masked_rfc4733 += 1;
                    self.digit(digit, DigitMethod::Rfc4733, now);
                }
                Step::Event(None) | Step::Drop(_) => {}
            },
            LegRole::Rep => {
                if let Step::Forward { .. } = self.to_customer.step(buf, now) {
                    if let Some(c) = &self.customer {
                        if c.send(buf) {
                            self.counters.to_customer += 1;
                        }
                    }
                }
            }
        }
    }

    /// Report a detection unless it is the other method's view of a press already
    /// reported (one key press, one digit).
    fn digit(&mut self, digit: Digit, method: DigitMethod, now: Instant) {
        if !self.presses.accept(digit, method, now) {
            return;
        }
        let _ = self.events.send(MediaEvent::Digit {
            session: self.session.clone(),
            digit,
            method,
        });
    }

    fn poll_inspector(&mut self, now: Instant) {
        while let Some(d) = self.inspector.take_digit() {
            self.counters.masked_inband += 1;
            self.digit(d, DigitMethod::Inband, now);
        }
    }

    fn release_oldest(&mut self) {
        if let Some(pkt) = self.holdback.pop_oldest(self.inspector.as_mut()) {
            if let Some(r) = &self.rep {
                if r.send(pkt) {
                    self.counters.to_rep += 1;
                }
            }
        }
    }

    fn release_due(&mut self, now: Instant) {
        while let Some(pkt) = self.holdback.pop_due(now, self.inspector.as_mut()) {
            if let Some(r) = &self.rep {
                if r.send(pkt) {
                    self.counters.to_rep += 1;
                }
            }
        }
        self.poll_inspector(now);
    }

    pub(crate) fn on_timer(&mut self, now: Instant) {
        self.release_due(now);
        if now >= self.next_silence {
            self.send_silence(now);
        }
        if now >= self.next_check {
            self.next_check = now + self.check_every;
            self.check_timeouts(now);
        }
        if now >= self.next_metrics {
            self.next_metrics = now + METRICS_EVERY;
            self.counters.flush();
        }
    }

    fn send_silence(&mut self, now: Instant) {
        let mut buf = [0u8; BUF];
        let (relay, leg) = match (&self.customer, &self.rep) {
            (Some(c), None) => (&mut self.to_customer, c),
            (None, Some(r)) => (&mut self.to_rep, r),
            _ => return,
        };
        let ptime = leg.params.ptime_ms.clamp(10, 60);
        if leg.dest().is_some() {
            let n = relay.silence(&mut buf, ptime * 8, now);
            if n > 0 {
                let _ = leg.send(&buf[..n]);
            }
        }
        let step = Duration::from_millis(u64::from(ptime));
        self.next_silence += step;
        if self.next_silence <= now {
            self.next_silence = now + step;
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        if !self.bridged() {
            return;
        }
        let timeout = self.config.rtp_timeout;
        for (role, leg) in [
            (LegRole::Customer, self.customer.as_mut()),
            (LegRole::Rep, self.rep.as_mut()),
        ] {
            let Some(leg) = leg else { continue };
            if leg.expects_rtp()
                && !leg.timed_out
                && now.saturating_duration_since(leg.last_rx) >= timeout
            {
                leg.timed_out = true;
                let _ = self.events.send(MediaEvent::RtpTimeout {
                    session: self.session.clone(),
                    role,
                });
            }
        }
    }
}
