//! The carrier simulator end to end: phones, the B2BUA flows, Xsi actions and events, faults.
//! All in-process over real UDP and HTTP on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tonewall::sim::{self, Phone, PhoneConfig, SimConfig, SimHandle, SimUser};

const REP: &str = "rep1@sim.example";
const CUST: &str = "0400000001";
const DNIS: &str = "5550001";
const USER: &str = "xsiuser";
const PASS: &str = "s3cret";
const ACT: &str = "/com.broadsoft.xsi-actions/v2.0";
const EVT: &str = "/com.broadsoft.xsi-events/v2.0";

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

struct Rig {
    sim: SimHandle,
    customer: Phone,
    rep: Phone,
    trunk: Phone,
    http: reqwest::Client,
}

async fn phone(number: &str, proxy: SocketAddr) -> Phone {
    Phone::start(PhoneConfig {
        sip_listen: lo(),
        rtp_listen: lo(),
        proxy,
        number: number.into(),
    })
    .await
    .expect("phone")
}

async fn rig() -> Rig {
    let nowhere: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let rep = phone("2001", nowhere).await;
    let trunk = phone("trunk", nowhere).await;
    let sim = sim::start(SimConfig {
        xsi_listen: lo(),
        sip_listen: lo(),
        xsi_user: USER.into(),
        xsi_password: PASS.into(),
        trunk: trunk.sip_addr(),
        users: vec![SimUser {
            id: REP.into(),
            number: "2001".into(),
            phone: rep.sip_addr(),
        }],
        expires: sim::DEFAULT_EXPIRES,
    })
    .await
    .expect("sim");
    let customer = phone(CUST, sim.sip_addr()).await;
    Rig {
        sim,
        customer,
        rep,
        trunk,
        http: reqwest::Client::new(),
    }
}

impl Rig {
    async fn req(&self, method: &str, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.sim.xsi_url());
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = self
            .http
            .request(m, url)
            .basic_auth(USER, Some(PASS))
            .send()
            .await
            .expect("xsi");
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    }

    async fn action(&self, method: &str, tail: &str) -> (u16, String) {
        self.req(method, &format!("{ACT}/user/{REP}/calls{tail}"))
            .await
    }

    async fn post(&self, path: &str, body: String) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.sim.xsi_url()))
            .basic_auth(USER, Some(PASS))
            .body(body)
            .send()
            .await
            .expect("post")
    }

    /// Open a channel and subscribe the rep; documents arrive on the receiver. `ack`: the
    /// reader acknowledges every event.
    async fn channel(&self, ack: bool) -> (String, mpsc::UnboundedReceiver<String>) {
        let resp = self
            .post(
                "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel",
                "<Channel xmlns=\"http://schema.broadsoft.com/xsi\"><channelSetId>set1</channelSetId><priority>1</priority><weight>100</weight><expires>3600</expires></Channel>".into(),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let http = self.http.clone();
        let base = self.sim.xsi_url();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(start) = buf.find("<?xml") {
                    let next = buf[start + 5..].find("<?xml").map(|i| i + start + 5);
                    let end = match next {
                        Some(n) => n,
                        None if buf.ends_with("</xsi:Event>")
                            || buf.ends_with("</Channel>")
                            || buf.ends_with("/>") =>
                        {
                            buf.len()
                        }
                        None => break,
                    };
                    let doc = buf[start..end].to_string();
                    buf.drain(..end);
                    if ack && doc.contains("<xsi:Event") {
                        let id = between(&doc, "<xsi:eventID>", "</xsi:eventID>");
                        let _ = http
                            .post(format!("{base}{EVT}/channel/eventresponse"))
                            .basic_auth(USER, Some(PASS))
                            .body(format!("<EventResponse xmlns=\"http://schema.broadsoft.com/xsi\"><eventID>{id}</eventID><statusCode>200</statusCode><reason>OK</reason></EventResponse>"))
                            .send()
                            .await;
                    }
                    if tx.send(doc).is_err() {
                        return;
                    }
                }
            }
        });
        let first = recv(&mut rx).await;
        let channel_id = between(&first, "<channelId>", "</channelId>");
        let sub = self
            .post(
                &format!("{EVT}/user/{REP}"),
                "<Subscription xmlns=\"http://schema.broadsoft.com/xsi\"><event>Advanced Call</event><expires>3600</expires><channelSetId>set1</channelSetId><applicationId>tonewall</applicationId></Subscription>".into(),
            )
            .await;
        assert_eq!(sub.status().as_u16(), 200);
        (channel_id, rx)
    }

    async fn call_in(&self) -> String {
        self.customer.dial("2001").await.expect("dial");
        let calls = self.sim.calls(REP);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].state, "Active");
        assert_eq!(calls[0].remote, format!("tel:{CUST}"));
        assert_eq!(calls[0].peer, format!("phone:{CUST}"));
        media_flows(&self.customer, &self.rep).await;
        calls[0].call_id.clone()
    }
}

