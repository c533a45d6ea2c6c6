//! The representative's page (`/ui/`) against the real server: its HTTP responses (framable,
//! strict CSP, no card data), and headless Chromium driven by `tests/browser/ui.mjs`
//! (playwright-core with the system Chromium) while this test plays the phones: two SIPp
//! legs per session (`tests/sipp/rep_uac.xml`: INVITE, ACK, then wait for tonewall's BYE)
//! dial the DNIS the page shows, with their media on RTP sockets this test owns; the
//! representative's socket talks, and the customer's sends the RFC 4733 key presses the
//! script asks for, from the address SIPp put in its SDP.
//!
//! Browser tests skip when Chromium, node or `tests/browser/node_modules` is missing, and
//! fail instead when `CI` is set. Screenshots go to `target/ui-screenshots/`, or to `docs/`
//! with `TONEWALL_UPDATE_SCREENSHOTS=1`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Server, ServerOpts, Sipp, API_KEY};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The card numbers the scenarios type (for the leak checks).
const CARDS: [&str; 4] = [
    "4539576823184677",
    "4539576823184678",
    "4000000000000002",
    "4000000000000119",
];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether the browser tests can run; in CI their absence is a failure.
fn browser_available() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing: Vec<&str> = [
        (!chromium().exists()).then_some("chromium (apt-get install chromium)"),
        (!node).then_some("node"),
        (!browser_dir().join("node_modules/playwright-core").exists()).then_some(
            "playwright-core (cd tests/browser && npm install --no-save playwright-core@1)",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the browser tests cannot run: missing {missing:?}");
    }
    eprintln!("skipping: missing {missing:?}");
    false
}

fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var_os("TONEWALL_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs")
    } else {
        root.join("target/ui-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// RFC 4733 event code of a keypad key.
fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => key.to_digit(10).and_then(|d| u8::try_from(d).ok()),
        '*' => Some(10),
        '#' => Some(11),
        _ => None,
    }
}

/// The customer's phone: RTP sequence and clock of its telephone-event stream.
struct Keypad {
    seq: u16,
    ts: u32,
}

