//! The BroadWorks Xsi adapter: recorded Xsi bodies parse and normalise; garbage never
//! panics; against a small Xsi stub on 127.0.0.1 (real HTTP), every action's request, the
//! error mapping, and the event channel (acks, de-dup, heartbeats, recovery).

mod xsi_stub;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use tonewall::carrier::broadworks::xml::{self, EventData, StreamDoc};
use tonewall::carrier::broadworks::Broadworks;
use tonewall::carrier::{CallEventKind, CallInfo, CallState, Carrier, CarrierError, CarrierEvent};
use xsi_stub::*;

// ---------------------------------------------------------------------------------------
// Recorded bodies

#[test]
fn every_event_type_normalises() {
    let cases = [
        (
            "event_call_originated.xml",
            Some(CallEventKind::Alerting),
            "callhalf-2:0",
        ),
        (
            "event_call_received.xml",
            Some(CallEventKind::Alerting),
            "callhalf-1:0",
        ),
        (
            "event_call_answered.xml",
            Some(CallEventKind::Answered),
            "callhalf-1:0",
        ),
        (
            "event_call_answered_default_ns.xml",
            Some(CallEventKind::Answered),
            "callhalf-1:0",
        ),
        (
            "event_call_held.xml",
            Some(CallEventKind::Held),
            "callhalf-1:0",
        ),
        (
            "event_call_retrieved.xml",
            Some(CallEventKind::Retrieved),
            "callhalf-1:0",
        ),
        (
            "event_call_redirected.xml",
            Some(CallEventKind::Redirected),
            "callhalf-1:0",
        ),
        (
            "event_call_transferred.xml",
            Some(CallEventKind::Redirected),
            "callhalf-1:0",
        ),
        (
            "event_call_released.xml",
            Some(CallEventKind::Released),
            "callhalf-1:0",
        ),
        (
            "event_call_updated.xml",
            Some(CallEventKind::Updated),
            "callhalf-2:0",
        ),
        (
            "event_call_forwarded.xml",
            Some(CallEventKind::Updated),
            "callhalf-3:0",
        ),
        ("event_call_subscription.xml", None, ""),
        ("event_subscription_terminated.xml", None, ""),
        ("event_channel_terminated.xml", None, ""),
    ];
    for (file, kind, call_id) in cases {
        let StreamDoc::Event(ev) = xml::parse_stream_doc(&data(file)).unwrap() else {
            panic!("{file}: not an event");
        };
        assert!(!ev.event_id.is_empty(), "{file}");
        match kind {
            Some(k) => {
                let ce = ev
                    .normalise()
                    .unwrap_or_else(|| panic!("{file}: no call event"));
                assert_eq!(ce.kind, k, "{file}");
                assert_eq!(ce.call_id, call_id, "{file}");
                assert_eq!(ce.user, REP, "{file}");
                assert_eq!(ce.event_id, ev.event_id, "{file}");
            }
            None => assert_eq!(ev.normalise(), None, "{file}"),
        }
    }
    let held = xml::parse_stream_doc(&data("event_call_held.xml")).unwrap();
    let StreamDoc::Event(held) = held else {
        panic!()
    };
    assert_eq!(held.event_id, "0a1b2c3d-0004-4e5f-8a9b-000000000004");
    assert_eq!(
        held.normalise().unwrap().remote.as_deref(),
        Some("tel:+61400000001")
    );
    let pretty = xml::parse_stream_doc(&data("event_call_answered_default_ns.xml")).unwrap();
    let plain = xml::parse_stream_doc(&data("event_call_answered.xml")).unwrap();
    assert_eq!(pretty, plain, "default namespace and prefixes read alike");
    let originated = xml::parse_stream_doc(&data("event_call_originated.xml")).unwrap();
    let StreamDoc::Event(o) = originated else {
        panic!()
    };
    assert_eq!(
        o.normalise().unwrap().remote.as_deref(),
        Some("sip:+61390001042@tonewall.example")
    );
    for (file, want) in [
        (
            "event_subscription_terminated.xml",
            EventData::SubscriptionTerminated,
        ),
        ("event_channel_terminated.xml", EventData::ChannelTerminated),
        (
            "event_call_subscription.xml",
            EventData::Other("CallSubscriptionEvent".into()),
        ),
    ] {
        let StreamDoc::Event(ev) = xml::parse_stream_doc(&data(file)).unwrap() else {
            panic!("{file}")
        };
        assert_eq!(ev.data, want, "{file}");
    }
}

