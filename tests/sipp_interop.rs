//! Interop with SIPp over real SIP and RTP: SIPp dials the DNIS as the representative and as
//! the customer; the customer plays a capture with RFC 4733 key presses of a card number.
//! Asserts what the representative's RTP socket received, the session's masked fields, the
//! hang-up propagation, each SIP rejection of SPEC §6, and that nothing the server wrote
//! carries the card number.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pcap, Server, ServerOpts, Sipp, API_KEY};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

const PAN: &str = "4539576823184677";

struct Api {
    http: String,
    client: reqwest::Client,
    /// Every response body, for the leak check.
    seen: Arc<Mutex<String>>,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            http: server.http.clone(),
            client: reqwest::Client::new(),
            seen: Arc::new(Mutex::new(String::new())),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.http, path))
            .bearer_auth(API_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        self.seen.lock().expect("lock").push_str(&text);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self) -> Value {
        let (status, s) = self
            .call(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({"call_id": "carrier-call-1", "rep": "rep-1"})),
            )
            .await;
        assert_eq!(status, 201, "create: {s}");
        s
    }

    async fn get(&self, id: &str) -> Value {
        let (status, s) = self
            .call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!(status, 200, "get: {s}");
        s
    }

    async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.get(id).await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, path: &str) -> String {
        let t = self
            .client
            .get(format!("{}{}", self.http, path))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        self.seen.lock().expect("lock").push_str(&t);
        t
    }
}

