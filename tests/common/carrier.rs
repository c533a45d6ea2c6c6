//! Harness for the third-party call control tests: the real `tonewall` binary with a
//! `broadworks` carrier pointing at the in-process carrier simulator, and simulated phones
//! (or SIPp) for the customer and the representative.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonewall::sim::{self, Phone, PhoneConfig, SimConfig, SimHandle, SimUser};

use super::{free_port, Server, ServerOpts, API_KEY};

pub const XSI_USER: &str = "secure-admin@sim.example";
pub const XSI_PASSWORD: &str = "xsi-test-password-7f3a";
pub const REP_USER: &str = "rep1@sim.example";
pub const REP_NUMBER: &str = "2001";
pub const CUSTOMER_NUMBER: &str = "+61400000001";

/// tonewall + the simulator, before any phone.
pub struct Rig {
    pub server: Server,
    pub sim: SimHandle,
    pub http: reqwest::Client,
}

/// The server's `[[carrier]]` for the simulator, with a short step deadline.
fn bw_carrier(xsi_url: &str, step_timeout_s: u64) -> String {
    format!(
        r#"
[[carrier]]
id = "bw"
kind = "broadworks"
peers = ["127.0.0.0/8"]
xsi_url = "{xsi_url}"
user = "{XSI_USER}"
password_env = "TW_TEST_XSI_PASSWORD"
step_timeout_s = {step_timeout_s}
"#
    )
}

impl Rig {
    /// Start the simulator (the rep's phone at `rep_phone`) and tonewall peered with it.
    pub async fn start(rep_phone: SocketAddr, step_timeout_s: u64) -> Rig {
        Rig::start_with_expires(rep_phone, step_timeout_s, sim::DEFAULT_EXPIRES).await
    }

    /// `start`, with the simulator granting at most `expires` to Xsi-Events channels and
    /// subscriptions.
    pub async fn start_with_expires(
        rep_phone: SocketAddr,
        step_timeout_s: u64,
        expires: Duration,
    ) -> Rig {
        Rig::start_full(rep_phone, step_timeout_s, expires, 30).await
    }

    /// `start_with_expires`, with the server's `dnis.ttl_s`.
    pub async fn start_full(
        rep_phone: SocketAddr,
        step_timeout_s: u64,
        expires: Duration,
        ttl_s: u64,
    ) -> Rig {
        let sip_port = free_port();
        let sim = sim::start(SimConfig {
            xsi_listen: "127.0.0.1:0".parse().unwrap(),
            sip_listen: "127.0.0.1:0".parse().unwrap(),
            xsi_user: XSI_USER.into(),
            xsi_password: XSI_PASSWORD.into(),
            trunk: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            users: vec![SimUser {
                id: REP_USER.into(),
                number: REP_NUMBER.into(),
                phone: rep_phone,
            }],
            expires,
        })
        .await
        .expect("simulator starts");
        let opts = ServerOpts {
            sip_port: Some(sip_port),
            carrier: "bw".into(),
            extra: bw_carrier(&sim.xsi_url(), step_timeout_s),
            env: vec![("TW_TEST_XSI_PASSWORD".into(), XSI_PASSWORD.into())],
            ttl_s,
            ..ServerOpts::default()
        };
        let server = tokio::task::spawn_blocking(move || Server::start(opts))
            .await
            .expect("server starts");
        Rig {
            server,
            sim,
            http: reqwest::Client::new(),
        }
    }

    /// `POST /v1/sessions` for the call on the rep's line; the session's JSON.
    pub async fn secure(&self, call_id: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/sessions", self.server.http))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"call_id": call_id, "rep": REP_USER}))
            .send()
            .await
            .expect("POST /v1/sessions");
        assert_eq!(r.status(), 201, "session created");
        r.json().await.expect("session json")
    }

    pub async fn get(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/sessions/{id}", self.server.http))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("GET session")
            .json()
            .await
            .expect("session json")
    }

    pub async fn delete(&self, id: &str) -> Value {
        let r = self
            .http
            .delete(format!("{}/v1/sessions/{id}", self.server.http))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("DELETE session");
        assert_eq!(r.status(), 200);
        r.json().await.expect("session json")
    }

