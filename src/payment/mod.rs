//! Payment gateways: the `Gateway` trait, the card data handed to it (`Card`, zeroised on
//! drop), the card brand from the BIN, and the gateways: `sandbox` (deterministic test
//! cards, SPEC §4) and `adyen` (Checkout `POST /v71/payments`, MOTO).
//!
//! Must never: log, format or keep card data (`Card` has a redacted `Debug`, no `Display`,
//! no `Clone`); put card data in an error message.

pub mod adyen;
pub mod sandbox;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::config::PaymentConfig;

/// Card data for one charge, in fixed zeroised buffers. Built once from the session's
/// fields, dropped (and so wiped) as soon as the gateway has answered.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Card {
    pan: [u8; 19],
    pan_len: u8,
    /// `MM`.
    exp_month: [u8; 2],
    /// `20YY`.
    exp_year: [u8; 4],
    cvv: [u8; 4],
    cvv_len: u8,
}

impl Card {
    /// From ASCII digits: a 12–19 digit PAN, an `MMYY` expiry, a 0–4 digit security code
    /// (empty when the session collects none). `None` if the shapes are wrong.
    pub fn new(pan: &[u8], expiry_mmyy: &[u8], cvv: &[u8]) -> Option<Card> {
        let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
        if !(12..=19).contains(&pan.len())
            || expiry_mmyy.len() != 4
            || cvv.len() > 4
            || !digits(pan)
            || !digits(expiry_mmyy)
            || !digits(cvv)
        {
            return None;
        }
        let mut c = Card {
            pan: [0; 19],
            pan_len: pan.len() as u8,
            exp_month: [expiry_mmyy[0], expiry_mmyy[1]],
            exp_year: [b'2', b'0', expiry_mmyy[2], expiry_mmyy[3]],
            cvv: [0; 4],
            cvv_len: cvv.len() as u8,
        };
        c.pan[..pan.len()].copy_from_slice(pan);
        c.cvv[..cvv.len()].copy_from_slice(cvv);
        Some(c)
    }

    pub fn pan(&self) -> &[u8] {
        &self.pan[..self.pan_len as usize]
    }

    /// `MM`, zero-padded.
    pub fn expiry_month(&self) -> &[u8] {
        &self.exp_month
    }

    /// Four digits.
    pub fn expiry_year(&self) -> &[u8] {
        &self.exp_year
    }

    /// Empty when none was collected.
    pub fn cvv(&self) -> &[u8] {
        &self.cvv[..self.cvv_len as usize]
    }

    /// `************1111`: at most the last four digits.
    pub fn masked(&self) -> String {
        mask_pan(self.pan())
    }

    pub fn brand(&self) -> Brand {
        Brand::from_pan(self.pan())
    }

    /// Whether every byte is zero (after `zeroize`).
    pub fn is_wiped(&self) -> bool {
        self.pan
            .iter()
            .chain(&self.exp_month)
            .chain(&self.exp_year)
            .chain(&self.cvv)
            .all(|b| *b == 0)
            && self.pan_len == 0
            && self.cvv_len == 0
    }
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Card(redacted)")
    }
}

/// Stars for every digit but the last four (all stars below 12 digits).
pub fn mask_pan(pan: &[u8]) -> String {
    let n = pan.len();
    let mut s: String = std::iter::repeat_n('*', n.saturating_sub(4)).collect();
    if n >= 12 {
        s.extend(pan[n - 4..].iter().map(|b| char::from(*b)));
    } else {
        s.extend(std::iter::repeat_n('*', n.min(4)));
    }
    s
}

/// The card scheme, from the leading digits (the BIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    Unionpay,
    Maestro,
    Unknown,
}

