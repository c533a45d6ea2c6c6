//! The Xsi actions as RFC 3725 third-party call control on the B2BUA's halves: hold and
//! talk (re-INVITE the far end), click-to-dial, blind transfer, reconnect, release, and the
//! REFER hand-back from tonewall's trunk. Each honours its `fail_action` fault.
//!
//! Must never: leave a party without media on a failure it can undo, or panic on input.

use std::sync::Arc;

use super::b2bua::{now_ms, uri_user, Sim, XsiError};
use super::calls::{Call, Party};
use super::sdp;
use super::ua::{lock, sdp_of, ServerTx};
use crate::sip::message::Request;

fn failed(action: &str) -> XsiError {
    XsiError::new(500, 5000, format!("Simulated failure of {action}"))
}

fn conflict(summary: impl Into<String>) -> XsiError {
    XsiError::new(409, 4010, summary.into())
}

impl Sim {
    /// `PUT …/Hold` (`sendonly`) and `PUT …/Talk` (`sendrecv`).
    pub async fn hold_or_talk(&self, user: &str, call: &str, hold: bool) -> Result<(), XsiError> {
        if self.faults.fails(if hold { "Hold" } else { "Talk" }) {
            return Err(failed(if hold { "Hold" } else { "Talk" }));
        }
        let n = lock(&self.model)
            .call(user, call)
            .map(|c| c.n)
            .ok_or_else(|| XsiError::call_not_found(call))?;
        self.set_direction(n, hold).await
    }

    async fn set_direction(&self, n: u64, hold: bool) -> Result<(), XsiError> {
        let (remote, user_sdp) = {
            let m = lock(&self.model);
            let c = m.calls.get(&n).ok_or_else(|| conflict("Call gone"))?;
            let remote = c.remote_half.ok_or_else(|| conflict("Call not answered"))?;
            let s = c
                .user_half
                .and_then(|u| m.halves.get(&u)?.sdp.clone())
                .ok_or_else(|| conflict("Call has no media yet"))?;
            (remote, s)
        };
        let dir = if hold { "sendonly" } else { "sendrecv" };
        let offer = sdp::with_direction(&user_sdp, dir);
        let (_, seq) = self
            .reinvite(remote, Some(&offer))
            .await
            .map_err(|s| conflict(format!("Far end refused the re-INVITE: {s}")))?;
        self.ack(remote, seq, None);
        if let Some(c) = lock(&self.model).calls.get_mut(&n) {
            c.state = if hold { "Held" } else { "Active" };
        }
        self.emit(
            n,
            if hold {
                "CallHeldEvent"
            } else {
                "CallRetrievedEvent"
            },
        );
        Ok(())
    }

    /// `POST …/calls/new?address=`: the new call's id at once; the dialling runs behind.
    pub fn originate(self: &Arc<Self>, user: &str, address: &str) -> Result<String, XsiError> {
        if self.faults.fails("new") {
            return Err(failed("new"));
        }
        let u = self
            .user(user)
            .cloned()
            .ok_or_else(|| XsiError::new(404, 4001, format!("User not found: {user}")))?;
        if address.is_empty() || address.chars().any(|c| c.is_control() || c == '@') {
            return Err(XsiError::new(400, 4003, "Invalid address"));
        }
        let n = {
            let mut m = lock(&self.model);
            let n = m.alloc();
            m.calls.insert(
                n,
                Call {
                    n,
                    user: u.id.clone(),
                    personality: "Click-to-Dial",
                    state: "Alerting",
                    user_half: None,
                    remote_half: None,
                    remote: format!("tel:{address}"),
                    start_ms: now_ms(),
                    answer_ms: None,
                },
            );
            n
        };
        self.emit(n, "CallOriginatedEvent");
        let sim = self.clone();
        let address = address.to_string();
        tokio::spawn(async move { sim.click_to_dial(n, u.number, u.phone, address).await });
        Ok(format!("callhalf-{n}:0"))
    }

