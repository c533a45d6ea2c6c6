//! Handing the customer back (SPEC §2.8, RFC 3515): tonewall's REFER on the customer leg,
//! the NOTIFYs of its implicit subscription, and releasing both legs once the outcome is
//! known. The decision itself is `handback::ReferWatch`; this file is the endpoint glue.
//!
//! Must never: hand back a session twice, leave a leg up after the outcome is reported,
//! put an unchecked target into a header, or answer a NOTIFY for an unknown subscription
//! with anything but 481.

use std::time::Instant;

use super::handback::ReferWatch;
use super::*;

/// One REFER in flight.
pub(super) struct Pending {
    watch: ReferWatch,
    /// The REFER's client transaction key.
    refer_key: String,
    /// The customer leg's call key.
    customer: String,
}

/// A target we can put into `Refer-To`: a `sip:`/`sips:`/`tel:` URI that parses, without
/// characters that could break out of the header.
fn valid_target(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    let scheme = ["sip:", "sips:", "tel:"]
        .iter()
        .any(|s| lower.starts_with(s));
    let clean = !target
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','));
    scheme
        && clean
        && target.len() <= 256
        && sipx_sip::uri::Uri::parse(bytes::Bytes::copy_from_slice(target.as_bytes())).is_ok()
}

impl Endpoint {
    /// `TrunkCommand::HandBack`: REFER the customer leg of `session` to `target`.
    pub(super) fn hand_back(&mut self, session: &SessionId, target: &str, now: Instant) {
        if self.handbacks.contains_key(session) {
            tracing::debug!(%session, "hand-back already in progress");
            return;
        }
        let customer = self
            .calls
            .iter()
            .find(|(_, c)| {
                c.session == *session
                    && c.role == LegRole::Customer
                    && matches!(c.state, CallState::Up)
            })
            .map(|(k, _)| k.clone());
        let Some(ck) = customer else {
            tracing::info!(%session, "hand-back without an established customer leg");
            return self.finish_hand_back(session, false, now);
        };
        if !valid_target(target) {
            tracing::warn!(%session, "hand-back target is not a usable URI");
            return self.finish_hand_back(session, false, now);
        }
        let Some(call) = self.calls.get(&ck) else {
            return;
        };
        let flow = call.flow.clone();
        let mut dialog = call.dialog.clone();
        let (mut refer, f) = self.dialog_request(&mut dialog, Method::Refer, &flow);
        if let Some(call) = self.calls.get_mut(&ck) {
            call.dialog = dialog;
        }
        let (host, _) = self.local_host(&flow);
        refer.headers.push("Refer-To", format!("<{target}>"));
        refer
            .headers
            .push("Referred-By", format!("<sip:tonewall@{host}>"));
        refer.headers.push("Contact", self.contact(&flow));
        refer.headers.push("Allow", ALLOW);
        let refer_key = self.send_client(refer, f, now);
        tracing::info!(%session, "REFER sent on the customer leg");
        self.handbacks.insert(
            session.clone(),
            Pending {
                watch: ReferWatch::new(now),
                refer_key,
                customer: ck,
            },
        );
    }

    /// The outcome is known: release both legs (each reports `leg_ended(HungUp)`), then
    /// report `handed_back`.
    fn finish_hand_back(&mut self, session: &SessionId, ok: bool, now: Instant) {
        if let Some(p) = self.handbacks.remove(session) {
            // No more REFER retransmissions into a dialog we are about to end.
            self.client_txs.remove(&p.refer_key);
        }
        tracing::info!(%session, ok, "hand-back finished, releasing both legs");
        for role in [LegRole::Rep, LegRole::Customer] {
            self.hang_up(session, role, now);
        }
        self.handler.handed_back(session, ok);
    }

    fn decided(&mut self, session: Option<SessionId>, ok: Option<bool>, now: Instant) {
        if let (Some(session), Some(ok)) = (session, ok) {
            self.finish_hand_back(&session, ok, now);
        }
    }

    /// A leg of `session` is gone (already removed and reported): when it is the customer
    /// leg of a hand-back in flight, the hand-back failed.
    pub(super) fn leg_gone(&mut self, session: &SessionId, role: LegRole, now: Instant) {
        if role != LegRole::Customer {
            return;
        }
        let ok = self
            .handbacks
            .get_mut(session)
            .and_then(|p| p.watch.on_leg_gone());
        self.decided(Some(session.clone()), ok, now);
    }

    /// A final response arrived on the client transaction `key`.
    pub(super) fn on_refer_response(&mut self, key: &str, status: u16, now: Instant) {
        let Some((session, p)) = self.handbacks.iter_mut().find(|(_, p)| p.refer_key == key) else {
            return;
        };
        tracing::info!(%session, status, "REFER answered");
        let ok = p.watch.on_refer_response(status);
        let session = session.clone();
        self.decided(Some(session), ok, now);
    }

    /// An in-dialog NOTIFY on the call `ck` (CSeq already checked).
    pub(super) fn on_notify(&mut self, req: &Request, key: &str, ck: &str, now: Instant) {
        let Some(session) = self
            .handbacks
            .iter()
            .find(|(_, p)| p.customer == ck)
            .map(|(s, _)| s.clone())
        else {
            self.respond(key, Self::simple(req, 481), now);
            return;
        };
        let event = req.headers.get("Event").unwrap_or_default();
        let package = event.split(';').next().unwrap_or_default().trim();
        if !package.eq_ignore_ascii_case("refer") {
            self.respond(key, req.response(489, "Bad Event", None), now);
            return;
        }
        self.respond(key, req.response(200, "OK", None), now);
        let terminated = req
            .headers
            .get("Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let ok = self
            .handbacks
            .get_mut(&session)
            .and_then(|p| p.watch.on_notify(&req.body, terminated));
        self.decided(Some(session), ok, now);
    }

    /// Hand-backs whose final NOTIFY did not come in time.
    pub(super) fn hand_back_tick(&mut self, now: Instant) {
        let late: Vec<SessionId> = self
            .handbacks
            .iter_mut()
            .filter_map(|(s, p)| p.watch.on_tick(now).map(|_| s.clone()))
            .collect();
        for session in late {
            tracing::info!(%session, "no final NOTIFY for the REFER in time");
            self.finish_hand_back(&session, false, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_target;

    #[test]
    fn targets_are_checked() {
        assert!(valid_target("sip:rep1@sim.example"));
        assert!(valid_target("sip:2001@127.0.0.1:5070"));
        assert!(valid_target("tel:+61390001042"));
        assert!(!valid_target("http://x"));
        assert!(!valid_target("sip:a@b>\r\nX-Evil: 1"));
        assert!(!valid_target("sip:a@b c"));
        assert!(!valid_target(""));
    }
}
