//! The simulator's signalling-only B2BUA: SIP primitives over halves (new INVITE, re-INVITE,
//! ACK with or without an answer, BYE, NOTIFY), each logged, and the handling of requests
//! from phones and the trunk (new calls, re-INVITEs, BYE releasing the other half). The Xsi
//! actions and REFER hand-back are in `actions`.
//!
//! Must never: relay media, log SDP, or panic on input.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::calls::{Call, Model, Party};
use super::events::Events;
use super::sdp;
use super::ua::{lock, sdp_of, set_sdp, Dlg, Incoming, ServerTx, Ua};
use super::{Faults, Log, SimConfig, SimUser};
use crate::sip::message::{reason_phrase, Method, Request, Response};

use super::actions;

/// An Xsi error answer (`ErrorInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsiError {
    pub status: u16,
    pub code: u32,
    pub summary: String,
}

impl XsiError {
    pub fn new(status: u16, code: u32, summary: impl Into<String>) -> XsiError {
        XsiError {
            status,
            code,
            summary: summary.into(),
        }
    }

    pub fn call_not_found(call: &str) -> XsiError {
        XsiError::new(404, 4008, format!("Call not found: {call}"))
    }
}

/// The simulator's state.
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) ua: Ua,
    pub(crate) log: Arc<Log>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) events: Arc<Events>,
    pub(crate) model: Mutex<Model>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The user part of the first SIP URI in a header value (`"A" <sip:0400@h>;tag=x` → `0400`).
pub(crate) fn uri_user(v: &str) -> Option<String> {
    let start = v
        .find("sip:")
        .map(|i| i + 4)
        .or_else(|| v.find("tel:").map(|i| i + 4))?;
    let rest = v.get(start..)?;
    let end = rest.find(['@', '>', ';']).unwrap_or(rest.len());
    Some(rest.get(..end)?.to_string()).filter(|s| !s.is_empty())
}

/// A successful new INVITE: the half, the 2xx, and the INVITE's CSeq (for the ACK).
pub(crate) struct Answered {
    pub half: u64,
    pub resp: Response,
    pub seq: u32,
}

impl Sim {
    pub(crate) fn new(
        cfg: SimConfig,
        ua: Ua,
        log: Arc<Log>,
        faults: Arc<Faults>,
        events: Arc<Events>,
    ) -> Sim {
        Sim {
            cfg,
            ua,
            log,
            faults,
            events,
            model: Mutex::new(Model::default()),
        }
    }

    pub(crate) fn user(&self, id: &str) -> Option<&SimUser> {
        self.cfg.users.iter().find(|u| u.id == id)
    }

    /// Write an event about call `n` (its current snapshot).
    pub(crate) fn emit(&self, n: u64, kind: &str) {
        let snap = lock(&self.model).calls.get(&n).cloned();
        if let Some(c) = snap {
            self.emit_call(&c, kind);
        }
    }

    pub(crate) fn emit_call(&self, c: &Call, kind: &str) {
        self.events
            .emit(&c.user, kind, &c.call_id(), c.xml_body("xsi:"));
    }

    /// Mark call `n` released, report it and forget it.
    pub(crate) fn drop_call(&self, n: u64) {
        let c = lock(&self.model).calls.remove(&n);
        if let Some(mut c) = c {
            c.state = "Released";
            self.emit_call(&c, "CallReleasedEvent");
        }
    }

