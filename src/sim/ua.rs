//! A small async UDP SIP user agent core shared by the carrier simulator and the simulated
//! phones: one socket, client transactions with retransmission (over `sip::transaction`),
//! server transactions that absorb retransmissions, 2xx retransmission until ACK, re-ACK of
//! retransmitted 2xx, and `Dlg`, the UAC/UAS dialog state that builds in-dialog requests.
//!
//! Must never: panic on input, log message bodies, or decide what a request means (that is
//! the caller's, who receives every new request on a channel).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::sip::dialog::Dialog;
use crate::sip::message::{Message, Method, Request, Response};
use crate::sip::transaction::{End, Output, Transaction, T1, T2};
use crate::sip::transport::udp_response_target;

/// Lock a mutex, recovering from poisoning (a panicked holder leaves plain data behind).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new request from the network. `tx` answers it (`None` for ACK, which has no answer).
pub struct Incoming {
    pub req: Request,
    pub from: SocketAddr,
    pub tx: Option<ServerTx>,
}

enum SrvIn {
    Req(Request),
    Resp(Response),
}

/// The answering side of one server transaction.
#[derive(Clone)]
pub struct ServerTx {
    ua: Ua,
    inbox: mpsc::UnboundedSender<SrvIn>,
    is_invite: bool,
    dialog_key: (String, u32),
    target: SocketAddr,
}

impl ServerTx {
    /// Send a response (a 2xx to INVITE is retransmitted until its ACK arrives).
    pub fn respond(&self, resp: Response) {
        if self.is_invite && (200..300).contains(&resp.status) {
            self.ua
                .retransmit_2xx(self.dialog_key.clone(), resp.clone(), self.target);
        }
        let _ = self.inbox.send(SrvIn::Resp(resp));
    }
}

struct Inner {
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    clients: Mutex<HashMap<String, mpsc::UnboundedSender<Response>>>,
    servers: Mutex<HashMap<String, mpsc::UnboundedSender<SrvIn>>>,
    acks: Mutex<HashMap<(String, u32), (Request, SocketAddr)>>,
    pending_2xx: Mutex<HashMap<(String, u32), oneshot::Sender<()>>>,
    tu: mpsc::UnboundedSender<Incoming>,
    counter: AtomicU64,
    recv_task: Mutex<Option<AbortHandle>>,
}

/// The user agent: cheap to clone.
#[derive(Clone)]
pub struct Ua {
    inner: Arc<Inner>,
}

fn dialog_key(req: &Request) -> (String, u32) {
    (
        req.headers.call_id().unwrap_or_default().to_string(),
        req.headers.cseq().map(|c| c.0).unwrap_or(0),
    )
}

fn resp_key(resp: &Response) -> (String, u32) {
    (
        resp.headers.call_id().unwrap_or_default().to_string(),
        resp.headers.cseq().map(|c| c.0).unwrap_or(0),
    )
}

impl Ua {
    /// Bind a UDP socket; new requests arrive on the returned receiver.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<(Ua, mpsc::UnboundedReceiver<Incoming>)> {
        let sock = Arc::new(UdpSocket::bind(addr).await.context("sip bind")?);
        let local = sock.local_addr()?;
        let (tu, rx) = mpsc::unbounded_channel();
        let ua = Ua {
            inner: Arc::new(Inner {
                sock,
                local,
                clients: Mutex::new(HashMap::new()),
                servers: Mutex::new(HashMap::new()),
                acks: Mutex::new(HashMap::new()),
                pending_2xx: Mutex::new(HashMap::new()),
                tu,
                counter: AtomicU64::new(1),
                recv_task: Mutex::new(None),
            }),
        };
        let u = ua.clone();
        let h = tokio::spawn(async move { u.recv_loop().await });
        *lock(&ua.inner.recv_task) = Some(h.abort_handle());
        Ok((ua, rx))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Stop receiving (the socket closes once every transaction task has ended).
    pub fn close(&self) {
        if let Some(h) = lock(&self.inner.recv_task).take() {
            h.abort();
        }
    }

    /// A fresh token for tags, branches and Call-IDs.
    pub fn token(&self) -> String {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{n}", rand::random::<u32>())
    }

