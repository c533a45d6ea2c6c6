//! The payment hand-off: `POST /v1/sessions/{id}/payment` validates the request and the
//! card fields, copies the card into a zeroised `Card`, and charges it once per session on
//! a task of its own (a retried or concurrent submit waits for and returns the first
//! result; the idempotency key is derived from the session). When the gateway answers, the
//! card is dropped (wiped), the session's fields are wiped, and the session keeps only the
//! masked PAN, the brand and the gateway reference.
//!
//! Must never: hold the session lock across the gateway call; put a digit in an error;
//! keep card data after the gateway has answered.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{ManagerError, SessionManager};
use crate::leg::SessionId;
use crate::payment::{Card, ChargeRequest, ChargeStatus, DeclineReason};
use crate::session::fields::{FieldKind, YearMonth};
use crate::session::state::PaymentRecord;

/// The body of `POST /v1/sessions/{id}/payment`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub amount_minor: i64,
    pub currency: String,
    #[serde(default)]
    pub description: String,
    pub cardholder: String,
}

/// The answer (SPEC §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentAnswer {
    /// `approved` or `declined`.
    pub status: &'static str,
    pub reference: String,
    pub masked_pan: String,
    pub brand: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<&'static str>,
}

/// The gateway's decision, or why there was none.
pub(super) type Outcome = Result<PaymentAnswer, String>;
/// `None` inside while the gateway has not answered.
pub(super) type PaymentSlot = watch::Receiver<Option<Arc<Outcome>>>;

const MAX_TEXT: usize = 200;

fn invalid(code: &'static str, message: &str) -> ManagerError {
    ManagerError::InvalidPayment {
        code,
        message: message.to_string(),
    }
}

fn check_request(req: &PaymentRequest) -> Result<(), ManagerError> {
    if req.amount_minor <= 0 {
        return Err(invalid(
            "invalid_amount",
            "amount_minor must be a whole number of minor units above 0",
        ));
    }
    if req.currency.len() != 3 || !req.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "invalid_currency",
            "currency must be a 3-letter ISO 4217 code such as AUD",
        ));
    }
    if req.cardholder.trim().is_empty() || req.cardholder.chars().count() > MAX_TEXT {
        return Err(invalid(
            "invalid_cardholder",
            "cardholder must be 1 to 200 characters",
        ));
    }
    if req.description.chars().count() > MAX_TEXT {
        return Err(invalid(
            "invalid_description",
            "description must be at most 200 characters",
        ));
    }
    // Free text must not smuggle card data into the gateway's records or our logs.
    for (code, text) in [
        ("invalid_cardholder", &req.cardholder),
        ("invalid_description", &req.description),
    ] {
        let mut run = 0;
        for c in text.chars() {
            run = if c.is_ascii_digit() { run + 1 } else { 0 };
            if run >= 7 {
                return Err(invalid(code, "must not contain a long run of digits"));
            }
        }
    }
    Ok(())
}

