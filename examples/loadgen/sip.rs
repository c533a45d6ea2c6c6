//! Minimal SIP and SDP text for the load generator's UACs: builds INVITE/ACK/BYE and
//! responses, parses what tonewall sends back (status line, headers, the 200 OK's SDP).
//! Pure functions only: no sockets, no clock. It must never panic on malformed input
//! (everything returns `Option`) and is not a general SIP stack.

use std::net::{IpAddr, SocketAddr};

/// A parsed SIP message (just what the load generator needs).
#[derive(Debug, Clone)]
pub struct Msg {
    /// `Some(code)` for a response, `None` for a request.
    pub status: Option<u16>,
    /// Request method (requests only).
    pub method: String,
    /// Headers in order, names normalised to their long lower-case form.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Msg {
    /// The first header with this (long, lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, comma-separated values split apart, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| split_commas(v))
            .collect()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    /// `(number, method)` from CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("cseq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?.to_ascii_uppercase();
        Some((n, m))
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<String> {
        tag_param(self.header("to")?)
    }

    /// The URI of the Contact header.
    pub fn contact_uri(&self) -> Option<String> {
        uri_of(self.header("contact")?)
    }
}

fn long_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "i" => "call-id".into(),
        "v" => "via".into(),
        "f" => "from".into(),
        "t" => "to".into(),
        "m" => "contact".into(),
        "l" => "content-length".into(),
        "c" => "content-type".into(),
        "k" => "supported".into(),
        _ => lower,
    }
}

/// Split a header value on commas that are outside `<...>` and quotes.
fn split_commas(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut angle, mut quote) = (false, false);
    let mut cur = String::new();
    for ch in v.chars() {
        match ch {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The URI in a name-addr (`"x" <sip:a@b>;p`) or addr-spec (`sip:a@b;p`).
pub fn uri_of(v: &str) -> Option<String> {
    if let Some(start) = v.find('<') {
        let rest = &v[start + 1..];
        let end = rest.find('>')?;
        return Some(rest[..end].trim().to_string());
    }
    let u = v.split(';').next()?.trim();
    (!u.is_empty()).then(|| u.to_string())
}

fn tag_param(v: &str) -> Option<String> {
    let params = match v.rfind('>') {
        Some(i) => &v[i + 1..],
        None => v,
    };
    params.split(';').find_map(|p| {
        let (k, val) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| val.trim().to_string())
    })
}

/// Parse one SIP datagram. `None` if it is not recognisably SIP.
pub fn parse(data: &[u8]) -> Option<Msg> {
    let text = std::str::from_utf8(data).ok()?;
    let (head, rest) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => (text.trim_end(), ""),
    };
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let (status, method) = if let Some(r) = first.strip_prefix("SIP/2.0 ") {
        let code: u16 = r.split_whitespace().next()?.parse().ok()?;
        if !(100..=699).contains(&code) {
            return None;
        }
        (Some(code), String::new())
    } else {
        let mut it = first.split_whitespace();
        let m = it.next()?;
        let _uri = it.next()?;
        if it.next()? != "SIP/2.0" {
            return None;
        }
        (None, m.to_ascii_uppercase())
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            // Folded continuation line.
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        let (n, v) = line.split_once(':')?;
        headers.push((long_name(n), v.trim().to_string()));
    }
    let mut msg = Msg {
        status,
        method,
        headers,
        body: String::new(),
    };
    let len = match msg.header("content-length") {
        Some(l) => l.trim().parse::<usize>().ok()?,
        None => rest.len(),
    };
    msg.body = rest.get(..len.min(rest.len()))?.to_string();
    Some(msg)
}

/// What the load generator needs from an SDP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpAnswer {
    pub rtp: SocketAddr,
    /// First payload type of the m=audio line.
    pub audio_pt: u8,
    /// Payload type mapped to telephone-event/8000, if any.
    pub te_pt: Option<u8>,
}

/// Parse the audio stream of an SDP body (session- or media-level `c=`).
pub fn parse_sdp(body: &str) -> Option<SdpAnswer> {
    let mut session_c: Option<IpAddr> = None;
    let mut media_c: Option<IpAddr> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut port: Option<u16> = None;
    let mut audio_pt: Option<u8> = None;
    let mut te_pt: Option<u8> = None;
    for line in body.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                in_audio = false;
                continue;
            }
            let mut it = m.split_whitespace();
            in_audio = it.next() == Some("audio");
            if in_audio {
                seen_audio = true;
                port = it.next().and_then(|p| p.parse().ok());
                let _proto = it.next();
                audio_pt = it.next().and_then(|p| p.parse().ok());
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let addr = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()));
            if in_audio {
                media_c = addr;
            } else if !seen_audio {
                session_c = addr;
            }
        } else if let Some(a) = line.strip_prefix("a=rtpmap:") {
            if in_audio {
                let (pt, enc) = a.split_once(' ')?;
                if enc
                    .trim()
                    .to_ascii_lowercase()
                    .starts_with("telephone-event/8000")
                {
                    te_pt = pt.trim().parse().ok();
                }
            }
        }
    }
    let ip = media_c.or(session_c)?;
    Some(SdpAnswer {
        rtp: SocketAddr::new(ip, port?),
        audio_pt: audio_pt?,
        te_pt,
    })
}

