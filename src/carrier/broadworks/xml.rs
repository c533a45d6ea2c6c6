//! Xsi XML: a small element tree read by local name (namespace prefixes ignored, as
//! BroadWorks writes the same document both with `xsi:` prefixes and with a default
//! namespace), the typed readings of every Xsi body the adapter receives, and the bodies it
//! sends.
//!
//! Must never: panic on any input (malformed, truncated, deeply nested or huge documents are
//! errors), resolve external entities, or see a credential.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::carrier::{CallEvent, CallEventKind, CallInfo, CallState};

/// The Xsi namespace.
pub const XSI_NS: &str = "http://schema.broadsoft.com/xsi";

/// Largest document read (a `Calls` list of a busy line is a few KiB).
pub const MAX_DOC: usize = 1 << 20;
const MAX_DEPTH: usize = 64;

/// Why a body could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

fn err(m: impl Into<String>) -> XmlError {
    XmlError(m.into())
}

/// One element: its local name, attributes by local name, text and children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child with this local name, if not empty.
    pub fn child_text(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|c| c.text.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn local(qname: &[u8]) -> String {
    let l = match qname.iter().rposition(|b| *b == b':') {
        Some(i) => &qname[i + 1..],
        None => qname,
    };
    String::from_utf8_lossy(l).into_owned()
}

fn general_ref(name: &str) -> Result<char, XmlError> {
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => {
            let num = name
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| name.strip_prefix('#').map(|d| d.parse::<u32>()));
            match num {
                Some(Ok(n)) => char::from_u32(n).ok_or_else(|| err("bad character reference")),
                _ => Err(err(format!("unknown entity &{name};"))),
            }
        }
    }
}

/// Parse one XML document into its root element.
pub fn parse(doc: &str) -> Result<Element, XmlError> {
    if doc.len() > MAX_DOC {
        return Err(err("document too large"));
    }
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| err(format!("malformed XML: {e}")))?;
        match ev {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(err("content after the root element"));
            }
            Event::Start(s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err("too deeply nested"));
                }
                stack.push(start_element(&s)?);
            }
            Event::Empty(s) => {
                let e = start_element(&s)?;
                match stack.last_mut() {
                    Some(p) => p.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::End(_) => {
                let e = stack.pop().ok_or_else(|| err("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(p) => p.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| err(format!("bad text: {e}")))?;
                match stack.last_mut() {
                    Some(p) => p.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(err("text outside the root element")),
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| err(format!("bad CDATA: {e}")))?;
                match stack.last_mut() {
                    Some(p) => p.text.push_str(&s),
                    None => return Err(err("CDATA outside the root element")),
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| err(format!("bad reference: {e}")))?;
                let c = general_ref(&name)?;
                match stack.last_mut() {
                    Some(p) => p.text.push(c),
                    None => return Err(err("reference outside the root element")),
                }
            }
            Event::DocType(_) => return Err(err("DOCTYPE is not accepted")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(err("truncated document"));
    }
    root.ok_or_else(|| err("no root element"))
}

fn start_element(s: &quick_xml::events::BytesStart<'_>) -> Result<Element, XmlError> {
    let mut e = Element {
        name: local(s.name().as_ref()),
        ..Element::default()
    };
    for a in s.attributes() {
        let a = a.map_err(|e| err(format!("bad attribute: {e}")))?;
        let key = a.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let v = a
            .unescape_value()
            .map_err(|e| err(format!("bad attribute value: {e}")))?;
        e.attrs.push((local(key), v.into_owned()));
    }
    Ok(e)
}

/// Parse a body whose root must be `root`.
pub fn parse_root(doc: &str, root: &str) -> Result<Element, XmlError> {
    let e = parse(doc)?;
    if e.name != root {
        return Err(err(format!("expected <{root}>, got <{}>", e.name)));
    }
    Ok(e)
}

fn call_state(s: &str) -> CallState {
    match s {
        "Alerting" => CallState::Alerting,
        "Active" => CallState::Active,
        "Held" => CallState::Held,
        "Released" => CallState::Released,
        _ => CallState::Other,
    }
}

/// The remote party's address of a `call`/`Call` element.
fn remote(call: &Element) -> Option<String> {
    call.child("remoteParty")?.child_text("address")
}

/// A `Call` (or an event's `call`) element as a `CallInfo`. A call without a `state`
/// (as in a `Calls` list) is `CallState::Other`.
pub fn call_info(call: &Element) -> Result<CallInfo, XmlError> {
    let call_id = call
        .child_text("callId")
        .ok_or_else(|| err("call without callId"))?;
    Ok(CallInfo {
        call_id,
        state: call
            .child_text("state")
            .map(|s| call_state(&s))
            .unwrap_or(CallState::Other),
        remote: remote(call),
    })
}

/// `<Calls>`: the calls on a line (with a state only when the XSP lists one).
pub fn parse_calls(doc: &str) -> Result<Vec<(CallInfo, bool)>, XmlError> {
    let e = parse_root(doc, "Calls")?;
    e.children_named("call")
        .map(|c| Ok((call_info(c)?, c.child("state").is_some())))
        .collect()
}

/// `<Call>`: one call.
pub fn parse_call(doc: &str) -> Result<CallInfo, XmlError> {
    call_info(&parse_root(doc, "Call")?)
}

/// `<CallStartInfo>`: the new call's id.
pub fn parse_call_start(doc: &str) -> Result<String, XmlError> {
    parse_root(doc, "CallStartInfo")?
        .child_text("callId")
        .ok_or_else(|| err("CallStartInfo without callId"))
}

/// `<Subscription>`: the subscription id.
pub fn parse_subscription(doc: &str) -> Result<String, XmlError> {
    parse_subscription_grant(doc).map(|(id, _)| id)
}

/// `<Subscription>`: the subscription id and the `expires` (seconds) the server granted.
pub fn parse_subscription_grant(doc: &str) -> Result<(String, Option<u32>), XmlError> {
    let e = parse_root(doc, "Subscription")?;
    let id = e
        .child_text("subscriptionId")
        .ok_or_else(|| err("Subscription without subscriptionId"))?;
    Ok((id, expires_of(&e)))
}

/// The `expires` (seconds) in the answer to a refresh `PUT`: `None` for an empty body or
/// one without a readable `expires` (the requested value then stands).
pub fn parse_refresh(doc: &str) -> Option<u32> {
    if doc.trim().is_empty() {
        return None;
    }
    parse(doc).ok().as_ref().and_then(expires_of)
}

fn expires_of(e: &Element) -> Option<u32> {
    e.child_text("expires")?.trim().parse().ok()
}

/// An Xsi `ErrorInfo` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    pub summary: String,
    pub code: Option<String>,
}

pub fn parse_error_info(doc: &str) -> Result<ErrorInfo, XmlError> {
    let e = parse_root(doc, "ErrorInfo")?;
    let summary = e
        .child_text("summaryEnglish")
        .or_else(|| e.child_text("summary"))
        .unwrap_or_default();
    Ok(ErrorInfo {
        summary,
        code: e.child_text("errorCode"),
    })
}

/// What an event's `eventData` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventData {
    /// A call event: the `eventData` type (without prefix) and the call.
    Call { kind: String, call: CallInfo },
    /// The subscription ended: subscribe again.
    SubscriptionTerminated,
    /// The channel ended: the stream is lost.
    ChannelTerminated,
    /// Anything else (e.g. `CallSubscriptionEvent`), by type.
    Other(String),
}

/// An Xsi `Event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XsiEvent {
    pub event_id: String,
    pub user_id: Option<String>,
    pub target_id: Option<String>,
    pub subscription_id: Option<String>,
    pub channel_id: Option<String>,
    pub data: EventData,
}

