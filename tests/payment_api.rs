//! The payment endpoint, the audit listing and the card wipe through the HTTP API and the
//! session manager in-process: validation codes, charge-once under retries and concurrent
//! submits, sandbox outcomes, 502, tenants, and what the session keeps afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tonewall::api::{router, ApiState};
use tonewall::audit::AuditLog;
use tonewall::digit::{Digit, DigitMethod};
use tonewall::media::bridge::MediaEvent;
use tonewall::media::ports::PortPool;
use tonewall::payment::{ChargeFuture, ChargeRequest, ChargeStatus, Charged, Gateway};
use tonewall::session::manager::{ManagerOptions, Services, SessionManager};

const ACME: &str = "acme-key";
const OTHER: &str = "other-key";

fn config() -> tonewall::config::Config {
    let h = |k: &str| tonewall::api::auth::hash_key(k);
    let text = format!(
        r#"
[media]
ports = "43000-43019"
[[carrier]]
id = "main"
kind = "manual"
peers = ["127.0.0.1/32"]
[[tenant]]
id = "acme"
carrier = "main"
api_keys = ["{}"]
dnis = ["+61390001000-+61390001019"]
[[tenant]]
id = "other"
carrier = "main"
api_keys = ["{}"]
dnis = ["+61390002000"]
"#,
        h(ACME),
        h(OTHER)
    );
    tonewall::config::parse(&text).expect("config")
}

struct H {
    base: String,
    http: reqwest::Client,
    manager: SessionManager,
}

