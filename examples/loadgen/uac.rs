//! The load generator's SIP user agents: one shared UDP socket, a reader task that answers
//! tonewall's in-dialog requests (BYE, OPTIONS, re-INVITE) and hands responses to the leg
//! that waits for them (by Call-ID), and per-leg INVITE/ACK/BYE with RFC 3261 UDP
//! retransmission (T1 = 500 ms doubling to T2 = 4 s). It must never block the reader on a
//! slow leg and never panic on what the server sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sip::{self, Dialog, Msg, SdpAnswer};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

struct CallEntry {
    tx: mpsc::UnboundedSender<Msg>,
    sdp: String,
}

/// The SIP side of the generator.
pub struct Endpoint {
    sock: UdpSocket,
    pub server: SocketAddr,
    pub local: SocketAddr,
    calls: Mutex<HashMap<String, CallEntry>>,
    counter: AtomicU64,
    run_id: u64,
    /// Requests tonewall sent us, by method (BYE is what matters).
    pub requests_in: Mutex<HashMap<String, u64>>,
}

impl Endpoint {
    pub async fn bind(
        local_ip: std::net::IpAddr,
        server: SocketAddr,
    ) -> std::io::Result<Arc<Endpoint>> {
        let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
        let local = sock.local_addr()?;
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let ep = Arc::new(Endpoint {
            sock,
            server,
            local,
            calls: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(1),
            run_id,
            requests_in: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reader(ep.clone()));
        Ok(ep)
    }

    fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:x}{:06x}", self.run_id & 0xffff_ffff, n)
    }

    async fn send(&self, text: &str) {
        let _ = self.sock.send_to(text.as_bytes(), self.server).await;
    }

    fn lookup(&self, call_id: &str) -> Option<(mpsc::UnboundedSender<Msg>, String)> {
        let calls = self.calls.lock().ok()?;
        calls.get(call_id).map(|c| (c.tx.clone(), c.sdp.clone()))
    }
}

async fn reader(ep: Arc<Endpoint>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = match ep.sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let Some(msg) = buf.get(..len).and_then(sip::parse) else {
            continue;
        };
        let Some(call_id) = msg.call_id().map(str::to_string) else {
            continue;
        };
        let entry = ep.lookup(&call_id);
        if msg.status.is_some() {
            if let Some((tx, _)) = entry {
                let _ = tx.send(msg);
            }
            continue;
        }
        if let Ok(mut m) = ep.requests_in.lock() {
            *m.entry(msg.method.clone()).or_insert(0) += 1;
        }
        let reply = match (msg.method.as_str(), &entry) {
            ("ACK", _) => None,
            ("OPTIONS", _) => Some(sip::response(&msg, 200, "OK", None, None)),
            ("BYE", Some(_)) => Some(sip::response(&msg, 200, "OK", None, None)),
            ("INVITE", Some((_, sdp))) => Some(sip::response(&msg, 200, "OK", None, Some(sdp))),
            (_, None) => Some(sip::response(
                &msg,
                481,
                "Call/Transaction Does Not Exist",
                None,
                None,
            )),
            _ => Some(sip::response(&msg, 501, "Not Implemented", None, None)),
        };
        if let Some(r) = reply {
            let _ = ep.sock.send_to(r.as_bytes(), from).await;
        }
        if msg.method == "BYE" {
            if let Some((tx, _)) = entry {
                let _ = tx.send(msg);
            }
        }
    }
}

/// One answered leg.
pub struct Leg {
    pub dialog: Dialog,
    pub answer: SdpAnswer,
    rx: mpsc::UnboundedReceiver<Msg>,
    ack: String,
    /// tonewall hung this leg up.
    pub remote_bye: bool,
}

