//! Xsi over HTTP for the simulator: Basic auth, the Xsi-Actions paths of docs/carrier.md
//! (answered by `b2bua`/`actions`), the Xsi-Events channel (a streaming body), heartbeat,
//! subscription and event acknowledgement paths, and `ErrorInfo` bodies. Every Xsi-Actions
//! request is logged as `xsi METHOD /user/… -> STATUS`.
//!
//! Must never: log or echo a password or an Authorization header, or panic on input.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::b2bua::{Sim, XsiError};
use super::calls::xml_escape;
use super::events::NS;
use super::ua::lock;

const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";
const EVENTS: &str = "/com.broadsoft.xsi-events/v2.0";
const ASYNC: &str = "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0";
const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// The HTTP service.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-decode (invalid escapes are kept as written).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| pct_decode(v))
    })
}

/// The text of the first element named `name` (any prefix).
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = rest.get(i + 1..)?;
        let end = rest.find('>')?;
        let tag = rest.get(..end)?;
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if local == name {
            let body = rest.get(end + 1..)?;
            let close = body.find('<')?;
            return Some(body.get(..close)?.trim().to_string());
        }
    }
    None
}

/// The `expires` a request body asks for.
fn asked(body: &str) -> Option<u32> {
    xml_text(body, "expires").and_then(|e| e.parse().ok())
}