async fn start(services: Services) -> H {
    let cfg = config();
    let pool = PortPool::parse(&cfg.media.ports).expect("ports");
    let (tx, _rx) = mpsc::unbounded_channel();
    std::mem::forget(_rx);
    let (manager, driver) =
        SessionManager::with_services(&cfg, pool, tx, ManagerOptions::default(), services)
            .expect("manager");
    tokio::spawn(driver.run());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(ApiState::new(manager.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    H {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        manager,
    }
}

impl H {
    async fn req(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("text");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A session with these keys pressed by the customer.
    async fn session_with(&self, keys: &str) -> String {
        let (s, v) = self
            .req(
                "POST",
                "/v1/sessions",
                ACME,
                Some(json!({"call_id": "carrier-1", "rep": "rep-7"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().expect("id").to_string();
        for k in keys.bytes() {
            self.manager.handle_media(MediaEvent::Digit {
                session: id.as_str().into(),
                digit: Digit::from_key(k).expect("key"),
                method: DigitMethod::Rfc4733,
            });
        }
        id
    }

    async fn pay(&self, id: &str, body: Value) -> (u16, Value) {
        self.req(
            "POST",
            &format!("/v1/sessions/{id}/payment"),
            ACME,
            Some(body),
        )
        .await
    }
}

fn good_body() -> Value {
    json!({"amount_minor": 1234, "currency": "AUD", "description": "Order 42", "cardholder": "J Citizen"})
}

/// Expiry keys for a date in the future.
const EXP: &str = "1239";

/// (card as `pan|MMYYYY|cvv`, reference, idempotency key, currency, amount).
type SeenCharge = (String, String, String, String, u64);

/// Counts charges, records what it saw, and holds every charge until released.
struct Gated {
    calls: AtomicUsize,
    gate: Semaphore,
    seen: Mutex<Vec<SeenCharge>>,
}

impl Gateway for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn charge<'a>(&'a self, req: &'a ChargeRequest) -> ChargeFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let card = format!(
                "{}|{}{}|{}",
                String::from_utf8_lossy(req.card.pan()),
                String::from_utf8_lossy(req.card.expiry_month()),
                String::from_utf8_lossy(req.card.expiry_year()),
                String::from_utf8_lossy(req.card.cvv())
            );
            self.seen.lock().expect("lock").push((
                card,
                req.reference.clone(),
                req.idempotency_key.clone(),
                req.currency.clone(),
                req.amount_minor,
            ));
            let _permit = self.gate.acquire().await;
            Ok(Charged {
                status: ChargeStatus::Approved,
                reference: "psp-0001".into(),
                decline_reason: None,
            })
        })
    }
}

/// No 7-digit run of any card number this file uses.
fn no_long_digit_runs(v: &Value) {
    let s = v.to_string();
    for pan in [
        "4111111111111111",
        "4111111111111112",
        "5555555555554444",
        "4000000000000002",
        "4000000000009995",
        "4000000000000119",
    ] {
        for i in 0..=pan.len() - 7 {
            assert!(!s.contains(&pan[i..i + 7]), "a run of {pan} in {s}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_codes_name_what_is_wrong() {
    let h = start(Services::default()).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 0, "currency": "AUD", "cardholder": "x"}),
            "invalid_amount",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": -5, "currency": "AUD", "cardholder": "x"}),
            "invalid_amount",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 5, "currency": "aud", "cardholder": "x"}),
            "invalid_currency",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 5, "currency": "AUDD", "cardholder": "x"}),
            "invalid_currency",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 5, "currency": "AUD", "cardholder": " "}),
            "invalid_cardholder",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 5, "currency": "AUD", "cardholder": "x", "description": "card 4111111111111111"}),
            "invalid_description",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 5, "currency": "AUD"}),
            "invalid_body",
        ),
        (
            "4111111111111111#1239123#",
            json!({"amount_minor": 5, "currency": "AUD", "cardholder": "x", "pan": "1"}),
            "invalid_body",
        ),
        ("411111111111#", good_body(), "invalid_pan"),
        ("4111111111111112#1239123#", good_body(), "invalid_pan"),
        ("4111111111111111#0120123#", good_body(), "invalid_expiry"),
        ("4111111111111111#1339123#", good_body(), "invalid_expiry"),
        ("4111111111111111#123912#", good_body(), "invalid_cvv"),
    ];
    for (keys, body, code) in cases {
        let id = h.session_with(keys).await;
        let (s, v) = h.pay(&id, body.clone()).await;
        assert_eq!(s, 422, "{keys} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{keys} {body}: {v}");
        no_long_digit_runs(&v);
        // Nothing was charged: the fields are still there to be corrected.
        assert!(!h.manager.card_wiped("acme", &id).expect("session"));
    }
    // Not JSON.
    let id = h.session_with("").await;
    let r = h
        .http
        .post(format!("{}/v1/sessions/{id}/payment", h.base))
        .bearer_auth(ACME)
        .body("{nope")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    // Another tenant's session, an unknown one.
    let (s, v) = h
        .req(
            "POST",
            &format!("/v1/sessions/{id}/payment"),
            OTHER,
            Some(good_body()),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
    let (s, _) = h.pay("ses_nope", good_body()).await;
    assert_eq!(s, 404);
    // An ended session.
    h.req("DELETE", &format!("/v1/sessions/{id}"), ACME, None)
        .await;
    let (s, v) = h.pay(&id, good_body()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("session_ended"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_once_under_concurrent_and_retried_submits_then_wipes() {
    let gw = Arc::new(Gated {
        calls: AtomicUsize::new(0),
        gate: Semaphore::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let h = Arc::new(
        start(Services {
            gateway: gw.clone(),
            ..Services::default()
        })
        .await,
    );
    let id = h.session_with(&format!("5555555555554444#{EXP}737#")).await;
    // Three submits at once; the gateway holds the first until all three are in.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (h, id) = (h.clone(), id.clone());
        tasks.push(tokio::spawn(async move { h.pay(&id, good_body()).await }));
    }
    for _ in 0..2000 {
        if gw.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(gw.calls.load(Ordering::SeqCst), 1, "the charge started");
    // The card is still held for the charge in flight.
    assert!(!h.manager.card_wiped("acme", &id).expect("session"));
    gw.gate.add_permits(10);
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("join"));
    }
    for (s, v) in &answers {
        assert_eq!(*s, 200, "{v}");
        assert_eq!(v["status"], "approved");
        assert_eq!(v["reference"], "psp-0001");
        assert_eq!(v["masked_pan"], "************4444");
        assert_eq!(v["brand"], "mastercard");
    }
    // A retry later returns the first result.
    let (s, v) = h
        .pay(
            &id,
            json!({"amount_minor": 99, "currency": "EUR", "cardholder": "Other"}),
        )
        .await;
    assert_eq!((s, &v), (200, &answers[0].1));
    assert_eq!(gw.calls.load(Ordering::SeqCst), 1, "charged exactly once");
    let seen = gw.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![(
            "5555555555554444|122039|737".to_string(),
            id.clone(),
            format!("tonewall-{id}"),
            "AUD".to_string(),
            1234
        )]
    );
    // Card data is gone; the session keeps masked PAN, brand, reference.
    assert!(h.manager.card_wiped("acme", &id).expect("session"));
    let (_, v) = h
        .req("GET", &format!("/v1/sessions/{id}"), ACME, None)
        .await;
    assert_eq!(v["fields"]["pan"]["length"], 0, "{v}");
    assert_eq!(v["fields"]["cvv"]["length"], 0, "{v}");
    assert_eq!(v["payment"]["masked_pan"], "************4444", "{v}");
    assert_eq!(v["payment"]["brand"], "mastercard");
    assert_eq!(v["payment"]["reference"], "psp-0001");
    no_long_digit_runs(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_outcomes_and_audit_listing() {
    let dir = tempfile::tempdir().expect("dir");
    let audit = AuditLog::open(dir.path().join("audit.db")).expect("audit");
    let h = start(Services {
        audit: Some(audit.clone()),
        ..Services::default()
    })
    .await;
    let before = chrono::Utc::now();
    let mut ids = Vec::new();
    for (pan, status, code) in [
        ("4111111111111111", 200, "approved"),
        ("4000000000000002", 200, "declined"),
        ("4000000000009995", 200, "declined"),
        ("4000000000000119", 502, "gateway_error"),
    ] {
        let id = h.session_with(&format!("{pan}#{EXP}123#")).await;
        let (s, v) = h.pay(&id, good_body()).await;
        assert_eq!(s, status, "{pan}: {v}");
        if s == 200 {
            assert_eq!(v["status"], code, "{v}");
            assert!(!v["reference"].as_str().unwrap_or("").is_empty());
            assert_eq!(v["masked_pan"], format!("************{}", &pan[12..]));
        } else {
            assert_eq!(v["error"]["code"], code, "{v}");
            // A retry does not charge again: the same answer.
            let (s2, v2) = h.pay(&id, good_body()).await;
            assert_eq!((s2, v2), (s, v.clone()));
        }
        if pan == "4000000000009995" {
            assert_eq!(v["decline_reason"], "insufficient_funds");
        }
        if pan == "4000000000000002" {
            assert_eq!(v["decline_reason"], "declined");
        }
        assert!(h.manager.card_wiped("acme", &id).expect("session"));
        h.req("DELETE", &format!("/v1/sessions/{id}"), ACME, None)
            .await;
        ids.push(id);
    }
    // The other tenant's session, ended without payment.
    let (_, o) = h
        .req(
            "POST",
            "/v1/sessions",
            OTHER,
            Some(json!({"call_id": "o", "rep": "o"})),
        )
        .await;
    let oid = o["id"].as_str().expect("id").to_string();
    h.req("DELETE", &format!("/v1/sessions/{oid}"), OTHER, None)
        .await;
    audit.flush();

    let (s, v) = h.req("GET", "/v1/sessions", ACME, None).await;
    assert_eq!(s, 200, "{v}");
    let rows = v["sessions"].as_array().expect("rows").clone();
    let got: Vec<&str> = rows.iter().filter_map(|r| r["session"].as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rows[0]["payment_status"], "approved");
    assert_eq!(rows[0]["masked_pan"], "************1111");
    assert_eq!(rows[0]["brand"], "visa");
    assert_eq!(rows[0]["call_id"], "carrier-1");
    assert_eq!(rows[0]["rep"], "rep-7");
    assert_eq!(rows[0]["state"], "ended");
    assert_eq!(rows[0]["reason"], "deleted");
    assert_eq!(rows[1]["payment_status"], "declined");
    assert_eq!(rows[3]["payment_status"], "error");
    assert!(rows[3]["reference"].is_null());
    no_long_digit_runs(&v);
    // The other tenant sees only its own.
    let (_, v) = h.req("GET", "/v1/sessions", OTHER, None).await;
    let rows = v["sessions"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["session"], oid.as_str());
    assert!(rows[0]["payment_status"].is_null());
    // Time ranges.
    let q = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        format!(
            "/v1/sessions?from={}&to={}",
            urlenc(&from.to_rfc3339()),
            urlenc(&to.to_rfc3339())
        )
    };
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    let (_, v) = h
        .req(
            "GET",
            &q(before - chrono::Duration::seconds(1), after),
            ACME,
            None,
        )
        .await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(4));
    let (_, v) = h
        .req(
            "GET",
            &q(after, after + chrono::Duration::hours(1)),
            ACME,
            None,
        )
        .await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0));
    let (_, v) = h
        .req(
            "GET",
            &q(
                before - chrono::Duration::hours(2),
                before - chrono::Duration::hours(1),
            ),
            ACME,
            None,
        )
        .await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0));
    let (s, v) = h
        .req("GET", "/v1/sessions?from=yesterday", ACME, None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_time"))
    );
    // No card data in the database file.
    let db = std::fs::read(dir.path().join("audit.db")).expect("db");
    let wal = std::fs::read(dir.path().join("audit.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        let text = String::from_utf8_lossy(&bytes);
        for pan in ["4111111111111111", "4000000000000002", "1111111", "0000000"] {
            assert!(!text.contains(pan), "audit file holds {pan}");
        }
    }
}

fn urlenc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