    /// INVITE a new party; on 2xx the new half (not yet ACKed).
    pub(crate) async fn invite_new(
        &self,
        party: Party,
        dest: SocketAddr,
        from_user: &str,
        offer: Option<&str>,
        auto_answer: bool,
    ) -> Result<Answered, u16> {
        let label = party.label();
        if matches!(party, Party::Trunk(_)) && self.faults.dnis_busy() {
            self.log.push(format!("sip < 486 INVITE {label}"));
            return Err(486);
        }
        let id = lock(&self.model).alloc();
        let offer = offer.map(|o| sdp::restamp(o, "sim", id, 1));
        let uri = format!("sip:{}@{dest}", party.number());
        let mut inv = self.ua.invite(&uri, from_user, offer.as_deref());
        if auto_answer {
            inv.headers.push(
                "Call-Info",
                format!("<sip:{}>;answer-after=0", self.ua.local_addr()),
            );
        }
        self.log.push(format!("sip > INVITE {label}"));
        let resp = match self.ua.request(inv.clone(), dest).await {
            Ok(r) => r,
            Err(_) => {
                self.log.push(format!("sip < 408 INVITE {label}"));
                return Err(408);
            }
        };
        self.log
            .push(format!("sip < {} INVITE {label}", resp.status));
        if !(200..300).contains(&resp.status) {
            return Err(resp.status);
        }
        let Some(dlg) = Dlg::uac(&inv, &resp, dest) else {
            return Err(502);
        };
        let seq = inv.headers.cseq().map(|c| c.0).unwrap_or(1);
        lock(&self.model).add_half(id, party, dlg, sdp_of(&resp.body));
        Ok(Answered {
            half: id,
            resp,
            seq,
        })
    }

    /// re-INVITE a half (with an offer, or none to ask for one); the 2xx and its CSeq.
    pub(crate) async fn reinvite(
        &self,
        half: u64,
        offer: Option<&str>,
    ) -> Result<(Response, u32), u16> {
        let built = {
            let mut m = lock(&self.model);
            let offer = offer.map(|o| m.stamp(half, o));
            m.halves.get_mut(&half).map(|h| {
                let mut r = h.dlg.request(Method::Invite, self.ua.via());
                set_sdp(&mut r, offer.as_deref());
                (r, h.dlg.peer, h.party.label())
            })
        };
        let Some((req, peer, label)) = built else {
            return Err(481);
        };
        let seq = req.headers.cseq().map(|c| c.0).unwrap_or(1);
        self.log.push(format!("sip > INVITE {label}"));
        let resp = match self.ua.request(req, peer).await {
            Ok(r) => r,
            Err(_) => {
                self.log.push(format!("sip < 408 INVITE {label}"));
                return Err(408);
            }
        };
        self.log
            .push(format!("sip < {} INVITE {label}", resp.status));
        if !(200..300).contains(&resp.status) {
            return Err(resp.status);
        }
        if let Some(b) = sdp_of(&resp.body) {
            if let Some(h) = lock(&self.model).halves.get_mut(&half) {
                h.sdp = Some(b);
            }
        }
        Ok((resp, seq))
    }

    /// ACK a half's 2xx, with an answer (restamped for that half) when given.
    pub(crate) fn ack(&self, half: u64, seq: u32, answer: Option<&str>) {
        let built = {
            let mut m = lock(&self.model);
            let answer = answer.map(|a| m.stamp(half, a));
            m.halves.get(&half).map(|h| {
                let mut a = h.dlg.ack(seq, self.ua.via());
                if answer.is_some() {
                    set_sdp(&mut a, answer.as_deref());
                }
                (a, h.dlg.peer)
            })
        };
        if let Some((a, peer)) = built {
            self.ua.ack(a, peer);
        }
    }

    /// BYE a half and forget it (a detached half is only forgotten).
    pub(crate) async fn bye(&self, half: u64) {
        let h = lock(&self.model).halves.remove(&half);
        let Some(mut h) = h else { return };
        if h.detached {
            return;
        }
        if let Some(o) = h.link {
            if let Some(other) = lock(&self.model).halves.get_mut(&o) {
                if other.link == Some(half) {
                    other.link = None;
                }
            }
        }
        self.log.push(format!("sip > BYE {}", h.party.label()));
        let bye = h.dlg.request(Method::Bye, self.ua.via());
        let _ = self.ua.request(bye, h.dlg.peer).await;
    }

