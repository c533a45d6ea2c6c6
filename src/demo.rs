//! `tonewall demo`: a self-contained walk-through on loopback. It starts tonewall with a
//! `broadworks` carrier, the carrier simulator, and two simulated phones (a customer and a
//! representative), places the customer's call to the representative, and then secures
//! it: through the API by itself (`--non-interactive`), or by the user on the
//! representative's page. The customer's phone then keys in a test card, the masked fields
//! fill, the payment goes to the sandbox gateway, and the call is handed back.
//!
//! Must never: print a card digit (the walk-through names the test card, never its
//! number); listen anywhere but loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::config::Config;
use crate::sim::{self, Phone, PhoneConfig, SimConfig, SimHandle, SimUser};

/// The demo's API key (printed: it only opens the demo's own loopback server).
pub const DEMO_KEY: &str = "demo-key";
const XSI_USER: &str = "secure-admin@demo.example";
const XSI_PASSWORD_ENV: &str = "TONEWALL_DEMO_XSI_PASSWORD";
const REP_USER: &str = "rep1@demo.example";
const REP_NUMBER: &str = "2001";
const CUSTOMER_NUMBER: &str = "+61400000001";
/// The sandbox approves this test card (expiry 12/30, security code 123).
const TEST_CARD_KEYS: &str = "4111111111111111#1230#123#";

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The HTTP listen address of the demo server (loopback).
    pub http: SocketAddr,
    /// Secure the call by itself and exit when the walk-through is done.
    pub non_interactive: bool,
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

fn demo_config(http: SocketAddr, sip_port: u16, xsi_url: &str) -> anyhow::Result<Config> {
    let key = crate::api::auth::hash_key(DEMO_KEY);
    let audit = std::env::temp_dir().join(format!("tonewall-demo-{}.db", std::process::id()));
    let text = format!(
        r#"
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[media]
bind = "127.0.0.1"
ports = "40000-40999"
[http]
listen = "{http}"
[dnis]
ttl_s = 30
[[carrier]]
id = "demo"
kind = "broadworks"
peers = ["127.0.0.1/32"]
xsi_url = "{xsi_url}"
user = "{XSI_USER}"
password_env = "{XSI_PASSWORD_ENV}"
step_timeout_s = 5
[[tenant]]
id = "demo"
carrier = "demo"
api_keys = ["{key}"]
dnis = ["+61390001000-+61390001009"]
fields = ["pan", "expiry", "cvv"]
[audit]
path = "{audit}"
"#,
        audit = audit.display()
    );
    crate::config::parse(&text).map_err(|e| anyhow::anyhow!("demo config: {e}"))
}

struct Demo {
    sim: SimHandle,
    customer: Phone,
    rep: Phone,
    http: reqwest::Client,
    base: String,
}

fn say(step: &str) {
    println!("\n== {step}");
}