#[test]
fn every_recorded_body_parses() {
    let calls = xml::parse_calls(&data("calls.xml")).unwrap();
    let ids: Vec<&str> = calls.iter().map(|(c, _)| c.call_id.as_str()).collect();
    assert_eq!(ids, ["callhalf-1:0", "callhalf-2:0"]);
    assert!(calls.iter().all(|(_, has_state)| !has_state));
    assert!(xml::parse_calls(&data("calls_empty.xml"))
        .unwrap()
        .is_empty());
    let want = CallInfo {
        call_id: "callhalf-1:0".into(),
        state: CallState::Active,
        remote: Some("tel:+61400000001".into()),
    };
    assert_eq!(xml::parse_call(&data("call.xml")).unwrap(), want);
    let held = xml::parse_call(&data("call_prefixed.xml")).unwrap();
    assert_eq!(held.state, CallState::Held);
    assert_eq!(held.remote, want.remote);
    assert_eq!(
        xml::parse_call_start(&data("call_start_info.xml")).unwrap(),
        "callhalf-2:0"
    );
    assert_eq!(
        xml::parse_stream_doc(&data("channel.xml")).unwrap(),
        StreamDoc::Channel {
            channel_id: "c3e9a4b2-0f6d-4a8e-b1c7-5e2f9d3a6b80".into(),
            expires: Some(3600),
        }
    );
    assert_eq!(
        xml::parse_stream_doc(&data("channel_heartbeat.xml")).unwrap(),
        StreamDoc::HeartBeat
    );
    assert_eq!(
        xml::parse_subscription(&data("subscription.xml")).unwrap(),
        "8a1f0e2c-5b7d-4f3e-9c61-2d4e8b0a7f13"
    );
    assert_eq!(
        xml::parse_subscription_grant(&data("subscription.xml")).unwrap(),
        (
            "8a1f0e2c-5b7d-4f3e-9c61-2d4e8b0a7f13".to_string(),
            Some(3600)
        )
    );
    assert_eq!(xml::parse_refresh(""), None);
    assert_eq!(xml::parse_refresh("<x/"), None);
    assert_eq!(
        xml::parse_refresh(&xml::subscription_refresh_body(120)),
        Some(120)
    );
    assert_eq!(xml::parse_refresh(&xml::channel_refresh_body(7)), Some(7));
    let e = xml::parse_error_info(&data("error_info.xml")).unwrap();
    assert_eq!(e.summary, "[Error 4008] Call not found: callhalf-9:0");
    assert_eq!(e.code.as_deref(), Some("4008"));
    let e = xml::parse_error_info(&data("error_info_prefixed.xml")).unwrap();
    assert_eq!(e.summary, "[Error 4410] Bad request & more: address <+61>");
    // Wrong roots are errors, not guesses.
    assert!(xml::parse_call(&data("calls.xml")).is_err());
    assert!(xml::parse_call_start(&data("error_info.xml")).is_err());
    // Every file in the folder is a well-formed Xsi document.
    for f in data_files() {
        xml::parse(&data(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn truncated_and_mangled_bodies_are_errors_never_panics() {
    for f in data_files() {
        let doc = data(&f);
        let end = doc.rfind('>').unwrap();
        for cut in (0..end).step_by(3) {
            if !doc.is_char_boundary(cut) {
                continue;
            }
            let prefix = &doc[..cut];
            assert!(xml::parse(prefix).is_err(), "{f} cut at {cut} parsed");
            let _ = xml::parse_stream_doc(prefix);
        }
        // Flip bytes here and there: whatever comes out, nothing panics.
        let bytes = doc.as_bytes();
        for i in (0..bytes.len()).step_by(13) {
            for b in [b'<', b'>', b'&', b'"', 0xff] {
                let mut m = bytes.to_vec();
                m[i] = b;
                let s = String::from_utf8_lossy(&m);
                let _ = xml::parse_stream_doc(&s);
                let _ = xml::parse_call(&s);
            }
        }
    }
    for junk in [
        "",
        "<",
        "<?xml",
        "<Event>",
        "<Event><eventID>x</eventID>",
        "}{",
        "<a></b>",
    ] {
        assert!(xml::parse_stream_doc(junk).is_err(), "{junk:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Xsi-Actions

#[tokio::test]
async fn each_action_sends_the_documented_request() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    let user = "rep 1@sim.example";
    let call = "callhalf-1:0";
    bw.hold(user, call).await.unwrap();
    bw.resume(user, call).await.unwrap();
    assert_eq!(
        bw.originate(user, "+61390001042").await.unwrap(),
        "callhalf-2:0"
    );
    bw.blind_transfer(user, call, "+61390001042").await.unwrap();
    bw.hang_up(user, call).await.unwrap();
    bw.reconnect(user).await.unwrap();
    let got: Vec<(String, String, Option<String>)> = st
        .log()
        .into_iter()
        .map(|r| {
            assert_eq!(r.auth.as_deref(), Some(AUTH), "{} {}", r.method, r.path);
            assert_eq!(r.body, "", "{} {}", r.method, r.path);
            (r.method, r.path, r.query)
        })
        .collect();
    let u = format!("{ACT}/user/rep%201@sim.example/calls");
    let want = vec![
        ("PUT".to_string(), format!("{u}/callhalf-1:0/Hold"), None),
        ("PUT".into(), format!("{u}/callhalf-1:0/Talk"), None),
        (
            "POST".into(),
            format!("{u}/new"),
            Some("address=%2B61390001042".into()),
        ),
        (
            "PUT".into(),
            format!("{u}/callhalf-1:0/BlindTransfer"),
            Some("address=%2B61390001042".into()),
        ),
        ("DELETE".into(), format!("{u}/callhalf-1:0"), None),
        ("PUT".into(), format!("{u}/Reconnect"), None),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn calls_are_listed_and_read() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    st.set_calls(REP, &["callhalf-1:0", "callhalf-7:0"]);
    let calls = bw.calls(REP).await.unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].call_id, "callhalf-1:0");
    assert_eq!(calls[1].call_id, "callhalf-7:0");
    assert!(calls.iter().all(|c| c.state == CallState::Active));
    assert_eq!(calls[0].remote.as_deref(), Some("tel:+61400000001"));
    let one = bw.call(REP, "callhalf-7:0").await.unwrap();
    assert_eq!(one, calls[1]);
    let paths: Vec<String> = st
        .log()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            format!("GET {ACT}/user/{REP}/calls"),
            format!("GET {ACT}/user/{REP}/calls/callhalf-1:0"),
            format!("GET {ACT}/user/{REP}/calls/callhalf-7:0"),
            format!("GET {ACT}/user/{REP}/calls/callhalf-7:0"),
        ]
    );
    match bw.call(REP, "callhalf-9:0").await {
        Err(CarrierError::Refused {
            action: "call",
            status: 404,
            summary,
        }) => {
            assert_eq!(summary, "[Error 4008] Call not found: callhalf-9:0")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn errors_map_to_carrier_errors() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    *st.fail.lock().unwrap() = Some((404, data("error_info.xml")));
    assert_eq!(
        bw.hold(REP, "callhalf-9:0").await,
        Err(CarrierError::Refused {
            action: "Hold",
            status: 404,
            summary: "[Error 4008] Call not found: callhalf-9:0".into()
        })
    );
    *st.fail.lock().unwrap() = Some((500, data("error_info_prefixed.xml")));
    match bw.blind_transfer(REP, "c", "1").await {
        Err(CarrierError::Refused {
            action: "BlindTransfer",
            status: 500,
            summary,
        }) => {
            assert_eq!(summary, "[Error 4410] Bad request & more: address <+61>")
        }
        other => panic!("{other:?}"),
    }
    *st.fail.lock().unwrap() = Some((401, String::new()));
    let e = bw.reconnect(REP).await.unwrap_err();
    assert_eq!(
        e,
        CarrierError::Refused {
            action: "Reconnect",
            status: 401,
            summary: "Unauthorized".into()
        }
    );
    assert!(!format!("{e} {e:?}").contains(PASSWORD));
    *st.fail.lock().unwrap() = Some((201, "<CallStartInfo><nope/>".into()));
    assert!(matches!(
        bw.originate(REP, "1").await,
        Err(CarrierError::BadResponse { action: "new", .. })
    ));
    *st.fail.lock().unwrap() = Some((200, "not xml at all".into()));
    assert!(matches!(
        bw.calls(REP).await,
        Err(CarrierError::BadResponse {
            action: "calls",
            ..
        })
    ));
    // An answer slower than the request timeout.
    *st.delay.lock().unwrap() = Duration::from_millis(1500);
    assert!(matches!(
        bw.hang_up(REP, "c").await,
        Err(CarrierError::Unreachable {
            action: "Release",
            ..
        })
    ));
    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = adapter(&closed).hold(REP, "c").await.unwrap_err();
    assert!(
        matches!(e, CarrierError::Unreachable { action: "Hold", .. }),
        "{e:?}"
    );
    assert!(!format!("{e} {e:?}").contains(PASSWORD));
}

#[tokio::test]
async fn from_config_reads_the_password_from_the_environment() {
    let (st, url) = stub().await;
    let var = "TONEWALL_TEST_XSI_PASSWORD_ADAPTER";
    // SAFETY: set once, before any thread of this test reads it; no other test uses it.
    unsafe { std::env::set_var(var, PASSWORD) };
    let c: tonewall::config::CarrierConfig = toml::from_str(&format!(
        "id = \"bw\"\nkind = \"broadworks\"\nxsi_url = \"{url}/\"\nuser = \"{USER}\"\npassword_env = \"{var}\""
    ))
    .unwrap();
    let bw = Broadworks::from_config(&c).unwrap();
    assert!(!format!("{bw:?}").contains(PASSWORD));
    bw.hold(REP, "c").await.unwrap();
    let r = &st.log()[0];
    assert_eq!(r.auth.as_deref(), Some(AUTH));
    assert_eq!(r.path, format!("{ACT}/user/{REP}/calls/c/Hold"));
    assert_eq!(bw.user_uri("2001").as_deref(), Some("sip:2001@127.0.0.1"));
    let missing: tonewall::config::CarrierConfig = toml::from_str(
        "id = \"bw\"\nkind = \"broadworks\"\nxsi_url = \"http://x\"\nuser = \"u\"\npassword_env = \"TONEWALL_TEST_UNSET_VAR_XYZ\"",
    )
    .unwrap();
    assert!(Broadworks::from_config(&missing).is_err());
}

// ---------------------------------------------------------------------------------------
// Xsi-Events

#[tokio::test]
async fn channel_subscribe_acknowledge_dedup_heartbeat() {
    let (st, url) = stub().await;
    st.set_calls(REP, &["callhalf-1:0"]);
    let bw = Arc::new(adapter(&url));
    let mut rx = bw.events();
    // Concurrent watchers of one user: one subscription.
    let (a, b) = tokio::join!(bw.watch(REP), bw.watch(REP));
    a.unwrap();
    b.unwrap();
    bw.watch(REP).await.unwrap();
    let ch = st.requests("POST", CHANNEL);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].auth.as_deref(), Some(AUTH));
    let set = bw.channel_set_id();
    assert_eq!(
        ch[0].body,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="http://schema.broadsoft.com/xsi"><channelSetId>{set}</channelSetId><priority>1</priority><weight>100</weight><expires>3600</expires></Channel>"#
        )
    );
    let subs = st.requests("POST", &format!("{EVT}/user/{REP}"));
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].auth.as_deref(), Some(AUTH));
    assert_eq!(
        subs[0].body,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Subscription xmlns="http://schema.broadsoft.com/xsi"><event>Advanced Call</event><expires>3600</expires><channelSetId>{set}</channelSetId><applicationId>tonewall</applicationId></Subscription>"#
        )
    );

    // One event split over two chunks.
    let held = event("event_call_held.xml", "ev-1");
    let (x, y) = held.split_at(held.len() / 2);
    st.write(x);
    tokio::time::sleep(Duration::from_millis(30)).await;
    st.write(y);
    assert_eq!(
        next(&mut rx).await,
        call_event("ev-1", "callhalf-1:0", CallEventKind::Held)
    );
    // Two events in one chunk, then a duplicate of the first.
    let two = event("event_call_retrieved.xml", "ev-2") + &event("event_call_released.xml", "ev-3");
    st.write(&two);
    assert_eq!(
        next(&mut rx).await,
        call_event("ev-2", "callhalf-1:0", CallEventKind::Retrieved)
    );
    assert_eq!(
        next(&mut rx).await,
        call_event("ev-3", "callhalf-1:0", CallEventKind::Released)
    );
    st.write(&event("event_call_held.xml", "ev-1"));
    st.write(&event("event_call_answered.xml", "ev-4"));
    assert_eq!(
        next(&mut rx).await,
        call_event("ev-4", "callhalf-1:0", CallEventKind::Answered)
    );
    until("acks", || {
        st.acks("ev-1") == 2 && st.acks("ev-2") == 1 && st.acks("ev-3") == 1 && st.acks("ev-4") == 1
    })
    .await;
    let ack = &st.requests("POST", &format!("{EVT}/channel/eventresponse"))[0];
    assert_eq!(ack.auth.as_deref(), Some(AUTH));
    assert_eq!(
        ack.body,
        r#"<?xml version="1.0" encoding="UTF-8"?><EventResponse xmlns="http://schema.broadsoft.com/xsi"><eventID>ev-1</eventID><statusCode>200</statusCode><reason>OK</reason></EventResponse>"#
    );
    // Heartbeats on the channel; the stream stays up while they are answered.
    until("two heartbeats", || {
        st.requests("PUT", &format!("{EVT}/channel/ch-1/heartbeat"))
            .len()
            >= 3
    })
    .await;
    assert_eq!(st.opened.load(Ordering::SeqCst), 1);
    assert!(matches!(
        rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn stream_cut_recovers_and_reports_vanished_calls() {
    let (st, url) = stub().await;
    st.set_calls(REP, &["callhalf-1:0", "callhalf-2:0"]);
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    // A call learnt from an event.
    st.write(&event("event_call_forwarded.xml", "ev-10"));
    assert!(matches!(next(&mut rx).await, CarrierEvent::Call(c) if c.call_id == "callhalf-3:0"));
    // While the stream is down, callhalf-2:0 and callhalf-3:0 end.
    st.set_calls(REP, &["callhalf-1:0"]);
    st.cut();
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamLost);
    let mut released = Vec::new();
    loop {
        match next(&mut rx).await {
            CarrierEvent::Call(c) => {
                assert_eq!(c.kind, CallEventKind::Released);
                assert_eq!(c.user, REP);
                released.push(c.call_id);
            }
            CarrierEvent::StreamRestored => break,
            CarrierEvent::StreamLost => panic!("lost twice"),
        }
    }
    released.sort();
    assert_eq!(released, ["callhalf-2:0", "callhalf-3:0"]);
    assert_eq!(st.opened.load(Ordering::SeqCst), 2);
    assert_eq!(st.requests("POST", &format!("{EVT}/user/{REP}")).len(), 2);
    assert_eq!(
        st.requests("GET", &format!("{ACT}/user/{REP}/calls")).len(),
        2
    );
    // The new channel delivers events.
    st.write(&event("event_call_held.xml", "ev-11"));
    assert_eq!(
        next(&mut rx).await,
        call_event("ev-11", "callhalf-1:0", CallEventKind::Held)
    );
    until("ack on the new channel", || st.acks("ev-11") == 1).await;
}

#[tokio::test]
async fn failed_heartbeats_and_channel_termination_lose_the_stream() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    st.heartbeat_status.store(404, Ordering::SeqCst);
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamLost);
    st.heartbeat_status.store(200, Ordering::SeqCst);
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamRestored);
    assert_eq!(st.opened.load(Ordering::SeqCst), 2);
    st.write(&event("event_channel_terminated.xml", "ev-20"));
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamLost);
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamRestored);
    assert_eq!(st.opened.load(Ordering::SeqCst), 3);
    until("ack of the termination", || st.acks("ev-20") == 1).await;
}

#[tokio::test]
async fn a_silent_stream_is_lost() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    // The channel stays open but is detached from the stub: heartbeats are answered, and
    // nothing arrives on the stream.
    let _open = st.streams.lock().unwrap().pop().unwrap();
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamLost);
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamRestored);
}

#[tokio::test]
async fn watch_fails_cleanly_without_a_channel() {
    let (st, url) = stub().await;
    *st.delay.lock().unwrap() = Duration::from_secs(3);
    let bw = adapter(&url);
    let e = bw.watch(REP).await.unwrap_err();
    assert!(
        matches!(
            e,
            CarrierError::Unreachable {
                action: "subscribe",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_terminated_subscription_is_renewed() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    bw.watch(REP).await.unwrap();
    let subs = format!("{EVT}/user/{REP}");
    assert_eq!(st.requests("POST", &subs).len(), 1);
    st.write(&event("event_subscription_terminated.xml", "ev-30"));
    until("re-subscription", || st.requests("POST", &subs).len() == 2).await;
    until("ack", || st.acks("ev-30") == 1).await;
    assert_eq!(st.opened.load(Ordering::SeqCst), 1, "the channel stays up");
}
