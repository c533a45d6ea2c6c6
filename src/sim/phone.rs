//! Simulated SIP phones for the demo and tests: auto-answer every INVITE and re-INVITE (with
//! or without an offer), answer BYE/NOTIFY, dial, hang up, REFER, and while in a call send a
//! quiet 440 Hz PCMU tone every 20 ms to the latest remote media address (not while held),
//! RFC 4733 key presses on demand, and count what arrives on the RTP socket.
//!
//! Must never: log the digits it sends, or panic on input.

use std::f64::consts::PI;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::sdp;
use super::ua::{lock, sdp_of, Dlg, Incoming, Ua};
use crate::media::g711;
use crate::media::Codec;
use crate::sip::message::{Method, Request};

pub struct PhoneConfig {
    pub sip_listen: SocketAddr,
    pub rtp_listen: SocketAddr,
    pub proxy: SocketAddr,
    pub number: String,
}

/// What a phone has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhoneStats {
    pub rtp_received: u64,
    /// RTP packets with the telephone-event payload type.
    pub events_received: u64,
    pub last_rtp_from: Option<SocketAddr>,
    pub in_call: bool,
    pub remote_media: Option<SocketAddr>,
    /// The far end's latest SDP is `sendonly` or `inactive`.
    pub held: bool,
    /// The sipfrag status line of the latest NOTIFY (REFER progress).
    pub last_notify: Option<String>,
}

struct Call {
    dlg: Dlg,
    remote_media: Option<SocketAddr>,
    held: bool,
    te_pt: u8,
    updated: u64,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    tick: u64,
    version: u64,
    rtp_received: u64,
    events_received: u64,
    last_rtp_from: Option<SocketAddr>,
    last_notify: Option<String>,
    from_counts: std::collections::HashMap<SocketAddr, u64>,
    /// Sending a key press: the tone pauses.
    keying: bool,
    seq: u16,
    ts: u32,
}

impl State {
    fn current(&self) -> Option<&Call> {
        self.calls.iter().max_by_key(|c| c.updated)
    }

    fn apply_remote(&mut self, call_id: &str, local_tag: &str, body: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(c) = self
            .calls
            .iter_mut()
            .find(|c| c.dlg.call_id == call_id && c.dlg.local_tag == local_tag)
        {
            c.remote_media = sdp::media_addr(body);
            let d = sdp::direction(body);
            c.held = d == "sendonly" || d == "inactive";
            c.te_pt = sdp::te_pt(body).unwrap_or(101);
            c.updated = tick;
        }
    }
}

