//! Payment end to end through the real binary on loopback: two SIP legs dial the DNIS, the
//! customer keys a card by RFC 4733, the sandbox charges it (approve, decline, insufficient
//! funds, processing error -> 502), webhooks go to a local receiver that verifies the HMAC,
//! and the audit listing shows the sessions. Then the card-data leak check: the server's
//! log, every API response, the SSE streams, the webhook bodies and the SQLite file must
//! hold no 7-digit run of any card number and no security code next to its name.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::uac::{Conn, Leg};
use common::{digit_runs, Server, ServerOpts, API_KEY};
use futures::StreamExt;
use serde_json::{json, Value};

const SECRET: &str = "e2e-webhook-secret";

struct Api {
    http: String,
    client: reqwest::Client,
    seen: Arc<Mutex<String>>,
}

impl Api {
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

    async fn wait_for(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..400 {
            let (_, s) = self
                .call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
                .await;
            if pred(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("session {id} never got there");
    }

    /// Collect the session's SSE stream into `seen` until it ends.
    fn follow(&self, id: &str) -> tokio::task::JoinHandle<String> {
        let req = self
            .client
            .get(format!("{}/v1/sessions/{id}/events", self.http))
            .bearer_auth(API_KEY);
        tokio::spawn(async move {
            let mut out = String::new();
            let Ok(resp) = req.send().await else {
                return out;
            };
            let mut stream = resp.bytes_stream();
            while let Ok(Some(Ok(chunk))) =
                tokio::time::timeout(Duration::from_secs(30), stream.next()).await
            {
                out.push_str(&String::from_utf8_lossy(&chunk));
            }
            out
        })
    }
}

/// RFC 4733 event code of a key.
fn event_code(k: u8) -> u8 {
    match k {
        b'*' => 10,
        b'#' => 11,
        d => d - b'0',
    }
}

/// Press `keys` on the customer leg: each a start packet, one update, three end packets.
async fn press(leg: &Leg, keys: &str, seq: &mut u16, ts: &mut u32) {
    for k in keys.bytes() {
        let ev = event_code(k);
        leg.send_rtp(101, *seq, *ts, 0xCAFE, true, &[ev, 10, 0, 160])
            .await;
        leg.send_rtp(
            101,
            seq.wrapping_add(1),
            *ts,
            0xCAFE,
            false,
            &[ev, 10, 1, 64],
        )
        .await;
        for i in 0..3u16 {
            leg.send_rtp(
                101,
                seq.wrapping_add(2 + i),
                *ts,
                0xCAFE,
                false,
                &[ev, 0x8a, 1, 144],
            )
            .await;
        }
        *seq = seq.wrapping_add(5);
        *ts = ts.wrapping_add(1600);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A local webhook receiver that verifies every signature; returns its URL.
async fn receiver(bodies: Arc<Mutex<Vec<String>>>, bad: Arc<Mutex<usize>>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (bodies, bad) = (bodies.clone(), bad.clone());
            async move {
                let sig = headers
                    .get("x-tonewall-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !tonewall::webhook::verify(SECRET.as_bytes(), &body, sig) {
                    *bad.lock().expect("lock") += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                bodies
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&body).into_owned());
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

/// Whether `cvv` appears as a whole number within 40 characters of a security-code name.
fn cvv_in_context(text: &str, cvv: &str) -> Option<String> {
    // A security code "in context": a whole-number match of it shortly after a word that
    // names it, with no other digit in between (`cvv=737`, `"cvc": "737"`, `security code
    // 737`). A digit in between means another value (a length, a timestamp) sits closer.
    let lower = text.to_lowercase();
    let b = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find(cvv).map(|i| i + from) {
        let end = i + cvv.len();
        let whole =
            (i == 0 || !b[i - 1].is_ascii_digit()) && (end >= b.len() || !b[end].is_ascii_digit());
        if whole {
            let mut start = i.saturating_sub(24);
            while !lower.is_char_boundary(start) {
                start -= 1;
            }
            let before = &lower[start..i];
            let named = ["cvv", "cvc", "security", "csc"].iter().any(|w| {
                before
                    .rfind(w)
                    .is_some_and(|k| !before[k..].bytes().any(|c| c.is_ascii_digit()))
            });
            if named {
                let ctx =
                    String::from_utf8_lossy(&b[i.saturating_sub(40)..(end + 40).min(b.len())]);
                return Some(ctx.to_string());
            }
        }
        from = end;
    }
    None
}

#[test]
fn cvv_in_context_finds_codes_not_timestamps() {
    assert!(cvv_in_context("card cvv=737 ok", "737").is_some());
    assert!(cvv_in_context(r#"{"cvc": "737"}"#, "737").is_some());
    assert!(cvv_in_context("Security code 737", "737").is_some());
    let event = r#"{"type":"field","field":"cvv","length":3,"at":"2026-11-26T03:10:39.737Z"}"#;
    assert!(cvv_in_context(event, "737").is_none());
    assert!(cvv_in_context("cvv 17370", "737").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_by_rfc4733_paid_by_sandbox_leaves_no_card_data_anywhere() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(Mutex::new(0usize));
    let hook = receiver(bodies.clone(), bad.clone()).await;
    let mut server = Server::start(ServerOpts {
        tenant_extra: format!(
            "webhook_url = \"{hook}\"\nwebhook_secret_env = \"TW_E2E_HOOK_SECRET\""
        ),
        env: vec![("TW_E2E_HOOK_SECRET".into(), SECRET.into())],
        ..ServerOpts::default()
    });
    let api = Api {
        http: server.http.clone(),
        client: reqwest::Client::new(),
        seen: Arc::new(Mutex::new(String::new())),
    };
    let target: SocketAddr = server.sip_target().parse().expect("addr");
    // (pan, cvv, HTTP status, status or error code, decline reason)
    let cases = [
        ("4539576823184677", "739", 200, "approved", None),
        ("4000000000000002", "481", 200, "declined", Some("declined")),
        (
            "4000000000009995",
            "6152",
            200,
            "declined",
            Some("insufficient_funds"),
        ),
        ("4000000000000119", "927", 502, "gateway_error", None),
    ];
    let mut sse = Vec::new();
    let mut ids = Vec::new();
    for (pan, cvv, status, what, reason) in cases {
        let (st, s) = api
            .call(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({"call_id": "bw-call-77", "rep": "rep-3"})),
            )
            .await;
        assert_eq!(st, 201, "{s}");
        let id = s["id"].as_str().expect("id").to_string();
        let dnis = s["dnis"].as_str().expect("dnis").to_string();
        let events = api.follow(&id);
        let mut rep = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
        let mut cust = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
        api.wait_for(&id, |s| s["state"] == "bridged").await;
        let (mut seq, mut ts) = (1000u16, 8000u32);
        // A wrong start cleared with `*`, then the card, expiry, security code.
        press(&cust, "99*", &mut seq, &mut ts).await;
        press(&cust, &format!("{pan}#1239{cvv}#"), &mut seq, &mut ts).await;
        let s = api
            .wait_for(&id, |s| s["fields"]["cvv"]["complete"] == true)
            .await;
        assert_eq!(
            s["fields"]["pan"]["masked"],
            format!("************{}", &pan[12..]),
            "{s}"
        );
        assert_eq!(s["fields"]["pan"]["valid"], true);
        assert_eq!(s["fields"]["expiry"]["valid"], true);
        let (st, v) = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/sessions/{id}/payment"),
                Some(json!({"amount_minor": 4200, "currency": "AUD", "description": "Invoice A-17", "cardholder": "Sam Caller"})),
            )
            .await;
        assert_eq!(st, status, "{pan}: {v}");
        if status == 200 {
            assert_eq!(v["status"], what, "{v}");
            assert_eq!(v["masked_pan"], format!("************{}", &pan[12..]));
            assert_eq!(v["brand"], "visa");
            assert!(v["reference"].as_str().is_some_and(|r| !r.is_empty()));
            assert_eq!(v["decline_reason"].as_str(), reason);
        } else {
            assert_eq!(v["error"]["code"], what, "{v}");
        }
        // The fields are wiped; the session keeps the masked PAN.
        let s = api.wait_for(&id, |s| s["payment"].is_object()).await;
        assert_eq!(s["fields"]["pan"]["length"], 0, "{s}");
        assert_eq!(s["fields"]["cvv"]["length"], 0, "{s}");
        let (st, _) = api
            .call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!(st, 200);
        assert!(rep.expect_bye(Duration::from_secs(5)).await);
        assert!(cust.expect_bye(Duration::from_secs(5)).await);
        sse.push(events.await.expect("sse"));
        ids.push(id);
    }
    // SSE carried the payment events.
    for (s, (_, _, status, _, _)) in sse.iter().zip(cases) {
        assert!(s.contains("event: payment"), "{s}");
        assert!(s.contains("************"), "{s}");
        if status == 502 {
            assert!(s.contains("\"status\":\"error\""), "{s}");
        }
    }
    // The audit listing has the four sessions with their outcomes.
    let mut rows = Vec::new();
    for _ in 0..100 {
        let (_, v) = api.call(reqwest::Method::GET, "/v1/sessions", None).await;
        rows = v["sessions"].as_array().cloned().unwrap_or_default();
        if rows.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["payment_status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["approved", "declined", "declined", "error"],
        "{rows:?}"
    );
    assert!(rows
        .iter()
        .all(|r| r["call_id"] == "bw-call-77" && r["rep"] == "rep-3"));
    // Webhooks: all signed, every session's events in order, ending with its end.
    let mut hooks = Vec::new();
    for _ in 0..200 {
        hooks = bodies.lock().expect("lock").clone();
        let ended = hooks
            .iter()
            .filter(|b| b.contains("\"state\":\"ended\""))
            .count();
        if ended == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*bad.lock().expect("lock"), 0, "bad signatures");
    for id in &ids {
        let kinds: Vec<String> = hooks
            .iter()
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .filter(|v| v["session"] == id.as_str())
            .map(|v| v["type"].as_str().unwrap_or("").to_string())
            .collect();
        let pay = kinds
            .iter()
            .position(|k| k == "payment")
            .expect("payment webhook");
        let digit = kinds
            .iter()
            .rposition(|k| k == "digit")
            .expect("digit webhooks");
        assert!(digit < pay, "{kinds:?}");
        assert_eq!(kinds.last().map(String::as_str), Some("state"), "{kinds:?}");
    }

    // The leak check over everything the server wrote.
    let log = server.stop();
    let dir = server.dir.path();
    let mut db = String::new();
    for f in ["audit.db", "audit.db-wal", "audit.db-journal"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            db.push_str(&String::from_utf8_lossy(&b));
        }
    }
    assert!(
        db.contains("************4677"),
        "audit file has the masked PAN"
    );
    let responses = api.seen.lock().expect("lock").clone();
    let sources = [
        ("server log", log),
        ("API responses", responses),
        ("SSE", sse.join("\n")),
        ("webhooks", hooks.join("\n")),
        ("SQLite file", db),
    ];
    for (name, text) in &sources {
        assert!(!text.is_empty(), "{name} is empty");
        for (pan, cvv, ..) in cases {
            for run in digit_runs(pan, 7) {
                assert!(
                    !text.contains(&run),
                    "{name} holds a run {run} of a card number"
                );
            }
            if let Some(ctx) = cvv_in_context(text, cvv) {
                panic!("{name} holds a security code in context: {ctx}");
            }
            assert!(!text.contains(&format!("1239{cvv}")), "{name}: expiry+cvv");
        }
    }
}
