//! The `sandbox` gateway (SPEC §4): decides by card number like a real gateway's test mode.
//! `4000000000000002` declined, `4000000000009995` declined for insufficient funds,
//! `4000000000000119` a processing error, anything else approved.
//!
//! Must never: keep or log the card; its references are random, not derived from the card.

use rand::distr::{Alphanumeric, SampleString};

use crate::payment::{
    ChargeFuture, ChargeRequest, ChargeStatus, Charged, DeclineReason, Gateway, GatewayError,
};

/// The sandbox gateway.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sandbox;

/// Test card numbers.
pub const DECLINE: &str = "4000000000000002";
pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
pub const PROCESSING_ERROR: &str = "4000000000000119";

impl Sandbox {
    fn decide(req: &ChargeRequest) -> Result<Charged, GatewayError> {
        let reference = format!("sbx_{}", Alphanumeric.sample_string(&mut rand::rng(), 16));
        let pan = req.card.pan();
        if pan == PROCESSING_ERROR.as_bytes() {
            return Err(GatewayError::Processing("sandbox processing error".into()));
        }
        let declined = |reason| Charged {
            status: ChargeStatus::Declined,
            reference: reference.clone(),
            decline_reason: Some(reason),
        };
        if pan == DECLINE.as_bytes() {
            return Ok(declined(DeclineReason::Declined));
        }
        if pan == INSUFFICIENT_FUNDS.as_bytes() {
            return Ok(declined(DeclineReason::InsufficientFunds));
        }
        Ok(Charged {
            status: ChargeStatus::Approved,
            reference,
            decline_reason: None,
        })
    }
}

impl Gateway for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn charge<'a>(&'a self, req: &'a ChargeRequest) -> ChargeFuture<'a> {
        Box::pin(async move { Sandbox::decide(req) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::Card;

    fn req(pan: &str) -> ChargeRequest {
        ChargeRequest {
            amount_minor: 1234,
            currency: "AUD".into(),
            description: "d".into(),
            cardholder: "c".into(),
            card: Card::new(pan.as_bytes(), b"1230", b"123").expect("card"),
            reference: "ses_1".into(),
            idempotency_key: "k".into(),
        }
    }

    #[tokio::test]
    async fn outcomes_by_card() {
        let ok = Sandbox.charge(&req("4111111111111111")).await.expect("ok");
        assert_eq!(ok.status, ChargeStatus::Approved);
        assert!(ok.reference.starts_with("sbx_") && !ok.reference.contains("1111"));
        let d = Sandbox.charge(&req(DECLINE)).await.expect("declined");
        assert_eq!(d.status, ChargeStatus::Declined);
        assert_eq!(d.decline_reason, Some(DeclineReason::Declined));
        let f = Sandbox.charge(&req(INSUFFICIENT_FUNDS)).await.expect("nsf");
        assert_eq!(f.decline_reason, Some(DeclineReason::InsufficientFunds));
        let e = Sandbox.charge(&req(PROCESSING_ERROR)).await;
        assert!(matches!(e, Err(GatewayError::Processing(_))));
    }
}