fn between(s: &str, a: &str, b: &str) -> String {
    s.split(a)
        .nth(1)
        .and_then(|x| x.split(b).next())
        .unwrap_or("")
        .to_string()
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("document in time")
        .expect("stream open")
}

/// The next event's (type, callId), skipping heartbeats.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>) -> (String, String) {
    loop {
        let d = recv(rx).await;
        if d.contains("<xsi:Event") {
            let t = between(&d, "<xsi:eventData xsi1:type=\"xsi:", "\"");
            return (t, between(&d, "<xsi:callId>", "</xsi:callId>"));
        }
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// RTP keeps arriving both ways between `a` and `b`.
async fn media_flows(a: &Phone, b: &Phone) {
    let (ab0, ba0) = (b.received_from(a.rtp_addr()), a.received_from(b.rtp_addr()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(b.received_from(a.rtp_addr()) > ab0 + 5 && a.received_from(b.rtp_addr()) > ba0 + 5) {
        assert!(
            Instant::now() < deadline,
            "no media both ways between {:?} and {:?}: {:?} / {:?}",
            a.rtp_addr(),
            b.rtp_addr(),
            a.stats(),
            b.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_in_order(log: &[String], expected: &[String]) {
    let mut it = log.iter();
    for e in expected {
        assert!(
            it.any(|l| l == e),
            "missing or out of order: {e:?}\nlog: {log:#?}"
        );
    }
}

#[tokio::test]
async fn call_in_hold_originate_transfer_refer_release() {
    let r = rig().await;
    let (_chan, mut ev) = r.channel(true).await;
    let n = r.call_in().await;
    assert_eq!(
        next_event(&mut ev).await,
        ("CallReceivedEvent".into(), n.clone())
    );
    assert_eq!(
        next_event(&mut ev).await,
        ("CallAnsweredEvent".into(), n.clone())
    );

    // Hold: the customer gets sendonly and stops sending.
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    assert!(r.customer.stats().held);
    assert_eq!(r.sim.calls(REP)[0].state, "Held");
    assert_eq!(
        next_event(&mut ev).await,
        ("CallHeldEvent".into(), n.clone())
    );

    // Originate to the DNIS: the rep's phone auto-answers, the trunk gets the INVITE.
    let (st, body) = r.action("POST", &format!("/new?address={DNIS}")).await;
    assert_eq!(st, 201);
    assert!(body.contains("<CallStartInfo"));
    let m = between(&body, "<callId>", "</callId>");
    assert_eq!(
        next_event(&mut ev).await,
        ("CallOriginatedEvent".into(), m.clone())
    );
    assert_eq!(
        next_event(&mut ev).await,
        ("CallAnsweredEvent".into(), m.clone())
    );
    let c = r.sim.calls(REP);
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[1].call_id.as_str(), c[1].state.as_str()),
        (m.as_str(), "Active")
    );
    assert_eq!(c[1].peer, format!("trunk:{DNIS}"));
    media_flows(&r.rep, &r.trunk).await;

    // Blind transfer: the customer now talks to the trunk, the rep's old half is gone.
    assert_eq!(
        r.action("PUT", &format!("/{n}/BlindTransfer?address={DNIS}"))
            .await
            .0,
        200
    );
    assert_eq!(
        next_event(&mut ev).await,
        ("CallRedirectedEvent".into(), n.clone())
    );
    assert_eq!(
        next_event(&mut ev).await,
        ("CallReleasedEvent".into(), n.clone())
    );
    let c = r.sim.calls(REP);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].call_id, m);
    assert!(!r.customer.stats().held);
    media_flows(&r.customer, &r.trunk).await;
    // The rep's leg to the trunk stays up (the trunk phone answers its latest offer only).
    let from_rep = r.trunk.received_from(r.rep.rtp_addr());
    until("rep still reaches the trunk", || {
        r.trunk.received_from(r.rep.rtp_addr()) > from_rep + 5
    })
    .await;

    // REFER from the trunk hands the customer back to the rep.
    assert_eq!(
        r.trunk.refer(&format!("sip:{REP}")).await.expect("refer"),
        202
    );
    until("NOTIFY 200", || {
        r.trunk.stats().last_notify.as_deref() == Some("SIP/2.0 200 OK")
    })
    .await;
    assert_eq!(
        next_event(&mut ev).await,
        ("CallUpdatedEvent".into(), m.clone())
    );
    r.trunk.hang_up().await.expect("trunk hangs up");
    let c = r.sim.calls(REP);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].peer, format!("phone:{CUST}"));
    assert_eq!(c[0].remote, format!("tel:{CUST}"));
    media_flows(&r.customer, &r.rep).await;
    assert!(r.customer.stats().in_call && r.rep.stats().in_call);

    // Release: both phones are hung up.
    assert_eq!(r.action("DELETE", &format!("/{m}")).await.0, 200);
    assert_eq!(
        next_event(&mut ev).await,
        ("CallReleasedEvent".into(), m.clone())
    );
    until("phones idle", || {
        !r.customer.stats().in_call && !r.rep.stats().in_call
    })
    .await;
    assert!(r.sim.calls(REP).is_empty());

    let cust = format!("customer:{CUST}");
    let trunk = format!("trunk:{DNIS}");
    let expected: Vec<String> = [
        "sip > INVITE phone:2001".to_string(),
        "sip < 200 INVITE phone:2001".into(),
        format!("sip > INVITE {cust}"),
        format!("sip < 200 INVITE {cust}"),
        format!("xsi PUT /user/{REP}/calls/{n}/Hold -> 200"),
        format!("xsi POST /user/{REP}/calls/new -> 201"),
        format!("sip < 200 INVITE {trunk}"),
        format!("sip > INVITE {cust}"),
        format!("sip > INVITE {trunk}"),
        "sip > BYE phone:2001".into(),
        format!("xsi PUT /user/{REP}/calls/{n}/BlindTransfer -> 200"),
        format!("sip < REFER {trunk}"),
        format!("sip > NOTIFY {trunk} 100"),
        "sip > INVITE phone:2001".into(),
        format!("sip > INVITE {cust}"),
        format!("sip > NOTIFY {trunk} 200"),
        format!("sip < BYE {trunk}"),
        format!("xsi DELETE /user/{REP}/calls/{m} -> 200"),
    ]
    .into();
    let log = r.sim.log();
    assert_in_order(&log, &expected);
    assert!(log.iter().any(|l| l.starts_with("ack ")));
    // The detached trunk halves' BYEs went no further.
    assert_eq!(log.iter().filter(|l| l.starts_with("sip > BYE")).count(), 3);
    r.sim.shutdown().await;
}