    async fn click_to_dial(
        &self,
        n: u64,
        number: String,
        phone: std::net::SocketAddr,
        address: String,
    ) {
        let r = match self
            .invite_new(Party::Phone(number.clone()), phone, &address, None, true)
            .await
        {
            Ok(r) => r,
            Err(_) => return self.drop_call(n),
        };
        if let Some(c) = lock(&self.model).calls.get_mut(&n) {
            c.user_half = Some(r.half);
        }
        let Some(offer) = sdp_of(&r.resp.body) else {
            self.ack(r.half, r.seq, None);
            self.bye(r.half).await;
            return self.drop_call(n);
        };
        let trunk = self.cfg.trunk;
        match self
            .invite_new(Party::Trunk(address), trunk, &number, Some(&offer), false)
            .await
        {
            Ok(t) => {
                self.ack(t.half, t.seq, None);
                let answer = sdp_of(&t.resp.body);
                self.ack(r.half, r.seq, answer.as_deref());
                {
                    let mut m = lock(&self.model);
                    m.link(r.half, t.half);
                    if let Some(c) = m.calls.get_mut(&n) {
                        c.remote_half = Some(t.half);
                        c.state = "Active";
                        c.answer_ms = Some(now_ms());
                    }
                }
                self.emit(n, "CallAnsweredEvent");
            }
            Err(_) => {
                self.ack(
                    r.half,
                    r.seq,
                    Some(&sdp::with_direction(&offer, "inactive")),
                );
                self.drop_call(n);
                self.bye(r.half).await;
            }
        }
    }

    /// `PUT …/BlindTransfer?address=`: the far end goes to `address` on the trunk.
    pub async fn blind_transfer(
        &self,
        user: &str,
        call: &str,
        address: &str,
    ) -> Result<(), XsiError> {
        if self.faults.fails("BlindTransfer") {
            return Err(failed("BlindTransfer"));
        }
        let (n, a, r, r_sdp, from) = {
            let m = lock(&self.model);
            let c = m
                .call(user, call)
                .ok_or_else(|| XsiError::call_not_found(call))?;
            let a = c.remote_half.ok_or_else(|| conflict("Call not answered"))?;
            let from = m
                .halves
                .get(&a)
                .map(|h| h.party.number().to_string())
                .unwrap_or_default();
            let r_sdp = c.user_half.and_then(|u| m.halves.get(&u)?.sdp.clone());
            (c.n, a, c.user_half, r_sdp, from)
        };
        let (resp, seq) = self
            .reinvite(a, None)
            .await
            .map_err(|s| conflict(format!("Far end refused the re-INVITE: {s}")))?;
        let Some(a_offer) = sdp_of(&resp.body) else {
            self.ack(a, seq, r_sdp.as_deref());
            return Err(conflict("Far end sent no offer"));
        };
        let trunk = self.cfg.trunk;
        match self
            .invite_new(
                Party::Trunk(address.to_string()),
                trunk,
                &from,
                Some(&a_offer),
                false,
            )
            .await
        {
            Ok(t) => {
                self.ack(t.half, t.seq, None);
                self.ack(a, seq, sdp_of(&t.resp.body).as_deref());
                {
                    let mut m = lock(&self.model);
                    m.link(a, t.half);
                    if let Some(c) = m.calls.get_mut(&n) {
                        c.remote_half = None;
                    }
                }
                self.emit(n, "CallRedirectedEvent");
                self.drop_call(n);
                if let Some(r) = r {
                    self.bye(r).await;
                }
                Ok(())
            }
            Err(status) => {
                let back = r_sdp.map(|s| sdp::with_direction(&s, "sendonly"));
                self.ack(a, seq, back.as_deref());
                Err(conflict(format!(
                    "Transfer target refused the call: {status}"
                )))
            }
        }
    }

    /// `PUT …/calls/Reconnect`: release the active call, retrieve the held one.
    pub async fn reconnect(&self, user: &str) -> Result<(), XsiError> {
        if self.faults.fails("Reconnect") {
            return Err(failed("Reconnect"));
        }
        let (active, held) = {
            let m = lock(&self.model);
            let calls = m.user_calls(user);
            let pick = |st: &[&str]| {
                calls
                    .iter()
                    .rev()
                    .find(|c| st.contains(&c.state))
                    .map(|c| c.n)
            };
            (pick(&["Active", "Alerting"]), pick(&["Held"]))
        };
        if active.is_none() && held.is_none() {
            return Err(conflict("No call to reconnect"));
        }
        if let Some(a) = active {
            self.release_call(a).await;
        }
        if let Some(h) = held {
            self.set_direction(h, false).await?;
        }
        Ok(())
    }

