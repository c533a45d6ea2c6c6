//! The Adyen Checkout adapter: one MOTO card-not-present payment per call, `POST
//! {url}/v71/payments` with `X-API-Key` and `Idempotency-Key`, raw card data in a `scheme`
//! payment method (the platform is the PCI-compliant party), `shopperInteraction: "Moto"`
//! and no `recurringProcessingModel`. `Authorised` is approved, `Refused`/`Cancelled`
//! declined (Adyen refusal code 12, "Not enough balance", is insufficient funds), `Error`
//! and any non-2xx answer a gateway error.
//!
//! Must never: log the request body or echo the gateway's body into an error; read the API
//! key from the config file (only from `payment.api_key_env`). The body is built in a
//! zeroised buffer that is wiped when the HTTP client drops it.

use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::PaymentConfig;
use crate::payment::{
    ChargeFuture, ChargeRequest, ChargeStatus, Charged, DeclineReason, Gateway, GatewayError,
};

/// The Checkout API version this adapter speaks.
pub const PATH: &str = "/v71/payments";

/// The Adyen gateway.
pub struct Adyen {
    endpoint: String,
    merchant_account: String,
    api_key: Zeroizing<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Adyen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adyen")
            .field("endpoint", &self.endpoint)
            .field("merchant_account", &self.merchant_account)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentResponse {
    #[serde(default)]
    psp_reference: Option<String>,
    result_code: String,
    #[serde(default)]
    refusal_reason_code: Option<String>,
}

impl Adyen {
    /// `base_url` without the path (e.g. `https://checkout-test.adyen.com`).
    pub fn new(
        base_url: &str,
        merchant_account: &str,
        api_key: String,
        timeout: Duration,
    ) -> anyhow::Result<Adyen> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("payment: cannot build the HTTP client")?;
        Ok(Adyen {
            endpoint: format!("{}{PATH}", base_url.trim_end_matches('/')),
            merchant_account: merchant_account.to_string(),
            api_key: Zeroizing::new(api_key),
            client,
        })
    }

    /// From a validated `[payment]` with `gateway = "adyen"`.
    pub fn from_config(p: &PaymentConfig) -> anyhow::Result<Adyen> {
        let url = p.url.as_deref().context("payment.url: required")?;
        let account = p
            .merchant_account
            .as_deref()
            .context("payment.merchant_account: required")?;
        let env = p
            .api_key_env
            .as_deref()
            .context("payment.api_key_env: required")?;
        let key = std::env::var(env).with_context(|| {
            format!("payment.api_key_env: environment variable {env} is not set")
        })?;
        Adyen::new(url, account, key, Duration::from_secs(p.timeout_s))
    }

    /// The documented request body, in a buffer wiped on drop.
    pub fn body(&self, req: &ChargeRequest) -> Zeroizing<Vec<u8>> {
        fn string(out: &mut Vec<u8>, s: &str) {
            // serde_json escapes; writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        // Capacity up front so the buffer never reallocates (a reallocation would leave a
        // copy of the card data behind).
        let mut b = Vec::with_capacity(
            512 + req.cardholder.len() * 6
                + self.merchant_account.len() * 6
                + req.reference.len() * 6,
        );
        b.extend_from_slice(b"{\"amount\":{\"currency\":");
        string(&mut b, &req.currency);
        b.extend_from_slice(format!(",\"value\":{}}}", req.amount_minor).as_bytes());
        b.extend_from_slice(b",\"merchantAccount\":");
        string(&mut b, &self.merchant_account);
        b.extend_from_slice(b",\"reference\":");
        string(&mut b, &req.reference);
        b.extend_from_slice(b",\"shopperInteraction\":\"Moto\"");
        b.extend_from_slice(b",\"paymentMethod\":{\"type\":\"scheme\",\"number\":\"");
        b.extend_from_slice(req.card.pan());
        b.extend_from_slice(b"\",\"expiryMonth\":\"");
        b.extend_from_slice(req.card.expiry_month());
        b.extend_from_slice(b"\",\"expiryYear\":\"");
        b.extend_from_slice(req.card.expiry_year());
        b.extend_from_slice(b"\"");
        if !req.card.cvv().is_empty() {
            b.extend_from_slice(b",\"cvc\":\"");
            b.extend_from_slice(req.card.cvv());
            b.extend_from_slice(b"\"");
        }
        b.extend_from_slice(b",\"holderName\":");
        string(&mut b, &req.cardholder);
        b.extend_from_slice(b"}}");
        Zeroizing::new(b)
    }

    async fn charge_inner(&self, req: &ChargeRequest) -> Result<Charged, GatewayError> {
        let body = bytes::Bytes::from_owner(self.body(req));
        let resp = self
            .client
            .post(&self.endpoint)
            .header("X-API-Key", self.api_key.as_str())
            .header("Idempotency-Key", &req.idempotency_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| GatewayError::Transport(transport_reason(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(GatewayError::Http(status.as_u16()));
        }
        let parsed: PaymentResponse = resp
            .json()
            .await
            .map_err(|_| GatewayError::Processing("unreadable answer".into()))?;
        let reference = parsed.psp_reference.unwrap_or_default();
        let declined = |reason| Charged {
            status: ChargeStatus::Declined,
            reference: reference.clone(),
            decline_reason: Some(reason),
        };
        match parsed.result_code.as_str() {
            "Authorised" => Ok(Charged {
                status: ChargeStatus::Approved,
                reference,
                decline_reason: None,
            }),
            "Refused" if parsed.refusal_reason_code.as_deref() == Some("12") => {
                Ok(declined(DeclineReason::InsufficientFunds))
            }
            "Refused" | "Cancelled" => Ok(declined(DeclineReason::Declined)),
            "Error" => Err(GatewayError::Processing("resultCode Error".into())),
            _ => Err(GatewayError::Processing("unexpected resultCode".into())),
        }
    }
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

impl Gateway for Adyen {
    fn name(&self) -> &'static str {
        "adyen"
    }

    fn charge<'a>(&'a self, req: &'a ChargeRequest) -> ChargeFuture<'a> {
        Box::pin(self.charge_inner(req))
    }
}
