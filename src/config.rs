//! The TOML configuration (SPEC §4): types, defaults and validation.
//!
//! Every key has a default where one makes sense and unknown keys are an error. `load`
//! returns an error that names the offending key; `serve` and `check-config` turn it into
//! exit code 2. Secrets are never stored here: the config names environment variables.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    pub dnis: DnisConfig,
    pub carrier: Vec<CarrierConfig>,
    pub tenant: Vec<TenantConfig>,
    pub payment: PaymentConfig,
    pub audit: AuditConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// `udp:ADDR:PORT` / `tcp:ADDR:PORT`.
    pub listen: Vec<String>,
    /// Address put in Via/Contact when behind NAT.
    pub advertise: Option<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            advertise: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    Silence,
    Tone,
    Noise,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub bind: String,
    pub advertise: Option<String>,
    /// Inclusive `LOW-HIGH` RTP port range.
    pub ports: String,
    pub codecs: Vec<String>,
    pub holdback_ms: u32,
    pub mask_mode: MaskMode,
    pub rtp_timeout_s: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: "0.0.0.0".into(),
            advertise: None,
            ports: "30000-39999".into(),
            codecs: vec!["PCMU".into(), "PCMA".into()],
            holdback_ms: 40,
            mask_mode: MaskMode::Silence,
            rtp_timeout_s: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnisConfig {
    pub ttl_s: u64,
}

impl Default for DnisConfig {
    fn default() -> Self {
        DnisConfig { ttl_s: 30 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CarrierKind {
    Manual,
    Broadworks,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    pub id: String,
    pub kind: CarrierKind,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub xsi_url: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub dial_prefix: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    pub carrier: String,
    #[serde(default)]
    pub api_keys: Vec<String>,
    pub dnis: Vec<String>,
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
}

fn default_fields() -> Vec<String> {
    vec!["pan".into(), "expiry".into(), "cvv".into()]
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    pub gateway: String,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            gateway: "sandbox".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub path: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: "tonewall.db".into(),
        }
    }
}