#[tokio::test]
async fn talk_and_reconnect() {
    let r = rig().await;
    let (_chan, mut ev) = r.channel(true).await;
    let n = r.call_in().await;
    next_event(&mut ev).await;
    next_event(&mut ev).await;
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    assert!(r.customer.stats().held);
    assert_eq!(r.action("PUT", &format!("/{n}/Talk")).await.0, 200);
    assert!(!r.customer.stats().held);
    assert_eq!(r.sim.calls(REP)[0].state, "Active");
    assert_eq!(next_event(&mut ev).await.0, "CallHeldEvent");
    assert_eq!(
        next_event(&mut ev).await,
        ("CallRetrievedEvent".into(), n.clone())
    );
    media_flows(&r.customer, &r.rep).await;

    // Hold, dial the DNIS, then Reconnect: the trunk call goes, the customer is back.
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    let (st, body) = r.action("POST", &format!("/new?address={DNIS}")).await;
    assert_eq!(st, 201);
    let m = between(&body, "<callId>", "</callId>");
    assert_eq!(next_event(&mut ev).await.0, "CallHeldEvent");
    assert_eq!(next_event(&mut ev).await.0, "CallOriginatedEvent");
    assert_eq!(next_event(&mut ev).await.0, "CallAnsweredEvent");
    assert_eq!(r.action("PUT", "/Reconnect").await.0, 200);
    assert_eq!(
        next_event(&mut ev).await,
        ("CallReleasedEvent".into(), m.clone())
    );
    assert_eq!(
        next_event(&mut ev).await,
        ("CallRetrievedEvent".into(), n.clone())
    );
    until("trunk released", || !r.trunk.stats().in_call).await;
    let c = r.sim.calls(REP);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].state.as_str(), c[0].peer.clone()),
        ("Active", format!("phone:{CUST}"))
    );
    assert!(!r.customer.stats().held);
    media_flows(&r.customer, &r.rep).await;
    assert_in_order(
        &r.sim.log(),
        &[
            format!("xsi PUT /user/{REP}/calls/{n}/Talk -> 200"),
            format!("sip > BYE trunk:{DNIS}"),
            format!("sip > INVITE customer:{CUST}"),
            format!("xsi PUT /user/{REP}/calls/Reconnect -> 200"),
        ],
    );

    // A BYE from the customer releases the rep's half.
    r.customer.hang_up().await.expect("hang up");
    assert_eq!(
        next_event(&mut ev).await,
        ("CallReleasedEvent".into(), n.clone())
    );
    until("rep idle", || !r.rep.stats().in_call).await;
    assert!(r.sim.calls(REP).is_empty());
    r.sim.shutdown().await;
}