impl Demo {
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(DEMO_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.context("tonewall API")?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    /// Print the simulator's log lines from `from` on; the new position.
    fn show_log(&self, from: usize) -> usize {
        let log = self.sim.log();
        for l in log.iter().skip(from) {
            if !l.starts_with("ack ") {
                println!("   carrier: {l}");
            }
        }
        log.len()
    }

    async fn wait_state(&self, id: &str, want: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let s = self
                .api(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
                .await?;
            let state = s["state"].as_str().unwrap_or_default().to_string();
            if state != last {
                println!("   session {id}: {state}");
                last = state.clone();
            }
            if state == want {
                return Ok(s);
            }
            if state == "failed" || state == "ended" || Instant::now() > deadline {
                bail!("session is {state} (reason {}), not {want}", s["reason"]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait for a session to be created from the page: the transfer shows in the carrier.
    async fn wait_secured_from_page(&self) -> anyhow::Result<()> {
        loop {
            if self
                .sim
                .log()
                .iter()
                .any(|l| l.contains("/BlindTransfer -> 200"))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Run the demo.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if !opts.http.ip().is_loopback() {
        bail!("the demo listens on loopback only");
    }
    let xsi_password = format!("demo-{:016x}", rand::random::<u64>());
    // Set before the server reads it; nothing else in the process reads this variable.
    std::env::set_var(XSI_PASSWORD_ENV, &xsi_password);

    say("starting the representative's phone, the carrier simulator and tonewall");
    let rep = Phone::start(PhoneConfig {
        sip_listen: "127.0.0.1:0".parse()?,
        rtp_listen: "127.0.0.1:0".parse()?,
        proxy: "127.0.0.1:9".parse()?,
        number: REP_NUMBER.into(),
    })
    .await?;
    let sip_port = free_udp_port()?;
    let sim = sim::start(SimConfig {
        xsi_listen: "127.0.0.1:0".parse()?,
        sip_listen: "127.0.0.1:0".parse()?,
        xsi_user: XSI_USER.into(),
        xsi_password,
        trunk: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        users: vec![SimUser {
            id: REP_USER.into(),
            number: REP_NUMBER.into(),
            phone: rep.sip_addr(),
        }],
        expires: sim::DEFAULT_EXPIRES,
    })
    .await?;
    let config = demo_config(opts.http, sip_port, &sim.xsi_url())?;
    let running = crate::server::start(config).await?;
    let base = format!("http://{}", running.http);
    let customer = Phone::start(PhoneConfig {
        sip_listen: "127.0.0.1:0".parse()?,
        rtp_listen: "127.0.0.1:0".parse()?,
        proxy: sim.sip_addr(),
        number: CUSTOMER_NUMBER.into(),
    })
    .await?;
    println!("   tonewall API      {base}/v1/sessions   (API key: {DEMO_KEY})");
    println!("   representative's page  {base}/ui/");
    println!("   carrier (Xsi)     {}", sim.xsi_url());
    let demo = Demo {
        sim,
        customer,
        rep,
        http: reqwest::Client::new(),
        base,
    };
    let result = walk(&demo, &opts).await;
    if result.is_ok() && !opts.non_interactive {
        println!("\nThe demo keeps running; press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let carriers = running.manager.carriers();
    running.shutdown();
    crate::server::close_carriers(carriers).await;
    for l in demo
        .sim
        .log()
        .iter()
        .filter(|l| l.starts_with("channel delete"))
    {
        println!("   carrier: {l}");
    }
    demo.sim.shutdown().await;
    result
}

async fn walk(demo: &Demo, opts: &DemoOptions) -> anyhow::Result<()> {
    say(&format!(
        "the customer ({CUSTOMER_NUMBER}) calls the representative ({REP_NUMBER})"
    ));
    demo.customer.dial(REP_NUMBER).await?;
    let call = demo
        .sim
        .calls(REP_USER)
        .last()
        .map(|c| c.call_id.clone())
        .context("no call on the representative's line")?;
    let mut seen = demo.show_log(0);
    println!("   the call is {call} on {REP_USER}'s line");

    let id = if opts.non_interactive {
        say("the CRM secures the call: POST /v1/sessions");
        let asked = Instant::now();
        let s = demo
            .api(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({"call_id": call, "rep": REP_USER})),
            )
            .await?;
        let id = s["id"].as_str().context("session id")?.to_string();
        println!(
            "   session {id}, DNIS {}",
            s["dnis"].as_str().unwrap_or("?")
        );
        println!("   follow it: curl -N -H 'Authorization: Bearer {DEMO_KEY}' {}/v1/sessions/{id}/events", demo.base);
        demo.wait_state(&id, "bridged", Duration::from_secs(20))
            .await?;
        println!(
            "   bridged {} ms after the POST (hold, dial the DNIS, blind transfer)",
            asked.elapsed().as_millis()
        );
        Some(id)
    } else {
        say("secure the call from the representative's page");
        println!("   open {}/ui/?call_id={call}&rep={REP_USER}", demo.base);
        println!("   sign in with the key {DEMO_KEY} and click \"Secure call\".");
        demo.wait_secured_from_page().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        None
    };
    seen = demo.show_log(seen);
    say("third-party call control is done: both legs are on tonewall");

    say("the customer keys in the sandbox's test Visa card, its expiry and security code");
    let events_before = demo.rep.stats().events_received;
    demo.customer.send_digits(TEST_CARD_KEYS);
    let Some(id) = id else {
        tokio::time::sleep(Duration::from_secs(6)).await;
        println!(
            "   the representative's phone heard {} telephone-events of them",
            demo.rep.stats().events_received - events_before
        );
        println!(
            "   the masked fields are on the page: make the payment there, then end the session."
        );
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shown = String::new();
    loop {
        let s = demo
            .api(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
            .await?;
        let f = &s["fields"];
        let line = format!(
            "pan {:<18} expiry {:<6} cvv {:<5}",
            f["pan"]["masked"].as_str().unwrap_or(""),
            f["expiry"]["masked"].as_str().unwrap_or(""),
            f["cvv"]["masked"].as_str().unwrap_or("")
        );
        if line != shown {
            println!("   fields: {line}");
            shown = line;
        }
        if f["cvv"]["complete"] == true {
            break;
        }
        if Instant::now() > deadline {
            bail!("the digits never completed the fields: {s}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let leaked = demo.rep.stats().events_received - events_before;
    println!("   telephone-events that reached the representative's phone: {leaked}");
    if leaked != 0 {
        bail!("a key press reached the representative");
    }

    say(&format!(
        "the representative takes the payment: POST /v1/sessions/{id}/payment"
    ));
    let p = demo
        .api(
            reqwest::Method::POST,
            &format!("/v1/sessions/{id}/payment"),
            Some(json!({"amount_minor": 4200, "currency": "AUD", "description": "demo order", "cardholder": "Demo Customer"})),
        )
        .await?;
    println!(
        "   {} (reference {}, card {})",
        p["status"].as_str().unwrap_or("?"),
        p["reference"].as_str().unwrap_or("-"),
        p["masked_pan"].as_str().unwrap_or("?")
    );
    if p["status"] != "approved" {
        bail!("the sandbox did not approve the test card: {p}");
    }

    say(&format!(
        "the representative ends the secure session: DELETE /v1/sessions/{id}"
    ));
    demo.api(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (c, r) = (demo.customer.stats(), demo.rep.stats());
        if c.remote_media == Some(demo.rep.rtp_addr())
            && r.remote_media == Some(demo.customer.rtp_addr())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the customer was not handed back to the representative");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    demo.show_log(seen);
    say("the customer is back with the representative, outside tonewall. Done.");
    Ok(())
}
