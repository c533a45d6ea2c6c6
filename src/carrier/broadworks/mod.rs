//! BroadWorks Xsi adapter (kind `broadworks`), following docs/carrier.md: Xsi-Actions over
//! HTTP(S) with Basic auth for call control (`actions`), Xsi-Events on one streaming channel
//! per adapter for the normalised event stream (`events`, `stream`), kept alive by refreshing
//! the channel and subscriptions before they expire (`lifetime`, `refresh`) and deleted when
//! the adapter stops, and the Xsi XML both speak (`xml`).
//!
//! Must never: show the password (Debug redacts it; it is read from the environment
//! variable `password_env` names, never from the config file); start its events task
//! outside a tokio runtime (it starts on the first `watch`); see card digits.

pub mod actions;
pub mod events;
pub mod lifetime;
pub mod refresh;
pub mod stream;
pub mod xml;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use reqwest::Method;
use secrecy::SecretString;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use self::actions::{query, seg, XsiClient};
pub use self::events::Timing;
use self::events::{watch_user, Shared};
use super::{CallInfo, Carrier, CarrierError, CarrierEvent, CarrierResult};
use crate::config::CarrierConfig;

/// The BroadWorks adapter for one `[[carrier]]`.
pub struct Broadworks {
    id: String,
    host: Option<String>,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Broadworks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadworks")
            .field("id", &self.id)
            .field("client", &self.shared.client)
            .field("channel_set_id", &self.shared.set_id)
            .finish()
    }
}

