//! Our SIP message types (`Request`, `Response`, `Headers`), parsing (through the `sipx-sip`
//! crate, see docs/sip-parser.md), typed accessors, builders and serialisation.
//!
//! The rest of the stack only ever sees these types. Must never: panic on input, do I/O,
//! or log message bodies.

use std::fmt::Write as _;

use bytes::Bytes;
use sipx_sip::headers::{Address, Via as SxVia};
use sipx_sip::message::{Message as SxMessage, TypedHeader};
use sipx_sip::parser::{parse_datagram, Limits};

/// A SIP method. Unknown methods are kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Refer,
    Info,
    Update,
    Prack,
    Register,
    Notify,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REFER" => Method::Refer,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REGISTER" => Method::Register,
            "NOTIFY" => Method::Notify,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Refer => "REFER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Register => "REGISTER",
            Method::Notify => "NOTIFY",
            Method::Other(s) => s,
        }
    }

    /// The bounded label for `tonewall_sip_requests_total{method}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Refer => "REFER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            _ => "other",
        }
    }
}

/// Header fields in wire order, names in canonical (long) form, values unfolded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_string(), value.into()));
    }

    /// Replace every `name` with one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The top Via, parsed.
    pub fn top_via(&self) -> Option<Via> {
        self.get("Via").and_then(Via::parse_first)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID").map(str::trim).filter(|s| !s.is_empty())
    }

    /// `(sequence, method)` of CSeq.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let c = sipx_sip::headers::CSeq::decode(self.get("CSeq")?.as_bytes()).ok()?;
        Some((
            c.sequence,
            Method::parse(&String::from_utf8_lossy(c.method.as_bytes())),
        ))
    }

    /// The tag parameter of From or To.
    pub fn tag(&self, name: &str) -> Option<String> {
        let a = Address::parse(self.get(name)?.as_bytes(), "From/To").ok()?;
        a.tag().map(|t| String::from_utf8_lossy(t).into_owned())
    }

    /// The URI of the first Contact.
    pub fn contact_uri(&self) -> Option<String> {
        let list = Address::parse_list(self.get("Contact")?.as_bytes(), "Contact").ok()?;
        list.first().map(|a| a.uri.to_string())
    }

    /// Every Record-Route entry, in order, as `<uri;params>` strings.
    pub fn record_route(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.get_all("Record-Route") {
            if let Ok(list) = Address::parse_list(v.as_bytes(), "Record-Route") {
                for a in list {
                    let mut s = format!("<{}>", a.uri);
                    for p in &a.params {
                        let _ = write!(s, ";{}", String::from_utf8_lossy(&p.name));
                        if let Some(val) = &p.value {
                            let _ = write!(s, "={}", String::from_utf8_lossy(val));
                        }
                    }
                    out.push(s);
                }
            }
        }
        out
    }

    /// The mandatory headers of RFC 3261 §8.1.1 are there and parse.
    pub fn has_core(&self) -> bool {
        self.top_via().is_some()
            && self.call_id().is_some()
            && self.cseq().is_some()
            && self.get("From").is_some()
            && self.get("To").is_some()
    }
}

/// A parsed Via header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    /// Host as written (`[v6]` bracketed).
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    /// `None`: no rport; `Some(None)`: rport without value.
    pub rport: Option<Option<u16>>,
    pub received: Option<String>,
}

impl Via {
    /// The first Via of a (possibly comma-joined) Via header value.
    pub fn parse_first(value: &str) -> Option<Via> {
        let list = SxVia::parse_list(value.as_bytes()).ok()?;
        let v = list.into_iter().next()?;
        let s = |b: Option<&[u8]>| b.map(|x| String::from_utf8_lossy(x).into_owned());
        Some(Via {
            transport: String::from_utf8_lossy(&v.transport).to_ascii_uppercase(),
            host: v.host.to_string(),
            port: v.port,
            branch: s(v.branch()),
            rport: v
                .rport()
                .map(|r| r.and_then(|p| std::str::from_utf8(p).ok()?.parse().ok())),
            received: s(v.received()),
        })
    }
}

