//! The carrier simulator: a BroadWorks stand-in on loopback for tests and `tonewall demo`
//! (docs/carrier.md §"The carrier simulator"). Xsi-Actions and Xsi-Events over HTTP, and a
//! signalling-only SIP B2BUA over UDP that carries out each action as RFC 3725 third-party
//! call control, with fault switches. Also the simulated phones (`phone`).
//!
//! Must never: carry media, listen beyond what its config names, or log a password or
//! an SDP/RTP payload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub(crate) mod actions;
pub mod b2bua;
pub mod calls;
pub(crate) mod events;
pub mod phone;
pub mod sdp;
pub mod ua;
pub mod xsi;

pub use phone::{Phone, PhoneConfig, PhoneStats};

use ua::lock;

/// A user on the simulated switch.
#[derive(Clone, Debug)]
pub struct SimUser {
    /// Xsi userId, e.g. `rep1@sim.example`.
    pub id: String,
    /// Dialable number, e.g. `2001`.
    pub number: String,
    /// The user's phone (SIP over UDP).
    pub phone: SocketAddr,
}

/// How to run the simulator.
#[derive(Clone)]
pub struct SimConfig {
    pub xsi_listen: SocketAddr,
    pub sip_listen: SocketAddr,
    pub xsi_user: String,
    pub xsi_password: String,
    /// tonewall's UDP SIP address.
    pub trunk: SocketAddr,
    pub users: Vec<SimUser>,
    /// The longest Xsi-Events `expires` granted to a channel or subscription
    /// (`DEFAULT_EXPIRES` unless a test shortens it).
    pub expires: Duration,
}

/// The `expires` a BroadWorks XSP grants by default.
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("xsi_listen", &self.xsi_listen)
            .field("sip_listen", &self.sip_listen)
            .field("xsi_user", &self.xsi_user)
            .field("xsi_password", &"<redacted>")
            .field("trunk", &self.trunk)
            .field("users", &self.users)
            .field("expires", &self.expires)
            .finish()
    }
}

/// A call on a user's line, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimCall {
    pub call_id: String,
    /// Xsi state: `Alerting`, `Active`, `Held`, …
    pub state: String,
    pub remote: String,
    /// What the user's phone is wired to: `phone:<number>`, `trunk:<dnis>` or `none`.
    pub peer: String,
}

/// The ordered simulator log (see docs/carrier.md; tests assert its order).
#[derive(Default)]
pub struct Log(Mutex<Vec<String>>);

impl Log {
    pub fn push(&self, line: String) {
        tracing::debug!(target: "tonewall::sim", "{line}");
        lock(&self.0).push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        lock(&self.0).clone()
    }
}

/// The fault switches; each changes only what it names.
pub struct Faults {
    fail_action: Mutex<Option<String>>,
    dnis_busy: AtomicBool,
    event_delay: Mutex<Duration>,
    drop_events: AtomicBool,
    channels: Arc<events::Channels>,
    log: Arc<Log>,
}

impl Faults {
    fn new(log: Arc<Log>) -> Faults {
        Faults {
            fail_action: Mutex::new(None),
            dnis_busy: AtomicBool::new(false),
            event_delay: Mutex::new(Duration::ZERO),
            drop_events: AtomicBool::new(false),
            channels: Arc::new(Mutex::new(Default::default())),
            log,
        }
    }

    /// `Some("Hold" | "Talk" | "new" | "BlindTransfer" | "Reconnect" | "Release")`: that
    /// action answers 500 and does nothing.
    pub fn set_fail_action(&self, a: Option<&str>) {
        *lock(&self.fail_action) = a.map(str::to_string);
    }

    pub fn set_dnis_busy(&self, b: bool) {
        self.dnis_busy.store(b, Ordering::Relaxed);
    }

    pub fn set_event_delay(&self, d: Duration) {
        *lock(&self.event_delay) = d;
    }

    pub fn set_drop_events(&self, b: bool) {
        self.drop_events.store(b, Ordering::Relaxed);
    }

    /// End every open event channel's response now.
    pub fn cut_stream(&self) {
        let cut: Vec<String> = lock(&self.channels).drain().map(|(id, _)| id).collect();
        for id in cut {
            self.log.push(format!("channel cut {id}"));
        }
    }

    pub(crate) fn fails(&self, action: &str) -> bool {
        lock(&self.fail_action).as_deref() == Some(action)
    }

    pub(crate) fn dnis_busy(&self) -> bool {
        self.dnis_busy.load(Ordering::Relaxed)
    }
}

/// A running simulator.
pub struct SimHandle {
    sim: Arc<b2bua::Sim>,
    xsi_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

/// Start the simulator: bind Xsi (HTTP) and SIP (UDP).
pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
    let log = Arc::new(Log::default());
    let faults = Arc::new(Faults::new(log.clone()));
    let events = events::Events::new(faults.clone(), log.clone(), cfg.expires);
    let (ua, rx) = ua::Ua::bind(cfg.sip_listen).await?;
    let sim = Arc::new(b2bua::Sim::new(cfg.clone(), ua, log, faults, events));
    let mut tasks = vec![tokio::spawn(b2bua::run(sim.clone(), rx))];
    let listener = tokio::net::TcpListener::bind(cfg.xsi_listen).await?;
    let xsi_addr = listener.local_addr()?;
    let app = xsi::router(sim.clone());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));
    Ok(SimHandle {
        sim,
        xsi_addr,
        tasks,
    })
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn xsi_url(&self) -> String {
        format!("http://{}", self.xsi_addr)
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sim.ua.local_addr()
    }

    pub fn faults(&self) -> &Faults {
        &self.sim.faults
    }

    /// The log so far, in order.
    pub fn log(&self) -> Vec<String> {
        self.sim.log.lines()
    }

    /// The calls on a user's line (by Xsi userId).
    pub fn calls(&self, user: &str) -> Vec<SimCall> {
        let m = lock(&self.sim.model);
        m.user_calls(user)
            .into_iter()
            .map(|c| SimCall {
                call_id: c.call_id(),
                state: c.state.to_string(),
                remote: c.remote.clone(),
                peer: m.peer(c),
            })
            .collect()
    }

    pub async fn shutdown(self) {
        self.sim.faults.cut_stream();
        self.sim.ua.close();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}
