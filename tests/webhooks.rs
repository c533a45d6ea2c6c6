//! Webhook delivery against a local receiver on 127.0.0.1 that verifies the HMAC and
//! records the order: signatures, per-session order across interleaved sessions, retries
//! with back-off after failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tonewall::webhook::{verify, Target, WebhookOptions, Webhooks, SIGNATURE_HEADER};
use zeroize::Zeroizing;

const SECRET: &[u8] = b"whsec-test-0123";

#[derive(Default)]
struct Received {
    /// (session, seq) in arrival order, accepted ones only.
    accepted: Vec<(String, u64)>,
    attempts: usize,
    bad_signatures: usize,
    /// Times of the failed attempts of the first event of session "a".
    fail_times: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_order_per_session_with_retries() {
    let rec = Arc::new(Mutex::new(Received::default()));
    let r2 = rec.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let rec = r2.clone();
            async move {
                let mut r = rec.lock().expect("lock");
                r.attempts += 1;
                let sig = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !verify(SECRET, &body, sig) {
                    r.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let session = v["session"].as_str().unwrap_or("").to_string();
                let seq = v["seq"].as_u64().unwrap_or(0);
                // The first event of session "a" fails three times.
                if session == "a" && seq == 0 && r.fail_times.len() < 3 {
                    r.fail_times.push(Instant::now());
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                r.accepted.push((session, seq));
                StatusCode::NO_CONTENT
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
    let mut targets = HashMap::new();
    targets.insert(
        "acme".to_string(),
        Target {
            url: format!("http://{addr}/hook"),
            secret: Zeroizing::new(SECRET.to_vec()),
        },
    );
    let w = Webhooks::start(
        targets,
        WebhookOptions {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_attempts: 6,
            timeout: Duration::from_secs(2),
        },
    );
    assert!(w.enabled("acme") && !w.enabled("other"));
    let acme: Arc<str> = "acme".into();
    let other: Arc<str> = "other".into();
    const N: u64 = 20;
    for seq in 0..N {
        for s in ["a", "b"] {
            let session: Arc<str> = s.into();
            let body = format!(r#"{{"type":"digit","session":"{s}","seq":{seq}}}"#);
            w.send(&acme, &session, body, seq == N - 1);
        }
        // A tenant without a webhook: nothing is sent.
        w.send(
            &other,
            &"c".into(),
            r#"{"session":"c","seq":0}"#.into(),
            false,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if rec.lock().expect("lock").accepted.len() as u64 == 2 * N {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = rec.lock().expect("lock");
    assert_eq!(r.bad_signatures, 0);
    for s in ["a", "b"] {
        let seqs: Vec<u64> = r
            .accepted
            .iter()
            .filter(|(x, _)| x == s)
            .map(|(_, q)| *q)
            .collect();
        assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "session {s} in order");
    }
    assert!(r.accepted.iter().all(|(s, _)| s != "c"));
    assert_eq!(r.attempts as u64, 2 * N + 3);
    // Back-off grows: 20 ms then 40 ms between the failed attempts.
    let gaps: Vec<Duration> = r.fail_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(18), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(38), "{gaps:?}");
    // Session "b" was not held up by "a"'s retries: its first event arrived before "a"'s.
    let first_a = r.accepted.iter().position(|(s, _)| s == "a");
    let first_b = r.accepted.iter().position(|(s, _)| s == "b");
    assert!(first_b < first_a, "{:?}", &r.accepted[..4]);
}
