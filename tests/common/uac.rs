//! A minimal SIP user agent for the end-to-end tests (UDP or TCP): dials a DNIS with an SDP
//! offer, ACKs, re-INVITEs for hold, hangs up, and answers tonewall's BYE. It is just
//! enough SIP to drive legs; the interop tests use SIPp for the real thing.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How the UA reaches tonewall.
pub enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
}

/// One established call leg.
pub struct Leg {
    pub conn: Conn,
    pub rtp: UdpSocket,
    /// Where tonewall wants our RTP (from its SDP answer).
    pub remote_rtp: SocketAddr,
    pub answer: String,
    call_id: String,
    from_tag: String,
    to_tag: String,
    dnis: String,
    target: SocketAddr,
    cseq: u32,
    local: SocketAddr,
}

/// A SIP response or request as text, with its first line and headers.
pub struct Msg {
    pub text: String,
}

impl Msg {
    pub fn status(&self) -> Option<u16> {
        let first = self.text.lines().next()?;
        if !first.starts_with("SIP/2.0 ") {
            return None;
        }
        first.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.text.starts_with(&format!("{method} "))
    }
}

pub fn sdp(rtp_port: u16, pt: u8, name: &str, direction: &str, version: u32) -> String {
    format!(
        "v=0\r\no=test 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na={direction}\r\n"
    )
}

fn parse_rtp_addr(sdp: &str) -> Option<SocketAddr> {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .to_string();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .to_string();
    format!("{ip}:{port}").parse().ok()
}

impl Conn {
    pub async fn udp(target: SocketAddr) -> Conn {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Conn::Udp(s, target)
    }

    pub async fn tcp(target: SocketAddr) -> Conn {
        let s = TcpStream::connect(target).await.expect("connect");
        Conn::Tcp(s, Vec::new())
    }

    fn local(&self) -> SocketAddr {
        match self {
            Conn::Udp(s, _) => s.local_addr().expect("addr"),
            Conn::Tcp(s, _) => s.local_addr().expect("addr"),
        }
    }

