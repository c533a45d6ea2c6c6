//! Third-party call control adapters. Only `manual` exists so far: it does no call control,
//! so the `securing` step passes straight to `waiting_legs`.
//!
//! Must never: see card digits; block the session manager (real adapters will run as tasks).

use crate::config::{CarrierConfig, CarrierKind};

/// A tenant's carrier adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adapter {
    /// No third-party call control: the legs dial the DNIS by themselves.
    Manual,
    /// A configured kind whose adapter does not exist yet.
    Unsupported(CarrierKind),
}

/// How the securing step went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureOutcome {
    /// The legs are on their way: wait for them.
    Done,
    /// Securing failed; the session fails with this reason.
    Failed(&'static str),
}

impl Adapter {
    pub fn from_config(c: &CarrierConfig) -> Adapter {
        match c.kind {
            CarrierKind::Manual => Adapter::Manual,
            other => Adapter::Unsupported(other),
        }
    }

    /// Move the call into tonewall (the `securing` step).
    pub fn secure(&self) -> SecureOutcome {
        match self {
            Adapter::Manual => SecureOutcome::Done,
            Adapter::Unsupported(_) => SecureOutcome::Failed("carrier_unsupported"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_secures_immediately() {
        let c = CarrierConfig {
            id: "m".into(),
            kind: CarrierKind::Manual,
            peers: vec![],
            xsi_url: None,
            user: None,
            password_env: None,
            dial_prefix: None,
        };
        assert_eq!(Adapter::from_config(&c).secure(), SecureOutcome::Done);
        let bw = CarrierConfig {
            kind: CarrierKind::Broadworks,
            ..c
        };
        assert!(matches!(
            Adapter::from_config(&bw).secure(),
            SecureOutcome::Failed(_)
        ));
    }
}