/// A running simulated phone.
pub struct Phone {
    ua: Ua,
    rtp: Arc<UdpSocket>,
    st: Arc<Mutex<State>>,
    number: String,
    proxy: SocketAddr,
    tasks: Vec<AbortHandle>,
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.ua.close();
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn own_sdp(rtp: SocketAddr, version: u64, dir: &str) -> String {
    let ip = rtp.ip();
    format!(
        "v=0\r\no=phone 1 {version} IN IP4 {ip}\r\ns=phone\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na={dir}\r\n",
        rtp.port()
    )
}

fn rtp_header(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(172);
    p.push(0x80);
    p.push(pt | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn event_code(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        _ => None,
    }
}

impl Phone {
    pub async fn start(cfg: PhoneConfig) -> anyhow::Result<Phone> {
        let (ua, rx) = Ua::bind(cfg.sip_listen).await?;
        let rtp = Arc::new(UdpSocket::bind(cfg.rtp_listen).await.context("rtp bind")?);
        let st = Arc::new(Mutex::new(State::default()));
        let mut tasks = Vec::new();
        let ssrc: u32 = rand::random();
        tasks.push(
            tokio::spawn(sip_task(
                ua.clone(),
                rx,
                st.clone(),
                rtp.local_addr()?,
                cfg.number.clone(),
            ))
            .abort_handle(),
        );
        tasks.push(tokio::spawn(rtp_rx(rtp.clone(), st.clone())).abort_handle());
        tasks.push(tokio::spawn(tone_tx(rtp.clone(), st.clone(), ssrc)).abort_handle());
        Ok(Phone {
            ua,
            rtp,
            st,
            number: cfg.number,
            proxy: cfg.proxy,
            tasks,
        })
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.ua.local_addr()
    }

    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// INVITE `sip:{number}@proxy` with an offer, wait for the 200, ACK.
    pub async fn dial(&self, number: &str) -> anyhow::Result<()> {
        let offer = {
            let mut s = lock(&self.st);
            s.version += 1;
            own_sdp(self.rtp_addr(), s.version, "sendrecv")
        };
        let uri = format!("sip:{number}@{}", self.proxy);
        let inv = self.ua.invite(&uri, &self.number, Some(&offer));
        let resp = self.ua.request(inv.clone(), self.proxy).await?;
        if !(200..300).contains(&resp.status) {
            bail!("call to {number} refused: {} {}", resp.status, resp.reason);
        }
        let dlg = Dlg::uac(&inv, &resp, self.proxy).ok_or_else(|| anyhow!("bad 200"))?;
        let seq = inv.headers.cseq().map(|c| c.0).unwrap_or(1);
        self.ua.ack(dlg.ack(seq, self.ua.via()), self.proxy);
        let mut s = lock(&self.st);
        let (cid, tag) = (dlg.call_id.clone(), dlg.local_tag.clone());
        s.calls.push(Call {
            dlg,
            remote_media: None,
            held: false,
            te_pt: 101,
            updated: 0,
        });
        if let Some(body) = sdp_of(&resp.body) {
            s.apply_remote(&cid, &tag, &body);
        }
        Ok(())
    }

    /// Send RFC 4733 key presses to the current media target (in the background).
    pub fn send_digits(&self, digits: &str) {
        // The simulated customer's keys are card digits too: wiped when the task ends.
        let codes: zeroize::Zeroizing<Vec<u8>> =
            zeroize::Zeroizing::new(digits.chars().filter_map(event_code).collect());
        let rtp = self.rtp.clone();
        let st = self.st.clone();
        let ssrc: u32 = rand::random();
        tokio::spawn(async move {
            for &code in codes.iter() {
                let Some((target, pt)) = lock(&st)
                    .current()
                    .and_then(|c| Some((c.remote_media?, c.te_pt)))
                else {
                    tracing::debug!("phone: no media target, key presses stop");
                    return;
                };
                lock(&st).keying = true;
                let ts = lock(&st).ts;
                tracing::debug!(%target, ts, pt, "phone: key press");
                for i in 0..8u16 {
                    let end = i >= 5;
                    let dur: u16 = 160 * (i.min(4) + 1);
                    let seq = {
                        let mut s = lock(&st);
                        s.seq = s.seq.wrapping_add(1);
                        s.seq
                    };
                    let mut p = rtp_header(pt, i == 0, seq, ts, ssrc);
                    p.push(code);
                    p.push(if end { 0x80 | 10 } else { 10 });
                    p.extend_from_slice(&dur.to_be_bytes());
                    let _ = rtp.send_to(&p, target).await;
                    if i < 5 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                {
                    let mut s = lock(&st);
                    s.keying = false;
                    s.ts = s.ts.wrapping_add(800);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    pub fn stats(&self) -> PhoneStats {
        let s = lock(&self.st);
        let cur = s.current();
        PhoneStats {
            rtp_received: s.rtp_received,
            events_received: s.events_received,
            last_rtp_from: s.last_rtp_from,
            in_call: !s.calls.is_empty(),
            remote_media: cur.and_then(|c| c.remote_media),
            held: cur.is_some_and(|c| c.held),
            last_notify: s.last_notify.clone(),
        }
    }

    /// How many RTP packets came from `addr`.
    pub fn received_from(&self, addr: SocketAddr) -> u64 {
        lock(&self.st).from_counts.get(&addr).copied().unwrap_or(0)
    }

    /// BYE every dialog.
    pub async fn hang_up(&self) -> anyhow::Result<()> {
        let calls: Vec<Call> = std::mem::take(&mut lock(&self.st).calls);
        for mut c in calls {
            let bye = c.dlg.request(Method::Bye, self.ua.via());
            let _ = self.ua.request(bye, c.dlg.peer).await;
        }
        Ok(())
    }

    /// REFER the latest dialog's far end to `refer_to` (a SIP URI); the final status.
    pub async fn refer(&self, refer_to: &str) -> anyhow::Result<u16> {
        let (req, peer) = {
            let mut s = lock(&self.st);
            s.tick += 1;
            let tick = s.tick;
            let Some(c) = s.calls.iter_mut().max_by_key(|c| c.updated) else {
                bail!("not in a call");
            };
            c.updated = tick;
            let mut r = c.dlg.request(Method::Refer, self.ua.via());
            r.headers.push("Refer-To", format!("<{refer_to}>"));
            (r, c.dlg.peer)
        };
        Ok(self.ua.request(req, peer).await?.status)
    }
}

async fn sip_task(
    ua: Ua,
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    st: Arc<Mutex<State>>,
    rtp: SocketAddr,
    number: String,
) {
    while let Some(inc) = rx.recv().await {
        handle(&ua, inc, &st, rtp, &number);
    }
}

fn find<'a>(s: &'a mut State, req: &Request) -> Option<&'a mut Call> {
    s.calls.iter_mut().find(|c| c.dlg.matches(req))
}

fn handle(ua: &Ua, inc: Incoming, st: &Arc<Mutex<State>>, rtp: SocketAddr, number: &str) {
    let Incoming { req, from, tx } = inc;
    let body = sdp_of(&req.body);
    let mut s = lock(st);
    match (&req.method, tx) {
        (Method::Ack, _) => {
            let key = find(&mut s, &req).map(|c| (c.dlg.call_id.clone(), c.dlg.local_tag.clone()));
            if let (Some((cid, tag)), Some(b)) = (key, body) {
                s.apply_remote(&cid, &tag, &b);
            }
        }
        (Method::Invite, Some(tx)) => {
            let existing =
                find(&mut s, &req).map(|c| (c.dlg.call_id.clone(), c.dlg.local_tag.clone()));
            let (cid, tag) = match existing {
                Some(k) => k,
                None if req.headers.tag("To").is_some() => {
                    tx.respond(req.response(481, "Call/Transaction Does Not Exist", None));
                    return;
                }
                None => {
                    let tag = ua.token();
                    let Some(dlg) = Dlg::uas(&req, from, &tag, &ua.contact(number)) else {
                        tx.respond(req.response(400, "Bad Request", None));
                        return;
                    };
                    let k = (dlg.call_id.clone(), tag.clone());
                    s.calls.push(Call {
                        dlg,
                        remote_media: None,
                        held: false,
                        te_pt: 101,
                        updated: 0,
                    });
                    k
                }
            };
            s.version += 1;
            let dir = match &body {
                Some(b) => {
                    s.apply_remote(&cid, &tag, b);
                    sdp::mirror(sdp::direction(b))
                }
                None => "sendrecv",
            };
            let answer = own_sdp(rtp, s.version, dir);
            let r = req
                .response(200, "OK", Some(&tag))
                .with_header("Contact", ua.contact(number))
                .with_body("application/sdp", answer);
            tx.respond(r);
        }
        (Method::Bye, Some(tx)) => {
            let before = s.calls.len();
            s.calls.retain(|c| !c.dlg.matches(&req));
            let status = if s.calls.len() < before { 200 } else { 481 };
            tx.respond(req.response(
                status,
                if status == 200 {
                    "OK"
                } else {
                    "Call/Transaction Does Not Exist"
                },
                None,
            ));
        }
        (Method::Notify, Some(tx)) => {
            if let Some(line) = std::str::from_utf8(&req.body)
                .ok()
                .and_then(|b| b.lines().next())
            {
                s.last_notify = Some(line.trim().to_string());
            }
            tx.respond(req.response(200, "OK", None));
        }
        (_, Some(tx)) => tx.respond(req.response(200, "OK", None)),
        (_, None) => {}
    }
}

async fn rtp_rx(sock: Arc<UdpSocket>, st: Arc<Mutex<State>>) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if n < 12 || buf[0] >> 6 != 2 {
            continue;
        }
        let pt = buf[1] & 0x7f;
        let mut s = lock(&st);
        s.rtp_received += 1;
        s.last_rtp_from = Some(from);
        if s.from_counts.len() < 64 || s.from_counts.contains_key(&from) {
            *s.from_counts.entry(from).or_default() += 1;
        }
        let te = s.current().map(|c| c.te_pt).unwrap_or(101);
        if pt == te {
            s.events_received += 1;
        }
    }
}

async fn tone_tx(sock: Arc<UdpSocket>, st: Arc<Mutex<State>>, ssrc: u32) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut phase = 0f64;
    loop {
        tick.tick().await;
        let send = {
            let mut s = lock(&st);
            let target = s.current().filter(|c| !c.held).and_then(|c| c.remote_media);
            match target {
                Some(t) if !s.keying => {
                    s.seq = s.seq.wrapping_add(1);
                    s.ts = s.ts.wrapping_add(160);
                    Some((t, s.seq, s.ts))
                }
                _ => None,
            }
        };
        let Some((target, seq, ts)) = send else {
            continue;
        };
        let mut p = rtp_header(0, false, seq, ts, ssrc);
        for _ in 0..160 {
            let v = (phase.sin() * 1000.0) as i16;
            phase = (phase + 2.0 * PI * 440.0 / 8000.0) % (2.0 * PI);
            p.push(g711::encode(Codec::Pcmu, v));
        }
        let _ = sock.send_to(&p, target).await;
    }
}