    fn transport(&self) -> &'static str {
        match self {
            Conn::Udp(..) => "UDP",
            Conn::Tcp(..) => "TCP",
        }
    }

    pub async fn send(&mut self, text: &str) {
        match self {
            Conn::Udp(s, to) => {
                s.send_to(text.as_bytes(), *to).await.expect("send");
            }
            Conn::Tcp(s, _) => s.write_all(text.as_bytes()).await.expect("write"),
        }
    }

    /// The next message, or `None` after `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Msg> {
        tokio::time::timeout(wait, self.recv_inner())
            .await
            .ok()
            .flatten()
    }

    async fn recv_inner(&mut self) -> Option<Msg> {
        match self {
            Conn::Udp(s, _) => {
                let mut buf = vec![0u8; 65536];
                let (n, _) = s.recv_from(&mut buf).await.ok()?;
                Some(Msg {
                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                })
            }
            Conn::Tcp(s, acc) => loop {
                if let Some(end) = find(acc, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&acc[..end]).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            let n = n.trim();
                            (n.eq_ignore_ascii_case("content-length") || n == "l")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if acc.len() >= end + 4 + len {
                        let msg: Vec<u8> = acc.drain(..end + 4 + len).collect();
                        return Some(Msg {
                            text: String::from_utf8_lossy(&msg).into_owned(),
                        });
                    }
                }
                let mut buf = [0u8; 8192];
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                acc.extend_from_slice(&buf[..n]);
            },
        }
    }

    /// Receive until a final response (>= 200) arrives; answers nothing else.
    pub async fn final_response(&mut self, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            if m.status().is_some_and(|s| s >= 200) {
                return Some(m);
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn branch() -> String {
    format!("z9hG4bK{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

/// Send an INVITE for `dnis` and return the final response (and our RTP socket).
pub async fn invite_raw(
    mut conn: Conn,
    target: SocketAddr,
    dnis: &str,
    pt: u8,
    codec: &str,
) -> (Conn, UdpSocket, Msg, String, String) {
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("rtp");
    let rtp_port = rtp.local_addr().expect("addr").port();
    let local = conn.local();
    let call_id = format!("{:x}@test", rand_u64());
    let from_tag = format!("{:x}", rand_u64());
    let body = sdp(rtp_port, pt, codec, "sendrecv", 1);
    let t = conn.transport();
    let invite = format!(
        "INVITE sip:{dnis}@{target} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={b};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag={from_tag}\r\nTo: <sip:{dnis}@{target}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local};transport={tl}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
        b = branch(),
        tl = t.to_lowercase(),
        len = body.len()
    );
    conn.send(&invite).await;
    let resp = conn
        .final_response(Duration::from_secs(10))
        .await
        .expect("final response to INVITE");
    (conn, rtp, resp, call_id, from_tag)
}

impl Leg {
    /// Dial `dnis` and complete the handshake; panics unless answered 200.
    pub async fn dial(conn: Conn, target: SocketAddr, dnis: &str, pt: u8, codec: &str) -> Leg {
        let local = conn.local();
        let (conn, rtp, resp, call_id, from_tag) = invite_raw(conn, target, dnis, pt, codec).await;
        assert_eq!(resp.status(), Some(200), "INVITE answered: {}", resp.text);
        let to = resp.header("To").expect("To");
        let to_tag = to
            .split(";tag=")
            .nth(1)
            .map(|t| t.split(';').next().unwrap_or(t).to_string())
            .expect("to-tag");
        let answer = resp.body().to_string();
        let remote_rtp = parse_rtp_addr(&answer).expect("answer has c= and m=");
        let mut leg = Leg {
            conn,
            rtp,
            remote_rtp,
            answer,
            call_id,
            from_tag,
            to_tag,
            dnis: dnis.to_string(),
            target,
            cseq: 1,
            local,
        };
        let ack = leg.request("ACK", 1, "");
        leg.conn.send(&ack).await;
        leg
    }

    fn request(&self, method: &str, cseq: u32, body: &str) -> String {
        self.request_with(method, cseq, "", "application/sdp", body)
    }

    /// An in-dialog request with `extra` header lines (each ending in CRLF) and a body of
    /// `content_type`.
    pub fn request_with(
        &self,
        method: &str,
        cseq: u32,
        extra: &str,
        content_type: &str,
        body: &str,
    ) -> String {
        let t = self.conn.transport();
        let ct = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {content_type}\r\n")
        };
        format!(
            "{method} sip:{dnis}@{target} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={b};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag={ft}\r\nTo: <sip:{dnis}@{target}>;tag={tt}\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{local}>\r\n{extra}{ct}\
             Content-Length: {len}\r\n\r\n{body}",
            dnis = self.dnis,
            target = self.target,
            local = self.local,
            b = branch(),
            ft = self.from_tag,
            tt = self.to_tag,
            cid = self.call_id,
            len = body.len()
        )
    }

    /// Re-INVITE with `direction` (hold: `sendonly`); returns the answer SDP.
    pub async fn reinvite(&mut self, pt: u8, codec: &str, direction: &str) -> String {
        self.cseq += 1;
        let port = self.rtp.local_addr().expect("addr").port();
        let body = sdp(port, pt, codec, direction, self.cseq);
        let req = self.request("INVITE", self.cseq, &body);
        self.conn.send(&req).await;
        let resp = self
            .conn
            .final_response(Duration::from_secs(5))
            .await
            .expect("re-INVITE answered");
        assert_eq!(resp.status(), Some(200), "re-INVITE: {}", resp.text);
        let ack = self.request("ACK", self.cseq, "");
        self.conn.send(&ack).await;
        resp.body().to_string()
    }

    /// Hang up: BYE, expect 200.
    pub async fn bye(&mut self) {
        self.cseq += 1;
        let req = self.request("BYE", self.cseq, "");
        self.conn.send(&req).await;
        let resp = self
            .conn
            .final_response(Duration::from_secs(5))
            .await
            .expect("BYE answered");
        assert_eq!(resp.status(), Some(200), "BYE: {}", resp.text);
    }

    /// Wait for tonewall's BYE and answer it 200.
    pub async fn expect_bye(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = self.conn.recv(left).await else {
                return false;
            };
            if m.is_request("BYE") {
                let mut resp = String::from("SIP/2.0 200 OK\r\n");
                for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    if let Some(v) = m.header(h) {
                        resp.push_str(&format!("{h}: {v}\r\n"));
                    }
                }
                resp.push_str("Content-Length: 0\r\n\r\n");
                self.conn.send(&resp).await;
                return true;
            }
        }
    }

    /// `(Call-ID, our From tag, tonewall's To tag)` of this dialog.
    pub fn dialog_ids(&self) -> (&str, &str, &str) {
        (&self.call_id, &self.from_tag, &self.to_tag)
    }

    /// Receive until a request `method` arrives (other messages are dropped); `None` after
    /// `wait`.
    pub async fn expect_request(&mut self, method: &str, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.conn.recv(left).await?;
            if m.is_request(method) {
                return Some(m);
            }
        }
    }

    /// Answer a request from tonewall with `status` (headers echoed as RFC 3261 §8.2.6).
    pub async fn reply(&mut self, req: &Msg, status: u16, reason: &str) {
        let mut resp = format!("SIP/2.0 {status} {reason}\r\n");
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = req.header(h) {
                resp.push_str(&format!("{h}: {v}\r\n"));
            }
        }
        resp.push_str("Content-Length: 0\r\n\r\n");
        self.conn.send(&resp).await;
    }

    /// The text of the next NOTIFY of a REFER subscription (`Event: refer`, a
    /// `message/sipfrag` body `SIP/2.0 {frag}`, `Subscription-State: {state}`); not sent,
    /// so a test can send it (and resend it) with `conn.send`.
    pub fn notify_text(&mut self, frag: &str, state: &str) -> String {
        self.cseq += 1;
        let extra = format!("Event: refer\r\nSubscription-State: {state}\r\n");
        let body = format!("SIP/2.0 {frag}\r\n");
        self.request_with("NOTIFY", self.cseq, &extra, "message/sipfrag", &body)
    }

    /// Send a REFER NOTIFY and return the status of its final response.
    pub async fn notify(&mut self, frag: &str, state: &str) -> Option<u16> {
        let text = self.notify_text(frag, state);
        self.conn.send(&text).await;
        self.conn
            .final_response(Duration::from_secs(5))
            .await?
            .status()
    }

    /// Send one RTP packet to tonewall from our RTP socket.
    pub async fn send_rtp(
        &self,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        marker: bool,
        payload: &[u8],
    ) {
        let mut p = Vec::with_capacity(12 + payload.len());
        p.push(0x80);
        p.push(pt | if marker { 0x80 } else { 0 });
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        let _ = self.rtp.send_to(&p, self.remote_rtp).await;
    }

    /// RTP packets received within `wait` (header fields and payload).
    pub async fn recv_rtp(&self, wait: Duration) -> Vec<RtpIn> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rtp.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) if n >= 12 => out.push(RtpIn {
                    pt: buf[1] & 0x7f,
                    seq: u16::from_be_bytes([buf[2], buf[3]]),
                    ts: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                    ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
                    payload: buf[12..n].to_vec(),
                }),
                Ok(Ok(_)) => {}
                _ => return out,
            }
        }
    }
}