/// Our SDP offer: PCMU/8000 + telephone-event/8000 (PT 101), ptime 20.
pub fn sdp_offer(local: SocketAddr, sess_id: u64) -> String {
    let ip = local.ip();
    let fam = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=loadgen {sess_id} 1 IN {fam} {ip}\r\ns=loadgen\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        port = local.port()
    )
}

/// The dialog state a UAC keeps for one leg.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_uri: String,
    pub local_tag: String,
    pub remote_uri: String,
    pub remote_tag: String,
    /// Where in-dialog requests go (the peer's Contact).
    pub target: String,
    /// Route set (Record-Route of the 2xx, reversed).
    pub routes: Vec<String>,
    pub contact: String,
    pub via_host: SocketAddr,
}

fn route_lines(routes: &[String]) -> String {
    routes.iter().map(|r| format!("Route: {r}\r\n")).collect()
}

/// The initial INVITE of a leg (CSeq 1).
pub fn invite(d: &Dialog, branch: &str, sdp: &str) -> String {
    format!(
        "INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <{lu}>;tag={lt}\r\nTo: <{ru}>\r\nCall-ID: {cid}\r\n\
         CSeq: 1 INVITE\r\nContact: <{ct}>\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n\
         User-Agent: tonewall-loadgen\r\nContent-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        target = d.target,
        via = d.via_host,
        lu = d.local_uri,
        lt = d.local_tag,
        ru = d.remote_uri,
        cid = d.call_id,
        ct = d.contact,
        len = sdp.len(),
    )
}

/// An in-dialog request without body (ACK for a 2xx, BYE).
pub fn in_dialog(d: &Dialog, method: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n{routes}From: <{lu}>;tag={lt}\r\nTo: <{ru}>;tag={rt}\r\n\
         Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        target = d.target,
        via = d.via_host,
        routes = route_lines(&d.routes),
        lu = d.local_uri,
        lt = d.local_tag,
        ru = d.remote_uri,
        rt = d.remote_tag,
        cid = d.call_id,
    )
}

/// ACK for a non-2xx final response: same branch as the INVITE, To tag of the response.
pub fn ack_non2xx(d: &Dialog, branch: &str, resp: &Msg) -> String {
    let to = resp
        .header("to")
        .map(str::to_string)
        .unwrap_or_else(|| format!("<{}>", d.remote_uri));
    format!(
        "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <{lu}>;tag={lt}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        target = d.target,
        via = d.via_host,
        lu = d.local_uri,
        lt = d.local_tag,
        cid = d.call_id,
    )
}