/// A SIP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as written.
    pub uri: String,
    /// The user part of a `sip:`/`sips:` Request-URI (percent-decoded) or the subscriber of a
    /// `tel:` URI: the DNIS.
    pub uri_user: Option<String>,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("unparseable SIP message: {0}")]
    Syntax(String),
}

impl Message {
    /// Parse one message from a datagram (or a frame already delimited by the stream parser).
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        let m = parse_datagram(Bytes::copy_from_slice(buf), &Limits::datagram())
            .map_err(|e| ParseError::Syntax(e.to_string()))?;
        Ok(Message::from_sipx(m))
    }

    pub(crate) fn from_sipx(m: SxMessage) -> Message {
        match m {
            SxMessage::Request(r) => {
                let method = Method::parse(&String::from_utf8_lossy(r.method.as_bytes()));
                let uri_user = r
                    .uri
                    .decoded_user()
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
                    .or_else(|| {
                        r.uri
                            .tel_parts()
                            .map(|t| String::from_utf8_lossy(t.subscriber()).into_owned())
                    });
                Message::Request(Request {
                    method,
                    uri: r.uri.to_string(),
                    uri_user,
                    headers: convert_headers(&r.headers),
                    body: r.body().clone(),
                })
            }
            SxMessage::Response(r) => Message::Response(Response {
                status: r.status.code(),
                reason: String::from_utf8_lossy(&r.reason).into_owned(),
                headers: convert_headers(&r.headers),
                body: r.body().clone(),
            }),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

fn convert_headers(h: &sipx_sip::message::Headers) -> Headers {
    let mut out = Headers::new();
    for f in h.iter() {
        let name = String::from_utf8_lossy(f.name().canonical()).into_owned();
        let value = String::from_utf8_lossy(&f.value()).into_owned();
        out.0.push((name, value));
    }
    out
}

fn write_headers_and_body(out: &mut String, headers: &Headers, body: &[u8]) {
    for (n, v) in headers.iter() {
        if n.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let _ = write!(out, "{n}: {v}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
}

impl Request {
    pub fn new(method: Method, uri: impl Into<String>) -> Request {
        Request {
            method,
            uri: uri.into(),
            uri_user: None,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Serialise, with a Content-Length that matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method.as_str(), self.uri);
        write_headers_and_body(&mut s, &self.headers, &self.body);
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to this request (RFC 3261 §8.2.6): Via(s), From, To, Call-ID and CSeq
    /// copied; `to_tag` added to To if it has none (never on 100).
    pub fn response(&self, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
        let mut h = Headers::new();
        for v in self.headers.get_all("Via") {
            h.push("Via", v);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = self.headers.get(name) {
                let mut v = v.to_string();
                if name == "To" && status > 100 && self.headers.tag("To").is_none() {
                    if let Some(t) = to_tag {
                        let _ = write!(v, ";tag={t}");
                    }
                }
                h.push(name, v);
            }
        }
        Response {
            status,
            reason: reason.to_string(),
            headers: h,
            body: Bytes::new(),
        }
    }

    /// The key of the server transaction this request belongs to (RFC 3261 §17.2.3):
    /// top Via branch + sent-by + method (ACK and CANCEL map onto INVITE's key where needed).
    pub fn branch(&self) -> Option<String> {
        self.headers.top_via().and_then(|v| v.branch)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_headers_and_body(&mut s, &self.headers, &self.body);
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push(name, value);
        self
    }

    pub fn with_body(mut self, content_type: &str, body: impl Into<Bytes>) -> Response {
        self.headers.set("Content-Type", content_type);
        self.body = body.into();
        self
    }
}

/// The reason phrase for the statuses tonewall sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Salvage enough of an unparseable request to answer it with 400 (RFC 3261 §8.2 / §21.4.1):
/// the start line must name a method other than ACK, and Via, From, To, Call-ID and CSeq
/// must be present as lines. `None` when it can't be answered (then drop it).
pub fn salvage_bad_request(buf: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(buf).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let mut parts = start.split(' ');
    let method = parts.next()?;
    let uri = parts.next()?;
    if parts.next()? != "SIP/2.0" || method.is_empty() || method == "ACK" {
        return None;
    }
    let mut headers = Headers::new();
    for line in lines {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        let canonical = match n.to_ascii_lowercase().as_str() {
            "v" | "via" => "Via",
            "f" | "from" => "From",
            "t" | "to" => "To",
            "i" | "call-id" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        headers.push(canonical, v.trim());
    }
    let mut r = Request::new(Method::parse(method), uri);
    r.headers = headers;
    r.headers.has_core().then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+61390001042@10.0.0.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK1;rport\r\n\
f: <sip:a@10.0.0.2>;tag=ft\r\n\
t: <sip:+61390001042@10.0.0.1>\r\n\
i: cid-1\r\n\
CSeq: 5 INVITE\r\n\
m: <sip:a@10.0.0.2:5070>\r\n\
Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
l: 0\r\n\r\n";

    #[test]
    fn parses_compact_and_typed() {
        let Ok(Message::Request(r)) = Message::parse(INVITE.as_bytes()) else {
            panic!("parse");
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri_user.as_deref(), Some("+61390001042"));
        assert_eq!(r.headers.call_id(), Some("cid-1"));
        assert_eq!(r.headers.cseq(), Some((5, Method::Invite)));
        assert_eq!(r.headers.tag("From").as_deref(), Some("ft"));
        assert_eq!(r.headers.tag("To"), None);
        let via = r.headers.top_via().expect("via");
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.rport, Some(None));
        assert_eq!(via.branch.as_deref(), Some("z9hG4bK1"));
        assert_eq!(
            r.headers.contact_uri().as_deref(),
            Some("sip:a@10.0.0.2:5070")
        );
        assert_eq!(r.headers.record_route(), vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
    }

    #[test]
    fn response_copies_and_tags() {
        let Ok(Message::Request(r)) = Message::parse(INVITE.as_bytes()) else {
            panic!("parse");
        };
        let resp = r.response(200, "OK", Some("tt"));
        let bytes = resp.to_bytes();
        let Ok(Message::Response(back)) = Message::parse(&bytes) else {
            panic!("reparse");
        };
        assert_eq!(back.status, 200);
        assert_eq!(back.headers.tag("To").as_deref(), Some("tt"));
        assert_eq!(back.headers.call_id(), Some("cid-1"));
        assert_eq!(back.headers.top_via(), r.headers.top_via());
        let trying = r.response(100, "Trying", Some("tt"));
        assert_eq!(trying.headers.tag("To"), None);
    }

    #[test]
    fn salvage_needs_core_headers() {
        let bad = "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: abc\r\n\r\n";
        assert!(Message::parse(bad.as_bytes()).is_err());
        assert!(salvage_bad_request(bad.as_bytes()).is_some());
        assert!(salvage_bad_request(b"\x80\x81junk").is_none());
        assert!(salvage_bad_request(b"ACK sip:x SIP/2.0\r\n\r\n").is_none());
    }

    #[test]
    fn corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sip");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("corpus dir") {
            let path = e.expect("entry").path();
            let name = path.file_name().map(|f| f.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            let data = std::fs::read(&path).expect("read");
            let parsed = Message::parse(&data);
            if name.starts_with("ok_") {
                let Ok(Message::Request(r)) = parsed else {
                    panic!("{name} should parse")
                };
                assert!(r.headers.has_core(), "{name}");
                n += 1;
            } else if name == "bad_no_via.sip" {
                let Ok(Message::Request(r)) = parsed else {
                    panic!("{name} parses lazily")
                };
                assert!(!r.headers.has_core());
            } else {
                assert!(parsed.is_err(), "{name} must not parse");
            }
        }
        assert!(n >= 8);
        let tel = std::fs::read(format!("{dir}/ok_tel_uri.sip")).expect("read");
        let Ok(Message::Request(r)) = Message::parse(&tel) else {
            panic!("tel")
        };
        assert_eq!(r.uri_user.as_deref(), Some("+61390001042"));
    }
}
