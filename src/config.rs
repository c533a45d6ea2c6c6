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
    /// PEM file of CA certificates added to the trust roots of this carrier's Xsi client
    /// (on-prem XSPs signed by a private CA). Only with kind = "broadworks".
    #[serde(default)]
    pub xsi_ca_file: Option<String>,
    /// Each third-party call control step's deadline (hold, originate, waiting for a leg,
    /// transfer), in seconds.
    #[serde(default = "default_step_timeout_s")]
    pub step_timeout_s: u64,
}

fn default_step_timeout_s() -> u64 {
    10
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
    /// `sandbox` or `adyen`.
    pub gateway: String,
    /// Adyen: the Checkout API base URL (`/v71/payments` is appended), e.g.
    /// `https://checkout-test.adyen.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Adyen: the merchant account (a MOTO account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_account: Option<String>,
    /// Adyen: the environment variable holding the API key (never the key itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Seconds to wait for the gateway's answer.
    pub timeout_s: u64,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            gateway: "sandbox".into(),
            url: None,
            merchant_account: None,
            api_key_env: None,
            timeout_s: 30,
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

// ---------------------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------------------

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Why a configuration was refused. The message always starts with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {message}")]
    Io { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key at fault (`media.holdback_ms`, `tenant[0].dnis[1]`), or the file path.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Io { path, .. } => path,
            ConfigError::Invalid { key, .. } => key,
        }
    }
}

/// A `sip.listen` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Listen {
    /// Parse `udp:ADDR:PORT` / `tcp:ADDR:PORT` (IPv6 as `[::1]:5060`).
    pub fn parse(s: &str) -> Result<Listen, String> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("expected udp:ADDR:PORT or tcp:ADDR:PORT, got {s:?}"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an ADDR:PORT socket address"))?;
        match proto {
            "udp" => Ok(Listen::Udp(addr)),
            "tcp" => Ok(Listen::Tcp(addr)),
            "tls" => Err("tls is not supported yet".into()),
            other => Err(format!("unknown transport {other:?} (udp or tcp)")),
        }
    }
}

/// The card fields tonewall knows.
pub const FIELD_NAMES: [&str; 3] = ["pan", "expiry", "cvv"];

/// Accepted range of `media.holdback_ms`: long enough for the in-band detector
/// (about 38 ms), short enough not to hurt the conversation.
pub const HOLDBACK_MS_RANGE: std::ops::RangeInclusive<u32> = 20..=200;

impl Config {
    /// Read and validate a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        load(path)
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        parse(text)
    }

    /// Semantic checks (every error names its key).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate(self, &|name| std::env::var_os(name).is_some())
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenant.iter().find(|t| t.id == id)
    }

    /// The carrier with this id.
    pub fn carrier(&self, id: &str) -> Option<&CarrierConfig> {
        self.carrier.iter().find(|c| c.id == id)
    }
}

/// Read and validate a config file.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&text)
}

/// Parse and validate TOML text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let config = parse_unchecked(text)?;
    config.validate()?;
    Ok(config)
}

/// Parse TOML text into a `Config` without the semantic checks.
pub fn parse_unchecked(text: &str) -> Result<Config, ConfigError> {
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| ConfigError::invalid("(syntax)", one_line(e.message(), e.span(), text)))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." || key.is_empty() {
            "(top level)".to_string()
        } else {
            key
        };
        ConfigError::invalid(key, e.inner().message().to_string())
    })
}

fn one_line(message: &str, span: Option<std::ops::Range<usize>>, text: &str) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", message.trim())
        }
        None => message.trim().to_string(),
    }
}

/// Parse a `carrier.peers` entry: a CIDR or a bare address (a /32 or /128).
pub fn parse_peer(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not an address or CIDR"))
}

/// Parse a `tenant.dnis` entry: a number (`+61390001000`) or an inclusive range of numbers
/// of the same length (`+61390001000-+61390001099`). At most 100,000 numbers per entry.
pub fn parse_dnis_entry(s: &str) -> Result<Vec<String>, String> {
    fn number(s: &str) -> Result<(bool, &str), String> {
        let (plus, digits) = match s.strip_prefix('+') {
            Some(d) => (true, d),
            None => (false, s),
        };
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a number (optional +, 1-15 digits)"));
        }
        Ok((plus, digits))
    }
    let s = s.trim();
    let Some((lo, hi)) = s.split_once('-') else {
        number(s)?;
        return Ok(vec![s.to_string()]);
    };
    let (lp, ld) = number(lo.trim())?;
    let (hp, hd) = number(hi.trim())?;
    if lp != hp || ld.len() != hd.len() {
        return Err(format!(
            "range {s:?}: both ends must have the same form and length"
        ));
    }
    let a: u64 = ld.parse().map_err(|_| format!("range {s:?}: bad start"))?;
    let b: u64 = hd.parse().map_err(|_| format!("range {s:?}: bad end"))?;
    if a > b {
        return Err(format!("range {s:?}: start is after end"));
    }
    if b - a >= 100_000 {
        return Err(format!("range {s:?}: more than 100000 numbers"));
    }
    let width = ld.len();
    let prefix = if lp { "+" } else { "" };
    Ok((a..=b).map(|n| format!("{prefix}{n:0width$}")).collect())
}

