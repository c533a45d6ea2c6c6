//! The trunk endpoint: the thin tokio driver that ties the transports, the sans-IO
//! transactions and dialogs, and SDP offer/answer to the session layer's `TrunkHandler`.
//!
//! One task owns all SIP state (no locks): it reads inbound messages, session commands and
//! a 10 ms tick that fires transaction timers and answers. Must never: decide admission
//! (the handler does), log SDP bodies at info level, or panic on input.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dialog::{AnswerRetransmit, Dialog, Retransmit};
use super::message::{reason_phrase, salvage_bad_request, Message, Method, Request, Response};
use super::sdp;
use super::transaction::{Output, State, Transaction};
use super::transport::{udp_response_target, Flow, Inbound, Transport, Transports};
use super::trunk::{Admission, InviteInfo, LegEnd, LegUp, TrunkCommand, TrunkHandler};
use crate::leg::{LegRole, SessionId};
use crate::media::ports::{LegSockets, PortPool};
use crate::media::{Codec, LegParams};

mod handback;
mod in_dialog;
mod refer;

pub use handback::HANDBACK_TIMEOUT;

/// How long an admitted INVITE rings before the 200 OK: the carrier's window to CANCEL.
pub const ANSWER_DELAY: Duration = Duration::from_millis(40);
const TICK: Duration = Duration::from_millis(10);
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY";

/// The endpoint's configuration (from `[sip]` and `[media]`).
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub listen: Vec<String>,
    pub advertise: Option<String>,
    pub media_bind: IpAddr,
    pub media_advertise: Option<IpAddr>,
    pub codecs: Vec<Codec>,
}

/// The running endpoint.
pub struct EndpointHandle {
    addrs: Vec<(Transport, SocketAddr)>,
    task: JoinHandle<()>,
    transports: Arc<Transports>,
}

impl EndpointHandle {
    /// The actually bound addresses (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.addrs.clone()
    }

    pub fn shutdown(self) {
        self.task.abort();
        self.transports.shutdown();
    }
}

/// Bind the listeners and start the endpoint task.
pub async fn start(
    cfg: EndpointConfig,
    ports: PortPool,
    handler: Arc<dyn TrunkHandler>,
    commands: mpsc::UnboundedReceiver<TrunkCommand>,
) -> anyhow::Result<EndpointHandle> {
    let (transports, inbound) = Transports::bind(&cfg.listen).await?;
    let transports = Arc::new(transports);
    let addrs = transports.local_addrs();
    let ep = Endpoint {
        cfg,
        ports,
        handler,
        transports: transports.clone(),
        server_txs: HashMap::new(),
        client_txs: HashMap::new(),
        calls: HashMap::new(),
        handbacks: HashMap::new(),
        outbox: Vec::new(),
    };
    let task = tokio::spawn(ep.run(inbound, commands));
    Ok(EndpointHandle {
        addrs,
        task,
        transports,
    })
}

struct ServerTx {
    tx: Transaction,
    flow: Flow,
}

enum CallState {
    /// Admitted; the 200 OK goes out at `at` unless CANCEL comes first.
    Ringing {
        at: Instant,
        ok: Response,
    },
    /// 200 OK sent, waiting for ACK.
    Answered {
        retx: AnswerRetransmit,
    },
    Up,
}

struct Call {
    session: SessionId,
    role: LegRole,
    dialog: Dialog,
    invite_key: String,
    state: CallState,
    sockets: Option<LegSockets>,
    params: LegParams,
    media_ip: IpAddr,
    media_port: u16,
    sdp_version: u64,
    flow: Flow,
    /// 2xx to a re-INVITE, retransmitted until its ACK.
    reinvite: Option<AnswerRetransmit>,
}

struct Endpoint {
    cfg: EndpointConfig,
    ports: PortPool,
    handler: Arc<dyn TrunkHandler>,
    transports: Arc<Transports>,
    server_txs: HashMap<String, ServerTx>,
    client_txs: HashMap<String, ServerTx>,
    /// Keyed by `Call-ID|local tag`.
    calls: HashMap<String, Call>,
    /// REFERs in flight on customer legs, by session (`refer.rs`).
    handbacks: HashMap<SessionId, refer::Pending>,
    outbox: Vec<(Flow, Message)>,
}