/// Collect an SSE stream into a string until the task is aborted.
fn collect_sse(api: &Api, id: &str) -> (Arc<Mutex<String>>, tokio::task::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let out = buf.clone();
    let req = api
        .client
        .get(format!("{}/v1/sessions/{id}/events", api.http))
        .bearer_auth(API_KEY);
    let task = tokio::spawn(async move {
        let Ok(mut resp) = req.send().await else {
            return;
        };
        while let Ok(Some(chunk)) = resp.chunk().await {
            out.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    (buf, task)
}

/// What the representative's phone received.
#[derive(Default)]
struct Heard {
    packets: Vec<(u8, Vec<u8>)>,
    tonewall: Option<std::net::SocketAddr>,
}

/// The representative's RTP socket: records everything and talks back (PCMU every 20 ms,
/// once it knows where tonewall sends from).
async fn rep_phone(sock: Arc<UdpSocket>, heard: Arc<Mutex<Heard>>) {
    let tx = sock.clone();
    let heard_tx = heard.clone();
    tokio::spawn(async move {
        let mut seq: u16 = 1;
        let mut ts: u32 = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let to = heard_tx.lock().expect("lock").tonewall;
            if let Some(to) = to {
                let mut p = vec![0x80, 0];
                p.extend_from_slice(&seq.to_be_bytes());
                p.extend_from_slice(&ts.to_be_bytes());
                p.extend_from_slice(&0x5245_5031u32.to_be_bytes());
                p.extend_from_slice(&[0x7f; 160]);
                if tx.send_to(&p, to).await.is_err() {
                    return;
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
            }
        }
    });
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        if n < 12 {
            continue;
        }
        let mut h = heard.lock().expect("lock");
        h.tonewall.get_or_insert(from);
        h.packets.push((buf[1] & 0x7f, buf[12..n].to_vec()));
    }
}

fn assert_no_card_data(everything: &str) {
    for run in common::digit_runs(PAN, 7) {
        assert!(
            !everything.contains(&run),
            "card data leaked: a run of {} digits of the PAN appears in the server's output",
            run.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_legs_are_bridged_and_rfc4733_digits_masked() {
    if !common::sipp_available() {
        return;
    }
    let mut server = Server::start(ServerOpts::default());
    let api = Api::new(&server);
    let session = api.create().await;
    let id = session["id"].as_str().expect("id").to_string();
    let dnis = session["dnis"].as_str().expect("dnis").to_string();
    assert!(
        dnis.starts_with("+6139000100"),
        "dnis from the pool: {dnis}"
    );
    let (sse, sse_task) = collect_sse(&api, &id);

    // The representative: SIPp signalling, media to a socket we own.
    let rep_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let rep_port = rep_sock.local_addr().expect("addr").port();
    let heard = Arc::new(Mutex::new(Heard::default()));
    let rep_task = tokio::spawn(rep_phone(rep_sock, heard.clone()));
    let target = server.sip_target();
    let rep = common::sipp_waiting_leg("rep", &target, &dnis, rep_port);
    api.wait_for(&id, "rep leg up", |s| s["legs"]["rep"]["state"] == "up")
        .await;
    // Parked: the representative hears silence before the customer arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let h = heard.lock().expect("lock");
        assert!(
            h.packets.len() >= 5,
            "parked leg gets silence: {}",
            h.packets.len()
        );
        assert!(h
            .packets
            .iter()
            .all(|(pt, p)| *pt == 0 && p.iter().all(|b| *b == 0xff)));
    }

    // The customer: SIPp playing audio and the card digits as RFC 4733.
    let mut stream = pcap::StreamBuilder::new(0x1234_5678, 0, 101);
    stream.audio(10);
    // "98*" is cleared by the star before the card number.
    stream.keys(&format!("98*{PAN}#12307"));
    stream.keys("37#");
    stream.audio(10);
    let pcap_path = server.dir.path().join("customer.pcap");
    pcap::write(&pcap_path, &stream.packets).expect("pcap");
    let play_ms = stream.packets.last().map(|p| p.at_ms).unwrap_or(0);
    let customer = Sipp::start(
        "customer",
        &common::scenario("customer_uac.xml"),
        &target,
        &dnis,
        &[
            "-key",
            "pcap",
            pcap_path.to_str().expect("path"),
            "-d",
            &(play_ms + 2500).to_string(),
            "-key",
            "codec_pt",
            "0",
            "-key",
            "codec_name",
            "PCMU",
            "-mp",
            &common::free_port_block(4).to_string(),
        ],
    );
    let s = api
        .wait_for(&id, "bridged", |s| s["state"] == "bridged")
        .await;
    assert_eq!(s["legs"]["customer"]["state"], "up");

    // Garbage on the SIP port and on tonewall's RTP port changes nothing.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for g in [
        &b"\x00\x01garbage"[..],
        b"INVITE nonsense\r\n\r\n",
        &[0xffu8; 300],
    ] {
        let _ = junk.send_to(g, &target);
        if let Some(to) = heard.lock().expect("lock").tonewall {
            let _ = junk.send_to(g, to);
        }
    }

    let s = api
        .wait_for(&id, "all digits", |s| {
            s["fields"]["cvv"]["complete"] == true
        })
        .await;
    assert_eq!(s["state"], "bridged", "{s}");
    assert_eq!(s["fields"]["pan"]["masked"], "************4677");
    assert_eq!(s["fields"]["pan"]["length"], 16);
    assert_eq!(s["fields"]["pan"]["complete"], true);
    assert_eq!(s["fields"]["pan"]["valid"], true);
    assert_eq!(s["fields"]["expiry"]["masked"], "****");
    assert_eq!(s["fields"]["expiry"]["valid"], true);
    assert_eq!(s["fields"]["cvv"]["masked"], "***");
    assert_eq!(s["fields"]["cvv"]["length"], 3);

    // The customer hangs up; tonewall hangs up the representative (SIPp rep expects BYE).
    let (ok, out) = tokio::task::spawn_blocking(move || customer.wait(Duration::from_secs(40)))
        .await
        .expect("join");
    assert!(ok, "customer SIPp failed:\n{out}");
    let (ok, out) = tokio::task::spawn_blocking(move || rep.wait(Duration::from_secs(20)))
        .await
        .expect("join");
    assert!(ok, "rep SIPp failed (no BYE from tonewall?):\n{out}");
    let s = api.wait_for(&id, "ended", |s| s["state"] == "ended").await;
    assert_eq!(s["legs"]["customer"]["state"], "ended", "{s}");

    // What the representative heard: our audio, byte for byte, and no telephone-event.
    rep_task.abort();
    {
        let h = heard.lock().expect("lock");
        let events = h.packets.iter().filter(|(pt, _)| *pt == 101).count();
        assert_eq!(
            events, 0,
            "telephone-event packets reached the representative"
        );
        assert!(
            h.packets.iter().all(|(_, p)| p.len() == 160),
            "every packet the rep got is a 20 ms G.711 frame"
        );
        let frames: Vec<[u8; 160]> = (0..stream.audio_packets).map(pcap::audio_frame).collect();
        let relayed = h
            .packets
            .iter()
            .filter(|(pt, p)| *pt == 0 && frames.iter().any(|f| f[..] == p[..]))
            .count();
        assert!(
            relayed * 100 >= stream.audio_packets * 95,
            "customer audio relayed: {relayed} of {}",
            stream.audio_packets
        );
    }

    let metrics = api.text("/metrics").await;
    let masked: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tonewall_dtmf_masked_total{method=\"rfc4733\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(masked, 28.0, "one masked digit per key press:\n{metrics}");

    // Nothing the server wrote carries the card number.
    sse_task.abort();
    let sse = sse.lock().expect("lock").clone();
    assert!(
        sse.contains("\"type\":\"digit\"") || sse.contains("digit"),
        "SSE saw digits: {sse}"
    );
    let log = server.stop();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "debug logs captured"
    );
    let everything = format!(
        "{log}\n{sse}\n{}\n{metrics}",
        api.seen.lock().expect("lock")
    );
    assert_no_card_data(&everything);
}

async fn expect_refused(server: &Server, dnis: &str, code: u16) {
    let sf = common::refused_scenario(server.dir.path(), code);
    let target = server.sip_target();
    let dnis = dnis.to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        Sipp::start(
            "probe",
            &sf,
            &target,
            &dnis,
            &["-mp", &common::free_port_block(4).to_string()],
        )
        .wait(Duration::from_secs(20))
    })
    .await
    .expect("join");
    assert!(ok, "expected {code}:\n{out}");
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_rejections_unknown_third_leg_and_capacity() {
    if !common::sipp_available() {
        return;
    }
    // Two RTP port pairs: exactly one bridged session's worth.
    let server = Server::start(ServerOpts {
        rtp_ports: 4,
        ..ServerOpts::default()
    });
    let api = Api::new(&server);
    // 404: a number of the pool that no session holds, and one outside every pool.
    expect_refused(&server, "+61390001000", 404).await;
    expect_refused(&server, "+15550000000", 404).await;

    let s = api.create().await;
    let id = s["id"].as_str().expect("id").to_string();
    let dnis = s["dnis"].as_str().expect("dnis").to_string();
    let (sse, sse_task) = collect_sse(&api, &id);
    let target = server.sip_target();
    let rep_port = common::free_port();
    let rep = common::sipp_waiting_leg("rep", &target, &dnis, rep_port);
    api.wait_for(&id, "rep up", |s| s["legs"]["rep"]["state"] == "up")
        .await;
    let mut stream = pcap::StreamBuilder::new(7, 0, 101);
    stream.audio(5);
    let pcap_path = server.dir.path().join("short.pcap");
    pcap::write(&pcap_path, &stream.packets).expect("pcap");
    let customer = Sipp::start(
        "customer",
        &common::scenario("customer_uac.xml"),
        &target,
        &dnis,
        &[
            "-key",
            "pcap",
            pcap_path.to_str().expect("path"),
            "-d",
            "4000",
            "-key",
            "codec_pt",
            "8",
            "-key",
            "codec_name",
            "PCMA",
            "-mp",
            &common::free_port_block(4).to_string(),
        ],
    );
    api.wait_for(&id, "bridged", |s| s["state"] == "bridged")
        .await;
    // Both port pairs are taken: a second session's leg gets 503 + Retry-After.
    let s2 = api.create().await;
    let dnis2 = s2["dnis"].as_str().expect("dnis").to_string();
    expect_refused(&server, &dnis2, 503).await;

    // 486: a third INVITE on a bridged DNIS, with an alarm.
    expect_refused(&server, &dnis, 486).await;
    let (ok, out) = tokio::task::spawn_blocking(move || customer.wait(Duration::from_secs(30)))
        .await
        .expect("join");
    assert!(ok, "customer:\n{out}");
    let (ok, out) = tokio::task::spawn_blocking(move || rep.wait(Duration::from_secs(20)))
        .await
        .expect("join");
    assert!(ok, "rep:\n{out}");
    // After its session, the DNIS is quarantined: 410.
    expect_refused(&server, &dnis, 410).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sse_task.abort();
    let sse = sse.lock().expect("lock").clone();
    assert!(sse.contains("alarm"), "third leg raised an alarm: {sse}");
    let metrics = api.text("/metrics").await;
    for (reason, min) in [("unknown", 2.0), ("third_leg", 1.0), ("expired", 1.0)] {
        let c = counter(
            &metrics,
            &format!("tonewall_dnis_rejected_total{{reason=\"{reason}\"}}"),
        );
        assert!(c >= min, "rejected {reason}: {c}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_rejections_forbidden_peer_and_expired_dnis() {
    if !common::sipp_available() {
        return;
    }
    let server = Server::start(ServerOpts {
        ttl_s: 1,
        peers: "192.0.2.0/24".into(),
        ..ServerOpts::default()
    });
    let api = Api::new(&server);
    let s = api.create().await;
    let dnis = s["dnis"].as_str().expect("dnis").to_string();
    // 403: loopback is not an allowed peer of this trunk.
    expect_refused(&server, &dnis, 403).await;
    let id = s["id"].as_str().expect("id").to_string();
    // The DNIS expires when no leg arrives in time.
    let s = api
        .wait_for(&id, "expiry", |s| {
            s["state"] == "failed" || s["state"] == "ended"
        })
        .await;
    assert!(
        s.get("reason").is_some(),
        "expired session has a reason: {s}"
    );
}