    /// `DELETE …/calls/{callId}`.
    pub async fn release(&self, user: &str, call: &str) -> Result<(), XsiError> {
        if self.faults.fails("Release") {
            return Err(failed("Release"));
        }
        let n = lock(&self.model)
            .call(user, call)
            .map(|c| c.n)
            .ok_or_else(|| XsiError::call_not_found(call))?;
        self.release_call(n).await;
        Ok(())
    }
}

/// Where a REFER's `Refer-To` points: a user (by userId or number).
fn refer_user(sim: &Sim, refer_to: &str) -> Option<String> {
    let inner = refer_to
        .trim()
        .trim_start_matches('<')
        .split(['>', ';', '?'])
        .next()?
        .trim();
    let full = inner
        .strip_prefix("sip:")
        .or_else(|| inner.strip_prefix("sips:"))?;
    let num = uri_user(refer_to)?;
    sim.cfg
        .users
        .iter()
        .find(|u| u.id == full || u.number == num)
        .map(|u| u.id.clone())
}

/// REFER from the trunk on a dialog: hand the party on its other side back to a user whose
/// phone is in a call with the trunk (re-INVITE the phone for an offer, offer it to the
/// party, answer the phone), detaching both trunk-facing halves.
pub(crate) async fn refer_from_trunk(sim: &Arc<Sim>, req: Request, tx: ServerTx) {
    let h = lock(&sim.model).half_for(&req);
    let Some(h) = h else {
        tx.respond(req.response(481, "Call/Transaction Does Not Exist", None));
        return;
    };
    tx.respond(req.response(202, "Accepted", None));
    let label = lock(&sim.model)
        .halves
        .get(&h)
        .map(|x| x.party.label())
        .unwrap_or_default();
    sim.log.push(format!("sip < REFER {label}"));
    sim.notify(h, 100, false).await;
    let status = match hand_back(sim, h, req.headers.get("Refer-To").unwrap_or("")).await {
        Ok(()) => 200,
        Err(()) => 503,
    };
    sim.notify(h, status, true).await;
}

async fn hand_back(sim: &Arc<Sim>, h: u64, refer_to: &str) -> Result<(), ()> {
    let user = refer_user(sim, refer_to).ok_or(())?;
    let (a, n, r, t2) = {
        let m = lock(&sim.model);
        let a = m.halves.get(&h).and_then(|x| x.link).ok_or(())?;
        let c = m
            .user_calls(&user)
            .into_iter()
            .rev()
            .find(|c| {
                c.remote_half
                    .and_then(|t| m.halves.get(&t))
                    .is_some_and(|t| matches!(t.party, Party::Trunk(_)))
            })
            .ok_or(())?;
        (a, c.n, c.user_half.ok_or(())?, c.remote_half.ok_or(())?)
    };
    let (resp, rseq) = sim.reinvite(r, None).await.map_err(|_| ())?;
    let Some(r_offer) = sdp_of(&resp.body) else {
        sim.ack(r, rseq, None);
        return Err(());
    };
    let (aresp, aseq) = match sim.reinvite(a, Some(&r_offer)).await {
        Ok(x) => x,
        Err(_) => {
            let t_sdp = lock(&sim.model).halves.get(&t2).and_then(|x| x.sdp.clone());
            sim.ack(r, rseq, t_sdp.as_deref());
            return Err(());
        }
    };
    sim.ack(a, aseq, None);
    sim.ack(r, rseq, sdp_of(&aresp.body).as_deref());
    {
        let mut m = lock(&sim.model);
        for x in [h, t2] {
            if let Some(half) = m.halves.get_mut(&x) {
                half.detached = true;
                half.link = None;
            }
        }
        m.link(r, a);
        let remote = m
            .halves
            .get(&a)
            .map(|x| format!("tel:{}", x.party.number()));
        if let Some(c) = m.calls.get_mut(&n) {
            c.remote_half = Some(a);
            c.state = "Active";
            if let Some(rm) = remote {
                c.remote = rm;
            }
        }
    }
    sim.emit(n, "CallUpdatedEvent");
    Ok(())
}
