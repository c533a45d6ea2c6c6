//! The SIP endpoint on 127.0.0.1:0 driven with raw SIP text over real UDP and TCP sockets,
//! with a mock `TrunkHandler`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use tonewall::leg::{LegRole, SessionId};
use tonewall::media::ports::PortPool;
use tonewall::media::{Codec, Direction, LegParams};
use tonewall::sip::endpoint::{start, EndpointConfig, EndpointHandle};
use tonewall::sip::message::{Message, Response};
use tonewall::sip::transport::Transport;
use tonewall::sip::trunk::{
    Admission, InviteInfo, LegEnd, LegUp, Rejection, TrunkCommand, TrunkHandler,
};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Admit(String),
    Up(String, u16),
    Media(String, LegParams),
    Ended(String, LegEnd),
}

#[derive(Default)]
struct Mock(Mutex<Vec<Ev>>);

impl Mock {
    fn events(&self) -> Vec<Ev> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl TrunkHandler for Mock {
    fn admit(&self, i: &InviteInfo) -> Result<Admission, Rejection> {
        self.0.lock().expect("lock").push(Ev::Admit(i.dnis.clone()));
        match i.dnis.as_str() {
            "404" => Err(Rejection {
                status: 404,
                reason: "Not Found",
                retry_after: None,
            }),
            "503" => Err(Rejection {
                status: 503,
                reason: "Service Unavailable",
                retry_after: Some(7),
            }),
            d => Ok(Admission {
                session: SessionId::from(format!("ses_{d}")),
                role: LegRole::Rep,
            }),
        }
    }
    fn leg_up(&self, up: LegUp) {
        self.0
            .lock()
            .expect("lock")
            .push(Ev::Up(up.session.to_string(), up.sockets.lease.port()));
    }
    fn leg_media(&self, s: &SessionId, _r: LegRole, p: LegParams) {
        self.0
            .lock()
            .expect("lock")
            .push(Ev::Media(s.to_string(), p));
    }
    fn leg_ended(&self, s: &SessionId, _r: LegRole, why: LegEnd) {
        self.0
            .lock()
            .expect("lock")
            .push(Ev::Ended(s.to_string(), why));
    }
}

struct Rig {
    mock: Arc<Mock>,
    ep: EndpointHandle,
    cmd: mpsc::UnboundedSender<TrunkCommand>,
    udp: SocketAddr,
    tcp: SocketAddr,
}

async fn rig(range: &str) -> Rig {
    let mock = Arc::new(Mock::default());
    let (cmd, rx) = mpsc::unbounded_channel();
    let cfg = EndpointConfig {
        listen: vec!["udp:127.0.0.1:0".into(), "tcp:127.0.0.1:0".into()],
        advertise: None,
        media_bind: "127.0.0.1".parse().expect("ip"),
        media_advertise: None,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
    };
    let ep = start(cfg, PortPool::parse(range).expect("pool"), mock.clone(), rx)
        .await
        .expect("start");
    let addrs = ep.local_addrs();
    let find = |t| {
        addrs
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, a)| *a)
            .expect("addr")
    };
    Rig {
        udp: find(Transport::Udp),
        tcp: find(Transport::Tcp),
        mock,
        ep,
        cmd,
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

struct Leg {
    transport: &'static str,
    local: SocketAddr,
    call_id: String,
    to_tag: Option<String>,
    cseq: u32,
}

impl Leg {
    fn new(transport: &'static str, local: SocketAddr, call_id: &str) -> Leg {
        Leg {
            transport,
            local,
            call_id: call_id.into(),
            to_tag: None,
            cseq: 1,
        }
    }

    fn req(&self, method: &str, dnis: &str, body: &str, branch: &str) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let seq = format!("{} {method}", self.cseq);
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} sip:{dnis}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\n\
From: <sip:carrier@127.0.0.1>;tag=ft\r\nTo: <sip:{dnis}@127.0.0.1>{to_tag}\r\nCall-ID: {}\r\n\
CSeq: {seq}\r\nContact: <sip:carrier@{}>\r\nMax-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            self.transport,
            self.local,
            self.call_id,
            self.local,
            body.len()
        )
    }
}

async fn recv_udp(s: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
        .await
        .expect("timely")
        .expect("recv");
    Message::parse(&buf[..n]).expect("parse")
}

async fn resp_udp(s: &UdpSocket, status: u16) -> Response {
    loop {
        if let Message::Response(r) = recv_udp(s).await {
            if r.status == status {
                return r;
            }
            assert!(r.status < 200 || r.status == status, "got {}", r.status);
        }
    }
}

