//! Load generator for tonewall, written against the contract only (SPEC §5 REST, §6 SIP):
//! creates N sessions over the REST API, dials each DNIS with a representative and a
//! customer SIP leg, streams marked 20 ms PCMU both ways (optionally RFC 4733 key presses
//! from the customers), measures loss, one-way latency, leaked telephone-events and the
//! server's CPU per relayed packet, then hangs everything up and checks
//! `tonewall_sessions_active` returns to 0. It never prints digits it sends.
//!
//! `cargo run --release --example loadgen -- --sessions 100 --duration 20 --pid <pid>`

mod media;
mod report;
mod sip;
mod stats;
mod uac;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tokio::time::Instant;

use media::{Cmd, MediaLeg, Role, Shared};
use report::{direction, pct, print_report, Report, Teardown};
use stats::MediaStats;
use uac::Endpoint;

#[derive(Parser, Debug, Clone)]
#[command(about = "Drive N bridged tonewall sessions over loopback and measure the relay")]
struct Args {
    /// Base URL of tonewall's REST API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// tonewall's SIP trunk (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    sip: SocketAddr,
    /// API key (bearer).
    #[arg(long, default_value = "dev-key-change-me")]
    key: String,
    /// Concurrent bridged sessions.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Measurement window, seconds (after the ramp).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Server pid: report its CPU time per relayed packet.
    #[arg(long)]
    pid: Option<u32>,
    /// Customers also send one RFC 4733 key press every 2 s.
    #[arg(long)]
    rfc4733: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Sessions started per second during the ramp.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Sessions hung up per second at the end.
    #[arg(long, default_value_t = 200.0)]
    teardown_rate: f64,
    /// tonewall's `media.holdback_ms` (subtracted from customer->rep latency).
    #[arg(long, default_value_t = 40)]
    holdback_ms: u64,
    /// Seconds to let media settle after the ramp before measuring.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// Media threads (each owns a share of the legs' sockets).
    #[arg(long, default_value_t = 1)]
    media_threads: usize,
    /// Give up on an INVITE after this many seconds.
    #[arg(long, default_value_t = 10)]
    setup_timeout: u64,
}

struct Ctx {
    args: Args,
    http: reqwest::Client,
    ep: Arc<Endpoint>,
    local_ip: IpAddr,
    shards: Vec<std_mpsc::Sender<Cmd>>,
    established: AtomicUsize,
    failed: AtomicUsize,
    failures: Mutex<BTreeMap<String, usize>>,
    setup_ms: Mutex<Vec<u64>>,
    ended_by_server: AtomicUsize,
    teardown: Mutex<Teardown>,
}

fn fail(ctx: &Ctx, reason: String) {
    ctx.failed.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut f) = ctx.failures.lock() {
        *f.entry(reason).or_insert(0) += 1;
    }
}

/// `POST /v1/sessions` → (id, dnis).
async fn create_session(ctx: &Ctx, i: usize) -> Result<(String, String), String> {
    let body = serde_json::json!({
        "call_id": format!("loadgen-{}-{i}", std::process::id()),
        "rep": format!("rep-{i}"),
    });
    let resp = ctx
        .http
        .post(format!("{}/v1/sessions", ctx.args.http))
        .bearer_auth(&ctx.args.key)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("http: {}", if e.is_connect() { "connect" } else { "error" }))?;
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if status != 201 {
        let code = v["error"]["code"].as_str().unwrap_or("?");
        return Err(format!("POST /v1/sessions {status} {code}"));
    }
    match (v["id"].as_str(), v["dnis"].as_str()) {
        (Some(id), Some(dnis)) => Ok((id.to_string(), dnis.to_string())),
        _ => Err("POST /v1/sessions: no id/dnis".into()),
    }
}

async fn delete_session(ctx: &Ctx, id: &str) {
    let _ = ctx
        .http
        .delete(format!("{}/v1/sessions/{id}", ctx.args.http))
        .bearer_auth(&ctx.args.key)
        .send()
        .await;
}

fn rtp_socket(ip: IpAddr) -> Result<(StdUdpSocket, SocketAddr), String> {
    let s = StdUdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| format!("rtp bind: {e}"))?;
    s.set_nonblocking(true).map_err(|e| format!("rtp: {e}"))?;
    let a = s.local_addr().map_err(|e| format!("rtp: {e}"))?;
    Ok((s, a))
}

