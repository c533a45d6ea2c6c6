//! The HTTP API and the session manager on loopback: sessions, auth, errors, SSE, the
//! trunk admission codes (legs simulated through `TrunkHandler` with real sockets), DNIS
//! expiry and leak-freedom over 1,000 sessions.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonewall::api::{router, ApiState};
use tonewall::config::Config;
use tonewall::digit::{Digit, DigitMethod};
use tonewall::leg::{LegRole, SessionId};
use tonewall::media::bridge::MediaEvent;
use tonewall::media::ports::PortPool;
use tonewall::media::{Codec, Direction, LegParams};
use tonewall::session::manager::{ManagerOptions, SessionManager};
use tonewall::sip::trunk::{InviteInfo, LegEnd, LegUp, Rejection, TrunkCommand, TrunkHandler};

const ACME: &str = "acme-key";
const OTHER: &str = "other-key";

struct H {
    base: String,
    http: reqwest::Client,
    manager: SessionManager,
    ports: PortPool,
    trunk: mpsc::UnboundedReceiver<TrunkCommand>,
}

fn config(ttl: u64, ports: &str) -> Config {
    let h = |k: &str| tonewall::api::auth::hash_key(k);
    let text = format!(
        r#"
[media]
ports = "{ports}"
[dnis]
ttl_s = {ttl}
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

async fn start(ttl: u64, ports: &str, options: ManagerOptions) -> H {
    let cfg = config(ttl, ports);
    let pool = PortPool::parse(&cfg.media.ports).expect("ports");
    let (tx, trunk) = mpsc::unbounded_channel();
    let (manager, driver) =
        SessionManager::with_options(&cfg, pool.clone(), tx, options).expect("manager");
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
        ports: pool,
        trunk,
    }
}

impl H {
    async fn req(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.http.request(m, format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("text");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self) -> Value {
        let (s, v) = self
            .req(
                "POST",
                "/v1/sessions",
                Some(ACME),
                Some(r#"{"call_id":"c1","rep":"rep1"}"#),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    fn invite(&self, dnis: &str, source: &str) -> Result<(SessionId, LegRole), Rejection> {
        let info = InviteInfo {
            dnis: dnis.into(),
            source: source.parse::<SocketAddr>().expect("addr"),
            call_id: "x".into(),
        };
        self.manager.admit(&info).map(|a| (a.session, a.role))
    }

    /// Ended bridges hand their ports back asynchronously (on their media thread): an
    /// INVITE refused 503 for lack of ports is retried for a while, as a carrier would.
    async fn invite_when_ports_free(&self, dnis: &str) -> Result<(SessionId, LegRole), Rejection> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.invite(dnis, PEER) {
                Err(r) if r.status == 503 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    }

    fn up(&self, session: &SessionId, role: LegRole) {
        let sockets = self
            .ports
            .bind("127.0.0.1".parse().expect("ip"))
            .expect("port");
        self.manager.leg_up(LegUp {
            session: session.clone(),
            role,
            sockets,
            params: LegParams {
                remote: None,
                codec: Codec::Pcmu,
                pt: 0,
                te_pt: Some(101),
                ptime_ms: 20,
                direction: Direction::SendRecv,
            },
        });
    }

    fn hangups(&mut self) -> Vec<LegRole> {
        let mut v = Vec::new();
        while let Ok(TrunkCommand::HangUp { role, .. }) = self.trunk.try_recv() {
            v.push(role);
        }
        v
    }
}

const PEER: &str = "127.0.0.1:5060";

fn dnis_of(v: &Value) -> String {
    v["dnis"].as_str().expect("dnis").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_auth_and_errors() {
    let h = start(30, "42000-42019", ManagerOptions::default()).await;
    let body = r#"{"call_id":"c1","rep":"rep1"}"#;
    let (s, v) = h.req("POST", "/v1/sessions", None, Some(body)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (s, v) = h
        .req("POST", "/v1/sessions", Some("nope"), Some(body))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (s, v) = h
        .req("POST", "/v1/sessions", Some(ACME), Some("{not json"))
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")));
    let (s, v) = h
        .req(
            "POST",
            "/v1/sessions",
            Some(ACME),
            Some(r#"{"call_id":"c"}"#),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_body")),
        "{v}"
    );
    let (s, v) = h
        .req(
            "POST",
            "/v1/sessions",
            Some(ACME),
            Some(r#"{"call_id":"c","rep":"r","fields":["pin"]}"#),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_body"))
    );

    let v = h.create().await;
    let id = v["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("ses_"));
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["state"], "waiting_legs");
    assert!(dnis_of(&v).starts_with("+613900010"));
    assert!(v["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(
        v["legs"],
        json!({"rep": {"state": "waiting"}, "customer": {"state": "waiting"}})
    );
    assert_eq!(v["active_field"], "pan");
    assert_eq!(
        v["fields"]["pan"],
        json!({"masked": "", "length": 0, "complete": false, "valid": false})
    );

    let (s, g) = h
        .req("GET", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(g["id"], v["id"]);
    let (s, e) = h
        .req("GET", &format!("/v1/sessions/{id}"), Some(OTHER), None)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
    let (s, e) = h
        .req("GET", "/v1/sessions/ses_nope", Some(ACME), None)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
    let (s, e) = h
        .req(
            "POST",
            &format!("/v1/sessions/{id}/fields/pin/activate"),
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_field"))
    );
    let (s, a) = h
        .req(
            "POST",
            &format!("/v1/sessions/{id}/fields/cvv/activate"),
            Some(ACME),
            None,
        )
        .await;
    assert_eq!((s, a["active_field"].as_str()), (200, Some("cvv")));
    let (s, a) = h
        .req(
            "POST",
            &format!("/v1/sessions/{id}/fields/pan/reset"),
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(s, 200, "{a}");

    // the only number of the other tenant: the second create finds none
    let (s, _) = h.req("POST", "/v1/sessions", Some(OTHER), Some(body)).await;
    assert_eq!(s, 201);
    let (s, e) = h.req("POST", "/v1/sessions", Some(OTHER), Some(body)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (503, Some("no_dnis_available"))
    );

    let (s, hz) = h.req("GET", "/healthz", None, None).await;
    assert_eq!((s, hz["status"].as_str()), (200, Some("ok")));
    let (s, m) = h.req("GET", "/metrics", None, None).await;
    assert_eq!(s, 200);
    assert!(
        m.as_str()
            .is_some_and(|t| t.contains("tonewall_sessions_active")),
        "{m}"
    );
    let (s, d) = h
        .req("DELETE", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!((s, d["state"].as_str()), (200, Some("ended")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_codes() {
    let mut h = start(30, "42100-42119", ManagerOptions::default()).await;
    let v = h.create().await;
    let id = v["id"].as_str().expect("id").to_string();
    let dnis = dnis_of(&v);
    let forbidden = h.invite(&dnis, "192.0.2.1:5060").expect_err("403");
    assert_eq!(forbidden.status, 403);
    assert_eq!(
        h.invite("+49000", "192.0.2.1:5060")
            .expect_err("403")
            .status,
        403
    );
    assert_eq!(h.invite("+49000", PEER).expect_err("404").status, 404);
    let free = if dnis == "+61390001000" {
        "+61390001001"
    } else {
        "+61390001000"
    };
    assert_eq!(h.invite(free, PEER).expect_err("404").status, 404);

    let (sid, role) = h.invite(&dnis, PEER).expect("rep");
    assert_eq!((&*sid, role), (id.as_str(), LegRole::Rep));
    h.up(&sid, role);
    let (_, role) = h.invite(&dnis, PEER).expect("customer");
    assert_eq!(role, LegRole::Customer);
    h.up(&sid, role);
    let (_, g) = h
        .req("GET", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!(g["state"], "bridged");
    assert_eq!(g["legs"]["customer"]["state"], "up");
    assert_eq!(h.invite(&dnis, PEER).expect_err("486").status, 486);

    let (s, d) = h
        .req("DELETE", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!(
        (s, d["state"].as_str(), d["reason"].as_str()),
        (200, Some("ended"), Some("deleted"))
    );
    let mut hu = h.hangups();
    hu.sort_by_key(|r| r.as_str());
    assert_eq!(hu, vec![LegRole::Customer, LegRole::Rep]);
    let gone = h.invite(&dnis, PEER).expect_err("410");
    assert_eq!(gone.status, 410);

    // capacity: no RTP port left
    let v = h.create().await;
    let held: Vec<_> =
        std::iter::from_fn(|| h.ports.bind("127.0.0.1".parse().expect("ip"))).collect();
    assert!(!held.is_empty());
    let busy = h.invite(&dnis_of(&v), PEER).expect_err("503");
    assert_eq!(busy.status, 503);
    assert!(busy.retry_after.is_some());
    drop(held);
    assert!(h.invite(&dnis_of(&v), PEER).is_ok());

    let (_, m) = h.req("GET", "/metrics", None, None).await;
    let m = m.as_str().unwrap_or_default().to_string();
    for reason in ["forbidden", "unknown", "expired", "third_leg", "capacity"] {
        assert!(
            m.contains(&format!(
                "tonewall_dnis_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_follows_the_session_with_masked_digits() {
    let mut h = start(30, "42200-42219", ManagerOptions::default()).await;
    let v = h.create().await;
    let id = v["id"].as_str().expect("id").to_string();
    let resp = h
        .http
        .get(format!("{}/v1/sessions/{id}/events", h.base))
        .bearer_auth(ACME)
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.status().as_u16(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut read_until = async |text: &mut String, needle: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !text.contains(needle) {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(b))) => text.push_str(&String::from_utf8_lossy(&b)),
                _ => panic!("no {needle:?} in {text}"),
            }
        }
    };
    read_until(&mut text, "\"state\":\"waiting_legs\"").await;
    assert!(text.starts_with("event: state"), "{text}");

    let dnis = dnis_of(&v);
    let (sid, r) = h.invite(&dnis, PEER).expect("rep");
    h.up(&sid, r);
    let (_, r) = h.invite(&dnis, PEER).expect("customer");
    h.up(&sid, r);
    read_until(&mut text, "\"state\":\"bridged\"").await;

    for k in b"4111111111111111#" {
        h.manager.handle_media(MediaEvent::Digit {
            session: sid.clone(),
            digit: Digit::from_key(*k).expect("key"),
            method: DigitMethod::Rfc4733,
        });
    }
    read_until(&mut text, "\"action\":\"activated\"").await;
    assert!(text.contains("event: digit"));
    assert!(text.contains("************1111"));
    let (_, g) = h
        .req("GET", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!(g["fields"]["pan"]["masked"], "************1111");
    assert_eq!(g["fields"]["pan"]["valid"], true);
    assert_eq!(g["active_field"], "expiry");

    // a third leg raises an alarm
    assert_eq!(h.invite(&dnis, PEER).expect_err("486").status, 486);
    read_until(&mut text, "event: alarm").await;

    // the customer hangs up: the rep is hung up, the stream ends with the final state
    h.manager.leg_ended(&sid, LegRole::Customer, LegEnd::Bye);
    assert_eq!(h.hangups(), vec![LegRole::Rep]);
    read_until(&mut text, "\"reason\":\"customer_hangup\"").await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(end, Ok(None)), "stream should end");
    let digits_run = text
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(digits_run < 7, "a run of {digits_run} digits in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnis_expires_and_hangs_up_parked_leg() {
    let mut h = start(1, "42300-42319", ManagerOptions::default()).await;
    let v = h.create().await;
    let id = v["id"].as_str().expect("id").to_string();
    let dnis = dnis_of(&v);
    let (sid, r) = h.invite(&dnis, PEER).expect("rep");
    h.up(&sid, r);
    h.manager.tick(Instant::now() + Duration::from_secs(2));
    let (_, g) = h
        .req("GET", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!(
        (g["state"].as_str(), g["reason"].as_str()),
        (Some("failed"), Some("dnis_expired"))
    );
    assert_eq!(h.hangups(), vec![LegRole::Rep]);
    assert_eq!(h.invite(&dnis, PEER).expect_err("410").status, 410);
    // forgotten after the linger time
    h.manager.tick(Instant::now() + Duration::from_secs(120));
    let (s, _) = h
        .req("GET", &format!("/v1/sessions/{id}"), Some(ACME), None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sessions_leak_nothing() {
    let options = ManagerOptions {
        quarantine: Duration::ZERO,
        ..ManagerOptions::default()
    };
    let mut h = start(30, "42400-42599", options).await;
    let before = h.manager.stats(Instant::now());
    for i in 0..1000 {
        let v = h.create().await;
        let id = v["id"].as_str().expect("id").to_string();
        let dnis = dnis_of(&v);
        let (sid, r) = h.invite_when_ports_free(&dnis).await.expect("rep");
        h.up(&sid, r);
        let (_, r) = h.invite_when_ports_free(&dnis).await.expect("customer");
        h.up(&sid, r);
        if i % 2 == 0 {
            let (s, _) = h
                .req("DELETE", &format!("/v1/sessions/{id}"), Some(ACME), None)
                .await;
            assert_eq!(s, 200);
        } else {
            h.manager.leg_ended(&sid, LegRole::Rep, LegEnd::Bye);
        }
        h.hangups();
    }
    let later = Instant::now() + Duration::from_secs(120);
    h.manager.tick(later);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = h.manager.stats(later);
        if after.ports_available == before.ports_available || Instant::now() > deadline {
            assert_eq!(after.ports_available, before.ports_available);
            assert_eq!(after.dnis_available, after.dnis_total);
            assert_eq!((after.sessions, after.active, after.bridges), (0, 0, 0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