async fn wait_for(mock: &Mock, pred: impl Fn(&[Ev]) -> bool) -> Vec<Ev> {
    for _ in 0..300 {
        let ev = mock.events();
        if pred(&ev) {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met: {:?}", mock.events());
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind")
}

#[tokio::test]
async fn options_is_answered_and_junk_is_ignored() {
    let r = rig("42000-42019").await;
    let s = client().await;
    let leg = Leg::new("UDP", s.local_addr().expect("addr"), "opt-1");
    s.send_to(b"\x00\x01garbage\xff\xfe", r.udp)
        .await
        .expect("send");
    s.send_to(b"NOTSIP at all\r\n\r\n", r.udp)
        .await
        .expect("send");
    s.send_to(
        leg.req("OPTIONS", "trunk", "", "z9hG4bKo1").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    let ok = resp_udp(&s, 200).await;
    assert!(ok.headers.get("Allow").expect("allow").contains("INVITE"));
    assert_eq!(ok.headers.get("Accept"), Some("application/sdp"));
    assert_eq!(ok.headers.call_id(), Some("opt-1"));
    // Unknown method -> 501; garbage that can be answered -> 400.
    s.send_to(leg.req("FOO", "trunk", "", "z9hG4bKo2").as_bytes(), r.udp)
        .await
        .expect("send");
    resp_udp(&s, 501).await;
    let bad = leg
        .req("OPTIONS", "trunk", "", "z9hG4bKo3")
        .replace("Content-Length: 0", "Content-Length: zz");
    s.send_to(bad.as_bytes(), r.udp).await.expect("send");
    resp_udp(&s, 400).await;
    r.ep.shutdown();
}

#[tokio::test]
async fn invite_ack_reinvite_hold_bye_over_udp() {
    let r = rig("42020-42039").await;
    let s = client().await;
    let mut leg = Leg::new("UDP", s.local_addr().expect("addr"), "call-1");
    s.send_to(
        leg.req("INVITE", "+61390001042", SDP, "z9hG4bKi1")
            .as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    resp_udp(&s, 100).await;
    let ok = resp_udp(&s, 200).await;
    let tag = ok.headers.tag("To").expect("to tag");
    assert!(ok.headers.contact_uri().is_some());
    let body = String::from_utf8_lossy(&ok.body).to_string();
    assert!(body.contains("c=IN IP4 127.0.0.1"), "{body}");
    assert!(body.contains("RTP/AVP 0 101"), "{body}");
    leg.to_tag = Some(tag);
    s.send_to(
        leg.req("ACK", "+61390001042", "", "z9hG4bKa1").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    let ev = wait_for(&r.mock, |e| e.iter().any(|x| matches!(x, Ev::Up(..)))).await;
    let port = ev
        .iter()
        .find_map(|x| match x {
            Ev::Up(_, p) => Some(*p),
            _ => None,
        })
        .expect("up");
    assert!(body.contains(&format!("m=audio {port} ")));
    // re-INVITE: sendonly hold.
    leg.cseq = 2;
    let hold = SDP.replace("a=sendrecv", "a=sendonly");
    s.send_to(
        leg.req("INVITE", "+61390001042", &hold, "z9hG4bKi2")
            .as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    let ok2 = resp_udp(&s, 200).await;
    let b2 = String::from_utf8_lossy(&ok2.body).to_string();
    assert!(
        b2.contains("a=recvonly") && b2.contains("o=tonewall 2 2"),
        "{b2}"
    );
    assert!(b2.contains(&format!("m=audio {port} ")));
    s.send_to(
        leg.req("ACK", "+61390001042", "", "z9hG4bKa2").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    // re-INVITE: c=0.0.0.0 hold.
    leg.cseq = 3;
    let hold0 = SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
    s.send_to(
        leg.req("INVITE", "+61390001042", &hold0, "z9hG4bKi3")
            .as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    resp_udp(&s, 200).await;
    s.send_to(
        leg.req("ACK", "+61390001042", "", "z9hG4bKa3").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    let ev = wait_for(&r.mock, |e| {
        e.iter().filter(|x| matches!(x, Ev::Media(..))).count() == 2
    })
    .await;
    let media: Vec<_> = ev
        .iter()
        .filter_map(|x| match x {
            Ev::Media(_, p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(media[0].direction, Direction::SendOnly);
    assert_eq!(media[1].remote, None);
    // BYE.
    leg.cseq = 4;
    s.send_to(
        leg.req("BYE", "+61390001042", "", "z9hG4bKb1").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    resp_udp(&s, 200).await;
    wait_for(&r.mock, |e| {
        e.contains(&Ev::Ended("ses_+61390001042".into(), LegEnd::Bye))
    })
    .await;
    // BYE again: the dialog is gone -> 481.
    leg.cseq = 5;
    s.send_to(
        leg.req("BYE", "+61390001042", "", "z9hG4bKb2").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    resp_udp(&s, 481).await;
    r.ep.shutdown();
}

#[tokio::test]
async fn cancel_before_answer() {
    let r = rig("42040-42059").await;
    let s = client().await;
    let leg = Leg::new("UDP", s.local_addr().expect("addr"), "call-cancel");
    s.send_to(leg.req("INVITE", "777", SDP, "z9hG4bKc1").as_bytes(), r.udp)
        .await
        .expect("send");
    s.send_to(leg.req("CANCEL", "777", "", "z9hG4bKc1").as_bytes(), r.udp)
        .await
        .expect("send");
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Message::Response(x) = recv_udp(&s).await {
            if x.status >= 200 {
                got.push((x.status, x.headers.cseq().map(|c| c.1.as_str().to_string())));
            }
        }
    }
    assert!(got.contains(&(200, Some("CANCEL".into()))), "{got:?}");
    assert!(got.contains(&(487, Some("INVITE".into()))), "{got:?}");
    wait_for(&r.mock, |e| {
        e.contains(&Ev::Ended("ses_777".into(), LegEnd::Cancelled))
    })
    .await;
    r.ep.shutdown();
}

#[tokio::test]
async fn rejections_pass_through_and_unknown_dialog_is_481() {
    let r = rig("42060-42079").await;
    let s = client().await;
    let leg = Leg::new("UDP", s.local_addr().expect("addr"), "call-rej");
    s.send_to(leg.req("INVITE", "404", SDP, "z9hG4bKr1").as_bytes(), r.udp)
        .await
        .expect("send");
    resp_udp(&s, 404).await;
    let leg2 = Leg::new("UDP", s.local_addr().expect("addr"), "call-rej2");
    s.send_to(
        leg2.req("INVITE", "503", SDP, "z9hG4bKr2").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    let busy = resp_udp(&s, 503).await;
    assert_eq!(busy.headers.get("Retry-After"), Some("7"));
    // No acceptable codec -> 488 and the leg is reported failed.
    let g729 = SDP
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    let leg3 = Leg::new("UDP", s.local_addr().expect("addr"), "call-488");
    s.send_to(
        leg3.req("INVITE", "488", &g729, "z9hG4bKr3").as_bytes(),
        r.udp,
    )
    .await
    .expect("send");
    resp_udp(&s, 488).await;
    wait_for(&r.mock, |e| {
        e.contains(&Ev::Ended("ses_488".into(), LegEnd::SetupFailed))
    })
    .await;
    let mut ghost = Leg::new("UDP", s.local_addr().expect("addr"), "nope");
    ghost.to_tag = Some("unknown".into());
    s.send_to(ghost.req("BYE", "x", "", "z9hG4bKr4").as_bytes(), r.udp)
        .await
        .expect("send");
    resp_udp(&s, 481).await;
    r.ep.shutdown();
}

async fn read_tcp(s: &mut TcpStream, buf: &mut Vec<u8>) -> Response {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let cl: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + cl {
                let msg: Vec<u8> = buf.drain(..end + 4 + cl).collect();
                if let Ok(Message::Response(r)) = Message::parse(&msg) {
                    return r;
                }
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk))
            .await
            .expect("timely")
            .expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn tcp_call_and_hang_up_command() {
    let r = rig("42080-42099").await;
    let mut s = TcpStream::connect(r.tcp).await.expect("connect");
    let mut leg = Leg::new("TCP", s.local_addr().expect("addr"), "call-tcp");
    let mut buf = Vec::new();
    s.write_all(leg.req("INVITE", "555", SDP, "z9hG4bKt1").as_bytes())
        .await
        .expect("write");
    let mut ok = read_tcp(&mut s, &mut buf).await;
    while ok.status < 200 {
        ok = read_tcp(&mut s, &mut buf).await;
    }
    assert_eq!(ok.status, 200);
    assert!(ok
        .headers
        .contact_uri()
        .expect("contact")
        .contains("transport=tcp"));
    leg.to_tag = ok.headers.tag("To");
    s.write_all(leg.req("ACK", "555", "", "z9hG4bKt2").as_bytes())
        .await
        .expect("write");
    wait_for(&r.mock, |e| e.iter().any(|x| matches!(x, Ev::Up(..)))).await;
    r.cmd
        .send(TrunkCommand::HangUp {
            session: SessionId::from("ses_555"),
            role: LegRole::Rep,
        })
        .expect("cmd");
    // The BYE comes back on the same connection.
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk))
        .await
        .expect("timely")
        .expect("read");
    let Ok(Message::Request(bye)) = Message::parse(&chunk[..n]) else {
        panic!("expected BYE");
    };
    assert_eq!(bye.method.as_str(), "BYE");
    assert_eq!(bye.headers.tag("To").as_deref(), Some("ft"));
    let resp = bye.response(200, "OK", None).to_bytes();
    s.write_all(&resp).await.expect("write");
    wait_for(&r.mock, |e| {
        e.contains(&Ev::Ended("ses_555".into(), LegEnd::HungUp))
    })
    .await;
    r.ep.shutdown();
}