/// One session from POST to the final BYE.
async fn run_session(ctx: Arc<Ctx>, i: usize, mut stop: watch::Receiver<Option<Instant>>) {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(ctx.args.setup_timeout);
    let (id, dnis) = match create_session(&ctx, i).await {
        Ok(x) => x,
        Err(e) => return fail(&ctx, e),
    };
    let shard = &ctx.shards[i % ctx.shards.len()];
    let session = i as u32;
    let add = |socket: StdUdpSocket, leg: &uac::Leg, role: Role| {
        let _ = shard.send(Cmd::Add(MediaLeg {
            socket,
            dest: leg.answer.rtp,
            role,
            session,
            te_pt: leg.answer.te_pt.unwrap_or(101),
            send_events: role == Role::Customer && ctx.args.rfc4733,
        }));
    };
    let (rep_sock, rep_addr) = match rtp_socket(ctx.local_ip) {
        Ok(x) => x,
        Err(e) => return fail(&ctx, e),
    };
    let mut rep = match uac::invite(&ctx.ep, &format!("rep-{i}"), &dnis, rep_addr, timeout).await {
        Ok(l) => l,
        Err(e) => {
            delete_session(&ctx, &id).await;
            return fail(&ctx, format!("rep INVITE {e}"));
        }
    };
    add(rep_sock, &rep, Role::Rep);
    let (cust_sock, cust_addr) = match rtp_socket(ctx.local_ip) {
        Ok(x) => x,
        Err(e) => return fail(&ctx, e),
    };
    let mut cust = match uac::invite(&ctx.ep, &format!("cust-{i}"), &dnis, cust_addr, timeout).await
    {
        Ok(l) => l,
        Err(e) => {
            let _ = shard.send(Cmd::Remove {
                session,
                role: Role::Rep,
            });
            let _ = rep.bye(&ctx.ep, timeout).await;
            delete_session(&ctx, &id).await;
            return fail(&ctx, format!("customer INVITE {e}"));
        }
    };
    add(cust_sock, &cust, Role::Customer);
    ctx.established.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut v) = ctx.setup_ms.lock() {
        v.push(t0.elapsed().as_millis() as u64);
    }

    // Up: answer what tonewall sends until told to hang up.
    let when = loop {
        tokio::select! {
            r = stop.changed() => {
                match (r, *stop.borrow()) {
                    (Ok(()), Some(at)) => break at,
                    (Err(_), _) => break Instant::now(),
                    _ => {}
                }
            }
            Some(m) = rep.recv() => rep.on_message(&ctx.ep, m).await,
            Some(m) = cust.recv() => cust.on_message(&ctx.ep, m).await,
        }
        if rep.remote_bye || cust.remote_bye {
            ctx.ended_by_server.fetch_add(1, Ordering::Relaxed);
            let _ = shard.send(Cmd::Remove {
                session,
                role: Role::Rep,
            });
            let _ = shard.send(Cmd::Remove {
                session,
                role: Role::Customer,
            });
            // The other leg should follow; wait for it, then hang up what is left.
            let _ = rep.wait_remote_bye(&ctx.ep, Duration::from_secs(2)).await;
            let _ = cust.wait_remote_bye(&ctx.ep, Duration::from_secs(2)).await;
            if !rep.remote_bye {
                let _ = rep.bye(&ctx.ep, timeout).await;
            }
            if !cust.remote_bye {
                let _ = cust.bye(&ctx.ep, timeout).await;
            }
            return;
        }
    };

    // Teardown, paced: the customer hangs up; tonewall must then hang up the rep leg.
    let slot = Duration::from_secs_f64(i as f64 / ctx.args.teardown_rate.max(1.0));
    tokio::time::sleep_until(when + slot).await;
    let _ = shard.send(Cmd::Remove {
        session,
        role: Role::Customer,
    });
    let bye = cust.bye(&ctx.ep, timeout).await;
    let by_server = rep.wait_remote_bye(&ctx.ep, Duration::from_secs(3)).await;
    let _ = shard.send(Cmd::Remove {
        session,
        role: Role::Rep,
    });
    if !by_server {
        let _ = rep.bye(&ctx.ep, timeout).await;
    }
    if let Ok(mut t) = ctx.teardown.lock() {
        match bye {
            Ok(200..=299) => t.bye_ok += 1,
            _ => t.bye_failed += 1,
        }
        if by_server {
            t.partner_hung_up_by_server += 1;
        } else {
            t.partner_hung_up_by_us += 1;
        }
    }
}

