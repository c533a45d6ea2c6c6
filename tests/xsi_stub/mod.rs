//! A small Xsi stub for the adapter tests: real HTTP on 127.0.0.1, recording every request,
//! answering the Xsi-Actions and Xsi-Events paths of docs/carrier.md with the recorded bodies
//! in tests/data/xsi, and an event channel the test writes to and cuts.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use secrecy::SecretString;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;

use tonewall::carrier::broadworks::xml::{self, StreamDoc};
use tonewall::carrier::broadworks::{Broadworks, Timing};
use tonewall::carrier::{CallEvent, CallEventKind, CarrierEvent};

pub const USER: &str = "secure-admin@sim.example";
pub const PASSWORD: &str = "s3cret pass";
/// base64("secure-admin@sim.example:s3cret pass")
pub const AUTH: &str = "Basic c2VjdXJlLWFkbWluQHNpbS5leGFtcGxlOnMzY3JldCBwYXNz";
pub const REP: &str = "rep1@sim.example";
pub const ACT: &str = "/com.broadsoft.xsi-actions/v2.0";
pub const EVT: &str = "/com.broadsoft.xsi-events/v2.0";
pub const CHANNEL: &str = "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel";

pub fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/xsi")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn data_files() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/xsi");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    v.sort();
    v
}

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub auth: Option<String>,
    pub body: String,
    /// When the stub received it.
    pub at: std::time::Instant,
}

pub type StreamTx = mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

pub struct Stub {
    pub log: Mutex<Vec<Req>>,
    pub streams: Mutex<Vec<StreamTx>>,
    pub opened: AtomicUsize,
    /// Call ids per user for `GET …/calls`.
    pub calls: Mutex<HashMap<String, Vec<String>>>,
    /// The next action answers this status and body.
    pub fail: Mutex<Option<(u16, String)>>,
    pub heartbeat_status: AtomicU16,
    pub delay: Mutex<Duration>,
    /// The `expires` granted to channels and subscriptions (3600 unless set).
    pub grant: Mutex<u32>,
    /// Answers to `PUT …/channel/{id}`, `PUT …/subscription/{id}` and subscribing.
    pub channel_refresh_status: AtomicU16,
    pub subscription_refresh_status: AtomicU16,
    pub subscribe_status: AtomicU16,
}

impl Stub {
    pub fn new() -> Arc<Stub> {
        Arc::new(Stub {
            log: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
            calls: Mutex::new(HashMap::new()),
            fail: Mutex::new(None),
            heartbeat_status: AtomicU16::new(200),
            delay: Mutex::new(Duration::ZERO),
            grant: Mutex::new(3600),
            channel_refresh_status: AtomicU16::new(200),
            subscription_refresh_status: AtomicU16::new(200),
            subscribe_status: AtomicU16::new(200),
        })
    }

    pub fn log(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    pub fn requests(&self, method: &str, path: &str) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// Write raw bytes on the newest channel.
    pub fn write(&self, s: &str) {
        if let Some(tx) = self.streams.lock().unwrap().last() {
            let _ = tx.send(Ok(Bytes::copy_from_slice(s.as_bytes())));
        }
    }

    /// End every open channel's response.
    pub fn cut(&self) {
        self.streams.lock().unwrap().clear();
    }

    pub fn set_calls(&self, user: &str, ids: &[&str]) {
        self.calls
            .lock()
            .unwrap()
            .insert(user.into(), ids.iter().map(|s| s.to_string()).collect());
    }

    pub fn acks(&self, event_id: &str) -> usize {
        let want = format!("<eventID>{event_id}</eventID>");
        self.requests("POST", &format!("{EVT}/channel/eventresponse"))
            .iter()
            .filter(|r| r.body.contains(&want))
            .count()
    }
}

pub fn xml_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml;charset=UTF-8")
        .body(Body::from(body))
        .unwrap()
}

