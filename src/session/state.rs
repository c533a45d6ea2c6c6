//! The pure state machine of one secure session: `allocated -> securing -> waiting_legs ->
//! bridged -> ended`, or `failed` with a reason. Inputs (admission, legs up/ended, digits,
//! commands, the time) go in; `Action`s and events come out.
//!
//! Must never: read the clock, touch a socket or a channel, or expose a digit.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::digit::Digit;
use crate::leg::{LegRole, SessionId};
use crate::session::events::{EventBody, FieldAction};
use crate::session::fields::{FieldChange, FieldKind, Fields, FieldsView, UnknownField, YearMonth};
use crate::sip::trunk::LegEnd;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Allocated,
    Securing,
    WaitingLegs,
    Bridged,
    Ended,
    Failed,
}

impl SessionState {
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Ended | SessionState::Failed)
    }
}

/// Where one leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LegState {
    /// Not arrived yet.
    Waiting,
    /// INVITE admitted, not yet answered and acknowledged.
    Ringing,
    Up,
    Ended,
}

/// Why an INVITE is refused by the session itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmitRefusal {
    /// The session is over or the DNIS TTL passed before both legs arrived.
    Expired,
    /// Both legs are already there.
    ThirdLeg,
}

/// What the owner of the session must do.
#[derive(Debug)]
pub enum Action {
    /// Hang up this leg on the trunk.
    HangUp(LegRole),
    /// Hand the customer back to the representative outside tonewall (REFER on the
    /// customer leg), then release both legs.
    HandBack,
    /// Stop the bridge (drops the sockets, returning the ports).
    DropBridge,
    /// Give the DNIS back to the pool (into quarantine).
    ReleaseDnis,
    /// Publish this event.
    Emit(EventBody),
}

/// What to do with a leg that came up.
#[derive(Debug, PartialEq, Eq)]
pub enum LegUpOutcome {
    /// Hand it to the bridge (spawning or attaching); `bridged` when both legs are now up.
    Media { bridged: bool },
    /// The session is over: drop the media and hang the leg up.
    Refuse,
}

/// One secure session.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub tenant: Arc<str>,
    pub dnis: Arc<str>,
    pub call_id: String,
    pub rep: String,
    pub state: SessionState,
    pub reason: Option<String>,
    /// When the DNIS stops accepting legs (virtual time).
    pub expires: Instant,
    /// The same, as a wall-clock RFC 3339 string for JSON.
    pub expires_at: String,
    legs: [LegState; 2],
    fields: Fields,
    /// When the session reached a terminal state.
    pub ended_at: Option<Instant>,
    /// The payment's outcome, once the gateway has answered.
    pub payment: Option<PaymentRecord>,
}

/// What is kept of a payment: no card data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentRecord {
    /// `approved`, `declined` or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub masked_pan: String,
    pub brand: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<&'static str>,
}

fn idx(role: LegRole) -> usize {
    match role {
        LegRole::Rep => 0,
        LegRole::Customer => 1,
    }
}

/// The JSON view of a session (SPEC §5).
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub tenant: String,
    pub state: SessionState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub dnis: String,
    pub expires_at: String,
    pub legs: LegsView,
    pub active_field: Option<&'static str>,
    pub fields: FieldsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentRecord>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LegsView {
    pub rep: LegView,
    pub customer: LegView,
}

