//! The tokio-side owner of all sessions: creates them for the API, admits legs for the
//! SIP trunk (`TrunkHandler`), drives the media bridges, turns media events and timer
//! ticks into state-machine inputs, and executes the resulting actions.
//!
//! Use: `let (manager, driver) = SessionManager::new(&config, ports, trunk_tx)?;` then
//! `tokio::spawn(driver.run())` (it feeds `MediaEvent`s and a 250 ms tick in), give
//! `manager.clone()` to the SIP endpoint as its `TrunkHandler` and to `api::router`.
//!
//! Must never: hold its lock across an `.await`; block (every method is quick and sync);
//! log or return a digit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};

use crate::carrier::Adapter;
use crate::config::Config;
use crate::leg::{LegRole, SessionId};
use crate::media::bridge::{BridgeConfig, BridgeHandle, MediaEvent};
use crate::media::ports::PortPool;
use crate::session::dnis::{DnisPool, DEFAULT_QUARANTINE};
use crate::session::events::{Event, EventBody};
use crate::session::fields::{UnknownField, YearMonth};
use crate::session::state::{Action, LegState, Session, SessionView};
use crate::sip::trunk::TrunkCommand;

mod admission;
mod lifecycle;
mod outbound;
mod payment;
mod securing;

pub use payment::{PaymentAnswer, PaymentRequest};

/// Tunables that are not in the config file.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// How long a released DNIS stays out of the pool.
    pub quarantine: Duration,
    /// Sessions (not ended) at most; beyond: `POST` answers 503 and INVITEs 503.
    pub max_sessions: usize,
    /// How long an ended session stays readable (`GET`) before it is forgotten.
    pub linger: Duration,
    /// The driver's timer period.
    pub tick: Duration,
    /// `Retry-After` seconds on a 503 at capacity.
    pub retry_after_s: u32,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            quarantine: DEFAULT_QUARANTINE,
            max_sessions: 10_000,
            linger: Duration::from_secs(60),
            tick: Duration::from_millis(250),
            retry_after_s: 5,
        }
    }
}

/// TEST-ONLY: `TONEWALL_TEST_DISABLE_MASKING=1` in the environment at start-up turns the
/// in-band DTMF masker's replacement off (digits are still detected), so a leak test can
/// show that it fails without masking. Never set it in production; it is logged loudly.
pub const DISABLE_MASKING_ENV: &str = "TONEWALL_TEST_DISABLE_MASKING";

fn masking_disabled_for_tests() -> bool {
    let off = std::env::var(DISABLE_MASKING_ENV).is_ok_and(|v| v == "1");
    if off {
        tracing::warn!("{DISABLE_MASKING_ENV}=1: in-band DTMF masking is OFF (test-only)");
    }
    off
}

/// What the API may be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    #[error("no such session")]
    SessionNotFound,
    #[error("no such field in this session")]
    UnknownField,
    #[error("no DNIS number is free for this tenant")]
    NoDnisAvailable,
    #[error("at capacity")]
    AtCapacity,
    #[error("{0}")]
    InvalidRequest(String),
    /// The payment request or the card fields are not valid; `code` names what.
    #[error("{message}")]
    InvalidPayment { code: &'static str, message: String },
    #[error("the session has ended")]
    SessionEnded,
    /// The gateway did not decide (502).
    #[error("{0}")]
    PaymentGateway(String),
    #[error("the audit log is not configured")]
    AuditUnavailable,
}

/// What the manager talks to beyond SIP and media: the payment gateway, webhooks and the
/// audit log.
#[derive(Clone)]
pub struct Services {
    pub gateway: Arc<dyn crate::payment::Gateway>,
    pub webhooks: Option<crate::webhook::Webhooks>,
    pub audit: Option<crate::audit::AuditLog>,
}