    /// NOTIFY the REFER progress on a half (`Event: refer`, a sipfrag status line).
    pub(crate) async fn notify(&self, half: u64, status: u16, terminated: bool) {
        let built = {
            let mut m = lock(&self.model);
            m.halves.get_mut(&half).map(|h| {
                let mut r = h.dlg.request(Method::Notify, self.ua.via());
                r.headers.push("Event", "refer");
                r.headers.push(
                    "Subscription-State",
                    if terminated {
                        "terminated;reason=noresource"
                    } else {
                        "active;expires=60"
                    },
                );
                r.headers
                    .push("Content-Type", "message/sipfrag;version=2.0");
                r.body = Bytes::from(format!("SIP/2.0 {status} {}\r\n", reason_phrase(status)));
                (r, h.dlg.peer, h.party.label())
            })
        };
        if let Some((r, peer, label)) = built {
            self.log.push(format!("sip > NOTIFY {label} {status}"));
            let _ = self.ua.request(r, peer).await;
        }
    }
}

/// Serve SIP requests until the socket closes.
pub async fn run(sim: Arc<Sim>, mut rx: mpsc::UnboundedReceiver<Incoming>) {
    while let Some(inc) = rx.recv().await {
        let sim = sim.clone();
        tokio::spawn(async move { handle(sim, inc).await });
    }
}

async fn handle(sim: Arc<Sim>, inc: Incoming) {
    let Incoming { req, from, tx } = inc;
    let Some(tx) = tx else { return }; // ACK: nothing to do (we never answer without SDP)
    let in_dialog = req.headers.tag("To").is_some();
    match (&req.method, in_dialog) {
        (Method::Invite, false) => new_call(&sim, req, from, tx).await,
        (Method::Invite, true) => reinvite_from_party(&sim, req, tx).await,
        (Method::Bye, _) => bye_from_party(&sim, req, tx).await,
        (Method::Refer, true) => actions::refer_from_trunk(&sim, req, tx).await,
        _ => tx.respond(req.response(200, "OK", None)),
    }
}

fn reply(req: &Request, status: u16, tag: &str) -> Response {
    req.response(status, reason_phrase(status), Some(tag))
}

async fn new_call(sim: &Arc<Sim>, req: Request, from: SocketAddr, tx: ServerTx) {
    tx.respond(req.response(100, "Trying", None));
    let tag = sim.ua.token();
    let contact = sim.ua.contact("sim");
    let Some(dlg) = Dlg::uas(&req, from, &tag, &contact) else {
        tx.respond(reply(&req, 400, &tag));
        return;
    };
    let caller_num = req
        .headers
        .get("From")
        .and_then(uri_user)
        .unwrap_or_else(|| from.to_string());
    let party = match sim.cfg.users.iter().find(|u| u.phone == from) {
        Some(u) => Party::Phone(u.number.clone()),
        None => Party::Customer(caller_num.clone()),
    };
    let offer = sdp_of(&req.body);
    let target = req.uri_user.clone().unwrap_or_default();
    let a = {
        let mut m = lock(&sim.model);
        let a = m.alloc();
        m.add_half(a, party.clone(), dlg, offer.clone());
        a
    };
    let user = sim.cfg.users.iter().find(|u| u.number == target).cloned();
    let call = user.as_ref().map(|u| {
        let mut m = lock(&sim.model);
        let n = m.alloc();
        m.calls.insert(
            n,
            Call {
                n,
                user: u.id.clone(),
                personality: "Terminator",
                state: "Alerting",
                user_half: None,
                remote_half: Some(a),
                remote: format!("tel:{}", party.number()),
                start_ms: now_ms(),
                answer_ms: None,
            },
        );
        n
    });
    if let Some(n) = call {
        sim.emit(n, "CallReceivedEvent");
    }
    let (to_party, dest) = match &user {
        Some(u) => (Party::Phone(u.number.clone()), u.phone),
        None => (Party::Trunk(target.clone()), sim.cfg.trunk),
    };
    match sim
        .invite_new(to_party, dest, &caller_num, offer.as_deref(), false)
        .await
    {
        Ok(ans) => {
            sim.ack(ans.half, ans.seq, None);
            let answer = sdp_of(&ans.resp.body);
            let answer = {
                let mut m = lock(&sim.model);
                m.link(a, ans.half);
                if let Some(c) = call.and_then(|n| m.calls.get_mut(&n)) {
                    c.user_half = Some(ans.half);
                    c.state = "Active";
                    c.answer_ms = Some(now_ms());
                }
                answer.map(|s| m.stamp(a, &s))
            };
            let mut ok = reply(&req, 200, &tag).with_header("Contact", contact);
            if let Some(s) = answer {
                ok = ok.with_body("application/sdp", s);
            }
            tx.respond(ok);
            if let Some(n) = call {
                sim.emit(n, "CallAnsweredEvent");
            }
        }
        Err(status) => {
            lock(&sim.model).halves.remove(&a);
            tx.respond(reply(&req, status.max(300), &tag));
            if let Some(n) = call {
                sim.drop_call(n);
            }
        }
    }
}