#[derive(Clone, Debug, Serialize)]
pub struct LegView {
    pub state: LegState,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        tenant: Arc<str>,
        dnis: Arc<str>,
        call_id: String,
        rep: String,
        fields: &[impl AsRef<str>],
        expires: Instant,
        expires_at: String,
    ) -> Session {
        Session {
            id,
            tenant,
            dnis,
            call_id,
            rep,
            state: SessionState::Allocated,
            reason: None,
            expires,
            expires_at,
            legs: [LegState::Waiting; 2],
            fields: Fields::new(fields),
            ended_at: None,
            payment: None,
        }
    }

    pub fn leg(&self, role: LegRole) -> LegState {
        self.legs[idx(role)]
    }

    fn set_state(&mut self, state: SessionState, out: &mut Vec<Action>) {
        if self.state != state {
            self.state = state;
            out.push(Action::Emit(self.state_event()));
        }
    }

    /// The `state` event for the current state.
    pub fn state_event(&self) -> EventBody {
        EventBody::State {
            state: self.state,
            reason: self.reason.clone(),
        }
    }

    /// The carrier started third-party call control.
    pub fn securing(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == SessionState::Allocated {
            self.set_state(SessionState::Securing, &mut out);
        }
        out
    }

    /// Third-party call control is done: wait for the legs.
    pub fn secured(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.state, SessionState::Allocated | SessionState::Securing) {
            self.set_state(SessionState::WaitingLegs, &mut out);
        }
        out
    }

    /// An INVITE on this session's DNIS: which leg it is, or why not. Marks the leg
    /// ringing.
    pub fn admit(&mut self, now: Instant) -> Result<LegRole, AdmitRefusal> {
        let role = self.check_admit(now)?;
        self.legs[idx(role)] = LegState::Ringing;
        Ok(role)
    }

    /// Which leg an INVITE would be, without admitting it.
    pub fn check_admit(&self, now: Instant) -> Result<LegRole, AdmitRefusal> {
        if self.state.is_terminal() {
            return Err(AdmitRefusal::Expired);
        }
        let role = if self.legs[0] == LegState::Waiting {
            LegRole::Rep
        } else if self.legs[1] == LegState::Waiting {
            LegRole::Customer
        } else {
            return Err(AdmitRefusal::ThirdLeg);
        };
        if now >= self.expires {
            return Err(AdmitRefusal::Expired);
        }
        Ok(role)
    }

    /// An admitted leg was answered and acknowledged.
    pub fn leg_up(&mut self, role: LegRole) -> (LegUpOutcome, Vec<Action>) {
        let mut out = Vec::new();
        if self.state.is_terminal() || self.legs[idx(role)] != LegState::Ringing {
            return (LegUpOutcome::Refuse, out);
        }
        self.legs[idx(role)] = LegState::Up;
        let bridged = self.legs[idx(role.other())] == LegState::Up;
        if bridged {
            self.set_state(SessionState::Bridged, &mut out);
        }
        (LegUpOutcome::Media { bridged }, out)
    }

    /// End the session (idempotent). Legs still ringing or up are hung up, the bridge
    /// stopped, the DNIS released, the fields wiped.
    pub fn end(&mut self, now: Instant, state: SessionState, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state.is_terminal() {
            return out;
        }
        for role in [LegRole::Rep, LegRole::Customer] {
            if matches!(self.legs[idx(role)], LegState::Ringing | LegState::Up) {
                self.legs[idx(role)] = LegState::Ended;
                out.push(Action::HangUp(role));
            }
        }
        out.push(Action::DropBridge);
        out.push(Action::ReleaseDnis);
        self.fields.wipe();
        self.reason = Some(reason.to_string());
        self.ended_at = Some(now);
        let terminal = if state.is_terminal() {
            state
        } else {
            SessionState::Ended
        };
        self.set_state(terminal, &mut out);
        out
    }

    /// End the session while bridged by handing the customer back to the representative:
    /// like `end`, but the legs are released by the hand-back instead of hung up. When not
    /// bridged, a plain `end`.
    pub fn end_handing_back(&mut self, now: Instant, reason: &str) -> Vec<Action> {
        if self.state != SessionState::Bridged {
            return self.end(now, SessionState::Ended, reason);
        }
        let mut out = vec![Action::HandBack];
        self.legs = [LegState::Ended; 2];
        out.extend(self.end(now, SessionState::Ended, reason));
        out
    }

    /// A leg is gone: the session ends (the other leg is hung up).
    pub fn leg_ended(&mut self, role: LegRole, why: LegEnd, now: Instant) -> Vec<Action> {
        if self.legs[idx(role)] == LegState::Waiting {
            return Vec::new();
        }
        self.legs[idx(role)] = LegState::Ended;
        let (state, what) = match why {
            LegEnd::Bye | LegEnd::HungUp => (SessionState::Ended, "hangup"),
            LegEnd::Cancelled => (SessionState::Failed, "cancelled"),
            LegEnd::Timeout => (SessionState::Failed, "timeout"),
            LegEnd::SetupFailed => (SessionState::Failed, "setup_failed"),
        };
        self.end(now, state, &format!("{}_{what}", role.as_str()))
    }

    /// No RTP on a leg for too long.
    pub fn rtp_timeout(&mut self, role: LegRole, now: Instant) -> Vec<Action> {
        let _ = role;
        self.end(now, SessionState::Ended, "rtp_timeout")
    }

    /// Time passes: the DNIS TTL ends a session whose legs are not both up.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        if self.state.is_terminal() || now < self.expires {
            return Vec::new();
        }
        if self.legs.iter().all(|l| *l == LegState::Up) {
            return Vec::new();
        }
        self.end(now, SessionState::Failed, "dnis_expired")
    }

    /// A key press from the customer: into the fields, out as masked events.
    pub fn digit(&mut self, digit: Digit, today: YearMonth) -> Vec<Action> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        self.fields
            .input(digit, today)
            .into_iter()
            .map(|c| Action::Emit(change_event(c)))
            .collect()
    }

    pub fn activate(&mut self, name: &str, today: YearMonth) -> Result<Vec<Action>, UnknownField> {
        let c = self.fields.activate(name, today)?;
        Ok(vec![Action::Emit(change_event(c))])
    }

    pub fn reset(&mut self, name: &str, today: YearMonth) -> Result<Vec<Action>, UnknownField> {
        let c = self.fields.reset(name, today)?;
        Ok(vec![Action::Emit(change_event(c))])
    }

    /// The raw digits of one field, for the payment hand-off only. Card data.
    pub(crate) fn card_digits(&self, kind: FieldKind) -> Option<&[u8]> {
        self.fields.digits(kind)
    }

    /// The gateway answered: wipe the card fields, keep `record`, emit the `payment` event.
    pub fn paid(&mut self, record: PaymentRecord) -> Vec<Action> {
        self.fields.wipe();
        self.payment = Some(record.clone());
        vec![Action::Emit(EventBody::Payment(record))]
    }

    /// Whether every card digit is gone (for tests of the wipe).
    pub fn card_wiped(&self) -> bool {
        self.fields.is_wiped()
    }

    pub fn view(&self, today: YearMonth) -> SessionView {
        SessionView {
            id: self.id.to_string(),
            tenant: self.tenant.to_string(),
            state: self.state,
            reason: self.reason.clone(),
            dnis: self.dnis.to_string(),
            expires_at: self.expires_at.clone(),
            legs: LegsView {
                rep: LegView {
                    state: self.legs[0],
                },
                customer: LegView {
                    state: self.legs[1],
                },
            },
            active_field: self.fields.active(),
            fields: self.fields.view(today),
            payment: self.payment.clone(),
        }
    }
}