impl Default for Services {
    /// The sandbox gateway, no webhooks, no audit log.
    fn default() -> Self {
        Services {
            gateway: Arc::new(crate::payment::sandbox::Sandbox),
            webhooks: None,
            audit: None,
        }
    }
}

/// A request to secure a call.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub call_id: String,
    pub rep: String,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

/// Counts for health checks and leak tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerStats {
    /// Sessions held in memory (including ended ones still lingering).
    pub sessions: usize,
    /// Sessions not ended.
    pub active: usize,
    /// Bridges running.
    pub bridges: usize,
    /// DNIS numbers allocatable now, over all tenants.
    pub dnis_available: usize,
    /// DNIS numbers in all.
    pub dnis_total: usize,
    /// DNIS numbers held by a session now.
    pub dnis_allocated: usize,
    /// RTP port pairs free now.
    pub ports_available: usize,
}

struct TenantInfo {
    id: Arc<str>,
    fields: Vec<String>,
    key_hashes: Vec<[u8; 32]>,
    peers: Vec<ipnet::IpNet>,
    adapter: Adapter,
    /// Each third-party call control step's deadline.
    step_timeout: Duration,
}

struct Entry {
    session: Session,
    bridge: Option<BridgeHandle>,
    /// `None` once the session has ended and its last event is sent: the channel's buffer
    /// is freed while the session lingers for `GET`.
    events: Option<broadcast::Sender<Arc<Event>>>,
    /// Wall-clock creation time, for the audit row.
    created_at: chrono::DateTime<chrono::Utc>,
    /// The payment once submitted: `None` inside while the gateway has not answered.
    payment: Option<payment::PaymentSlot>,
    /// The third-party call control task, while it runs.
    securing: Option<mpsc::UnboundedSender<securing::SecuringInput>>,
}

struct Inner {
    sessions: HashMap<SessionId, Entry>,
    pools: HashMap<Arc<str>, DnisPool>,
    dnis_owner: HashMap<Arc<str>, Arc<str>>,
}

struct Shared {
    inner: Mutex<Inner>,
    tenants: HashMap<Arc<str>, TenantInfo>,
    all_peers: Vec<ipnet::IpNet>,
    trunk: mpsc::UnboundedSender<TrunkCommand>,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    ports: PortPool,
    bridge_config: BridgeConfig,
    ttl: Duration,
    options: ManagerOptions,
    driver_alive: AtomicBool,
    services: Services,
}

/// The session layer. Cheap to clone.
#[derive(Clone)]
pub struct SessionManager {
    shared: Arc<Shared>,
}

/// Feeds media events and timer ticks into the manager; run it with `tokio::spawn`.
pub struct SessionDriver {
    manager: SessionManager,
    media_rx: mpsc::UnboundedReceiver<MediaEvent>,
}

/// Per-session event channel depth (a slow SSE client loses the oldest events).
const EVENT_BUFFER: usize = 256;

impl SessionManager {
    /// Build the manager from a validated config.
    pub fn new(
        config: &Config,
        ports: PortPool,
        trunk: mpsc::UnboundedSender<TrunkCommand>,
    ) -> anyhow::Result<(SessionManager, SessionDriver)> {
        Self::with_options(config, ports, trunk, ManagerOptions::default())
    }

    pub fn with_options(
        config: &Config,
        ports: PortPool,
        trunk: mpsc::UnboundedSender<TrunkCommand>,
        options: ManagerOptions,
    ) -> anyhow::Result<(SessionManager, SessionDriver)> {
        Self::with_services(config, ports, trunk, options, Services::default())
    }

