//! Webhooks (SPEC §7): each event of a tenant that has a `webhook_url` is POSTed there as
//! its JSON, signed `X-Tonewall-Signature: sha256=<hex HMAC-SHA256 of the body>` with the
//! secret read from `webhook_secret_env`. One queue (and one delivery task) per session,
//! so a session's events arrive in order; failures are retried with exponential back-off.
//!
//! Must never: block the caller (`send` only enqueues); log a body or the secret; deliver
//! a session's event before the one emitted before it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::config::Config;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Tonewall-Signature";

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the right signature of `body` (constant-time compare).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Where one tenant's events go.
pub struct Target {
    pub url: String,
    pub secret: Zeroizing<Vec<u8>>,
}

/// Delivery tunables.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Wait before the first retry; doubled after each failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per event before it is dropped (with a warning).
    pub max_attempts: u32,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_attempts: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

struct Job {
    tenant: Arc<str>,
    session: Arc<str>,
    body: String,
    last: bool,
}

/// The webhook sender. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::UnboundedSender<Job>,
    tenants: Arc<HashMap<Arc<str>, Arc<Target>>>,
}

impl Webhooks {
    /// Start the dispatcher (needs a tokio runtime).
    pub fn start(targets: HashMap<String, Target>, options: WebhookOptions) -> Webhooks {
        let tenants: Arc<HashMap<Arc<str>, Arc<Target>>> = Arc::new(
            targets
                .into_iter()
                .map(|(k, v)| (Arc::from(k.as_str()), Arc::new(v)))
                .collect(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(rx, tenants.clone(), options));
        Webhooks { tx, tenants }
    }

    /// The tenants with a `webhook_url`; `None` when there are none. Secrets are read from
    /// their environment variables now.
    pub fn from_config(
        config: &Config,
        options: WebhookOptions,
    ) -> anyhow::Result<Option<Webhooks>> {
        let mut targets = HashMap::new();
        for t in &config.tenant {
            let Some(url) = &t.webhook_url else { continue };
            let env = t.webhook_secret_env.as_deref().ok_or_else(|| {
                anyhow::anyhow!("tenant {}: webhook_secret_env is required", t.id)
            })?;
            let secret = std::env::var(env).map_err(|_| {
                anyhow::anyhow!("tenant {}: environment variable {env} is not set", t.id)
            })?;
            targets.insert(
                t.id.clone(),
                Target {
                    url: url.clone(),
                    secret: Zeroizing::new(secret.into_bytes()),
                },
            );
        }
        if targets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Webhooks::start(targets, options)))
    }

    /// Whether this tenant has a webhook.
    pub fn enabled(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// Queue one event body for delivery; `last` closes the session's queue after it.
    pub fn send(&self, tenant: &Arc<str>, session: &Arc<str>, body: String, last: bool) {
        if self.enabled(tenant) {
            let _ = self.tx.send(Job {
                tenant: tenant.clone(),
                session: session.clone(),
                body,
                last,
            });
        }
    }
}

async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Job>,
    tenants: Arc<HashMap<Arc<str>, Arc<Target>>>,
    options: WebhookOptions,
) {
    let client = match reqwest::Client::builder().timeout(options.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build the HTTP client");
            return;
        }
    };
    let mut queues: HashMap<Arc<str>, mpsc::UnboundedSender<String>> = HashMap::new();
    while let Some(job) = rx.recv().await {
        let Some(target) = tenants.get(&job.tenant) else {
            continue;
        };
        let q = queues.entry(job.session.clone()).or_insert_with(|| {
            let (qtx, qrx) = mpsc::unbounded_channel();
            tokio::spawn(deliver(
                qrx,
                client.clone(),
                target.clone(),
                job.session.clone(),
                options.clone(),
            ));
            qtx
        });
        let _ = q.send(job.body);
        if job.last {
            // Dropping the sender lets the session's task end after its queue drains.
            queues.remove(&job.session);
        }
    }
}

async fn deliver(
    mut rx: mpsc::UnboundedReceiver<String>,
    client: reqwest::Client,
    target: Arc<Target>,
    session: Arc<str>,
    options: WebhookOptions,
) {
    while let Some(body) = rx.recv().await {
        let signature = sign(&target.secret, body.as_bytes());
        let mut backoff = options.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = client
                .post(&target.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .body(body.clone())
                .send()
                .await;
            let why = match result {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) if e.is_timeout() => "timeout".to_string(),
                Err(_) => "connection failed".to_string(),
            };
            metrics::counter!("tonewall_webhook_failures_total").increment(1);
            if attempt >= options.max_attempts {
                tracing::warn!(session = %session, attempts = attempt, reason = %why, "webhook event dropped");
                break;
            }
            tracing::debug!(session = %session, attempt, reason = %why, "webhook retry");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.max_backoff);
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        // RFC 4231 test case 2.
        let s = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &s));
        assert!(!verify(b"other", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"x", "sha256=zz"));
        assert!(!verify(b"Jefe", b"x", "md5=00"));
    }
}