    /// A Via value with a fresh branch.
    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
            self.inner.local,
            self.token()
        )
    }

    /// Our Contact value for `user`.
    pub fn contact(&self, user: &str) -> String {
        format!("<sip:{user}@{}>", self.inner.local)
    }

    fn send_to(&self, m: &Message, dest: SocketAddr) {
        let bytes = m.to_bytes();
        let _ = self.inner.sock.try_send_to(&bytes, dest);
    }

    async fn recv_loop(self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = match self.inner.sock.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(_) => continue,
            };
            let Some(data) = buf.get(..n) else { continue };
            match Message::parse(data) {
                Ok(Message::Response(r)) => self.on_response(r),
                Ok(Message::Request(r)) if r.headers.has_core() => self.on_request(r, from),
                _ => {}
            }
        }
    }

    fn on_response(&self, r: Response) {
        let Some(branch) = r.headers.top_via().and_then(|v| v.branch) else {
            return;
        };
        let tx = lock(&self.inner.clients).get(&branch).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(r);
        }
    }

    fn on_request(&self, req: Request, from: SocketAddr) {
        let branch = req.branch().unwrap_or_else(|| {
            let (c, s) = dialog_key(&req);
            format!("nobranch-{c}-{s}")
        });
        if req.method == Method::Ack {
            let key = format!("{branch}|INVITE");
            if let Some(tx) = lock(&self.inner.servers).get(&key).cloned() {
                let _ = tx.send(SrvIn::Req(req));
                return;
            }
            if let Some(done) = lock(&self.inner.pending_2xx).remove(&dialog_key(&req)) {
                let _ = done.send(());
            }
            let _ = self.inner.tu.send(Incoming {
                req,
                from,
                tx: None,
            });
            return;
        }
        let key = format!("{branch}|{}", req.method.as_str());
        if let Some(tx) = lock(&self.inner.servers).get(&key).cloned() {
            let _ = tx.send(SrvIn::Req(req));
            return;
        }
        let (itx, irx) = mpsc::unbounded_channel();
        lock(&self.inner.servers).insert(key.clone(), itx.clone());
        let target = udp_response_target(req.headers.top_via().as_ref(), from);
        let stx = ServerTx {
            ua: self.clone(),
            inbox: itx,
            is_invite: req.method == Method::Invite,
            dialog_key: dialog_key(&req),
            target,
        };
        let (t, out) = Transaction::server(req, false);
        let ua = self.clone();
        tokio::spawn(ua.server_task(t, out, irx, key, target, stx, from));
    }

    #[allow(clippy::too_many_arguments)]
    async fn server_task(
        self,
        mut t: Transaction,
        out: Vec<Output>,
        mut inbox: mpsc::UnboundedReceiver<SrvIn>,
        key: String,
        target: SocketAddr,
        stx: ServerTx,
        from: SocketAddr,
    ) {
        let mut stx = Some(stx);
        let mut done = false;
        for o in out {
            if let Output::ToTu(Message::Request(req)) = o {
                if let Some(tx) = stx.take() {
                    let _ = self.inner.tu.send(Incoming {
                        req,
                        from,
                        tx: Some(tx),
                    });
                }
            }
        }
        while !done {
            let next = t.next_timer();
            let out = tokio::select! {
                m = inbox.recv() => match m {
                    Some(SrvIn::Req(r)) => t.on_request(r, Instant::now()),
                    Some(SrvIn::Resp(r)) => t.send_response(r, Instant::now()),
                    None => break,
                },
                _ = sleep_until(next.map(|n| n.1)), if next.is_some() => match next {
                    Some((timer, _)) => t.on_timer(timer, Instant::now()),
                    None => Vec::new(),
                },
            };
            for o in out {
                match o {
                    Output::Send(m) => self.send_to(&m, target),
                    Output::Terminated(_) => done = true,
                    _ => {}
                }
            }
        }
        lock(&self.inner.servers).remove(&key);
    }

    fn retransmit_2xx(&self, key: (String, u32), resp: Response, target: SocketAddr) {
        let (tx, mut rx) = oneshot::channel();
        lock(&self.inner.pending_2xx).insert(key.clone(), tx);
        let ua = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut iv = T1;
            let msg = Message::Response(resp);
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(iv) => {
                        if start.elapsed() > 64 * T1 {
                            break;
                        }
                        ua.send_to(&msg, target);
                        iv = (iv * 2).min(T2);
                    }
                }
            }
            lock(&ua.inner.pending_2xx).remove(&key);
        });
    }

    /// Send a request in a client transaction; the final response (provisional ones are
    /// skipped). A 2xx to INVITE must be acknowledged with `ack`. Err on timeout.
    pub async fn request(&self, req: Request, dest: SocketAddr) -> anyhow::Result<Response> {
        let branch = req
            .branch()
            .ok_or_else(|| anyhow!("request without branch"))?;
        let (rtx, mut rrx) = mpsc::unbounded_channel();
        lock(&self.inner.clients).insert(branch.clone(), rtx);
        let (ftx, frx) = oneshot::channel::<anyhow::Result<Response>>();
        let ua = self.clone();
        tokio::spawn(async move {
            let (mut t, out) = Transaction::client(req, false, Instant::now());
            let mut ftx = Some(ftx);
            let mut done = ua.client_out(out, dest, &mut ftx);
            while !done {
                let next = t.next_timer();
                let out = tokio::select! {
                    m = rrx.recv() => match m {
                        Some(r) => t.on_response(r, Instant::now()),
                        None => break,
                    },
                    _ = sleep_until(next.map(|n| n.1)), if next.is_some() => match next {
                        Some((timer, _)) => t.on_timer(timer, Instant::now()),
                        None => Vec::new(),
                    },
                };
                done = ua.client_out(out, dest, &mut ftx);
            }
            lock(&ua.inner.clients).remove(&branch);
        });
        frx.await.map_err(|_| anyhow!("transaction ended"))?
    }

    fn client_out(
        &self,
        out: Vec<Output>,
        dest: SocketAddr,
        ftx: &mut Option<oneshot::Sender<anyhow::Result<Response>>>,
    ) -> bool {
        let mut done = false;
        for o in out {
            match o {
                Output::Send(m) => self.send_to(&m, dest),
                Output::ToTu(Message::Response(r)) if r.status >= 200 => {
                    if let Some(f) = ftx.take() {
                        let _ = f.send(Ok(r));
                    } else if (200..300).contains(&r.status) {
                        let ack = lock(&self.inner.acks).get(&resp_key(&r)).cloned();
                        if let Some((ack, d)) = ack {
                            self.send_to(&Message::Request(ack), d);
                        }
                    }
                }
                Output::Terminated(end) => {
                    done = true;
                    if let Some(f) = ftx.take() {
                        let e = if end == End::Timeout {
                            anyhow!("no answer (timeout)")
                        } else {
                            anyhow!("transaction ended without answer")
                        };
                        let _ = f.send(Err(e));
                    }
                }
                _ => {}
            }
        }
        done
    }

    /// Send the ACK for a 2xx (kept for a while to answer retransmitted 2xx).
    pub fn ack(&self, ack: Request, dest: SocketAddr) {
        let key = dialog_key(&ack);
        self.send_to(&Message::Request(ack.clone()), dest);
        let mut acks = lock(&self.inner.acks);
        if acks.len() > 1000 {
            acks.clear();
        }
        acks.insert(key, (ack, dest));
    }

    /// A new out-of-dialog INVITE from `from_user` to `uri`.
    pub fn invite(&self, uri: &str, from_user: &str, sdp: Option<&str>) -> Request {
        let mut r = Request::new(Method::Invite, uri);
        r.headers.push("Via", self.via());
        r.headers.push("Max-Forwards", "70");
        r.headers.push(
            "From",
            format!(
                "<sip:{from_user}@{}>;tag={}",
                self.inner.local,
                self.token()
            ),
        );
        r.headers.push("To", format!("<{uri}>"));
        r.headers
            .push("Call-ID", format!("{}@{}", self.token(), self.inner.local));
        r.headers.push("CSeq", "1 INVITE");
        r.headers.push("Contact", self.contact(from_user));
        set_sdp(&mut r, sdp);
        r
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(i) => tokio::time::sleep_until(tokio::time::Instant::from_std(i)).await,
        None => std::future::pending::<()>().await,
    }
}