impl Brand {
    pub fn from_pan(pan: &[u8]) -> Brand {
        let prefix = |n: usize| -> u32 {
            pan.iter().take(n).fold(0u32, |acc, b| {
                acc * 10 + u32::from(b.wrapping_sub(b'0') % 10)
            })
        };
        if pan.len() < 6 {
            return Brand::Unknown;
        }
        let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
        match () {
            _ if p1 == 4 => Brand::Visa,
            _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => Brand::Mastercard,
            _ if p2 == 34 || p2 == 37 => Brand::Amex,
            _ if p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) => Brand::Discover,
            _ if (3528..=3589).contains(&p4) => Brand::Jcb,
            _ if p2 == 36 || p2 == 38 || p2 == 39 || (300..=305).contains(&p3) => Brand::Diners,
            _ if p2 == 62 => Brand::Unionpay,
            _ if p2 == 50 || (56..=58).contains(&p2) || p1 == 6 => Brand::Maestro,
            _ => Brand::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::Unionpay => "unionpay",
            Brand::Maestro => "maestro",
            Brand::Unknown => "unknown",
        }
    }
}

/// One charge.
#[derive(Debug)]
pub struct ChargeRequest {
    /// Minor units (cents), > 0.
    pub amount_minor: u64,
    /// ISO 4217, three upper-case letters.
    pub currency: String,
    pub description: String,
    pub cardholder: String,
    pub card: Card,
    /// Our reference (the session id).
    pub reference: String,
    /// The same for every attempt of this session's payment.
    pub idempotency_key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChargeStatus {
    Approved,
    Declined,
}

/// Why a charge was declined, when the gateway says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    Declined,
    InsufficientFunds,
}

/// The gateway's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charged {
    pub status: ChargeStatus,
    /// The gateway's reference (PSP reference).
    pub reference: String,
    pub decline_reason: Option<DeclineReason>,
}

/// The gateway did not decide (the API answers 502). Messages carry no card data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("the payment gateway could not be reached: {0}")]
    Transport(String),
    #[error("the payment gateway answered HTTP {0}")]
    Http(u16),
    #[error("the payment gateway reported an error: {0}")]
    Processing(String),
}

pub type ChargeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Charged, GatewayError>> + Send + 'a>>;

/// A payment gateway.
pub trait Gateway: Send + Sync {
    /// `sandbox`, `adyen`.
    fn name(&self) -> &'static str;
    /// Authorise one card-not-present (MOTO) payment.
    fn charge<'a>(&'a self, req: &'a ChargeRequest) -> ChargeFuture<'a>;
}

/// The gateway `[payment]` names (the config is validated; the Adyen key is read from its
/// environment variable here).
pub fn from_config(p: &PaymentConfig) -> anyhow::Result<Arc<dyn Gateway>> {
    match p.gateway.as_str() {
        "adyen" => Ok(Arc::new(adyen::Adyen::from_config(p)?)),
        _ => Ok(Arc::new(sandbox::Sandbox)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_shapes_mask_brand_and_wipe() {
        assert!(Card::new(b"41111111111", b"1230", b"123").is_none());
        assert!(Card::new(b"4111111111111111", b"123", b"123").is_none());
        assert!(Card::new(b"4111111111111111", b"1230", b"12345").is_none());
        assert!(Card::new(b"41111111111111x1", b"1230", b"123").is_none());
        let mut c = Card::new(b"4111111111111111", b"0730", b"123").expect("card");
        assert_eq!(c.expiry_month(), b"07");
        assert_eq!(c.expiry_year(), b"2030");
        assert_eq!(c.cvv(), b"123");
        assert_eq!(c.masked(), "************1111");
        assert_eq!(c.brand(), Brand::Visa);
        assert_eq!(format!("{c:?}"), "Card(redacted)");
        c.zeroize();
        assert!(c.is_wiped());
    }

    #[test]
    fn brands_from_bin() {
        for (pan, b) in [
            ("5555555555554444", Brand::Mastercard),
            ("2223000048400011", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("3530111333300000", Brand::Jcb),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::Unionpay),
            ("4000000000000002", Brand::Visa),
            ("9999999999999995", Brand::Unknown),
        ] {
            assert_eq!(Brand::from_pan(pan.as_bytes()), b, "{pan}");
        }
        assert_eq!(mask_pan(b"1234"), "****");
        assert_eq!(mask_pan(b"378282246310005"), "***********0005");
    }
}