/// A party re-INVITEs: pass the offer to the half it is wired to, and the answer back.
async fn reinvite_from_party(sim: &Arc<Sim>, req: Request, tx: ServerTx) {
    let found = {
        let m = lock(&sim.model);
        m.half_for(&req)
            .and_then(|h| m.halves.get(&h))
            .map(|h| (h.id, h.dlg.local_tag.clone(), h.link, h.detached))
    };
    let Some((h, tag, link, detached)) = found else {
        tx.respond(req.response(481, reason_phrase(481), None));
        return;
    };
    let offer = sdp_of(&req.body);
    if let Some(o) = &offer {
        if let Some(x) = lock(&sim.model).halves.get_mut(&h) {
            x.sdp = Some(o.clone());
        }
    }
    let answer = match (link, offer, detached) {
        (Some(other), Some(o), false) => match sim.reinvite(other, Some(&o)).await {
            Ok((resp, seq)) => {
                sim.ack(other, seq, None);
                sdp_of(&resp.body)
            }
            Err(_) => None,
        },
        _ => None,
    };
    let answer = answer.or_else(|| {
        let m = lock(&sim.model);
        link.and_then(|o| m.halves.get(&o)?.sdp.clone())
            .or_else(|| {
                m.halves
                    .get(&h)?
                    .sdp
                    .clone()
                    .map(|s| sdp::with_direction(&s, "inactive"))
            })
    });
    let contact = sim.ua.contact("sim");
    let mut ok = reply(&req, 200, &tag).with_header("Contact", contact);
    if let Some(a) = answer {
        let a = lock(&sim.model).stamp(h, &a);
        ok = ok.with_body("application/sdp", a);
    }
    tx.respond(ok);
}

/// A party hangs up: answer, release what it was wired to, and the call on the line.
async fn bye_from_party(sim: &Arc<Sim>, req: Request, tx: ServerTx) {
    let found = {
        let mut m = lock(&sim.model);
        let h = m.half_for(&req);
        let call = h.and_then(|h| m.call_of_half(h));
        h.and_then(|h| m.halves.remove(&h)).map(|x| (x, call))
    };
    let Some((half, call)) = found else {
        tx.respond(req.response(481, reason_phrase(481), None));
        return;
    };
    tx.respond(req.response(200, "OK", None));
    sim.log.push(format!("sip < BYE {}", half.party.label()));
    if half.detached {
        return;
    }
    let others: Vec<u64> = {
        let m = lock(&sim.model);
        let mut v: Vec<u64> = half.link.into_iter().collect();
        if let Some(c) = call.and_then(|n| m.calls.get(&n)) {
            v.extend(c.user_half.iter().chain(c.remote_half.iter()));
        }
        v.retain(|x| *x != half.id);
        v.dedup();
        v
    };
    if let Some(n) = call {
        sim.drop_call(n);
    }
    for o in others {
        sim.bye(o).await;
    }
}

impl Sim {
    /// Release call `n`: BYE both halves, report it.
    pub(crate) async fn release_call(&self, n: u64) {
        let halves = lock(&self.model)
            .calls
            .get(&n)
            .map(|c| (c.user_half, c.remote_half));
        self.drop_call(n);
        if let Some((u, r)) = halves {
            for h in u.into_iter().chain(r) {
                self.bye(h).await;
            }
        }
    }
}
