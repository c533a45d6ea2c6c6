//! End-to-end tests of the secure bridge against the real binary on loopback, with a small
//! SIP user agent over UDP and TCP and real RTP: transcoding, hold and resume, DELETE,
//! RTP timeout, and 1,000 sessions that leave nothing behind.

mod common;

use std::time::Duration;

use common::uac::{Conn, Leg};
use common::{Server, ServerOpts, API_KEY};
use serde_json::{json, Value};

async fn api(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{}{}", server.http, path))
        .bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create(server: &Server) -> (String, String) {
    let (st, s) = api(
        server,
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({"call_id": "c1", "rep": "r1"})),
    )
    .await;
    assert_eq!(st, 201, "{s}");
    (
        s["id"].as_str().expect("id").to_string(),
        s["dnis"].as_str().expect("dnis").to_string(),
    )
}

async fn wait_state(server: &Server, id: &str, want: &str) -> Value {
    for _ in 0..200 {
        let (_, s) = api(
            server,
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
        if s["state"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("session {id} never reached {want}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.http))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// 160 μ-law samples of a loud, varied waveform.
fn ulaw_frame(n: usize) -> Vec<u8> {
    common::pcap::audio_frame(n).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_rep_udp_customer_transcode_hold_resume_and_delete() {
    let server = Server::start(ServerOpts::default());
    let (id, dnis) = create(&server).await;
    let target: std::net::SocketAddr = server.sip_target().parse().expect("addr");
    // The representative over TCP speaking PCMA; the customer over UDP speaking PCMU.
    let mut rep = Leg::dial(Conn::tcp(target).await, target, &dnis, 8, "PCMA").await;
    assert!(rep.answer.contains("PCMA"), "rep answer: {}", rep.answer);
    let mut cust = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
    assert!(
        cust.answer.contains("PCMU"),
        "customer answer: {}",
        cust.answer
    );
    wait_state(&server, &id, "bridged").await;

    // Customer -> rep: PCMU in, PCMA out, same sound; an RFC 4733 press in between is dropped.
    let mut seq = 100u16;
    for i in 0..20u16 {
        let ts = 1000 + 160 * u32::from(i);
        let frame = ulaw_frame(i as usize);
        cust.send_rtp(0, seq, ts, 0xC0FFEE, false, &frame).await;
        seq += 1;
        if i == 10 {
            // A key press in the same sequence space, as a phone sends it.
            cust.send_rtp(101, seq, ts, 0xC0FFEE, true, &[5, 10, 0, 160])
                .await;
            cust.send_rtp(101, seq + 1, ts, 0xC0FFEE, false, &[5, 0x8a, 0, 160])
                .await;
            seq += 2;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = rep.recv_rtp(Duration::from_millis(400)).await;
    let relayed: Vec<_> = got.iter().filter(|p| p.payload.len() == 160).collect();
    assert!(
        got.iter().all(|p| p.pt == 8),
        "rep gets PCMA only (no telephone-event)"
    );
    // Find our frames by sound: decode both laws and compare.
    let mut matched = 0;
    for i in 0..20usize {
        let sent: Vec<i32> = ulaw_frame(i)
            .iter()
            .map(|u| i32::from(common::tones::unulaw(*u)))
            .collect();
        if relayed.iter().any(|p| {
            p.payload
                .iter()
                .zip(&sent)
                .all(|(a, s)| (i32::from(common::tones::unalaw(*a)) - s).abs() <= s.abs() / 8 + 16)
        }) {
            matched += 1;
        }
    }
    assert!(matched >= 18, "transcoded frames found: {matched}/20");
    // Sequence numbers of what the rep got are continuous (the dropped event left no gap).
    let seqs: Vec<u16> = relayed.iter().map(|p| p.seq).collect();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "continuous seq: {seqs:?}");
    }

    // Hold: the customer re-INVITEs sendonly; tonewall answers recvonly and stops sending.
    let answer = cust.reinvite(0, "PCMU", "sendonly").await;
    assert!(answer.contains("a=recvonly"), "hold answer: {answer}");
    let _ = cust.recv_rtp(Duration::from_millis(100)).await; // drain in-flight packets
    for i in 0..10u16 {
        rep.send_rtp(8, 500 + i, 160 * u32::from(i), 0xBEEF, false, &[0xd5; 160])
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during_hold = cust.recv_rtp(Duration::from_millis(200)).await;
    assert!(
        during_hold.is_empty(),
        "nothing sent to a leg on hold: {}",
        during_hold.len()
    );
    // Resume.
    let answer = cust.reinvite(0, "PCMU", "sendrecv").await;
    assert!(
        answer.contains("a=sendrecv") || !answer.contains("a=recvonly"),
        "{answer}"
    );
    for i in 10..20u16 {
        rep.send_rtp(8, 500 + i, 160 * u32::from(i), 0xBEEF, false, &[0xd5; 160])
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = cust.recv_rtp(Duration::from_millis(200)).await;
    assert!(
        after.len() >= 5,
        "relay resumes after hold: {}",
        after.len()
    );
    assert!(after.iter().all(|p| p.pt == 0), "customer gets PCMU");

    // DELETE ends the session and hangs up both legs.
    let (st, s) = api(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{s}");
    assert!(rep.expect_bye(Duration::from_secs(5)).await, "rep got BYE");
    assert!(
        cust.expect_bye(Duration::from_secs(5)).await,
        "customer got BYE"
    );
    wait_state(&server, &id, "ended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_timeout_ends_the_session() {
    let server = Server::start(
        ServerOpts {
            extra: String::new(),
            ..ServerOpts::default()
        }
        .with_rtp_timeout(1),
    );
    let (id, dnis) = create(&server).await;
    let target: std::net::SocketAddr = server.sip_target().parse().expect("addr");
    let mut rep = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
    let mut cust = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
    wait_state(&server, &id, "bridged").await;
    // Nobody sends RTP: after rtp_timeout_s both legs are hung up.
    assert!(
        cust.expect_bye(Duration::from_secs(5)).await,
        "customer got BYE"
    );
    assert!(rep.expect_bye(Duration::from_secs(5)).await, "rep got BYE");
    let s = wait_state(&server, &id, "ended").await;
    assert_eq!(s["legs"]["rep"]["state"], "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sessions_leave_nothing_behind() {
    let server = Server::start(ServerOpts {
        dnis: "+61390000000-+61390001999".into(),
        rtp_ports: 400,
        ..ServerOpts::default()
    });
    let target: std::net::SocketAddr = server.sip_target().parse().expect("addr");
    let before = metrics(&server).await;
    let run = |n: usize| {
        let http = server.http.clone();
        async move {
            for _ in 0..n {
                let client = reqwest::Client::new();
                let s: Value = client
                    .post(format!("{http}/v1/sessions"))
                    .bearer_auth(API_KEY)
                    .json(&json!({"call_id": "c", "rep": "r"}))
                    .send()
                    .await
                    .expect("post")
                    .json()
                    .await
                    .expect("json");
                let dnis = s["dnis"].as_str().expect("dnis").to_string();
                let mut rep = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
                let mut cust = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
                cust.send_rtp(0, 1, 0, 1, false, &[0xff; 160]).await;
                rep.send_rtp(0, 1, 0, 2, false, &[0xff; 160]).await;
                cust.bye().await;
                assert!(rep.expect_bye(Duration::from_secs(5)).await);
            }
        }
    };
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(run(50))).collect();
    for t in tasks {
        t.await.expect("worker");
    }
    // Everything is released (give the server a moment to finish its teardown).
    let mut after = String::new();
    for _ in 0..100 {
        after = metrics(&server).await;
        if metric(&after, "tonewall_sessions_active") == 0.0
            && metric(&after, "tonewall_legs_active") == 0.0
            && metric(&after, "tonewall_rtp_ports_free")
                == metric(&before, "tonewall_rtp_ports_free")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&after, "tonewall_sessions_active"), 0.0, "{after}");
    assert_eq!(metric(&after, "tonewall_legs_active"), 0.0);
    assert_eq!(
        metric(&after, "tonewall_rtp_ports_free"),
        metric(&before, "tonewall_rtp_ports_free"),
        "every RTP port back in the pool"
    );
    assert!(metric(&before, "tonewall_rtp_ports_free") > 0.0);
    assert_eq!(
        metric(&after, "tonewall_dnis_allocated"),
        0.0,
        "no DNIS left allocated"
    );
    let tasks_before = metric(&before, "tonewall_tasks_alive");
    let tasks_after = metric(&after, "tonewall_tasks_alive");
    assert!(
        tasks_after <= tasks_before + 2.0,
        "tasks back where they started: {tasks_before} -> {tasks_after}"
    );
    let rss_before = metric(&before, "tonewall_memory_rss_bytes");
    let rss_after = metric(&after, "tonewall_memory_rss_bytes");
    eprintln!(
        "1000 sessions: rss {rss_before} -> {rss_after} bytes, tasks {tasks_before} -> {tasks_after}"
    );
    assert!(rss_before > 0.0);
    // Ended sessions stay readable for 60 s and SIP transactions linger for their RFC 3261
    // timers (32 s), so some growth is expected right after the run; 1,000 sessions with a
    // per-session leak of even 40 KB would exceed this bound.
    assert!(
        rss_after < rss_before + 40.0 * 1024.0 * 1024.0,
        "memory back near where it started: {rss_before} -> {rss_after}"
    );
    assert_eq!(
        metric(&after, "tonewall_bridges_active"),
        0.0,
        "every bridge gone"
    );
    assert!(
        metric(&after, "tonewall_sip_requests_total") > 0.0
            || after.contains("tonewall_sip_requests_total")
    );
}