#[tokio::test]
async fn fail_action_answers_500_and_does_nothing() {
    let r = rig().await;
    let n = r.call_in().await;
    for (action, method, tail) in [
        ("Hold", "PUT", format!("/{n}/Hold")),
        ("Talk", "PUT", format!("/{n}/Talk")),
        ("new", "POST", format!("/new?address={DNIS}")),
        (
            "BlindTransfer",
            "PUT",
            format!("/{n}/BlindTransfer?address={DNIS}"),
        ),
        ("Reconnect", "PUT", "/Reconnect".to_string()),
        ("Release", "DELETE", format!("/{n}")),
    ] {
        r.sim.faults().set_fail_action(Some(action));
        let (st, body) = r.action(method, &tail).await;
        assert_eq!(st, 500, "{action}");
        assert!(
            body.contains("<ErrorInfo") && body.contains("<errorCode>"),
            "{body}"
        );
    }
    r.sim.faults().set_fail_action(None);
    let c = r.sim.calls(REP);
    assert_eq!((c.len(), c[0].state.as_str()), (1, "Active"));
    assert!(!r.customer.stats().held && !r.trunk.stats().in_call);
    assert!(!r
        .sim
        .log()
        .iter()
        .any(|l| l.contains(&format!("trunk:{DNIS}"))));
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    r.sim.shutdown().await;
}

#[tokio::test]
async fn dnis_busy_refuses_originate_and_transfer() {
    let r = rig().await;
    let (_chan, mut ev) = r.channel(true).await;
    let n = r.call_in().await;
    next_event(&mut ev).await;
    next_event(&mut ev).await;
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    next_event(&mut ev).await;
    r.sim.faults().set_dnis_busy(true);
    let (st, body) = r.action("POST", &format!("/new?address={DNIS}")).await;
    assert_eq!(st, 201);
    let m = between(&body, "<callId>", "</callId>");
    assert_eq!(
        next_event(&mut ev).await,
        ("CallOriginatedEvent".into(), m.clone())
    );
    assert_eq!(
        next_event(&mut ev).await,
        ("CallReleasedEvent".into(), m.clone())
    );
    assert_eq!(r.sim.calls(REP).len(), 1);
    // Blind transfer: refused with 409, the customer stays held with the rep.
    let (st, body) = r
        .action("PUT", &format!("/{n}/BlindTransfer?address={DNIS}"))
        .await;
    assert_eq!(st, 409);
    assert!(body.contains("<ErrorInfo"));
    let c = r.sim.calls(REP);
    assert_eq!((c.len(), c[0].state.as_str()), (1, "Held"));
    assert!(r.customer.stats().held);
    assert_eq!(r.customer.stats().remote_media, Some(r.rep.rtp_addr()));
    assert!(!r.trunk.stats().in_call);
    let log = r.sim.log();
    assert_in_order(
        &log,
        &[
            "sip > INVITE phone:2001".into(),
            format!("sip < 486 INVITE trunk:{DNIS}"),
            "sip > BYE phone:2001".into(),
            format!("sip > INVITE customer:{CUST}"),
            format!("sip < 486 INVITE trunk:{DNIS}"),
            format!("xsi PUT /user/{REP}/calls/{n}/BlindTransfer -> 409"),
        ],
    );
    assert!(!log
        .iter()
        .any(|l| l == &format!("sip > INVITE trunk:{DNIS}")));
    r.sim.shutdown().await;
}