fn xml(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml; charset=UTF-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn empty(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap_or_default()
}

/// An `ErrorInfo` answer.
pub fn error_info(e: &XsiError) -> Response {
    let s = xml_escape(&format!("[Error {}] {}", e.code, e.summary));
    let body = format!(
        "{DECL}<ErrorInfo xmlns=\"{NS}\"><summary>{s}</summary><summaryEnglish>{s}</summaryEnglish>\
<errorCode>{}</errorCode></ErrorInfo>",
        e.code
    );
    xml(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

fn not_found(what: &str) -> XsiError {
    XsiError::new(404, 4001, format!("Not found: {what}"))
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let (base, rest) = if let Some(r) = path.strip_prefix(ACTIONS) {
        (ACTIONS, r)
    } else if let Some(r) = path.strip_prefix(ASYNC) {
        (ASYNC, r)
    } else if let Some(r) = path.strip_prefix(EVENTS) {
        (EVENTS, r)
    } else {
        return error_info(&not_found("path"));
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(pct_decode)
        .collect();
    let expected = format!(
        "Basic {}",
        base64(format!("{}:{}", sim.cfg.xsi_user, sim.cfg.xsi_password).as_bytes())
    );
    let authed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    let resp = if !authed {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"BroadWorks\"")
            .body(Body::empty())
            .unwrap_or_default()
    } else if base == ACTIONS {
        actions(&sim, &method, &uri, &segs).await
    } else {
        events(&sim, &method, base, &segs, &body)
    };
    if base == ACTIONS {
        let shown = if segs.is_empty() {
            "/".to_string()
        } else {
            format!("/{}", segs.join("/"))
        };
        sim.log.push(format!(
            "xsi {} {shown} -> {}",
            method,
            resp.status().as_u16()
        ));
    }
    resp
}

async fn actions(sim: &Arc<Sim>, method: &Method, uri: &Uri, segs: &[String]) -> Response {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let user = match s.as_slice() {
        ["user", u, "calls", ..] => *u,
        _ => return error_info(&not_found("path")),
    };
    if sim.user(user).is_none() {
        return error_info(&XsiError::new(404, 4001, format!("User not found: {user}")));
    }
    let done = |r: Result<(), XsiError>| match r {
        Ok(()) => empty(StatusCode::OK),
        Err(e) => error_info(&e),
    };
    match (method.as_str(), &s[3..]) {
        ("GET", []) => {
            let m = lock(&sim.model);
            let mut b = format!("{DECL}<Calls xmlns=\"{NS}\">");
            for c in m.user_calls(user) {
                b.push_str(&format!(
                    "<call><callId>{}</callId><extTrackingId>{}:1</extTrackingId></call>",
                    c.call_id(),
                    c.n
                ));
            }
            b.push_str("</Calls>");
            xml(StatusCode::OK, b)
        }
        ("POST", ["new"]) => {
            let address = query_param(uri, "address").unwrap_or_default();
            match sim.originate(user, &address) {
                Ok(id) => {
                    let ext = id
                        .strip_prefix("callhalf-")
                        .and_then(|x| x.strip_suffix(":0"))
                        .unwrap_or("0");
                    xml(
                        StatusCode::CREATED,
                        format!(
                            "{DECL}<CallStartInfo xmlns=\"{NS}\"><callId>{id}</callId>\
<externalTrackingId>{ext}:1</externalTrackingId></CallStartInfo>"
                        ),
                    )
                }
                Err(e) => error_info(&e),
            }
        }
        ("PUT", ["Reconnect"]) => done(sim.reconnect(user).await),
        ("GET", [call]) => {
            let m = lock(&sim.model);
            match m.call(user, call) {
                Some(c) => xml(
                    StatusCode::OK,
                    format!("{DECL}<Call xmlns=\"{NS}\">{}</Call>", c.xml_body("")),
                ),
                None => error_info(&XsiError::call_not_found(call)),
            }
        }
        ("DELETE", [call]) => done(sim.release(user, call).await),
        ("PUT", [call, "Hold"]) => done(sim.hold_or_talk(user, call, true).await),
        ("PUT", [call, "Talk"]) => done(sim.hold_or_talk(user, call, false).await),
        ("PUT", [call, "BlindTransfer"]) => {
            let address = query_param(uri, "address").unwrap_or_default();
            if address.is_empty() {
                return error_info(&XsiError::new(400, 4003, "Missing address"));
            }
            done(sim.blind_transfer(user, call, &address).await)
        }
        _ => error_info(&not_found("action")),
    }
}

fn events(sim: &Arc<Sim>, method: &Method, base: &str, segs: &[String], body: &[u8]) -> Response {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let text = String::from_utf8_lossy(body);
    match (method.as_str(), base == ASYNC, s.as_slice()) {
        ("POST", true, ["channel"]) => {
            let set = xml_text(&text, "channelSetId").unwrap_or_else(|| "default".into());
            let (_, rx) = sim.events.open(&set, asked(&text));
            let stream =
                UnboundedReceiverStream::new(rx).map(Ok::<Bytes, std::convert::Infallible>);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/xml; charset=UTF-8")
                .body(Body::from_stream(stream))
                .unwrap_or_default()
        }
        ("PUT", false, ["channel", id, "heartbeat"]) => {
            if sim.events.heartbeat(id) {
                empty(StatusCode::OK)
            } else {
                error_info(&XsiError::new(
                    404,
                    4401,
                    format!("Channel not found: {id}"),
                ))
            }
        }
        ("POST", false, ["channel", "eventresponse"]) => match xml_text(&text, "eventID") {
            Some(id) => {
                sim.events.ack(&id);
                empty(StatusCode::OK)
            }
            None => error_info(&XsiError::new(400, 4003, "Missing eventID")),
        },
        ("PUT", false, ["channel", id]) => match sim.events.refresh_channel(id, asked(&text)) {
            Some(exp) => xml(
                StatusCode::OK,
                format!(
                    "{DECL}<Channel xmlns=\"{NS}\"><channelId>{}</channelId><expires>{exp}</expires></Channel>",
                    xml_escape(id)
                ),
            ),
            None => error_info(&XsiError::new(
                404,
                4401,
                format!("Channel not found: {id}"),
            )),
        },
        ("PUT", false, ["subscription", id]) => {
            match sim.events.refresh_subscription(id, asked(&text)) {
                Some(exp) => xml(
                    StatusCode::OK,
                    format!(
                        "{DECL}<Subscription xmlns=\"{NS}\"><subscriptionId>{}</subscriptionId>\
<expires>{exp}</expires></Subscription>",
                        xml_escape(id)
                    ),
                ),
                None => error_info(&XsiError::new(
                    404,
                    4402,
                    format!("Subscription not found: {id}"),
                )),
            }
        }
        ("DELETE", false, ["channel", id]) => {
            if sim.events.close(id) {
                empty(StatusCode::OK)
            } else {
                error_info(&XsiError::new(
                    404,
                    4401,
                    format!("Channel not found: {id}"),
                ))
            }
        }
        ("POST", false, ["user", u]) | ("POST", false, ["user", u, "subscription"]) => {
            if sim.user(u).is_none() {
                return error_info(&XsiError::new(404, 4001, format!("User not found: {u}")));
            }
            let set = xml_text(&text, "channelSetId").unwrap_or_else(|| "default".into());
            let app = xml_text(&text, "applicationId").unwrap_or_else(|| "app".into());
            let (id, exp) = sim.events.subscribe(u, &set, &xml_escape(&app), asked(&text));
            xml(
                StatusCode::OK,
                format!(
                    "{DECL}<Subscription xmlns=\"{NS}\"><subscriptionId>{id}</subscriptionId>\
<expires>{exp}</expires></Subscription>"
                ),
            )
        }
        _ => error_info(&not_found("path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(pct_decode("rep1%40sim.example"), "rep1@sim.example");
        assert_eq!(pct_decode("%2B61%zz"), "+61%zz");
        assert_eq!(
            xml_text("<a:EventResponse><a:eventID> x-1 </a:eventID>", "eventID").as_deref(),
            Some("x-1")
        );
        assert_eq!(xml_text("<a>", "b"), None);
        assert_eq!(
            asked("<Channel><expires> 90 </expires></Channel>"),
            Some(90)
        );
        assert_eq!(asked("<Channel><expires>-1</expires></Channel>"), None);
        assert_eq!(asked("<Channel/>"), None);
    }
}