impl Keypad {
    /// Each key: start (marker), two continuations 20 ms apart, three end packets; a new
    /// timestamp per press.
    async fn press(&mut self, leg: &Phone, keys: &str) {
        const SSRC: u32 = 0xC0FF_EE01;
        for key in keys.chars() {
            let code = event_code(key).expect("keypad key");
            for (i, dur) in [160u16, 320, 480].into_iter().enumerate() {
                let d = dur.to_be_bytes();
                leg.send_rtp(
                    101,
                    self.seq,
                    self.ts,
                    SSRC,
                    i == 0,
                    &[code, 10, d[0], d[1]],
                )
                .await;
                self.seq = self.seq.wrapping_add(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for _ in 0..3 {
                let d = 640u16.to_be_bytes();
                leg.send_rtp(
                    101,
                    self.seq,
                    self.ts,
                    SSRC,
                    false,
                    &[code, 0x8a, d[0], d[1]],
                )
                .await;
                self.seq = self.seq.wrapping_add(1);
            }
            self.ts = self.ts.wrapping_add(1600);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
}

/// One leg's media, owned by the test while SIPp does the leg's signalling.
struct Phone {
    sock: std::sync::Arc<tokio::net::UdpSocket>,
    /// tonewall's address for this leg, learned from the first packet it sends us.
    remote: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Phone {
    /// Bind an RTP socket; when `talk`, send PCMU every 20 ms once tonewall's address is
    /// known (the parked leg learns it from tonewall's silence).
    async fn new(talk: bool) -> Phone {
        let sock = std::sync::Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind rtp"),
        );
        let remote = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (s, r) = (sock.clone(), remote.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (mut seq, mut ts) = (1u16, 0u32);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    got = s.recv_from(&mut buf) => {
                        if let Ok((_, from)) = got {
                            r.lock().expect("lock").get_or_insert(from);
                        }
                    }
                    _ = tick.tick(), if talk => {
                        let to = *r.lock().expect("lock");
                        if let Some(to) = to {
                            let mut p = vec![0x80, 0];
                            p.extend_from_slice(&seq.to_be_bytes());
                            p.extend_from_slice(&ts.to_be_bytes());
                            p.extend_from_slice(&0x5245_5031u32.to_be_bytes());
                            p.extend_from_slice(&[0xff; 160]);
                            let _ = s.send_to(&p, to).await;
                            seq = seq.wrapping_add(1);
                            ts = ts.wrapping_add(160);
                        }
                    }
                }
            }
        });
        Phone { sock, remote, task }
    }

    /// Wait until tonewall has sent us something (so we know where to send).
    async fn wait_remote(&self) -> SocketAddr {
        for _ in 0..250 {
            if let Some(a) = *self.remote.lock().expect("lock") {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("tonewall never sent RTP to this leg");
    }

    async fn send_rtp(&self, pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) {
        let to = self.wait_remote().await;
        let mut p = Vec::with_capacity(12 + payload.len());
        p.push(0x80);
        p.push(pt | if marker { 0x80 } else { 0 });
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        let _ = self.sock.send_to(&p, to).await;
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A leg: SIPp's signalling plus our media socket.
struct SippLeg {
    sipp: Option<Sipp>,
    phone: Phone,
}

impl SippLeg {
    async fn dial(server: &Server, dnis: &str, name: &str, talk: bool) -> SippLeg {
        let phone = Phone::new(talk).await;
        let port = phone.sock.local_addr().expect("addr").port();
        let sipp = common::sipp_waiting_leg(name, &server.sip_target(), dnis, port);
        SippLeg {
            sipp: Some(sipp),
            phone,
        }
    }

    /// SIPp ends successfully only after tonewall's BYE (answered 200).
    async fn expect_bye(&mut self) -> (bool, String) {
        let Some(sipp) = self.sipp.take() else {
            return (false, "already waited".into());
        };
        tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(15)))
            .await
            .expect("join")
    }
}

/// Run one scenario of `ui.mjs`, answering its requests for phones.
async fn run_scenario(server: &Server, scenario: &str) {
    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir().join("ui.mjs"))
        .arg(scenario)
        .current_dir(browser_dir())
        .env("TONEWALL_URL", &server.http)
        .env("TONEWALL_API_KEY", API_KEY)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .env("CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut legs: Vec<(SippLeg, SippLeg)> = Vec::new();
    let mut keypad = Keypad { seq: 1, ts: 8000 };
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(_) => panic!("{scenario}: the browser script exited without DONE"),
            Err(_) => panic!("{scenario}: the browser script timed out"),
        };
        if let Some(dnis) = line.strip_prefix("DIAL ") {
            // The representative first (parked, then talking), then the customer.
            let rep = SippLeg::dial(server, dnis, "rep", true).await;
            rep.phone.wait_remote().await;
            let cust = SippLeg::dial(server, dnis, "customer", false).await;
            cust.phone.wait_remote().await;
            legs.push((rep, cust));
        } else if let Some(keys) = line.strip_prefix("KEYS ") {
            let (_, cust) = legs.last().expect("KEYS before DIAL");
            keypad.press(&cust.phone, keys).await;
        } else if line == "ENDED" {
            let (rep, cust) = legs.last_mut().expect("ENDED before DIAL");
            let (ok, out) = rep.expect_bye().await;
            assert!(ok, "rep leg (SIPp) hung up by tonewall:\n{out}");
            let (ok, out) = cust.expect_bye().await;
            assert!(ok, "customer leg (SIPp) hung up by tonewall:\n{out}");
        } else if line == "DONE" {
            break;
        } else if let Some(why) = line.strip_prefix("FAIL ") {
            let log = server.log();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("{scenario}: {why}\n--- server log tail ---\n{tail}");
        } else {
            eprintln!("[{scenario}] {line}");
            continue;
        }
        stdin.write_all(b"OK\n").await.expect("answer the script");
        stdin.flush().await.expect("flush");
    }
    let status = child.wait().await.expect("node exit");
    assert!(status.success(), "{scenario}: node exited with {status}");
}

fn assert_no_card_data(what: &str, text: &str) {
    for card in CARDS {
        for run in common::digit_runs(card, 7) {
            let distinct = run.bytes().collect::<std::collections::HashSet<_>>().len();
            if distinct < 3 {
                // "4000000" says too little about a card to be a finding.
                continue;
            }
            assert!(
                !text.contains(&run),
                "{what} carries {} consecutive digits of a card number",
                run.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_is_served_framable_with_a_strict_csp() {
    let server = Server::start(ServerOpts::default());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/ui", server.http))
        .send()
        .await
        .expect("get");
    assert!(r.status().is_redirection(), "/ui redirects: {}", r.status());
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui/")
    );
    let mut everything = String::new();
    for (path, ctype) in [
        ("/ui/", "text/html"),
        ("/ui/?call_id=c1&rep=r1", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        // No API key needed for the page itself.
        let r = client
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let ct = h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.starts_with(ctype), "{path}: content-type {ct}");
        assert!(
            h.get("x-frame-options").is_none(),
            "{path}: framing allowed"
        );
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(csp.contains("frame-ancestors *"), "{path}: csp {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: csp {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: csp {csp}");
        assert_eq!(
            h.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        everything.push_str(&r.text().await.expect("body"));
    }
    assert!(everything.contains("Secure call") && everything.contains("Make payment"));
    assert_no_card_data("the page's files", &everything);
    // Unknown files under /ui/ are the API's JSON 404.
    let r = client
        .get(format!("{}/ui/nope.js", server.http))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_masked_digits_as_they_arrive() {
    if !browser_available() || !common::sipp_available() {
        return;
    }
    let mut server = Server::start(ServerOpts::default());
    run_scenario(&server, "digits").await;
    let log = server.stop();
    assert_no_card_data("the server log", &log);
}

/// Needs the payment backend (`POST /v1/sessions/{id}/payment`, sandbox gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_pays_with_approve_and_decline_cards() {
    if !browser_available() || !common::sipp_available() {
        return;
    }
    let mut server = Server::start(ServerOpts::default());
    run_scenario(&server, "payment").await;
    let log = server.stop();
    assert_no_card_data("the server log", &log);
}