impl XsiEvent {
    /// The user whose line the event is about (`targetId`, else `userId`).
    pub fn user(&self) -> Option<&str> {
        self.target_id.as_deref().or(self.user_id.as_deref())
    }

    /// The normalised call event, for call events.
    pub fn normalise(&self) -> Option<CallEvent> {
        let EventData::Call { kind, call } = &self.data else {
            return None;
        };
        Some(CallEvent {
            user: self.user().unwrap_or_default().to_owned(),
            call_id: call.call_id.clone(),
            kind: event_kind(kind),
            remote: call.remote.clone(),
            event_id: self.event_id.clone(),
        })
    }
}

/// Map an Xsi `eventData` type (without prefix) to the normalised kind.
pub fn event_kind(t: &str) -> CallEventKind {
    match t {
        "CallOriginatedEvent" | "CallReceivedEvent" => CallEventKind::Alerting,
        "CallAnsweredEvent" => CallEventKind::Answered,
        "CallHeldEvent" => CallEventKind::Held,
        "CallRetrievedEvent" => CallEventKind::Retrieved,
        "CallRedirectedEvent" | "CallTransferredEvent" => CallEventKind::Redirected,
        "CallReleasedEvent" => CallEventKind::Released,
        _ => CallEventKind::Updated,
    }
}

/// `xsi1:type="xsi:CallHeldEvent"` → `CallHeldEvent`.
fn type_of(e: &Element) -> String {
    let t = e.attr("type").unwrap_or_default();
    t.rsplit(':').next().unwrap_or(t).to_owned()
}