/// A received RTP packet.
#[derive(Clone, Debug)]
pub struct RtpIn {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

/// The values of a `c=IN IP4` / `m=audio` pair in an SDP body.
pub fn sdp_rtp_addr(sdp: &str) -> Option<SocketAddr> {
    parse_rtp_addr(sdp)
}

fn ok_to(req: &Msg, status: u16, reason: &str, to_tag: Option<&str>) -> String {
    let mut resp = format!("SIP/2.0 {status} {reason}\r\n");
    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(h) {
            let tag = match (h, to_tag) {
                ("To", Some(t)) if !v.contains(";tag=") => format!(";tag={t}"),
                _ => String::new(),
            };
            resp.push_str(&format!("{h}: {v}{tag}\r\n"));
        }
    }
    resp
}

impl Leg {
    /// Dial `user` with an INVITE that has no SDP (as a click-to-dial auto-answer INVITE,
    /// `extra` header lines ending in CRLF); the 200 must carry an offer, the ACK carries
    /// our answer. Panics unless answered 200 with SDP.
    pub async fn dial_offerless(
        mut conn: Conn,
        target: SocketAddr,
        user: &str,
        extra: &str,
    ) -> Leg {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("rtp");
        let local = conn.local();
        let call_id = format!("{:x}@test", rand_u64());
        let from_tag = format!("{:x}", rand_u64());
        let t = conn.transport();
        let invite = format!(
            "INVITE sip:{user}@{target} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={b};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag={from_tag}\r\nTo: <sip:{user}@{target}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            b = branch(),
        );
        conn.send(&invite).await;
        let resp = conn
            .final_response(Duration::from_secs(10))
            .await
            .expect("final response to INVITE");
        assert_eq!(resp.status(), Some(200), "INVITE answered: {}", resp.text);
        let to = resp.header("To").expect("To");
        let to_tag = to
            .split(";tag=")
            .nth(1)
            .map(|t| t.split(';').next().unwrap_or(t).to_string())
            .expect("to-tag");
        let offer = resp.body().to_string();
        let remote_rtp = parse_rtp_addr(&offer).expect("200 carries an offer");
        let leg = Leg {
            conn,
            rtp,
            remote_rtp,
            answer: offer,
            call_id,
            from_tag,
            to_tag,
            dnis: user.to_string(),
            target,
            cseq: 1,
            local,
        };
        let port = leg.rtp.local_addr().expect("addr").port();
        let mut leg = leg;
        let ack = leg.request("ACK", 1, &sdp(port, 0, "PCMU", "sendrecv", 1));
        leg.conn.send(&ack).await;
        leg
    }