/// Place a call from `user` to `sip:<dnis>@<server>` offering `rtp_local`; wait for the
/// final answer (at most `timeout`). `Err` carries a short reason ("486", "timeout", ...).
pub async fn invite(
    ep: &Arc<Endpoint>,
    user: &str,
    dnis: &str,
    rtp_local: SocketAddr,
    timeout: Duration,
) -> Result<Leg, String> {
    let id = ep.unique();
    let call_id = format!("{id}-{user}@loadgen");
    let remote_uri = format!("sip:{dnis}@{}", ep.server);
    let mut dialog = Dialog {
        call_id: call_id.clone(),
        local_uri: format!("sip:{user}@{}", ep.local.ip()),
        local_tag: format!("lg{id}"),
        remote_uri: remote_uri.clone(),
        remote_tag: String::new(),
        target: remote_uri,
        routes: Vec::new(),
        contact: format!("sip:{user}@{}", ep.local),
        via_host: ep.local,
    };
    let sdp = sip::sdp_offer(rtp_local, ep.counter.load(Ordering::Relaxed));
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Ok(mut calls) = ep.calls.lock() {
        calls.insert(
            call_id.clone(),
            CallEntry {
                tx,
                sdp: sdp.clone(),
            },
        );
    }
    let branch = format!("z9hG4bK{id}i");
    let text = sip::invite(&dialog, &branch, &sdp);
    ep.send(&text).await;
    let deadline = Instant::now() + timeout;
    let mut interval = T1;
    let mut next_retx = Instant::now() + interval;
    let mut provisional = false;
    loop {
        let wake = if provisional {
            deadline
        } else {
            next_retx.min(deadline)
        };
        let msg = match tokio::time::timeout_at(wake, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err("closed".into()),
            Err(_) => {
                if Instant::now() >= deadline {
                    return Err(if provisional {
                        "timeout after 1xx"
                    } else {
                        "timeout"
                    }
                    .into());
                }
                ep.send(&text).await;
                interval = (interval * 2).min(T2);
                next_retx = Instant::now() + interval;
                continue;
            }
        };
        let (Some(code), Some((1, method))) = (msg.status, msg.cseq()) else {
            continue;
        };
        if method != "INVITE" {
            continue;
        }
        match code {
            100..=199 => provisional = true,
            200..=299 => {
                let answer = sip::parse_sdp(&msg.body)
                    .ok_or_else(|| "2xx without usable SDP".to_string())?;
                dialog.remote_tag = msg.to_tag().unwrap_or_default();
                if let Some(c) = msg.contact_uri() {
                    dialog.target = c;
                }
                let mut routes = msg.header_values("record-route");
                routes.reverse();
                dialog.routes = routes;
                let ack = sip::in_dialog(&dialog, "ACK", 1, &format!("z9hG4bK{id}a"));
                ep.send(&ack).await;
                return Ok(Leg {
                    dialog,
                    answer,
                    rx,
                    ack,
                    remote_bye: false,
                });
            }
            _ => {
                ep.send(&sip::ack_non2xx(&dialog, &branch, &msg)).await;
                return Err(code.to_string());
            }
        }
    }
}

impl Leg {
    /// Handle one message that arrived for this leg while it is up: re-ACK a retransmitted
    /// 2xx; note tonewall's BYE (already answered by the reader).
    pub async fn on_message(&mut self, ep: &Endpoint, msg: Msg) {
        if msg.status.is_none() && msg.method == "BYE" {
            self.remote_bye = true;
        } else if matches!(msg.status, Some(200..=299))
            && msg.cseq().map(|c| c.1 == "INVITE").unwrap_or(false)
        {
            ep.send(&self.ack).await;
        }
    }

    /// Next message for this leg (pending forever once the endpoint is gone).
    pub async fn recv(&mut self) -> Option<Msg> {
        self.rx.recv().await
    }

    /// Wait up to `d` for tonewall to hang this leg up. True if it did.
    pub async fn wait_remote_bye(&mut self, ep: &Endpoint, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while !self.remote_bye {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => self.on_message(ep, m).await,
                _ => break,
            }
        }
        self.remote_bye
    }

    /// Hang up with BYE and wait for its final response. `Ok(code)` for any final response.
    pub async fn bye(&mut self, ep: &Endpoint, timeout: Duration) -> Result<u16, String> {
        let branch = format!("z9hG4bK{}b", ep.unique());
        let text = sip::in_dialog(&self.dialog, "BYE", 2, &branch);
        ep.send(&text).await;
        let deadline = Instant::now() + timeout;
        let mut interval = T1;
        let mut next_retx = Instant::now() + interval;
        loop {
            let msg = match tokio::time::timeout_at(next_retx.min(deadline), self.rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err("closed".into()),
                Err(_) => {
                    if Instant::now() >= deadline {
                        return Err("timeout".into());
                    }
                    ep.send(&text).await;
                    interval = (interval * 2).min(T2);
                    next_retx = Instant::now() + interval;
                    continue;
                }
            };
            match (msg.status, msg.cseq()) {
                (Some(code), Some((2, m))) if m == "BYE" && code >= 200 => return Ok(code),
                _ => self.on_message(ep, msg).await,
            }
        }
    }
}