    /// With a payment gateway, webhooks and an audit log (see `server::start`).
    pub fn with_services(
        config: &Config,
        ports: PortPool,
        trunk: mpsc::UnboundedSender<TrunkCommand>,
        options: ManagerOptions,
        services: Services,
    ) -> anyhow::Result<(SessionManager, SessionDriver)> {
        let mut tenants = HashMap::new();
        let mut pools = HashMap::new();
        let mut dnis_owner = HashMap::new();
        let mut all_peers = Vec::new();
        let mut adapters = HashMap::new();
        for c in &config.carrier {
            adapters.insert(c.id.clone(), crate::carrier::build(c)?);
            for p in &c.peers {
                all_peers.push(crate::config::parse_peer(p).map_err(anyhow::Error::msg)?);
            }
        }
        for t in &config.tenant {
            let id: Arc<str> = t.id.as_str().into();
            let carrier = config
                .carrier(&t.carrier)
                .ok_or_else(|| anyhow::anyhow!("tenant {}: unknown carrier", t.id))?;
            let peers = carrier
                .peers
                .iter()
                .map(|p| crate::config::parse_peer(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let mut key_hashes = Vec::new();
            for k in &t.api_keys {
                let hex_part = k.strip_prefix("sha256:").unwrap_or(k);
                let mut h = [0u8; 32];
                hex::decode_to_slice(hex_part, &mut h)
                    .map_err(|_| anyhow::anyhow!("tenant {}: bad api key hash", t.id))?;
                key_hashes.push(h);
            }
            let mut numbers = Vec::new();
            for d in &t.dnis {
                numbers.extend(crate::config::parse_dnis_entry(d).map_err(anyhow::Error::msg)?);
            }
            for n in &numbers {
                dnis_owner.insert(Arc::<str>::from(n.as_str()), id.clone());
            }
            pools.insert(id.clone(), DnisPool::new(numbers, options.quarantine));
            tenants.insert(
                id.clone(),
                TenantInfo {
                    id,
                    fields: t.fields.clone(),
                    key_hashes,
                    peers,
                    adapter: adapters
                        .get(&carrier.id)
                        .cloned()
                        .unwrap_or(Adapter::Manual),
                    step_timeout: Duration::from_secs(carrier.step_timeout_s),
                },
            );
        }
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                pools,
                dnis_owner,
            }),
            tenants,
            all_peers,
            trunk,
            media_tx,
            ports,
            bridge_config: BridgeConfig {
                holdback_ms: config.media.holdback_ms,
                mask_mode: config.media.mask_mode,
                rtp_timeout: Duration::from_secs(config.media.rtp_timeout_s),
                masking: !masking_disabled_for_tests(),
            },
            ttl: Duration::from_secs(config.dnis.ttl_s),
            options,
            driver_alive: AtomicBool::new(false),
            services,
        };
        let manager = SessionManager {
            shared: Arc::new(shared),
        };
        let driver = SessionDriver {
            manager: manager.clone(),
            media_rx,
        };
        Ok((manager, driver))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock must not take the whole session layer down.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the driver is running (for `/healthz`).
    pub fn is_ready(&self) -> bool {
        self.shared.driver_alive.load(Ordering::Relaxed)
    }

    /// The tenant whose API key this is (sha256 compared in constant time against every
    /// configured hash).
    pub fn authenticate(&self, key: &str) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for t in self.shared.tenants.values() {
            for h in &t.key_hashes {
                let diff = h
                    .iter()
                    .zip(digest.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff == 0 {
                    found = Some(t.id.clone());
                }
            }
        }
        found
    }