/// A response to a request: copies Via, From, To, Call-ID, CSeq; adds a To tag if asked.
pub fn response(
    req: &Msg,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    sdp: Option<&str>,
) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for (n, v) in &req.headers {
        match n.as_str() {
            "via" => out.push_str(&format!("Via: {v}\r\n")),
            "record-route" => out.push_str(&format!("Record-Route: {v}\r\n")),
            "from" => out.push_str(&format!("From: {v}\r\n")),
            "to" => match to_tag {
                Some(t) if tag_param(v).is_none() => out.push_str(&format!("To: {v};tag={t}\r\n")),
                _ => out.push_str(&format!("To: {v}\r\n")),
            },
            "call-id" => out.push_str(&format!("Call-ID: {v}\r\n")),
            "cseq" => out.push_str(&format!("CSeq: {v}\r\n")),
            _ => {}
        }
    }
    match sdp {
        Some(s) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{s}",
            s.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\n\
        v: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKabc;rport=40000\r\n\
        f: <sip:rep-1@127.0.0.1>;tag=lg1\r\n\
        t: <sip:+61390001042@127.0.0.1:5060>;tag=tw-77\r\n\
        i: call-1@loadgen\r\n\
        CSeq: 1 INVITE\r\n\
        Record-Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.1;lr>\r\n\
        m: \"tonewall\" <sip:tw@127.0.0.1:5060;transport=udp>\r\n\
        c: application/sdp\r\n\
        l: 158\r\n\r\n";
    const SDP: &str = "v=0\r\no=tonewall 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 10.9.9.9\r\n\
        t=0 0\r\nm=audio 30004 RTP/AVP 0 101\r\nc=IN IP4 127.0.0.1\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";

    #[test]
    fn parses_200_ok_with_compact_headers_and_sdp() {
        let text = format!(
            "{}{}",
            OK.replace("l: 158", &format!("l: {}", SDP.len())),
            SDP
        );
        let m = parse(text.as_bytes()).expect("parses");
        assert_eq!(m.status, Some(200));
        assert_eq!(m.call_id(), Some("call-1@loadgen"));
        assert_eq!(m.cseq(), Some((1, "INVITE".into())));
        assert_eq!(m.to_tag().as_deref(), Some("tw-77"));
        assert_eq!(
            m.contact_uri().as_deref(),
            Some("sip:tw@127.0.0.1:5060;transport=udp")
        );
        assert_eq!(
            m.header_values("record-route"),
            vec!["<sip:127.0.0.1:5060;lr>", "<sip:10.0.0.1;lr>"]
        );
        let sdp = parse_sdp(&m.body).expect("sdp");
        // Media-level c= wins over session-level.
        assert_eq!(sdp.rtp, "127.0.0.1:30004".parse().unwrap());
        assert_eq!(sdp.audio_pt, 0);
        assert_eq!(sdp.te_pt, Some(101));
    }

    #[test]
    fn sdp_session_level_connection_and_no_te() {
        let s = "v=0\nc=IN IP4 192.0.2.7\nm=audio 4000 RTP/AVP 8\na=rtpmap:8 PCMA/8000\n";
        let a = parse_sdp(s).expect("sdp");
        assert_eq!(a.rtp, "192.0.2.7:4000".parse().unwrap());
        assert_eq!(a.audio_pt, 8);
        assert_eq!(a.te_pt, None);
        assert!(parse_sdp("v=0\r\nm=audio x RTP/AVP 0\r\n").is_none());
        assert!(parse_sdp("").is_none());
    }

    #[test]
    fn our_offer_round_trips() {
        let local: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        let offer = sdp_offer(local, 9);
        assert!(offer.contains("m=audio 41000 RTP/AVP 0 101\r\n"));
        assert!(offer.contains("a=ptime:20\r\n"));
        let a = parse_sdp(&offer).expect("sdp");
        assert_eq!(a.rtp, local);
        assert_eq!(a.te_pt, Some(101));
    }

    #[test]
    fn request_and_response_to_bye() {
        let bye = "BYE sip:rep-1@127.0.0.1:40000 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
            From: <sip:+61390001042@127.0.0.1>;tag=tw-77\r\nTo: <sip:rep-1@127.0.0.1>;tag=lg1\r\n\
            Call-ID: call-1@loadgen\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let m = parse(bye.as_bytes()).expect("parses");
        assert_eq!(m.status, None);
        assert_eq!(m.method, "BYE");
        let r = response(&m, 200, "OK", None, None);
        let rm = parse(r.as_bytes()).expect("response parses");
        assert_eq!(rm.status, Some(200));
        assert_eq!(rm.cseq(), Some((2, "BYE".into())));
        assert_eq!(rm.header("via"), m.header("via"));
        assert_eq!(rm.to_tag().as_deref(), Some("lg1"));
    }

    #[test]
    fn built_requests_parse_back() {
        let d = Dialog {
            call_id: "c@lg".into(),
            local_uri: "sip:cust-1@127.0.0.1".into(),
            local_tag: "t1".into(),
            remote_uri: "sip:+61390001042@127.0.0.1:5060".into(),
            remote_tag: "r9".into(),
            target: "sip:tw@127.0.0.1:5060".into(),
            routes: vec!["<sip:127.0.0.1:5060;lr>".into()],
            contact: "sip:cust-1@127.0.0.1:40000".into(),
            via_host: "127.0.0.1:40000".parse().unwrap(),
        };
        let sdp = sdp_offer("127.0.0.1:41000".parse().unwrap(), 1);
        let inv = parse(invite(&d, "z9hG4bK1", &sdp).as_bytes()).expect("invite");
        assert_eq!(inv.method, "INVITE");
        assert_eq!(inv.body, sdp);
        let bye = parse(in_dialog(&d, "BYE", 2, "z9hG4bK2").as_bytes()).expect("bye");
        assert_eq!(bye.cseq(), Some((2, "BYE".into())));
        assert_eq!(bye.to_tag().as_deref(), Some("r9"));
        assert_eq!(bye.header("route"), Some("<sip:127.0.0.1:5060;lr>"));
    }

    #[test]
    fn garbage_never_panics() {
        for g in [
            &b""[..],
            b"\xff\xfe",
            b"SIP/2.0 99999 X\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: 900\r\n\r\nabc",
            b"INVITE\r\n\r\n",
            b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            let _ = parse(g);
        }
        assert!(parse(b"SIP/2.0 200 OK\r\nContent-Length: 900\r\n\r\nabc").is_some());
        assert_eq!(uri_of("<sip:a@b"), None);
        assert_eq!(tag_param("<sip:a@b>;tag=x;foo"), Some("x".into()));
    }
}