/// Put an SDP body (or none) on a request.
pub fn set_sdp(r: &mut Request, sdp: Option<&str>) {
    match sdp {
        Some(s) => {
            r.headers.set("Content-Type", "application/sdp");
            r.body = Bytes::from(s.to_string());
        }
        None => {
            r.headers.remove("Content-Type");
            r.body = Bytes::new();
        }
    }
}

/// The SDP body of a message, if it has one.
pub fn sdp_of(body: &Bytes) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    std::str::from_utf8(body).ok().map(str::to_string)
}

/// A dialog of the simulator's UA: `sip::dialog::Dialog` plus where the peer is and the
/// Contact our requests carry.
#[derive(Clone, Debug)]
pub struct Dlg {
    pub dialog: Dialog,
    pub peer: SocketAddr,
    pub contact: String,
}

impl std::ops::Deref for Dlg {
    type Target = Dialog;
    fn deref(&self) -> &Dialog {
        &self.dialog
    }
}

impl Dlg {
    /// The dialog a UAS forms answering `invite` with `local_tag`.
    pub fn uas(invite: &Request, peer: SocketAddr, local_tag: &str, contact: &str) -> Option<Dlg> {
        Some(Dlg {
            dialog: Dialog::uas(invite, local_tag)?,
            peer,
            contact: contact.to_string(),
        })
    }

    /// The dialog a UAC forms from its INVITE and the 2xx.
    pub fn uac(invite: &Request, ok: &Response, peer: SocketAddr) -> Option<Dlg> {
        Some(Dlg {
            dialog: Dialog::uac(invite, ok)?,
            peer,
            contact: invite
                .headers
                .get("Contact")
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// A new in-dialog request with the next CSeq.
    pub fn request(&mut self, method: Method, via: String) -> Request {
        let r = self.dialog.request(method, &via);
        self.with_contact(r)
    }

    /// The ACK for the 2xx to our INVITE with CSeq `seq`.
    pub fn ack(&self, seq: u32, via: String) -> Request {
        self.with_contact(self.dialog.ack(seq, &via))
    }

    fn with_contact(&self, mut r: Request) -> Request {
        if !self.contact.is_empty() {
            r.headers.push("Contact", self.contact.as_str());
        }
        r
    }
}