    fn with_session<R>(
        &self,
        tenant: &str,
        id: &str,
        f: impl FnOnce(&SessionManager, &mut Inner, &SessionId, Instant) -> Result<R, ManagerError>,
    ) -> Result<R, ManagerError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let sid = match inner.sessions.get_key_value(id) {
            Some((k, e)) if &*e.session.tenant == tenant => k.clone(),
            _ => return Err(ManagerError::SessionNotFound),
        };
        f(self, &mut inner, &sid, now)
    }

    fn view_of(inner: &Inner, id: &SessionId) -> Result<SessionView, ManagerError> {
        inner
            .sessions
            .get(id)
            .map(|e| e.session.view(YearMonth::now()))
            .ok_or(ManagerError::SessionNotFound)
    }

    /// `GET /v1/sessions/{id}` (another tenant's session is not found).
    pub fn get(&self, tenant: &str, id: &str) -> Result<SessionView, ManagerError> {
        self.with_session(tenant, id, |_, inner, sid, _| Self::view_of(inner, sid))
    }

    /// The current `state` event and a receiver for what follows.
    pub fn subscribe(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(Event, broadcast::Receiver<Arc<Event>>), ManagerError> {
        self.with_session(tenant, id, |_, inner, sid, _| {
            let e = inner
                .sessions
                .get(sid)
                .ok_or(ManagerError::SessionNotFound)?;
            let rx = match &e.events {
                Some(tx) => tx.subscribe(),
                // Ended: the stream carries the final state and closes.
                None => broadcast::channel(1).1,
            };
            Ok((Event::new(sid, e.session.state_event()), rx))
        })
    }

    /// `POST .../fields/{name}/activate`.
    pub fn activate(
        &self,
        tenant: &str,
        id: &str,
        field: &str,
    ) -> Result<SessionView, ManagerError> {
        self.field_op(tenant, id, |s, today| s.activate(field, today))
    }

    /// `POST .../fields/{name}/reset`.
    pub fn reset(&self, tenant: &str, id: &str, field: &str) -> Result<SessionView, ManagerError> {
        self.field_op(tenant, id, |s, today| s.reset(field, today))
    }

    fn field_op(
        &self,
        tenant: &str,
        id: &str,
        op: impl FnOnce(&mut Session, YearMonth) -> Result<Vec<Action>, UnknownField>,
    ) -> Result<SessionView, ManagerError> {
        self.with_session(tenant, id, |m, inner, sid, now| {
            let e = inner
                .sessions
                .get_mut(sid)
                .ok_or(ManagerError::SessionNotFound)?;
            let actions =
                op(&mut e.session, YearMonth::now()).map_err(|_| ManagerError::UnknownField)?;
            m.apply(inner, sid, actions, now);
            Self::view_of(inner, sid)
        })
    }

    /// A media event from a bridge.
    pub fn handle_media(&self, ev: MediaEvent) {
        let now = Instant::now();
        let mut inner = self.lock();
        let (sid, actions) = match ev {
            MediaEvent::Digit { session, digit, .. } => {
                let Some(e) = inner.sessions.get_mut(&session) else {
                    return;
                };
                let a = e.session.digit(digit, YearMonth::now());
                (session, a)
            }
            MediaEvent::RtpTimeout { session, role } => {
                let Some(e) = inner.sessions.get_mut(&session) else {
                    return;
                };
                tracing::info!(session = %session, role = %role, "rtp timeout");
                let a = e.session.rtp_timeout(role, now);
                (session, a)
            }
        };
        self.apply(&mut inner, &sid, actions, now);
    }

    /// Time passes: DNIS TTLs end sessions; ended sessions are forgotten after `linger`.
    pub fn tick(&self, now: Instant) {
        let mut inner = self.lock();
        let ids: Vec<SessionId> = inner.sessions.keys().cloned().collect();
        let linger = self.shared.options.linger;
        for id in ids {
            let Some(e) = inner.sessions.get_mut(&id) else {
                continue;
            };
            let actions = e.session.tick(now);
            if !actions.is_empty() {
                tracing::info!(session = %id, "dnis expired before both legs arrived");
                self.apply(&mut inner, &id, actions, now);
            }
            let gone = inner
                .sessions
                .get(&id)
                .and_then(|e| e.session.ended_at)
                .is_some_and(|t| now >= t + linger);
            if gone {
                inner.sessions.remove(&id);
            }
        }
        self.update_gauges(&inner);
    }

    /// Counts for health and leak checks, at `now` (quarantine is measured against it).
    pub fn stats(&self, now: Instant) -> ManagerStats {
        let mut inner = self.lock();
        let mut dnis_available = 0;
        let mut dnis_total = 0;
        let mut dnis_allocated = 0;
        for p in inner.pools.values_mut() {
            dnis_available += p.available(now);
            dnis_total += p.total();
            dnis_allocated += p.in_use();
        }
        ManagerStats {
            sessions: inner.sessions.len(),
            active: inner
                .sessions
                .values()
                .filter(|e| !e.session.state.is_terminal())
                .count(),
            bridges: inner
                .sessions
                .values()
                .filter(|e| e.bridge.is_some())
                .count(),
            dnis_available,
            dnis_total,
            dnis_allocated,
            ports_available: self.shared.ports.available(),
        }
    }

    fn apply(&self, inner: &mut Inner, id: &SessionId, actions: Vec<Action>, now: Instant) {
        for action in actions {
            match action {
                Action::HangUp(role) => {
                    let _ = self.shared.trunk.send(TrunkCommand::HangUp {
                        session: id.clone(),
                        role,
                    });
                }
                Action::HandBack => {
                    let target = inner
                        .sessions
                        .get(id)
                        .and_then(|e| self.handback_target(&e.session));
                    if let Some(target) = target {
                        tracing::info!(session = %id, "handing the customer back to the representative");
                        let _ = self.shared.trunk.send(TrunkCommand::HandBack {
                            session: id.clone(),
                            target,
                        });
                    }
                }
                Action::DropBridge => {
                    if let Some(e) = inner.sessions.get_mut(id) {
                        e.bridge = None;
                    }
                }
                Action::ReleaseDnis => {
                    if let Some(e) = inner.sessions.get(id) {
                        let (tenant, dnis) = (e.session.tenant.clone(), e.session.dnis.clone());
                        if let Some(p) = inner.pools.get_mut(&tenant) {
                            p.release(&dnis, id, now);
                        }
                    }
                }
                Action::Emit(body) => {
                    if let Some(e) = inner.sessions.get_mut(id) {
                        let mut last = false;
                        if let EventBody::State { state, reason } = &body {
                            tracing::info!(session = %id, state = ?state, reason = ?reason, "session state");
                            last = state.is_terminal();
                        }
                        let event = Arc::new(Event::new(id, body));
                        self.webhook(&e.session, &event, last);
                        if let Some(tx) = &e.events {
                            let _ = tx.send(event);
                        }
                        if last {
                            e.events = None;
                            self.audit_on_end(e);
                            // However the session ended (DNIS expiry, a leg, DELETE), 3PCC
                            // still in progress stops and undoes its steps.
                            if let Some(tx) = &e.securing {
                                let _ = tx.send(securing::SecuringInput::Cancel);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Session and leg gauges, refreshed on the driver's tick (every 250 ms) rather than
    /// by a scan of every session on every change.
    fn update_gauges(&self, inner: &Inner) {
        let mut active = 0usize;
        let mut legs = 0usize;
        for e in inner.sessions.values() {
            if !e.session.state.is_terminal() {
                active += 1;
            }
            for r in [LegRole::Rep, LegRole::Customer] {
                if e.session.leg(r) == LegState::Up {
                    legs += 1;
                }
            }
        }
        metrics::gauge!("tonewall_sessions_active").set(active as f64);
        metrics::gauge!("tonewall_legs_active").set(legs as f64);
    }
}

impl SessionDriver {
    /// Run until the process ends: media events in, a timer tick every
    /// `ManagerOptions::tick`.
    pub async fn run(mut self) {
        let shared = self.manager.shared.clone();
        shared.driver_alive.store(true, Ordering::Relaxed);
        let mut tick = tokio::time::interval(shared.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.media_rx.recv() => match ev {
                    Some(ev) => self.manager.handle_media(ev),
                    None => break,
                },
                _ = tick.tick() => self.manager.tick(Instant::now()),
            }
        }
        shared.driver_alive.store(false, Ordering::Relaxed);
    }
}