async fn sessions_active(ctx: &Ctx) -> Option<f64> {
    let text = ctx
        .http
        .get(format!("{}/metrics", ctx.args.http))
        .bearer_auth(&ctx.args.key)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric_value(&text, "tonewall_sessions_active")
}

/// The value of an unlabelled (or first labelled) sample of `name` in Prometheus text.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        let v = match rest.find('}') {
            Some(i) => &rest[i + 1..],
            None => rest,
        };
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Raise the soft open-files limit to the hard one (each leg holds a socket). Returns the
/// soft limit now in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

fn local_ip_for(server: SocketAddr) -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let bind: SocketAddr = if server.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(std::io::Error::other)?;
        let s = StdUdpSocket::bind(bind)?;
        s.connect(server)?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(server.ip())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fds = raise_fd_limit();
    if fds < 2 * args.sessions as u64 + 64 && !args.json {
        eprintln!(
            "warning: open-files limit {fds} is too low for {} sessions",
            args.sessions
        );
    }
    let shared = Arc::new(Shared::new());
    let n_shards = args.media_threads.max(1);
    let mut shard_tx = Vec::new();
    let mut shard_handles = Vec::new();
    for k in 0..n_shards {
        let (tx, rx) = std_mpsc::channel();
        let sh = shared.clone();
        let phase = media::shard_phase(k, n_shards);
        shard_handles.push(std::thread::spawn(move || media::run_shard(rx, sh, phase)));
        shard_tx.push(tx);
    }
    let local_ip = local_ip_for(args.sip);
    let ep = Endpoint::bind(local_ip, args.sip).await?;
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        ep,
        local_ip,
        shards: shard_tx,
        established: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        failures: Mutex::new(BTreeMap::new()),
        setup_ms: Mutex::new(Vec::new()),
        ended_by_server: AtomicUsize::new(0),
        teardown: Mutex::new(Teardown::default()),
        args: args.clone(),
    });
    let say = |s: String| {
        if !args.json {
            eprintln!("{s}");
        }
    };

    // Ramp.
    let n = args.sessions;
    say(format!("ramping {n} sessions at {}/s ...", args.rate));
    let (stop_tx, stop_rx) = watch::channel(None);
    let ramp_start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(
            ramp_start + Duration::from_secs_f64(i as f64 / args.rate.max(0.1)),
        )
        .await;
        tasks.push(tokio::spawn(run_session(ctx.clone(), i, stop_rx.clone())));
        let failed = ctx.failed.load(Ordering::Relaxed);
        if i >= 20 && failed >= 20 && ctx.established.load(Ordering::Relaxed) == 0 {
            say(format!(
                "the first {failed} sessions all failed: stopping the ramp"
            ));
            break;
        }
    }
    let n = tasks.len();
    let setup_deadline = Instant::now() + Duration::from_secs(2 * args.setup_timeout + 15);
    while ctx.established.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed) < n
        && Instant::now() < setup_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(format!(
        "established {} failed {}; settling {} s, measuring {} s ...",
        ctx.established.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
        args.settle,
        args.duration
    ));

    // Measurement window (skipped when nothing is up).
    let settle = if ctx.established.load(Ordering::Relaxed) == 0 {
        0
    } else {
        args.settle
    };
    let ws = Instant::now() + Duration::from_secs(settle);
    let window = if settle == 0 && args.settle > 0 {
        0
    } else {
        args.duration
    };
    let we = ws + Duration::from_secs(window);
    let base = shared.start;
    let ns = |t: Instant| t.into_std().saturating_duration_since(base).as_nanos() as u64;
    shared.window_end_ns.store(ns(we), Ordering::Relaxed);
    shared.window_start_ns.store(ns(ws), Ordering::Relaxed);
    let pid = args.pid.map(|p| p.to_string());
    tokio::time::sleep_until(ws).await;
    let srv0 = pid.as_deref().and_then(stats::cpu_seconds);
    let own0 = stats::cpu_seconds("self");
    tokio::time::sleep_until(we).await;
    let srv1 = pid.as_deref().and_then(stats::cpu_seconds);
    let own1 = stats::cpu_seconds("self");
    // Let in-flight packets of the window arrive before anything is hung up.
    tokio::time::sleep(media::drain_time(args.holdback_ms)).await;

    // Teardown.
    say("hanging up ...".into());
    let _ = stop_tx.send(Some(Instant::now()));
    for t in tasks {
        let _ = t.await;
    }
    shared.quit.store(true, Ordering::Relaxed);
    let mut ms = MediaStats::default();
    for h in shard_handles {
        if let Ok(Ok(Ok(s))) = tokio::task::spawn_blocking(move || h.join()).await {
            ms.merge(&s);
        }
    }
    let mut active = sessions_active(&ctx).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while active.map(|a| a > 0.0).unwrap_or(false) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        active = sessions_active(&ctx).await;
    }

    // Report.
    let window_s = window as f64;
    let relayed = ms.c2r.recv_window + ms.r2c.recv_window;
    let server_cpu = srv0.zip(srv1).map(|(a, b)| b - a);
    let minus_hb = |v: Option<f64>| v.map(|x| x - args.holdback_ms as f64);
    let c2r_sum = ms.c2r.latency.summary();
    let mut setup = ctx.setup_ms.lock().map(|v| v.clone()).unwrap_or_default();
    let report = Report {
        sessions_requested: args.sessions,
        sessions_established: ctx.established.load(Ordering::Relaxed),
        sessions_failed: ctx.failed.load(Ordering::Relaxed),
        failures: ctx.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        sessions_ended_by_server: ctx.ended_by_server.load(Ordering::Relaxed),
        setup_ms_p50: pct(&mut setup, 0.5),
        setup_ms_p99: pct(&mut setup, 0.99),
        window_s,
        customer_to_rep: direction(&ms.c2r),
        rep_to_customer: direction(&ms.r2c),
        packets_per_s_relayed: relayed as f64 / window_s.max(1e-9),
        holdback_ms: args.holdback_ms,
        c2r_latency_minus_holdback_p50_ms: minus_hb(c2r_sum.p50_ms),
        c2r_latency_minus_holdback_p99_ms: minus_hb(c2r_sum.p99_ms),
        rfc4733_events_sent: ms.events_sent,
        telephone_events_leaked: ms.c2r.events_received,
        server_cpu_s: server_cpu,
        server_cpu_us_per_relayed_packet: server_cpu
            .filter(|_| relayed > 0)
            .map(|c| c * 1e6 / relayed as f64),
        server_cpu_pct: server_cpu.map(|c| c * 100.0 / window_s.max(1e-9)),
        loadgen_cpu_s: own0.zip(own1).map(|(a, b)| b - a),
        send_errors: ms.send_errors,
        late_ticks: ms.late_ticks,
        teardown: ctx.teardown.lock().map(|t| t.clone()).unwrap_or_default(),
        tonewall_requests_in: ctx
            .ep
            .requests_in
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
        sessions_active_after: active,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    // A non-zero exit for CI: anything failed, leaked, crossed or stayed behind.
    let clean = report.sessions_failed == 0
        && report.sessions_established == args.sessions
        && report.telephone_events_leaked == 0
        && report.customer_to_rep.misrouted + report.rep_to_customer.misrouted == 0
        && report.sessions_active_after == Some(0.0);
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lookup() {
        let t = "# HELP tonewall_sessions_active x\n# TYPE tonewall_sessions_active gauge\n\
                 tonewall_sessions_active_total 9\ntonewall_sessions_active 3\n";
        assert_eq!(metric_value(t, "tonewall_sessions_active"), Some(3.0));
        assert_eq!(
            metric_value(
                "tonewall_sessions_active{a=\"b\"} 0\n",
                "tonewall_sessions_active"
            ),
            Some(0.0)
        );
        assert_eq!(metric_value("", "tonewall_sessions_active"), None);
    }

    #[test]
    fn sample_config_parses() {
        let text = include_str!("../loadgen.toml");
        let cfg: tonewall::config::Config = toml::from_str(text).expect("examples/loadgen.toml");
        assert_eq!(cfg.media.ports, "10000-19999");
    }
}