fn change_event(c: FieldChange) -> EventBody {
    match c {
        FieldChange::Digit(v) => EventBody::Digit {
            field: v.name,
            masked: v.masked,
            length: v.length,
        },
        FieldChange::Cleared(v) => EventBody::field(FieldAction::Cleared, v),
        FieldChange::Completed(v) => EventBody::field(FieldAction::Completed, v),
        FieldChange::Activated(v) => EventBody::field(FieldAction::Activated, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TODAY: YearMonth = YearMonth {
        year: 2026,
        month: 1,
    };

    fn session(t0: Instant) -> Session {
        let mut s = Session::new(
            "ses_x".into(),
            "acme".into(),
            "+1".into(),
            "c".into(),
            "r".into(),
            &["pan", "expiry", "cvv"],
            t0 + Duration::from_secs(30),
            String::new(),
        );
        s.securing();
        s.secured();
        s
    }

    fn hangups(a: &[Action]) -> Vec<LegRole> {
        a.iter()
            .filter_map(|a| match a {
                Action::HangUp(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn happy_path_and_bye() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.state, SessionState::WaitingLegs);
        assert_eq!(s.admit(t0), Ok(LegRole::Rep));
        assert_eq!(s.admit(t0), Ok(LegRole::Customer));
        assert_eq!(s.admit(t0), Err(AdmitRefusal::ThirdLeg));
        assert_eq!(
            s.leg_up(LegRole::Rep).0,
            LegUpOutcome::Media { bridged: false }
        );
        assert_eq!(
            s.leg_up(LegRole::Customer).0,
            LegUpOutcome::Media { bridged: true }
        );
        assert_eq!(s.state, SessionState::Bridged);
        // bridged sessions don't expire
        assert!(s.tick(t0 + Duration::from_secs(60)).is_empty());
        let a = s.leg_ended(LegRole::Customer, LegEnd::Bye, t0);
        assert_eq!(hangups(&a), vec![LegRole::Rep]);
        assert!(a.iter().any(|a| matches!(a, Action::ReleaseDnis)));
        assert_eq!(s.state, SessionState::Ended);
        assert_eq!(s.reason.as_deref(), Some("customer_hangup"));
        assert_eq!(s.admit(t0), Err(AdmitRefusal::Expired));
        // idempotent
        assert!(s.leg_ended(LegRole::Rep, LegEnd::HungUp, t0).is_empty());
    }

    #[test]
    fn hand_back_replaces_the_hang_ups_only_when_bridged() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.admit(t0).ok();
        s.leg_up(LegRole::Rep);
        // One leg up: a plain end hangs it up.
        let mut parked = session(t0);
        parked.admit(t0).ok();
        parked.leg_up(LegRole::Rep);
        let a = parked.end_handing_back(t0, "deleted");
        assert_eq!(hangups(&a), vec![LegRole::Rep]);
        assert!(!a.iter().any(|a| matches!(a, Action::HandBack)));
        // Bridged: a hand-back, no hang-up, and the rest of an end.
        s.admit(t0).ok();
        s.leg_up(LegRole::Customer);
        let a = s.end_handing_back(t0, "deleted");
        assert!(hangups(&a).is_empty());
        assert!(matches!(a.first(), Some(Action::HandBack)));
        assert!(a.iter().any(|a| matches!(a, Action::ReleaseDnis)));
        assert!(a.iter().any(|a| matches!(a, Action::DropBridge)));
        assert_eq!(s.state, SessionState::Ended);
        assert!(s.card_wiped());
        assert!(s.end_handing_back(t0, "deleted").is_empty());
    }

    #[test]
    fn ttl_expires_parked_session() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.admit(t0), Ok(LegRole::Rep));
        s.leg_up(LegRole::Rep);
        assert!(s.tick(t0 + Duration::from_secs(29)).is_empty());
        let a = s.tick(t0 + Duration::from_secs(30));
        assert_eq!(hangups(&a), vec![LegRole::Rep]);
        assert_eq!(s.state, SessionState::Failed);
        assert_eq!(s.reason.as_deref(), Some("dnis_expired"));
        assert_eq!(s.leg_up(LegRole::Customer).0, LegUpOutcome::Refuse);
    }

    #[test]
    fn late_invite_is_expired() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(
            s.admit(t0 + Duration::from_secs(31)),
            Err(AdmitRefusal::Expired)
        );
    }

    #[test]
    fn digits_become_masked_events() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut events = Vec::new();
        for k in b"4111111111111111#" {
            events.extend(s.digit(Digit::from_key(*k).expect("k"), TODAY));
        }
        let json = serde_json::to_string(
            &events
                .iter()
                .filter_map(|a| match a {
                    Action::Emit(e) => Some(e.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )
        .expect("json");
        assert!(!json.contains("4111111"), "{json}");
        assert!(json.contains("************1111"));
        let v = serde_json::to_value(s.view(TODAY)).expect("json");
        assert_eq!(v["active_field"], "expiry");
        assert_eq!(v["legs"]["rep"]["state"], "waiting");
        assert_eq!(v["fields"]["pan"]["valid"], true);
        s.end(t0, SessionState::Ended, "deleted");
        let v = serde_json::to_value(s.view(TODAY)).expect("json");
        assert_eq!(v["fields"]["pan"]["length"], 0);
        assert_eq!(v["reason"], "deleted");
    }
}