    /// Wait until the session's `state` is `want`; its JSON.
    pub async fn wait_state(&self, id: &str, want: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.get(id).await;
            if s["state"] == want {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "session never reached {want}: {s}\nsim log:\n{}\nserver log tail:\n{}",
                    self.sim.log().join("\n"),
                    tail(&self.server.log(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rep's live call id on the simulator (the newest one).
    pub fn rep_call_id(&self) -> String {
        self.sim
            .calls(REP_USER)
            .last()
            .map(|c| c.call_id.clone())
            .expect("a call on the rep's line")
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.server.http))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    /// A Prometheus metric's value (first sample whose line starts with `name`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Wait until the simulator's log has every needle, in order.
    pub async fn wait_log_in_order(&self, needles: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.sim.log();
            if in_order(&log, needles).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                let missing = in_order(&log, needles).err().unwrap_or_default();
                panic!(
                    "sim log lacks {missing:?} (in order)\nsim log:\n{}",
                    log.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Rig {
    /// After securing `call` onto `dnis`: the SIP and Xsi sequence of RFC 3725 through the
    /// simulator, the Xsi events in the order the switch raised them (events are written
    /// behind the Xsi answers, as BroadWorks does, so they are ordered among themselves),
    /// and every event acknowledged by the adapter.
    pub async fn assert_secured_sequence(&self, call: &str, dnis: &str) {
        let call_path = format!("/user/{REP_USER}/calls/{call}");
        self.wait_log_in_order(
            &[
                &format!("subscribe {REP_USER}"),
                &format!("xsi PUT {call_path}/Hold -> 200"),
                &format!("xsi POST /user/{REP_USER}/calls/new -> 201"),
                &format!("sip > INVITE phone:{REP_NUMBER}"),
                &format!("sip > INVITE trunk:{dnis}"),
                &format!("sip < 200 INVITE trunk:{dnis}"),
                &format!("sip > INVITE customer:{CUSTOMER_NUMBER}"),
                &format!("sip > INVITE trunk:{dnis}"),
                &format!("sip < 200 INVITE trunk:{dnis}"),
                &format!("xsi PUT {call_path}/BlindTransfer -> 200"),
            ],
            Duration::from_secs(5),
        )
        .await;
        self.wait_log_in_order(
            &[&format!("event CallReleasedEvent {call}")],
            Duration::from_secs(5),
        )
        .await;
        let log = self.sim.log();
        let new_call = log
            .iter()
            .find_map(|l| l.strip_prefix("event CallOriginatedEvent "))
            .expect("the click-to-dial call's event")
            .to_string();
        assert_ne!(new_call, call);
        in_order(
            &log,
            &[
                &format!("event CallHeldEvent {call}"),
                &format!("event CallOriginatedEvent {new_call}"),
                &format!("event CallAnsweredEvent {new_call}"),
                &format!("event CallRedirectedEvent {call}"),
                &format!("event CallReleasedEvent {call}"),
            ],
        )
        .unwrap_or_else(|missing| {
            panic!("event order: {missing} out of place\n{}", log.join("\n"))
        });
        let events = log.iter().filter(|l| l.starts_with("event ")).count();
        eventually(
            "every event is acknowledged",
            Duration::from_secs(5),
            || {
                self.sim
                    .log()
                    .iter()
                    .filter(|l| l.starts_with("ack "))
                    .count()
                    >= events
            },
        )
        .await;
    }
}

/// A customer on a call with the representative, both phones simulated, tonewall (with
/// `step_timeout_s`, DNIS `ttl_s`) and the simulator (granting `expires`) running; the
/// call's Xsi id.
pub async fn call_in_with(
    step_timeout_s: u64,
    expires: Duration,
    ttl_s: u64,
) -> (Rig, Phone, Phone, String) {
    // The rep's phone never dials, so its proxy is never used.
    let rep = phone("127.0.0.1:9".parse().unwrap(), REP_NUMBER).await;
    let rig = Rig::start_full(rep.sip_addr(), step_timeout_s, expires, ttl_s).await;
    let customer = phone(rig.sim.sip_addr(), CUSTOMER_NUMBER).await;
    customer
        .dial(REP_NUMBER)
        .await
        .expect("customer calls the rep");
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;
    let call = rig.rep_call_id();
    (rig, customer, rep, call)
}

/// `call_in_with` with the simulator's default expiry and a 30 s DNIS TTL.
pub async fn call_in(step_timeout_s: u64) -> (Rig, Phone, Phone, String) {
    call_in_with(step_timeout_s, sim::DEFAULT_EXPIRES, 30).await
}

impl Rig {
    /// Secure `call` and wait until the session is `state`; its id and JSON.
    pub async fn secure_until(
        &self,
        call: &str,
        state: &str,
        timeout: Duration,
    ) -> (String, Value) {
        let s = self.secure(call).await;
        let id = s["id"].as_str().expect("session id").to_string();
        let s = self.wait_state(&id, state, timeout).await;
        (id, s)
    }

    /// tonewall holds nothing for a session any more, and no call on the rep's line faces
    /// the trunk.
    pub async fn nothing_allocated(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let dnis = self.metric("tonewall_dnis_allocated").await;
            let active = self.metric("tonewall_sessions_active").await;
            let legs = self.metric("tonewall_legs_active").await;
            let bridges = self.metric("tonewall_bridges_active").await;
            if dnis == 0.0 && active == 0.0 && legs == 0.0 && bridges == 0.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still allocated: dnis {dnis}, sessions {active}, legs {legs}, bridges {bridges}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in self.sim.calls(REP_USER) {
            assert!(
                !c.peer.starts_with("trunk:"),
                "the rep's line still has a call towards tonewall: {} {} {}",
                c.call_id,
                c.state,
                c.peer
            );
        }
    }

    /// A failure before the bridge: the session fails with `reason`, the customer talks to
    /// the representative again, nothing is left allocated.
    pub async fn fails_and_restores(
        &self,
        customer: &Phone,
        rep: &Phone,
        call: &str,
        reason: &str,
    ) {
        let (_, s) = self
            .secure_until(call, "failed", Duration::from_secs(15))
            .await;
        assert_eq!(s["reason"], reason, "{s}");
        talking_directly(customer, rep, Duration::from_secs(10)).await;
        self.nothing_allocated().await;
    }
}

/// Whether `needles` occur in `log` in this order (each a substring of a later line than
/// the previous); the first one missing otherwise.
pub fn in_order(log: &[String], needles: &[&str]) -> Result<(), String> {
    let mut i = 0;
    for n in needles {
        match log[i..].iter().position(|l| l.contains(n)) {
            Some(p) => i += p + 1,
            None => return Err((*n).to_string()),
        }
    }
    Ok(())
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A simulated phone on loopback registered nowhere: it points at the simulator.
pub async fn phone(proxy: SocketAddr, number: &str) -> Phone {
    Phone::start(PhoneConfig {
        sip_listen: "127.0.0.1:0".parse().unwrap(),
        rtp_listen: "127.0.0.1:0".parse().unwrap(),
        proxy,
        number: number.into(),
    })
    .await
    .expect("phone starts")
}

/// Wait until `f` holds (polling every 20 ms), or panic with `what`.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The customer and the representative talk to each other directly (not through
/// tonewall): each phone's media target is the other's RTP address, neither is held, and
/// RTP is arriving from the other.
pub async fn talking_directly(customer: &Phone, rep: &Phone, timeout: Duration) {
    let (c_rtp, r_rtp) = (customer.rtp_addr(), rep.rtp_addr());
    eventually(
        "the customer and the representative talk to each other again",
        timeout,
        || {
            let (c, r) = (customer.stats(), rep.stats());
            c.in_call
                && r.in_call
                && !c.held
                && !r.held
                && c.remote_media == Some(r_rtp)
                && r.remote_media == Some(c_rtp)
                && c.last_rtp_from == Some(r_rtp)
                && r.last_rtp_from == Some(c_rtp)
        },
    )
    .await;
}
