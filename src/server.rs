//! Wires SIP, media, sessions and the HTTP API together for `tonewall serve`.
//!
//! Owns start-up order and shutdown; holds no protocol logic of its own. Must never: touch
//! a packet or a digit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{router, ApiState};
use crate::audit::AuditLog;
use crate::carrier::Carrier;
use crate::config::Config;
use crate::media::ports::PortPool;
use crate::media::Codec;
use crate::session::manager::{ManagerOptions, Services, SessionManager};
use crate::sip::endpoint::{self, EndpointConfig, EndpointHandle};
use crate::sip::transport::Transport;
use crate::sip::trunk::TrunkHandler;
use crate::webhook::{WebhookOptions, Webhooks};

/// A running server (for `serve` and for tests that run it in-process).
pub struct Running {
    pub sip: Vec<(Transport, SocketAddr)>,
    pub http: SocketAddr,
    pub manager: SessionManager,
    endpoint: Option<EndpointHandle>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop listening and end the background tasks.
    pub fn shutdown(mut self) {
        if let Some(a) = self.manager.audit_log() {
            a.flush();
        }
        if let Some(ep) = self.endpoint.take() {
            ep.shutdown();
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Bind everything and start the tasks.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = crate::metrics::install();
    let ports = PortPool::parse(&config.media.ports).context("media.ports")?;
    let media_bind: IpAddr = config.media.bind.parse().context("media.bind")?;
    let media_advertise = match &config.media.advertise {
        Some(a) => Some(a.parse::<IpAddr>().context("media.advertise")?),
        None => None,
    };
    let codecs: Vec<Codec> = config
        .media
        .codecs
        .iter()
        .filter_map(|c| Codec::from_name(c))
        .collect();

    let (trunk_tx, trunk_rx) = mpsc::unbounded_channel();
    let services = Services {
        gateway: crate::payment::from_config(&config.payment)?,
        webhooks: Webhooks::from_config(&config, WebhookOptions::default())?,
        audit: Some(AuditLog::open(&config.audit.path)?),
    };
    let (manager, driver) = SessionManager::with_services(
        &config,
        ports.clone(),
        trunk_tx,
        ManagerOptions::default(),
        services,
    )?;
    let mut tasks = vec![tokio::spawn(driver.run())];

    let handler: Arc<dyn TrunkHandler> = Arc::new(manager.clone());
    let endpoint = endpoint::start(
        EndpointConfig {
            listen: config.sip.listen.clone(),
            advertise: config.sip.advertise.clone(),
            media_bind,
            media_advertise,
            codecs,
        },
        ports.clone(),
        handler,
        trunk_rx,
    )
    .await
    .context("sip.listen")?;
    let sip = endpoint.local_addrs();

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", config.http.listen))?;
    let http = listener.local_addr()?;
    let app = router(ApiState {
        manager: manager.clone(),
        metrics,
    });
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    }));
    tasks.push(tokio::spawn(process_gauges(manager.clone())));

    for (t, a) in &sip {
        tracing::info!(transport = ?t, addr = %a, "sip listening");
    }
    tracing::info!(addr = %http, "http listening");
    Ok(Running {
        sip,
        http,
        manager,
        endpoint: Some(endpoint),
        tasks,
    })
}

/// Run the server until ctrl-c or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    let carriers = running.manager.carriers();
    running.shutdown();
    close_carriers(carriers).await;
    Ok(())
}

/// Let every carrier adapter release what it holds (Xsi: delete the event channel), each
/// within `CARRIER_CLOSE_TIMEOUT`, all at once.
pub async fn close_carriers(carriers: Vec<Arc<dyn Carrier>>) {
    let closing = carriers.iter().map(|c| async move {
        if tokio::time::timeout(CARRIER_CLOSE_TIMEOUT, c.close())
            .await
            .is_err()
        {
            tracing::warn!(carrier = %c.id(), "carrier close timed out");
        }
    });
    futures::future::join_all(closing).await;
}

/// How long a carrier adapter may take to close at shutdown.
const CARRIER_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Process-level gauges for leak checks: free RTP ports, DNIS in use, live tasks, memory.
async fn process_gauges(manager: SessionManager) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let stats = manager.stats(Instant::now());
        metrics::gauge!("tonewall_rtp_ports_free").set(stats.ports_available as f64);
        metrics::gauge!("tonewall_dnis_allocated").set(stats.dnis_allocated as f64);
        metrics::gauge!("tonewall_dnis_available").set(stats.dnis_available as f64);
        metrics::gauge!("tonewall_bridges_active").set(stats.bridges as f64);
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        metrics::gauge!("tonewall_tasks_alive").set(tasks as f64);
        if let Some(rss) = rss_bytes() {
            metrics::gauge!("tonewall_memory_rss_bytes").set(rss as f64);
        }
    }
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