fn event(e: &Element) -> Result<XsiEvent, XmlError> {
    let event_id = e
        .child_text("eventID")
        .ok_or_else(|| err("Event without eventID"))?;
    let data = match e.child("eventData") {
        None => EventData::Other(type_of(e)),
        Some(d) => {
            let kind = type_of(d);
            match (kind.as_str(), d.child("call")) {
                ("SubscriptionTerminatedEvent", _) => EventData::SubscriptionTerminated,
                ("ChannelTerminatedEvent", _) => EventData::ChannelTerminated,
                (_, Some(c)) => EventData::Call {
                    call: call_info(c)?,
                    kind,
                },
                (_, None) => EventData::Other(kind),
            }
        }
    };
    Ok(XsiEvent {
        event_id,
        user_id: e.child_text("userId"),
        target_id: e.child_text("targetId"),
        subscription_id: e.child_text("subscriptionId"),
        channel_id: e.child_text("channelId"),
        data,
    })
}

/// One document on the event channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamDoc {
    /// The channel is open, with this id.
    Channel {
        channel_id: String,
        /// The `expires` (seconds) the server granted, when it says.
        expires: Option<u32>,
    },
    HeartBeat,
    Event(XsiEvent),
    /// A document of another kind (by root name).
    Other(String),
}

pub fn parse_stream_doc(doc: &str) -> Result<StreamDoc, XmlError> {
    let e = parse(doc)?;
    match e.name.as_str() {
        "Channel" => Ok(StreamDoc::Channel {
            channel_id: e
                .child_text("channelId")
                .ok_or_else(|| err("Channel without channelId"))?,
            expires: expires_of(&e),
        }),
        "ChannelHeartBeat" => Ok(StreamDoc::HeartBeat),
        "Event" => Ok(StreamDoc::Event(event(&e)?)),
        other => Ok(StreamDoc::Other(other.to_owned())),
    }
}

/// Escape text for an element's content.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// The body that opens an event channel.
pub fn channel_body(set: &str, expires: u32) -> String {
    format!(
        "{DECL}<Channel xmlns=\"{XSI_NS}\"><channelSetId>{}</channelSetId><priority>1</priority><weight>100</weight><expires>{expires}</expires></Channel>",
        escape(set)
    )
}

/// The body that subscribes a user to the Advanced Call package.
pub fn subscription_body(set: &str, expires: u32, app: &str) -> String {
    format!(
        "{DECL}<Subscription xmlns=\"{XSI_NS}\"><event>Advanced Call</event><expires>{expires}</expires><channelSetId>{}</channelSetId><applicationId>{}</applicationId></Subscription>",
        escape(set),
        escape(app)
    )
}

/// The body that refreshes an event channel (`PUT …/channel/{channelId}`).
pub fn channel_refresh_body(expires: u32) -> String {
    format!("{DECL}<Channel xmlns=\"{XSI_NS}\"><expires>{expires}</expires></Channel>")
}

/// The body that refreshes a subscription (`PUT …/subscription/{subscriptionId}`).
pub fn subscription_refresh_body(expires: u32) -> String {
    format!("{DECL}<Subscription xmlns=\"{XSI_NS}\"><expires>{expires}</expires></Subscription>")
}

/// The body that acknowledges an event.
pub fn event_response_body(event_id: &str) -> String {
    format!(
        "{DECL}<EventResponse xmlns=\"{XSI_NS}\"><eventID>{}</eventID><statusCode>200</statusCode><reason>OK</reason></EventResponse>",
        escape(event_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_and_default_namespace_read_alike() {
        let a = parse_call(r#"<?xml version="1.0"?><Call xmlns="http://schema.broadsoft.com/xsi"><callId>c1</callId><state>Held</state><remoteParty><address countryCode="61">tel:+61400000001</address></remoteParty></Call>"#).unwrap();
        let b = parse_call(r#"<x:Call xmlns:x="http://schema.broadsoft.com/xsi"><x:callId> c1 </x:callId><x:state>Held</x:state><x:remoteParty><x:address>tel:+61400000001</x:address></x:remoteParty></x:Call>"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.state, CallState::Held);
        assert_eq!(a.remote.as_deref(), Some("tel:+61400000001"));
    }

    #[test]
    fn entities_and_cdata() {
        let e = parse("<a>x &amp; &#65;&#x42;<![CDATA[<c>]]></a>").unwrap();
        assert_eq!(e.text, "x & AB<c>");
        assert!(parse("<a>&foo;</a>").is_err());
        assert!(parse("<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "",
            "   ",
            "<",
            "<a>",
            "<a><b></a>",
            "</a>",
            "<a/><b/>",
            "text",
            "<a>x</a>tail",
            "<a x='1' x='2'/>",
            "<a \u{0}/>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn bodies_escape_their_values() {
        let b = event_response_body("a<b&c");
        assert!(b.contains("<eventID>a&lt;b&amp;c</eventID>"), "{b}");
        let id = parse(&b).unwrap().child_text("eventID");
        assert_eq!(id.as_deref(), Some("a<b&c"));
    }
}