#[tokio::test]
async fn event_delay_drop_and_cut() {
    let r = rig().await;
    let (chan, mut ev) = r.channel(true).await;
    let n = r.call_in().await;
    next_event(&mut ev).await;
    next_event(&mut ev).await;
    r.sim.faults().set_event_delay(Duration::from_millis(600));
    let t0 = Instant::now();
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    assert_eq!(next_event(&mut ev).await.0, "CallHeldEvent");
    assert!(t0.elapsed() >= Duration::from_millis(550));
    r.sim.faults().set_event_delay(Duration::ZERO);

    r.sim.faults().set_drop_events(true);
    assert_eq!(r.action("PUT", &format!("/{n}/Talk")).await.0, 200);
    assert!(r
        .sim
        .log()
        .contains(&format!("event-dropped CallRetrievedEvent {n}")));
    r.sim.faults().set_drop_events(false);
    assert_eq!(r.action("PUT", &format!("/{n}/Hold")).await.0, 200);
    assert_eq!(next_event(&mut ev).await.0, "CallHeldEvent");

    r.sim.faults().cut_stream();
    let end = tokio::time::timeout(Duration::from_secs(3), ev.recv()).await;
    assert_eq!(end.expect("stream ends"), None);
    assert!(r.sim.log().contains(&format!("channel cut {chan}")));
    r.sim.shutdown().await;
}

#[tokio::test]
async fn xsi_auth_errors_heartbeat_and_resend() {
    let r = rig().await;
    let url = format!("{}{ACT}/user/{REP}/calls", r.sim.xsi_url());
    let st = r.http.get(&url).send().await.expect("get").status();
    assert_eq!(st.as_u16(), 401);
    let st = r
        .http
        .get(&url)
        .basic_auth(USER, Some("wrong"))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(st.as_u16(), 401);
    let (st, body) = r.action("PUT", "/callhalf-99:0/Hold").await;
    assert_eq!(st, 404);
    assert!(body.contains("<errorCode>4008</errorCode>"), "{body}");
    assert!(body.contains("Call not found: callhalf-99:0"));
    let (st, body) = r.action("GET", "").await;
    assert_eq!(st, 200);
    assert!(body.contains("<Calls xmlns=\"http://schema.broadsoft.com/xsi\"></Calls>"));

    // Heartbeat on the channel; an event left unacknowledged is re-sent once after 2 s.
    let (chan, mut ev) = r.channel(false).await;
    let (st, _) = r
        .req("PUT", &format!("{EVT}/channel/{chan}/heartbeat"))
        .await;
    assert_eq!(st, 200);
    assert!(recv(&mut ev).await.contains("<ChannelHeartBeat"));
    let (st, _) = r.req("PUT", &format!("{EVT}/channel/nope/heartbeat")).await;
    assert_eq!(st, 404);
    r.customer.dial("2001").await.expect("dial");
    let first = recv(&mut ev).await;
    assert!(first.contains("xsi:CallReceivedEvent"));
    let id = between(&first, "<xsi:eventID>", "</xsi:eventID>");
    let (st, body) = r
        .action(
            "GET",
            &format!("/{}", between(&first, "<xsi:callId>", "</xsi:callId>")),
        )
        .await;
    assert_eq!(st, 200);
    assert!(body.contains("<personality>Terminator</personality>"));
    let mut seen = vec![id.clone()];
    let deadline = Instant::now() + Duration::from_millis(3500);
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline.into(), ev.recv()).await {
        seen.push(between(&d, "<xsi:eventID>", "</xsi:eventID>"));
    }
    assert_eq!(seen.iter().filter(|x| **x == id).count(), 2, "{seen:?}");
    let log = r.sim.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("event CallReceivedEvent"))
            .count(),
        2
    );
    assert!(log.contains(&format!("xsi GET /user/{REP}/calls -> 401")));
    r.sim.shutdown().await;
}

#[tokio::test]
async fn phone_sends_telephone_events() {
    let r = rig().await;
    r.call_in().await;
    r.customer.send_digits("12");
    until("events at the rep", || r.rep.stats().events_received >= 16).await;
    r.sim.shutdown().await;
}

#[tokio::test]
async fn refer_without_a_rep_leg_is_refused_with_503() {
    let r = rig().await;
    // The customer dials the DNIS directly: no call of the rep's faces the trunk.
    r.customer.dial(DNIS).await.expect("dial dnis");
    media_flows(&r.customer, &r.trunk).await;
    assert_eq!(
        r.trunk.refer(&format!("sip:{REP}")).await.expect("refer"),
        202
    );
    until("NOTIFY 503", || {
        r.trunk.stats().last_notify.as_deref() == Some("SIP/2.0 503 Service Unavailable")
    })
    .await;
    assert!(r
        .sim
        .log()
        .contains(&format!("sip > NOTIFY trunk:{DNIS} 503")));
    assert!(r.customer.stats().in_call);
    r.customer.hang_up().await.expect("hang up");
    until("trunk idle", || !r.trunk.stats().in_call).await;
    r.sim.shutdown().await;
}