impl Broadworks {
    /// Build from a `[[carrier]]` of kind `broadworks`; the password comes from the
    /// environment variable named by `password_env`.
    pub fn from_config(c: &CarrierConfig) -> anyhow::Result<Broadworks> {
        let url = c
            .xsi_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("carrier {}: xsi_url is required", c.id))?;
        let user = c
            .user
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("carrier {}: user is required", c.id))?;
        let var = c
            .password_env
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("carrier {}: password_env is required", c.id))?;
        let password = std::env::var(var).map_err(|_| {
            anyhow::anyhow!("carrier {}: environment variable {var} is not set", c.id)
        })?;
        let roots = match &c.xsi_ca_file {
            Some(path) => crate::config::load_ca_file(path)
                .map_err(|m| anyhow::anyhow!("carrier {}: xsi_ca_file: {m}", c.id))?,
            None => Vec::new(),
        };
        Broadworks::with_roots(&c.id, url, user, SecretString::from(password), roots)
    }

    /// Build from parts (`xsi_url` as in the config, e.g. `https://xsp.example.net`).
    pub fn new(
        id: &str,
        xsi_url: &str,
        user: &str,
        password: SecretString,
    ) -> anyhow::Result<Broadworks> {
        Broadworks::with_roots(id, xsi_url, user, password, Vec::new())
    }

    /// As `new`, with `extra_roots` (a private CA's certificates, `xsi_ca_file`) trusted
    /// besides the built-in web roots for HTTPS to the XSP.
    pub fn with_roots(
        id: &str,
        xsi_url: &str,
        user: &str,
        password: SecretString,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> anyhow::Result<Broadworks> {
        let parsed = reqwest::Url::parse(xsi_url)
            .map_err(|e| anyhow::anyhow!("carrier {id}: xsi_url {xsi_url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("carrier {id}: xsi_url {xsi_url:?} is not an http(s) URL");
        }
        let client = XsiClient::with_roots(xsi_url, user, password, extra_roots)?;
        let set_id = format!("tonewall-{:032x}", rand::random::<u128>());
        Ok(Broadworks {
            id: id.to_owned(),
            host: parsed.host_str().map(str::to_owned),
            shared: Arc::new(Shared::new(client, set_id, Timing::default())),
            task: Mutex::new(None),
        })
    }

    /// Replace the clocks (tests shorten them). Takes effect only before the first `watch`.
    pub fn with_timing(mut self, timing: Timing) -> Broadworks {
        match Arc::get_mut(&mut self.shared) {
            Some(sh) => {
                sh.timing = timing;
                sh.client.timeout = timing.request;
            }
            None => tracing::warn!(carrier = %self.id, "xsi: timing changed after start, ignored"),
        }
        self
    }

    /// This adapter's `channelSetId`.
    pub fn channel_set_id(&self) -> &str {
        &self.shared.set_id
    }

    /// Start the events task if it is not running (inside a tokio runtime).
    fn start(&self) {
        let mut t = match self.task.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if t.is_none() {
            *t = Some(tokio::spawn(events::run(self.shared.clone())));
        }
    }

    fn call_path(&self, user: &str, tail: &str) -> String {
        self.shared
            .client
            .actions_url(&format!("/user/{}/calls{tail}", seg(user)))
    }

    async fn empty(&self, action: &'static str, method: Method, url: String) -> CarrierResult<()> {
        self.shared
            .client
            .send(action, method, &url, None)
            .await
            .map(|_| ())
    }

    async fn get_call(&self, user: &str, call: &str) -> CarrierResult<CallInfo> {
        let url = self.call_path(user, &format!("/{}", seg(call)));
        let body = self
            .shared
            .client
            .send("call", Method::GET, &url, None)
            .await?;
        xml::parse_call(&body).map_err(|e| bad("call", e))
    }

    async fn list_calls(&self, user: &str) -> CarrierResult<Vec<CallInfo>> {
        let url = self.call_path(user, "");
        let body = self
            .shared
            .client
            .send("calls", Method::GET, &url, None)
            .await?;
        let listed = xml::parse_calls(&body).map_err(|e| bad("calls", e))?;
        let mut out = Vec::with_capacity(listed.len());
        for (c, has_state) in listed {
            if has_state {
                out.push(c);
                continue;
            }
            // BroadWorks lists ids only: read each call for its state and remote party.
            match self.get_call(user, &c.call_id).await {
                Ok(full) => out.push(full),
                Err(CarrierError::Refused { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

impl Broadworks {
    /// Stop the events task and delete the open channel (best effort), waiting for the
    /// `DELETE`. A later `watch` starts a new channel.
    pub async fn close(&self) {
        let task = self.take_task();
        if let Some(h) = task {
            h.abort();
            let _ = h.await;
        }
        if let Some(id) = self.shared.channel.send_replace(None) {
            refresh::delete_channel(&self.shared, &id).await;
        }
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        match self.task.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

impl Drop for Broadworks {
    /// Stops the events task and, inside a runtime, deletes the open channel in the
    /// background (best effort).
    fn drop(&mut self) {
        let Some(h) = self.take_task() else {
            return;
        };
        h.abort();
        let Some(id) = self.shared.channel.send_replace(None) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let sh = self.shared.clone();
            rt.spawn(async move { refresh::delete_channel(&sh, &id).await });
        }
    }
}

fn bad(action: &'static str, e: xml::XmlError) -> CarrierError {
    CarrierError::BadResponse {
        action,
        detail: e.0,
    }
}

impl Carrier for Broadworks {
    fn id(&self) -> &str {
        &self.id
    }

    fn hold<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        Box::pin(async move {
            let url = self.call_path(user, &format!("/{}/Hold", seg(call)));
            self.empty("Hold", Method::PUT, url).await
        })
    }

    fn resume<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        Box::pin(async move {
            let url = self.call_path(user, &format!("/{}/Talk", seg(call)));
            self.empty("Talk", Method::PUT, url).await
        })
    }

    fn originate<'a>(
        &'a self,
        user: &'a str,
        address: &'a str,
    ) -> BoxFuture<'a, CarrierResult<String>> {
        Box::pin(async move {
            let url = self.call_path(user, &format!("/new?address={}", query(address)));
            let body = self
                .shared
                .client
                .send("new", Method::POST, &url, None)
                .await?;
            xml::parse_call_start(&body).map_err(|e| bad("new", e))
        })
    }

    fn blind_transfer<'a>(
        &'a self,
        user: &'a str,
        call: &'a str,
        address: &'a str,
    ) -> BoxFuture<'a, CarrierResult<()>> {
        Box::pin(async move {
            let tail = format!("/{}/BlindTransfer?address={}", seg(call), query(address));
            let url = self.call_path(user, &tail);
            self.empty("BlindTransfer", Method::PUT, url).await
        })
    }

    fn hang_up<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        Box::pin(async move {
            let url = self.call_path(user, &format!("/{}", seg(call)));
            self.empty("Release", Method::DELETE, url).await
        })
    }

    fn reconnect<'a>(&'a self, user: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        Box::pin(async move {
            let url = self.call_path(user, "/Reconnect");
            self.empty("Reconnect", Method::PUT, url).await
        })
    }

    fn calls<'a>(&'a self, user: &'a str) -> BoxFuture<'a, CarrierResult<Vec<CallInfo>>> {
        Box::pin(self.list_calls(user))
    }

    fn call<'a>(&'a self, user: &'a str, call: &'a str) -> BoxFuture<'a, CarrierResult<CallInfo>> {
        Box::pin(self.get_call(user, call))
    }

    fn watch<'a>(&'a self, user: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        Box::pin(async move {
            self.start();
            watch_user(&self.shared, user).await
        })
    }

    fn events(&self) -> broadcast::Receiver<CarrierEvent> {
        self.shared.tx.subscribe()
    }

    fn user_uri(&self, user: &str) -> Option<String> {
        if user.contains('@') {
            return Some(format!("sip:{user}"));
        }
        self.host.as_ref().map(|h| format!("sip:{user}@{h}"))
    }

    fn close<'a>(&'a self) -> BoxFuture<'a, ()> {
        Box::pin(Broadworks::close(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bw(url: &str) -> Broadworks {
        Broadworks::new(
            "bw",
            url,
            "admin@example.net",
            SecretString::from("s3cret-pw"),
        )
        .unwrap()
    }

    #[test]
    fn user_uri() {
        let b = bw("https://xsp.example.net:8443/");
        assert_eq!(
            b.user_uri("rep1@sim.example").as_deref(),
            Some("sip:rep1@sim.example")
        );
        assert_eq!(
            b.user_uri("2001").as_deref(),
            Some("sip:2001@xsp.example.net")
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let b = bw("http://127.0.0.1:1");
        let d = format!("{b:?}");
        assert!(!d.contains("s3cret-pw"), "{d}");
        assert!(d.contains("admin@example.net"));
        assert!(b.channel_set_id().starts_with("tonewall-"));
        assert_ne!(
            b.channel_set_id(),
            bw("http://127.0.0.1:1").channel_set_id()
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(Broadworks::new("bw", "ftp://x", "u", SecretString::from("p")).is_err());
        assert!(Broadworks::new("bw", "not a url", "u", SecretString::from("p")).is_err());
    }
}