pub async fn handle(State(st): State<Arc<Stub>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    st.log.lock().unwrap().push(Req {
        method: method.clone(),
        path: path.clone(),
        query,
        auth,
        body,
        at: std::time::Instant::now(),
    });
    let grant = format!("<expires>{}</expires>", *st.grant.lock().unwrap());
    let delay = *st.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if path == CHANNEL {
        let n = st.opened.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let doc = data("channel.xml")
            .replace("c3e9a4b2-0f6d-4a8e-b1c7-5e2f9d3a6b80", &format!("ch-{n}"))
            .replace("<expires>3600</expires>", &grant);
        let _ = tx.send(Ok(Bytes::from(doc)));
        st.streams.lock().unwrap().push(tx);
        return Response::builder()
            .status(200)
            .header("content-type", "application/xml;charset=UTF-8")
            .body(Body::from_stream(UnboundedReceiverStream::new(rx)))
            .unwrap();
    }
    if let Some(evt) = path.strip_prefix(EVT) {
        if evt.ends_with("/heartbeat") {
            let status = st.heartbeat_status.load(Ordering::SeqCst);
            if status == 200 {
                st.write(&data("channel_heartbeat.xml"));
            }
            return xml_response(status, String::new());
        }
        if evt == "/channel/eventresponse" {
            return xml_response(200, String::new());
        }
        let status = |a: &AtomicU16| a.load(Ordering::SeqCst);
        let answer = |code: u16, ok: String| {
            if code == 200 {
                xml_response(200, ok)
            } else {
                xml_response(code, data("error_info.xml"))
            }
        };
        let ns = "http://schema.broadsoft.com/xsi";
        if evt.starts_with("/user/") {
            let ok = data("subscription.xml").replace("<expires>3600</expires>", &grant);
            return answer(status(&st.subscribe_status), ok);
        }
        if let Some(id) = evt.strip_prefix("/channel/") {
            match method.as_str() {
                "PUT" => {
                    let ok = format!(
                        r#"<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="{ns}"><channelId>{id}</channelId>{grant}</Channel>"#
                    );
                    return answer(status(&st.channel_refresh_status), ok);
                }
                "DELETE" => return xml_response(200, String::new()),
                _ => {}
            }
        }
        if let Some(id) = evt.strip_prefix("/subscription/") {
            if method == "PUT" {
                let ok = format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><Subscription xmlns="{ns}"><subscriptionId>{id}</subscriptionId>{grant}</Subscription>"#
                );
                return answer(status(&st.subscription_refresh_status), ok);
            }
        }
        return xml_response(404, data("error_info.xml"));
    }
    if let Some((status, body)) = st.fail.lock().unwrap().take() {
        return xml_response(status, body);
    }
    let Some(act) = path.strip_prefix(ACT) else {
        return xml_response(404, String::new());
    };
    let parts: Vec<&str> = act.split('/').collect();
    // ["", "user", user, "calls", ...]
    let user = parts
        .get(2)
        .copied()
        .unwrap_or_default()
        .replace("%40", "@");
    match (method.as_str(), &parts[3..]) {
        ("GET", ["calls"]) => {
            let ids = st
                .calls
                .lock()
                .unwrap()
                .get(&user)
                .cloned()
                .unwrap_or_default();
            let mut b = String::from(
                r#"<?xml version="1.0" encoding="UTF-8"?><Calls xmlns="http://schema.broadsoft.com/xsi">"#,
            );
            for id in ids {
                b.push_str(&format!(
                    "<call><callId>{id}</callId><extTrackingId>1:1</extTrackingId></call>"
                ));
            }
            b.push_str("</Calls>");
            xml_response(200, b)
        }
        ("GET", ["calls", id]) => {
            let known = st
                .calls
                .lock()
                .unwrap()
                .get(&user)
                .cloned()
                .unwrap_or_default();
            if known.iter().any(|k| k == id) {
                xml_response(200, data("call.xml").replace("callhalf-1:0", id))
            } else {
                xml_response(404, data("error_info.xml"))
            }
        }
        ("POST", ["calls", "new"]) => xml_response(201, data("call_start_info.xml")),
        _ => xml_response(200, String::new()),
    }
}

pub async fn stub() -> (Arc<Stub>, String) {
    let st = Stub::new();
    let app = axum::Router::new().fallback(handle).with_state(st.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (st, url)
}

pub fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(300),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request: Duration::from_millis(800),
        expires: Duration::from_secs(3600),
    }
}

pub fn adapter(url: &str) -> Broadworks {
    Broadworks::new("bw", url, USER, SecretString::from(PASSWORD))
        .unwrap()
        .with_timing(timing())
}

pub async fn next(rx: &mut broadcast::Receiver<CarrierEvent>) -> CarrierEvent {
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("no carrier event within 3 s")
        .expect("event stream closed")
}

pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn event(file: &str, id: &str) -> String {
    let doc = data(file);
    let StreamDoc::Event(ev) = xml::parse_stream_doc(&doc).unwrap() else {
        panic!()
    };
    doc.replace(&ev.event_id, id)
}

pub fn call_event(id: &str, call_id: &str, kind: CallEventKind) -> CarrierEvent {
    CarrierEvent::Call(CallEvent {
        user: REP.into(),
        call_id: call_id.into(),
        kind,
        remote: Some("tel:+61400000001".into()),
        event_id: id.into(),
    })
}