impl SessionManager {
    /// Validate and charge once; a retried or concurrent call returns the first result.
    pub async fn pay(
        &self,
        tenant: &str,
        id: &str,
        req: PaymentRequest,
    ) -> Result<PaymentAnswer, ManagerError> {
        let mut slot = self.start_payment(tenant, id, req)?;
        let outcome = slot
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ManagerError::PaymentGateway("the payment was interrupted".into()))?
            .clone();
        match outcome.as_deref() {
            Some(Ok(answer)) => Ok(answer.clone()),
            Some(Err(why)) => Err(ManagerError::PaymentGateway(why.clone())),
            None => Err(ManagerError::PaymentGateway("no answer".into())),
        }
    }

    fn start_payment(
        &self,
        tenant: &str,
        id: &str,
        req: PaymentRequest,
    ) -> Result<PaymentSlot, ManagerError> {
        self.with_session(tenant, id, |m, inner, sid, _now| {
            let e = inner
                .sessions
                .get_mut(sid)
                .ok_or(ManagerError::SessionNotFound)?;
            if let Some(slot) = &e.payment {
                return Ok(slot.clone());
            }
            if e.session.state.is_terminal() {
                return Err(ManagerError::SessionEnded);
            }
            check_request(&req)?;
            let today = YearMonth::now();
            let view = e.session.view(today);
            let valid = |name: &str| view.fields.0.iter().any(|f| f.name == name && f.valid);
            let has = |name: &str| view.fields.0.iter().any(|f| f.name == name);
            if !valid("pan") {
                return Err(invalid(
                    "invalid_pan",
                    "the card number is incomplete or fails the Luhn check",
                ));
            }
            if !valid("expiry") {
                return Err(invalid(
                    "invalid_expiry",
                    "the expiry date must be MMYY and not in the past",
                ));
            }
            if has("cvv") && !valid("cvv") {
                return Err(invalid(
                    "invalid_cvv",
                    "the security code must be 3 or 4 digits",
                ));
            }
            let s = &e.session;
            let card = Card::new(
                s.card_digits(FieldKind::Pan).unwrap_or_default(),
                s.card_digits(FieldKind::Expiry).unwrap_or_default(),
                s.card_digits(FieldKind::Cvv).unwrap_or_default(),
            )
            .ok_or_else(|| invalid("invalid_card", "the card fields are not complete"))?;
            let charge = ChargeRequest {
                amount_minor: req.amount_minor.unsigned_abs(),
                currency: req.currency,
                description: req.description,
                cardholder: req.cardholder,
                card,
                reference: sid.to_string(),
                idempotency_key: format!("tonewall-{sid}"),
            };
            let (tx, rx) = watch::channel(None);
            e.payment = Some(rx.clone());
            tracing::info!(session = %sid, gateway = m.shared.services.gateway.name(), "payment submitted");
            tokio::spawn(m.clone().charge(sid.clone(), charge, tx));
            Ok(rx)
        })
    }

    /// The gateway call, on its own task so a client that goes away cannot cancel it.
    async fn charge(
        self,
        sid: SessionId,
        charge: ChargeRequest,
        tx: watch::Sender<Option<Arc<Outcome>>>,
    ) {
        let masked_pan = charge.card.masked();
        let brand = charge.card.brand();
        let result = self.shared.services.gateway.charge(&charge).await;
        drop(charge); // wipes the card
        let (record, outcome) = match result {
            Ok(c) => {
                let status = match c.status {
                    ChargeStatus::Approved => "approved",
                    ChargeStatus::Declined => "declined",
                };
                let reason = c.decline_reason.map(|r| match r {
                    DeclineReason::Declined => "declined",
                    DeclineReason::InsufficientFunds => "insufficient_funds",
                });
                let answer = PaymentAnswer {
                    status,
                    reference: c.reference.clone(),
                    masked_pan: masked_pan.clone(),
                    brand: brand.as_str(),
                    decline_reason: reason,
                };
                let record = PaymentRecord {
                    status,
                    reference: Some(c.reference),
                    masked_pan,
                    brand: brand.as_str(),
                    decline_reason: reason,
                };
                (record, Ok(answer))
            }
            Err(err) => {
                tracing::warn!(session = %sid, error = %err, "payment gateway error");
                let record = PaymentRecord {
                    status: "error",
                    reference: None,
                    masked_pan,
                    brand: brand.as_str(),
                    decline_reason: None,
                };
                (record, Err(err.to_string()))
            }
        };
        tracing::info!(session = %sid, status = record.status, brand = record.brand, "payment answered");
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(e) = inner.sessions.get_mut(&sid) else {
            let _ = tx.send(Some(Arc::new(outcome)));
            return;
        };
        let actions = e.session.paid(record);
        let _ = tx.send(Some(Arc::new(outcome)));
        let ended = e.session.state.is_terminal();
        self.apply(&mut inner, &sid, actions, now);
        if ended {
            // The session ended while the gateway was deciding: its audit row waited for this.
            if let Some(e) = inner.sessions.get(&sid) {
                self.write_audit(e);
            }
        }
    }
}

impl SessionManager {
    /// Whether the session's card fields hold no digit any more (every buffer zero).
    pub fn card_wiped(&self, tenant: &str, id: &str) -> Result<bool, ManagerError> {
        self.with_session(tenant, id, |_, inner, sid, _| {
            inner
                .sessions
                .get(sid)
                .map(|e| e.session.card_wiped())
                .ok_or(ManagerError::SessionNotFound)
        })
    }
}