    /// Re-INVITE without SDP (a transfer's re-offer): the 200 must carry an offer, which is
    /// returned; the ACK carries our answer.
    pub async fn reinvite_offerless(&mut self) -> String {
        self.cseq += 1;
        let req = self.request("INVITE", self.cseq, "");
        self.conn.send(&req).await;
        let resp = self
            .conn
            .final_response(Duration::from_secs(5))
            .await
            .expect("re-INVITE answered");
        assert_eq!(resp.status(), Some(200), "re-INVITE: {}", resp.text);
        let port = self.rtp.local_addr().expect("addr").port();
        let ack = self.request(
            "ACK",
            self.cseq,
            &sdp(port, 0, "PCMU", "sendrecv", self.cseq),
        );
        self.conn.send(&ack).await;
        resp.body().to_string()
    }

    /// Send an in-dialog request without body; the status of its final response.
    pub async fn transact(&mut self, method: &str, extra: &str) -> Option<u16> {
        self.cseq += 1;
        let req = self.request_with(method, self.cseq, extra, "", "");
        self.conn.send(&req).await;
        self.conn
            .final_response(Duration::from_secs(5))
            .await?
            .status()
    }
}

/// The answering side of a call a phone places (the carrier simulator's role towards a
/// SIPp UAC): answers its INVITE, then sends in-dialog requests towards it.
pub struct Callee {
    pub conn: Conn,
    /// The SDP of the phone's INVITE.
    pub offer: String,
    call_id: String,
    /// The INVITE's From (the phone's party, tag included).
    remote: String,
    /// The INVITE's To with our tag.
    local_party: String,
    remote_target: String,
    local: SocketAddr,
    cseq: u32,
}

impl Callee {
    /// Wait for an INVITE on `sock`, answer it 100 then 200 with `answer`, wait for the ACK.
    pub async fn accept(sock: UdpSocket, answer: &str, wait: Duration) -> Callee {
        let mut buf = vec![0u8; 65536];
        let (n, peer) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
            .await
            .expect("INVITE in time")
            .expect("recv");
        let invite = Msg {
            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
        };
        assert!(invite.is_request("INVITE"), "{}", invite.text);
        let local = sock.local_addr().expect("addr");
        let mut conn = Conn::Udp(sock, peer);
        let tag = format!("{:x}", rand_u64());
        let trying = ok_to(&invite, 100, "Trying", None) + "Content-Length: 0\r\n\r\n";
        conn.send(&trying).await;
        let ok = ok_to(&invite, 200, "OK", Some(&tag))
            + &format!(
                "Contact: <sip:sim@{local}>\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
        conn.send(&ok).await;
        let ack = conn.recv(wait).await.expect("ACK");
        assert!(ack.is_request("ACK"), "{}", ack.text);
        let contact = invite.header("Contact").expect("Contact");
        let remote_target = contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap_or_default()
            .to_string();
        Callee {
            conn,
            offer: invite.body().to_string(),
            call_id: invite.header("Call-ID").expect("Call-ID"),
            remote: invite.header("From").expect("From"),
            local_party: format!("{};tag={tag}", invite.header("To").expect("To")),
            remote_target,
            local,
            cseq: 100,
        }
    }

    fn request(&self, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={b};rport\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:sim@{local}>\r\n{extra}{ct}\
             Content-Length: {len}\r\n\r\n{body}",
            target = self.remote_target,
            local = self.local,
            b = branch(),
            from = self.local_party,
            to = self.remote,
            cid = self.call_id,
            len = body.len()
        )
    }

    /// A re-INVITE with `offer` (empty: offerless); returns the 200's SDP after ACKing it
    /// (with `ack_body` as the answer when the re-INVITE had no offer).
    pub async fn reinvite(&mut self, offer: &str, ack_body: &str) -> String {
        self.cseq += 1;
        let req = self.request("INVITE", self.cseq, "", offer);
        self.conn.send(&req).await;
        let resp = self
            .conn
            .final_response(Duration::from_secs(5))
            .await
            .expect("re-INVITE answered");
        assert_eq!(resp.status(), Some(200), "re-INVITE: {}", resp.text);
        let ack = self.request("ACK", self.cseq, "", ack_body);
        self.conn.send(&ack).await;
        resp.body().to_string()
    }

    /// An in-dialog request without SDP (`extra` header lines, optional body of type
    /// `content_type`); the status of its final response.
    pub async fn transact(
        &mut self,
        method: &str,
        extra: &str,
        content_type: &str,
        body: &str,
    ) -> Option<u16> {
        self.cseq += 1;
        let mut req = self.request(method, self.cseq, extra, "");
        if !body.is_empty() {
            req = req.replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            );
        }
        self.conn.send(&req).await;
        self.conn
            .final_response(Duration::from_secs(5))
            .await?
            .status()
    }
}