/// Whether `s` is `sha256:` followed by 64 lowercase or uppercase hex digits.
pub fn is_key_hash(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Read a PEM file of CA certificates (`[[carrier]] xsi_ca_file`): at least one
/// certificate, each a readable one. The error says why, without the file's contents.
pub fn load_ca_file(path: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{path:?} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

fn is_host(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || (!s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// The semantic checks, with the environment abstracted for tests.
pub fn validate(config: &Config, env_set: &dyn Fn(&str) -> bool) -> Result<(), ConfigError> {
    fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(key, message)
    }
    // [sip]
    if config.sip.listen.is_empty() {
        return Err(bad("sip.listen", "at least one listener is needed"));
    }
    for (i, l) in config.sip.listen.iter().enumerate() {
        Listen::parse(l).map_err(|m| bad(format!("sip.listen[{i}]"), m))?;
    }
    if let Some(a) = &config.sip.advertise {
        if !is_host(a) {
            return Err(bad(
                "sip.advertise",
                format!("{a:?} is not an address or host name"),
            ));
        }
    }
    // [media]
    config.media.bind.parse::<IpAddr>().map_err(|_| {
        bad(
            "media.bind",
            format!("{:?} is not an IP address", config.media.bind),
        )
    })?;
    if let Some(a) = &config.media.advertise {
        a.parse::<IpAddr>()
            .map_err(|_| bad("media.advertise", format!("{a:?} is not an IP address")))?;
    }
    crate::media::ports::PortPool::parse(&config.media.ports)
        .map_err(|e| bad("media.ports", e.to_string()))?;
    if config.media.codecs.is_empty() {
        return Err(bad(
            "media.codecs",
            "at least one codec (PCMU, PCMA) is needed",
        ));
    }
    let mut seen = HashSet::new();
    for (i, c) in config.media.codecs.iter().enumerate() {
        let codec = crate::media::Codec::from_name(c).ok_or_else(|| {
            bad(
                format!("media.codecs[{i}]"),
                format!("unknown codec {c:?} (PCMU or PCMA)"),
            )
        })?;
        if !seen.insert(codec) {
            return Err(bad(
                format!("media.codecs[{i}]"),
                format!("{c:?} is listed twice"),
            ));
        }
    }
    if !HOLDBACK_MS_RANGE.contains(&config.media.holdback_ms) {
        return Err(bad(
            "media.holdback_ms",
            format!(
                "{} is out of range {}..={}",
                config.media.holdback_ms,
                HOLDBACK_MS_RANGE.start(),
                HOLDBACK_MS_RANGE.end()
            ),
        ));
    }
    if !(1..=3600).contains(&config.media.rtp_timeout_s) {
        return Err(bad("media.rtp_timeout_s", "must be 1..=3600"));
    }
    // [http], [dnis], [payment], [audit]
    config.http.listen.parse::<SocketAddr>().map_err(|_| {
        bad(
            "http.listen",
            format!(
                "{:?} is not an ADDR:PORT socket address",
                config.http.listen
            ),
        )
    })?;
    if !(1..=3600).contains(&config.dnis.ttl_s) {
        return Err(bad("dnis.ttl_s", "must be 1..=3600"));
    }
    validate_payment(&config.payment, env_set)?;
    if config.audit.path.trim().is_empty() {
        return Err(bad("audit.path", "must not be empty"));
    }
    // [[carrier]]
    let mut ids = HashSet::new();
    for (i, c) in config.carrier.iter().enumerate() {
        let k = |f: &str| format!("carrier[{i}].{f}");
        if c.id.is_empty() {
            return Err(bad(k("id"), "must not be empty"));
        }
        if !ids.insert(c.id.as_str()) {
            return Err(bad(k("id"), format!("duplicate carrier id {:?}", c.id)));
        }
        for (j, p) in c.peers.iter().enumerate() {
            parse_peer(p).map_err(|m| bad(k(&format!("peers[{j}]")), m))?;
        }
        if c.step_timeout_s == 0 || c.step_timeout_s > 120 {
            return Err(bad(k("step_timeout_s"), "must be between 1 and 120"));
        }
        if let Some(path) = &c.xsi_ca_file {
            if c.kind != CarrierKind::Broadworks {
                return Err(bad(
                    k("xsi_ca_file"),
                    "only valid with kind = \"broadworks\"",
                ));
            }
            load_ca_file(path).map_err(|m| bad(k("xsi_ca_file"), m))?;
        }
        if c.kind == CarrierKind::Broadworks {
            match &c.xsi_url {
                Some(u) if is_http_url(u) => {}
                Some(u) => return Err(bad(k("xsi_url"), format!("{u:?} is not an http(s) URL"))),
                None => return Err(bad(k("xsi_url"), "required for kind = \"broadworks\"")),
            }
            if c.user.as_deref().is_none_or(str::is_empty) {
                return Err(bad(k("user"), "required for kind = \"broadworks\""));
            }
            match &c.password_env {
                Some(v) if env_set(v) => {}
                Some(v) => {
                    return Err(bad(
                        k("password_env"),
                        format!("environment variable {v} is not set"),
                    ))
                }
                None => return Err(bad(k("password_env"), "required for kind = \"broadworks\"")),
            }
        }
    }
    // [[tenant]]
    let mut tids = HashSet::new();
    let mut numbers: HashSet<String> = HashSet::new();
    for (i, t) in config.tenant.iter().enumerate() {
        let k = |f: &str| format!("tenant[{i}].{f}");
        if t.id.is_empty() {
            return Err(bad(k("id"), "must not be empty"));
        }
        if !tids.insert(t.id.as_str()) {
            return Err(bad(k("id"), format!("duplicate tenant id {:?}", t.id)));
        }
        if config.carrier(&t.carrier).is_none() {
            return Err(bad(
                k("carrier"),
                format!("no [[carrier]] with id {:?}", t.carrier),
            ));
        }
        for (j, key) in t.api_keys.iter().enumerate() {
            if !is_key_hash(key) {
                return Err(bad(
                    k(&format!("api_keys[{j}]")),
                    "expected sha256:<64 hex digits> (see `tonewall hash-key`)",
                ));
            }
        }
        if t.dnis.is_empty() {
            return Err(bad(k("dnis"), "at least one number is needed"));
        }
        for (j, d) in t.dnis.iter().enumerate() {
            for n in parse_dnis_entry(d).map_err(|m| bad(k(&format!("dnis[{j}]")), m))? {
                if !numbers.insert(n) {
                    return Err(bad(
                        k(&format!("dnis[{j}]")),
                        "overlaps a number listed before",
                    ));
                }
            }
        }
        if t.fields.is_empty() {
            return Err(bad(k("fields"), "at least one field is needed"));
        }
        let mut fs = HashSet::new();
        for (j, f) in t.fields.iter().enumerate() {
            if !FIELD_NAMES.contains(&f.as_str()) {
                return Err(bad(
                    k(&format!("fields[{j}]")),
                    format!("unknown field {f:?} (pan, expiry, cvv)"),
                ));
            }
            if !fs.insert(f.as_str()) {
                return Err(bad(
                    k(&format!("fields[{j}]")),
                    format!("{f:?} is listed twice"),
                ));
            }
        }
        if let Some(u) = &t.webhook_url {
            if !is_http_url(u) {
                return Err(bad(
                    k("webhook_url"),
                    format!("{u:?} is not an http(s) URL"),
                ));
            }
            match &t.webhook_secret_env {
                Some(v) if env_set(v) => {}
                Some(v) => {
                    return Err(bad(
                        k("webhook_secret_env"),
                        format!("environment variable {v} is not set"),
                    ))
                }
                None => return Err(bad(k("webhook_secret_env"), "required with webhook_url")),
            }
        }
    }
    Ok(())
}

fn validate_payment(p: &PaymentConfig, env_set: &dyn Fn(&str) -> bool) -> Result<(), ConfigError> {
    fn bad(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(key, message)
    }
    if !(1..=300).contains(&p.timeout_s) {
        return Err(bad("payment.timeout_s", "must be 1..=300"));
    }
    match p.gateway.as_str() {
        "sandbox" => {
            for (k, v) in [
                ("payment.url", &p.url),
                ("payment.merchant_account", &p.merchant_account),
                ("payment.api_key_env", &p.api_key_env),
            ] {
                if v.is_some() {
                    return Err(bad(k, "only used with gateway = \"adyen\""));
                }
            }
            Ok(())
        }
        "adyen" => {
            match &p.url {
                Some(u) if is_http_url(u) => {}
                Some(u) => return Err(bad("payment.url", format!("{u:?} is not an http(s) URL"))),
                None => return Err(bad("payment.url", "required for gateway = \"adyen\"")),
            }
            if p.merchant_account
                .as_deref()
                .is_none_or(|m| m.trim().is_empty())
            {
                return Err(bad(
                    "payment.merchant_account",
                    "required for gateway = \"adyen\"",
                ));
            }
            match &p.api_key_env {
                Some(v) if env_set(v) => Ok(()),
                Some(v) => Err(bad(
                    "payment.api_key_env",
                    format!("environment variable {v} is not set"),
                )),
                None => Err(bad(
                    "payment.api_key_env",
                    "required for gateway = \"adyen\"",
                )),
            }
        }
        other => Err(bad(
            "payment.gateway",
            format!("unknown gateway {other:?} (sandbox, adyen)"),
        )),
    }
}

#[cfg(test)]
mod tests;
