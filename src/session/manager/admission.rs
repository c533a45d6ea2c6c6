//! The trunk side of the session manager: admission of INVITEs in a fixed order (403
//! forbidden peer, 404 unknown DNIS, 410 expired with an alarm, 486 third leg with an
//! alarm, 503 at capacity with Retry-After) and the `TrunkHandler` callbacks (legs up,
//! media changes, legs ended).
//!
//! Must never: block; hold the lock longer than the state change; log a digit.

use std::net::IpAddr;
use std::time::Instant;

use super::{Inner, SessionManager};
use crate::leg::{LegRole, SessionId};
use crate::media::bridge::{BridgeHandle, LegMedia};
use crate::media::LegParams;
use crate::session::dnis::DnisState;
use crate::session::events::EventBody;
use crate::session::state::{Action, AdmitRefusal, LegState, LegUpOutcome};
use crate::sip::trunk::{
    Admission, InviteInfo, LegEnd, LegUp, Rejection, TrunkCommand, TrunkHandler,
};

impl SessionManager {
    fn reject(
        reason: &'static str,
        status: u16,
        phrase: &'static str,
        retry: Option<u32>,
    ) -> Rejection {
        metrics::counter!("tonewall_dnis_rejected_total", "reason" => reason).increment(1);
        Rejection {
            status,
            reason: phrase,
            retry_after: retry,
        }
    }

    fn alarm(
        &self,
        inner: &mut Inner,
        id: &SessionId,
        code: &'static str,
        message: &str,
        now: Instant,
    ) {
        tracing::warn!(session = %id, code, "{message}");
        self.apply(
            inner,
            id,
            vec![Action::Emit(EventBody::Alarm {
                code,
                message: message.to_string(),
            })],
            now,
        );
    }

    fn admit_at(&self, invite: &InviteInfo, now: Instant) -> Result<Admission, Rejection> {
        let src: IpAddr = invite.source.ip().to_canonical();
        let mut inner = self.lock();
        let owner = inner.dnis_owner.get(invite.dnis.as_str()).cloned();
        let allowed = match owner.as_ref().and_then(|t| self.shared.tenants.get(t)) {
            Some(t) => t.peers.iter().any(|n| n.contains(&src)),
            None => self.shared.all_peers.iter().any(|n| n.contains(&src)),
        };
        if !allowed {
            tracing::warn!(source = %invite.source, "INVITE from a source that is not a trunk peer");
            return Err(Self::reject("forbidden", 403, "Forbidden", None));
        }
        let Some(tenant) = owner else {
            return Err(Self::reject("unknown", 404, "Not Found", None));
        };
        let lookup = match inner.pools.get_mut(&tenant) {
            Some(p) => p.lookup(&invite.dnis, now),
            None => DnisState::Unknown,
        };
        let sid = match lookup {
            DnisState::Unknown | DnisState::Free => {
                return Err(Self::reject("unknown", 404, "Not Found", None))
            }
            DnisState::Quarantined(sid) => {
                self.alarm(
                    &mut inner,
                    &sid,
                    "dnis_expired",
                    "INVITE on a DNIS whose session is over",
                    now,
                );
                return Err(Self::reject("expired", 410, "Gone", None));
            }
            DnisState::InUse(sid) => sid,
        };
        let Some(e) = inner.sessions.get_mut(&sid) else {
            return Err(Self::reject("unknown", 404, "Not Found", None));
        };
        let role = match e.session.check_admit(now) {
            Ok(role) => role,
            Err(AdmitRefusal::Expired) => {
                self.alarm(
                    &mut inner,
                    &sid,
                    "dnis_expired",
                    "INVITE on an expired DNIS",
                    now,
                );
                return Err(Self::reject("expired", 410, "Gone", None));
            }
            Err(AdmitRefusal::ThirdLeg) => {
                self.alarm(
                    &mut inner,
                    &sid,
                    "third_leg",
                    "a third INVITE on the DNIS was refused",
                    now,
                );
                return Err(Self::reject("third_leg", 486, "Busy Here", None));
            }
        };
        let legs: usize = inner
            .sessions
            .values()
            .map(|e| {
                [LegRole::Rep, LegRole::Customer]
                    .iter()
                    .filter(|r| matches!(e.session.leg(**r), LegState::Ringing | LegState::Up))
                    .count()
            })
            .sum();
        if self.shared.ports.available() == 0 || legs >= 2 * self.shared.options.max_sessions {
            let retry = Some(self.shared.options.retry_after_s);
            return Err(Self::reject("capacity", 503, "Service Unavailable", retry));
        }
        let Some(e) = inner.sessions.get_mut(&sid) else {
            return Err(Self::reject("unknown", 404, "Not Found", None));
        };
        match e.session.admit(now) {
            Ok(r) if r == role => {}
            _ => return Err(Self::reject("unknown", 404, "Not Found", None)),
        }
        tracing::info!(session = %sid, role = %role, "leg admitted");
        Ok(Admission { session: sid, role })
    }
}

impl TrunkHandler for SessionManager {
    fn admit(&self, invite: &InviteInfo) -> Result<Admission, Rejection> {
        self.admit_at(invite, Instant::now())
    }

    fn leg_up(&self, up: LegUp) {
        let now = Instant::now();
        let LegUp {
            session,
            role,
            sockets,
            params,
        } = up;
        let mut inner = self.lock();
        let hang_up = || {
            let _ = self.shared.trunk.send(TrunkCommand::HangUp {
                session: session.clone(),
                role,
            });
        };
        let Some(e) = inner.sessions.get_mut(&session) else {
            hang_up();
            return;
        };
        let (outcome, actions) = e.session.leg_up(role);
        if outcome != LegUpOutcome::Refuse {
            self.to_securing(
                &inner,
                &session,
                super::securing::SecuringInput::LegUp(role),
            );
        }
        let Some(e) = inner.sessions.get_mut(&session) else {
            return;
        };
        match outcome {
            LegUpOutcome::Refuse => hang_up(),
            LegUpOutcome::Media { bridged } => {
                let leg = LegMedia { sockets, params };
                match &e.bridge {
                    Some(b) => b.attach(role, leg),
                    None => {
                        e.bridge = Some(BridgeHandle::spawn(
                            session.clone(),
                            role,
                            leg,
                            self.shared.bridge_config.clone(),
                            self.shared.media_tx.clone(),
                        ));
                    }
                }
                tracing::info!(session = %session, role = %role, bridged, "leg up");
            }
        }
        self.apply(&mut inner, &session, actions, now);
    }

    fn leg_media(&self, session: &SessionId, role: LegRole, params: LegParams) {
        let inner = self.lock();
        if let Some(e) = inner.sessions.get(session) {
            if let (Some(b), LegState::Up) = (&e.bridge, e.session.leg(role)) {
                b.update(role, params);
            }
        }
    }

    fn handed_back(&self, session: &SessionId, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        metrics::counter!("tonewall_handbacks_total", "result" => result).increment(1);
        if ok {
            tracing::info!(session = %session, "customer handed back to the representative");
        } else {
            tracing::warn!(session = %session, "hand-back failed: both legs hung up");
        }
    }

    fn leg_ended(&self, session: &SessionId, role: LegRole, why: LegEnd) {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(e) = inner.sessions.get_mut(session) else {
            return;
        };
        let actions = e.session.leg_ended(role, why, now);
        self.to_securing(
            &inner,
            session,
            super::securing::SecuringInput::LegEnded(role),
        );
        self.apply(&mut inner, session, actions, now);
    }
}