fn tx_key(req: &Request, method: &Method) -> Option<String> {
    let via = req.headers.top_via()?;
    let m = if *method == Method::Ack {
        "INVITE"
    } else {
        method.as_str()
    };
    Some(format!(
        "{}|{}:{}|{m}",
        via.branch.unwrap_or_default(),
        via.host,
        via.port.unwrap_or(0)
    ))
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The local address a peer reaches us on, when the socket is bound to a wildcard.
fn local_ip_towards(local: SocketAddr, peer: SocketAddr) -> IpAddr {
    if !local.ip().is_unspecified() {
        return local.ip();
    }
    let any: SocketAddr = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(local.ip())
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl Endpoint {
    async fn run(
        mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        mut commands: mpsc::UnboundedReceiver<TrunkCommand>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        loop {
            tokio::select! {
                m = inbound.recv() => match m {
                    Some(m) => self.on_inbound(m, Instant::now()),
                    None => return,
                },
                c = commands.recv(), if commands_open => match c {
                    Some(TrunkCommand::HangUp { session, role }) => self.hang_up(&session, role, Instant::now()),
                    Some(TrunkCommand::HandBack { session, target }) => self.hand_back(&session, &target, Instant::now()),
                    None => commands_open = false,
                },
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
            for (flow, msg) in std::mem::take(&mut self.outbox) {
                self.transports.send(&flow, msg.to_bytes()).await;
            }
        }
    }

    fn response_flow(&self, req: &Request, flow: &Flow) -> Flow {
        let mut f = flow.clone();
        if flow.transport == Transport::Udp {
            f.peer = udp_response_target(req.headers.top_via().as_ref(), flow.peer);
        }
        f
    }

    fn process(&mut self, flow: &Flow, out: Vec<Output>) {
        for o in out {
            if let Output::Send(m) = o {
                self.outbox.push((flow.clone(), m));
            }
        }
    }

    /// Answer through the server transaction `key`.
    fn respond(&mut self, key: &str, resp: Response, now: Instant) {
        if let Some(st) = self.server_txs.get_mut(key) {
            let out = st.tx.send_response(resp, now);
            let flow = st.flow.clone();
            self.process(&flow, out);
        }
    }

    fn simple(req: &Request, status: u16) -> Response {
        req.response(status, reason_phrase(status), Some(&random_token()))
    }

    fn on_inbound(&mut self, m: Inbound, now: Instant) {
        match m.msg {
            Ok(Message::Request(req)) => self.on_request(req, m.flow, now),
            Ok(Message::Response(resp)) => self.on_response(resp, now),
            Err(raw) => {
                if let Some(req) = salvage_bad_request(&raw) {
                    metrics::counter!("tonewall_sip_requests_total", "method" => req.method.metric_label()).increment(1);
                    tracing::debug!(peer = %m.flow.peer, "unparseable SIP request, answering 400");
                    let f = self.response_flow(&req, &m.flow);
                    self.outbox
                        .push((f, Message::Response(Self::simple(&req, 400))));
                } else {
                    tracing::debug!(peer = %m.flow.peer, "dropping unparseable datagram");
                }
            }
        }
    }

    fn on_response(&mut self, resp: Response, now: Instant) {
        let Some(via) = resp.headers.top_via() else {
            return;
        };
        let Some((_, method)) = resp.headers.cseq() else {
            return;
        };
        let key = format!("{}|{}", via.branch.unwrap_or_default(), method.as_str());
        if let Some(ct) = self.client_txs.get_mut(&key) {
            let out = ct.tx.on_response(resp, now);
            let flow = ct.flow.clone();
            let finals: Vec<u16> = out
                .iter()
                .filter_map(|o| match o {
                    Output::ToTu(Message::Response(r)) if r.status >= 200 => Some(r.status),
                    _ => None,
                })
                .collect();
            self.process(&flow, out);
            for status in finals {
                self.on_refer_response(&key, status, now);
            }
        }
    }

    fn on_request(&mut self, req: Request, flow: Flow, now: Instant) {
        metrics::counter!("tonewall_sip_requests_total", "method" => req.method.metric_label())
            .increment(1);
        let method = req.method.clone();
        let (true, Some(key)) = (req.headers.has_core(), tx_key(&req, &method)) else {
            if method != Method::Ack {
                let f = self.response_flow(&req, &flow);
                self.outbox
                    .push((f, Message::Response(Self::simple(&req, 400))));
            }
            return;
        };
        if req.headers.cseq().map(|c| c.1) != Some(method.clone()) {
            let f = self.response_flow(&req, &flow);
            self.outbox
                .push((f, Message::Response(Self::simple(&req, 400))));
            return;
        }
        if method == Method::Ack {
            if let Some(st) = self.server_txs.get_mut(&key) {
                if st.tx.state() == State::Completed {
                    let out = st.tx.on_request(req, now);
                    let f = st.flow.clone();
                    self.process(&f, out);
                    return;
                }
            }
            self.on_dialog_ack(&req);
            return;
        }
        if let Some(st) = self.server_txs.get_mut(&key) {
            let out = st.tx.on_request(req, now);
            let f = st.flow.clone();
            self.process(&f, out);
            return;
        }
        let rflow = self.response_flow(&req, &flow);
        let (tx, _to_tu) = Transaction::server(req.clone(), flow.transport.reliable());
        self.server_txs.insert(
            key.clone(),
            ServerTx {
                tx,
                flow: rflow.clone(),
            },
        );
        let in_dialog = req.headers.tag("To").is_some();
        match method {
            Method::Cancel => self.on_cancel(&req, &key, now),
            _ if in_dialog => self.on_in_dialog(req, &key, now),
            Method::Options => {
                let r = Self::simple(&req, 200)
                    .with_header("Allow", ALLOW)
                    .with_header("Accept", "application/sdp");
                self.respond(&key, r, now);
            }
            Method::Invite => self.on_invite(req, &key, flow, now),
            // A NOTIFY outside a dialog matches no subscription of ours.
            Method::Notify => self.respond(&key, Self::simple(&req, 481), now),
            // tonewall is never transferred by the carrier.
            Method::Refer => self.respond(&key, Self::simple(&req, 403), now),
            _ => {
                let r = Self::simple(&req, 501).with_header("Allow", ALLOW);
                self.respond(&key, r, now);
            }
        }
    }

    fn on_invite(&mut self, req: Request, key: &str, flow: Flow, now: Instant) {
        self.respond(key, req.response(100, "Trying", None), now);
        let call_id = req.headers.call_id().unwrap_or_default().to_string();
        let info = InviteInfo {
            dnis: req.uri_user.clone().unwrap_or_default(),
            source: flow.peer,
            call_id: call_id.clone(),
        };
        let Admission { session, role } = match self.handler.admit(&info) {
            Ok(a) => a,
            Err(rej) => {
                tracing::info!(%call_id, status = rej.status, "INVITE rejected");
                let mut r = req.response(rej.status, rej.reason, Some(&random_token()));
                if let Some(s) = rej.retry_after {
                    r = r.with_header("Retry-After", s.to_string());
                }
                self.respond(key, r, now);
                return;
            }
        };
        let tag = random_token();
        let fail = |ep: &mut Endpoint, status: u16, retry: Option<u32>| {
            let mut r = req.response(status, reason_phrase(status), Some(&tag));
            if let Some(s) = retry {
                r = r.with_header("Retry-After", s.to_string());
            }
            ep.respond(key, r, now);
            ep.handler.leg_ended(&session, role, LegEnd::SetupFailed);
        };
        let Some(dialog) = Dialog::uas(&req, &tag) else {
            return fail(self, 400, None);
        };
        let Some(sockets) = self.ports.bind(self.cfg.media_bind) else {
            tracing::warn!(%session, %role, "no RTP port free");
            return fail(self, 503, Some(5));
        };
        let media_port = sockets.lease.port();
        let sip_ip = local_ip_towards(flow.local, flow.peer);
        let media_ip =
            self.cfg
                .media_advertise
                .unwrap_or(if self.cfg.media_bind.is_unspecified() {
                    sip_ip
                } else {
                    self.cfg.media_bind
                });
        let offer = String::from_utf8_lossy(&req.body);
        let sdp_version = 1;
        let (params, answer) =
            match sdp::answer(&offer, &self.cfg.codecs, media_ip, media_port, sdp_version) {
                Ok(x) => x,
                Err(e) => {
                    tracing::info!(%session, %role, error = %e, "no acceptable SDP");
                    return fail(self, 488, None);
                }
            };
        let ok = req
            .response(200, "OK", Some(&tag))
            .with_header("Contact", self.contact(&flow))
            .with_header("Allow", ALLOW)
            .with_body("application/sdp", answer);
        tracing::info!(%session, %role, %call_id, "leg admitted, ringing");
        let ck = format!("{}|{}", dialog.call_id, tag);
        self.calls.insert(
            ck,
            Call {
                session,
                role,
                dialog,
                invite_key: key.to_string(),
                state: CallState::Ringing {
                    at: now + ANSWER_DELAY,
                    ok,
                },
                sockets: Some(sockets),
                params,
                media_ip,
                media_port,
                sdp_version,
                flow,
                reinvite: None,
            },
        );
    }

    fn contact(&self, flow: &Flow) -> String {
        let host = self
            .cfg
            .advertise
            .clone()
            .unwrap_or_else(|| host_of(local_ip_towards(flow.local, flow.peer)));
        match flow.transport {
            Transport::Udp => format!("<sip:tonewall@{host}:{}>", flow.local.port()),
            Transport::Tcp => {
                let port = self
                    .transports
                    .first(Transport::Tcp)
                    .map(|a| a.port())
                    .unwrap_or(flow.local.port());
                format!("<sip:tonewall@{host}:{port};transport=tcp>")
            }
        }
    }

    fn on_cancel(&mut self, req: &Request, key: &str, now: Instant) {
        let invite_key = tx_key(req, &Method::Invite).unwrap_or_default();
        let ringing = self.calls.iter().find_map(|(k, c)| {
            (c.invite_key == invite_key && matches!(c.state, CallState::Ringing { .. }))
                .then(|| k.clone())
        });
        if let Some(ck) = ringing {
            self.respond(key, Self::simple(req, 200), now);
            if let Some(call) = self.calls.remove(&ck) {
                if let Some(st) = self.server_txs.get(&invite_key) {
                    let r = st.tx.request().response(
                        487,
                        reason_phrase(487),
                        Some(&call.dialog.local_tag),
                    );
                    self.respond(&invite_key, r, now);
                }
                tracing::info!(session = %call.session, role = %call.role, "leg cancelled");
                self.handler
                    .leg_ended(&call.session, call.role, LegEnd::Cancelled);
            }
        } else if self.server_txs.contains_key(&invite_key) {
            self.respond(key, Self::simple(req, 200), now);
        } else {
            self.respond(key, Self::simple(req, 481), now);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        // Transaction timers.
        for map in [&mut self.server_txs, &mut self.client_txs] {
            for st in map.values_mut() {
                while let Some((t, at)) = st.tx.next_timer() {
                    if at > now {
                        break;
                    }
                    for o in st.tx.on_timer(t, now) {
                        if let Output::Send(m) = o {
                            self.outbox.push((st.flow.clone(), m));
                        }
                    }
                }
            }
            map.retain(|_, st| st.tx.state() != State::Terminated);
        }
        // Answers and 2xx retransmissions.
        let mut answer = Vec::new();
        let mut dead = Vec::new();
        for (ck, call) in self.calls.iter_mut() {
            match &mut call.state {
                CallState::Ringing { at, .. } if *at <= now => answer.push(ck.clone()),
                CallState::Answered { retx } => match retx.poll(now) {
                    Retransmit::Send => self
                        .outbox
                        .push((call.flow.clone(), Message::Response(retx.response.clone()))),
                    Retransmit::GiveUp => dead.push(ck.clone()),
                    Retransmit::Nothing => {}
                },
                _ => {}
            }
            if let Some(r) = &mut call.reinvite {
                match r.poll(now) {
                    Retransmit::Send => self
                        .outbox
                        .push((call.flow.clone(), Message::Response(r.response.clone()))),
                    Retransmit::GiveUp => dead.push(ck.clone()),
                    Retransmit::Nothing => {}
                }
            }
        }
        for ck in answer {
            let Some(call) = self.calls.get_mut(&ck) else {
                continue;
            };
            let reliable = call.flow.transport.reliable();
            let placeholder = CallState::Up;
            if let CallState::Ringing { ok, .. } = std::mem::replace(&mut call.state, placeholder) {
                call.state = CallState::Answered {
                    retx: AnswerRetransmit::new(ok.clone(), reliable, now),
                };
                let key = call.invite_key.clone();
                self.respond(&key, ok, now);
            }
        }
        for ck in dead {
            if let Some(call) = self.calls.remove(&ck) {
                tracing::info!(session = %call.session, role = %call.role, "no ACK for 2xx, ending leg");
                let (session, role, flow) = (call.session.clone(), call.role, call.flow.clone());
                self.send_bye(call.dialog, &flow, now);
                self.handler.leg_ended(&session, role, LegEnd::Timeout);
                self.leg_gone(&session, role, now);
            }
        }
        self.hand_back_tick(now);
    }
}
