//! The Xsi-Events side of the adapter: one streaming channel per adapter (its own random
//! `channelSetId`), subscriptions to the Advanced Call package per watched user,
//! acknowledgement of every event, de-duplication by `eventID`, heartbeats, and recovery
//! (`StreamLost`, a new channel with backoff, re-subscription, calls re-read, `Released`
//! for vanished calls, `StreamRestored`) as docs/carrier.md §Xsi-Events says. The channel's
//! and subscriptions' refreshes are scheduled by `lifetime` and sent by `refresh`.
//!
//! Must never: hold a std lock across an `.await`; block the stream on an acknowledgement;
//! panic on anything the XSP sends; log a credential.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::actions::{seg, XsiClient};
use super::lifetime::{granted, Lifetimes};
use super::refresh;
use super::stream::DocSplitter;
use super::xml::{self, EventData, StreamDoc, XsiEvent};
use crate::carrier::{CallEvent, CallEventKind, CarrierError, CarrierEvent, CarrierResult};

/// The adapter's clocks (defaults from docs/carrier.md; tests shorten them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Heartbeat interval; the stream is lost after 2× this without a byte.
    pub heartbeat: Duration,
    /// First reconnection delay, doubled per failed attempt…
    pub backoff_min: Duration,
    /// …up to this.
    pub backoff_max: Duration,
    /// Limit on each Xsi request (and on waiting for a channel to open).
    pub request: Duration,
    /// The `expires` asked for the channel and each subscription (whole seconds); each is
    /// refreshed at 80 % of what the server granted.
    pub expires: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_secs(15),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            request: Duration::from_secs(5),
            expires: Duration::from_secs(u64::from(EXPIRES)),
        }
    }
}

impl Timing {
    /// `expires` in whole seconds for a request body (at least 1).
    pub fn expires_secs(&self) -> u32 {
        u32::try_from(self.expires.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// The delay before reconnection attempt `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let f = 1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX);
        self.backoff_min
            .checked_mul(f)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// The `applicationId` of our subscriptions.
pub const APPLICATION_ID: &str = "tonewall";
const EXPIRES: u32 = 3600;
const DEDUP_CAP: usize = 4096;

/// Recently seen event ids (bounded).
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Dedup {
    /// `true` the first time an id is seen.
    pub fn first(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= DEDUP_CAP {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// State shared by the adapter's actions and its events task.
pub struct Shared {
    pub client: XsiClient,
    pub set_id: String,
    pub timing: Timing,
    pub tx: broadcast::Sender<CarrierEvent>,
    /// The open channel's id; `None` while the stream is down.
    pub channel: watch::Sender<Option<String>>,
    /// Subscribed users. The lock serialises subscribing.
    pub watched: tokio::sync::Mutex<BTreeSet<String>>,
    /// Calls known per user (call id → remote), to tell which vanished during an outage.
    pub known: Mutex<HashMap<String, HashMap<String, Option<String>>>>,
    pub dedup: Mutex<Dedup>,
    /// When the channel and each subscription are refreshed.
    pub lives: Mutex<Lifetimes>,
    /// Wakes the events task when `lives` changed outside it.
    pub resched: tokio::sync::Notify,
}

impl Shared {
    pub fn new(client: XsiClient, set_id: String, timing: Timing) -> Shared {
        Shared {
            client,
            set_id,
            timing,
            tx: broadcast::channel(256).0,
            channel: watch::channel(None).0,
            watched: tokio::sync::Mutex::new(BTreeSet::new()),
            known: Mutex::new(HashMap::new()),
            dedup: Mutex::new(Dedup::default()),
            lives: Mutex::new(Lifetimes::new()),
            resched: tokio::sync::Notify::new(),
        }
    }

    /// Change the refresh schedule and wake the events task.
    pub fn with_lives<R>(&self, f: impl FnOnce(&mut Lifetimes) -> R) -> R {
        let r = self.lives_quietly(f);
        self.resched.notify_one();
        r
    }

    /// Read or change the schedule without waking the events task (it is the caller).
    fn lives_quietly<R>(&self, f: impl FnOnce(&mut Lifetimes) -> R) -> R {
        let mut g = match self.lives.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub(super) fn emit(&self, e: CarrierEvent) {
        // No receiver is not an error: nobody is listening yet.
        let _ = self.tx.send(e);
    }

    fn with_known<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, HashMap<String, Option<String>>>) -> R,
    ) -> R {
        let mut g = match self.known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn first_time(&self, id: &str) -> bool {
        match self.dedup.lock() {
            Ok(mut g) => g.first(id),
            Err(p) => p.into_inner().first(id),
        }
    }
}

/// The ids of the calls on a user's line.
pub async fn call_ids(sh: &Shared, user: &str) -> CarrierResult<Vec<String>> {
    let url = sh.client.actions_url(&format!("/user/{}/calls", seg(user)));
    let body = sh.client.send("calls", Method::GET, &url, None).await?;
    let calls = xml::parse_calls(&body).map_err(|e| CarrierError::BadResponse {
        action: "calls",
        detail: e.0,
    })?;
    Ok(calls.into_iter().map(|(c, _)| c.call_id).collect())
}

/// Subscribe `user` and put the subscription on the refresh schedule.
pub(super) async fn subscribe(sh: &Shared, user: &str) -> CarrierResult<String> {
    let url = sh.client.events_url(&format!("/user/{}", seg(user)));
    let body = xml::subscription_body(&sh.set_id, sh.timing.expires_secs(), APPLICATION_ID);
    let answer = sh
        .client
        .send("subscribe", Method::POST, &url, Some(body))
        .await?;
    let (id, said) =
        xml::parse_subscription_grant(&answer).map_err(|e| CarrierError::BadResponse {
            action: "subscribe",
            detail: e.0,
        })?;
    let g = granted(said, sh.timing.expires);
    sh.with_lives(|l| l.subscribed(user, &id, g, std::time::Instant::now()));
    Ok(id)
}

/// Follow a user's line: wait for the channel, subscribe once, learn the calls already on it.
pub async fn watch_user(sh: &Shared, user: &str) -> CarrierResult<()> {
    if sh.watched.lock().await.contains(user) {
        return Ok(());
    }
    let mut rx = sh.channel.subscribe();
    match tokio::time::timeout(sh.timing.request, rx.wait_for(Option::is_some)).await {
        Ok(Ok(_)) => {}
        _ => {
            return Err(CarrierError::Unreachable {
                action: "subscribe",
                detail: "the event channel is not open".into(),
            })
        }
    }
    let mut w = sh.watched.lock().await;
    if w.contains(user) {
        return Ok(());
    }
    let sub = subscribe(sh, user).await?;
    tracing::info!(user, subscription = %sub, "xsi: subscribed");
    w.insert(user.to_owned());
    drop(w);
    match call_ids(sh, user).await {
        Ok(ids) => sh.with_known(|k| {
            let m = k.entry(user.to_owned()).or_default();
            for id in ids {
                m.entry(id).or_insert(None);
            }
        }),
        Err(e) => tracing::warn!(user, error = %e, "xsi: could not list calls after subscribing"),
    }
    Ok(())
}

/// The events task: keeps a channel open for the adapter's lifetime.
pub async fn run(sh: Arc<Shared>) {
    let mut failures = 0u32;
    let mut recovering = false;
    loop {
        let was_up = session(&sh, recovering).await;
        sh.channel.send_replace(None);
        sh.with_lives(Lifetimes::channel_closed);
        if was_up {
            failures = 0;
            sh.emit(CarrierEvent::StreamLost);
            recovering = true;
        }
        tokio::time::sleep(sh.timing.backoff(failures)).await;
        failures = failures.saturating_add(1);
    }
}

/// Reads the body into chunks; ends (dropping `tx`) when the body ends or fails.
async fn read_body(mut resp: Response, tx: mpsc::Sender<Bytes>) {
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if tx.send(c).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "xsi: event stream read failed");
                return;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One channel, from opening to loss. `true` if it came up (its `Channel` document arrived).
async fn session(sh: &Arc<Shared>, recovering: bool) -> bool {
    let body = xml::channel_body(&sh.set_id, sh.timing.expires_secs());
    let resp = match sh.client.open_channel(body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "xsi: could not open the event channel");
            return false;
        }
    };
    let (chunk_tx, mut chunks) = mpsc::channel(32);
    let _reader = AbortOnDrop(tokio::spawn(read_body(resp, chunk_tx)));
    let mut split = DocSplitter::new();
    let mut channel_id: Option<String> = None;
    let hb_every = sh.timing.heartbeat;
    let mut hb = tokio::time::interval_at(Instant::now() + hb_every, hb_every);
    hb.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut beats: JoinSet<bool> = JoinSet::new();
    // Refreshes and re-subscriptions; `false` when the channel is gone.
    let mut work: JoinSet<bool> = JoinSet::new();
    let mut restoring: JoinSet<()> = JoinSet::new();
    let mut last_rx = Instant::now();
    loop {
        let silence = if channel_id.is_some() {
            hb_every.saturating_mul(2)
        } else {
            sh.timing.request
        };
        let due = if channel_id.is_some() {
            sh.lives_quietly(|l| l.next_due()).map(Instant::from_std)
        } else {
            None
        };
        tokio::select! {
            c = chunks.recv() => {
                let Some(c) = c else {
                    tracing::warn!("xsi: event stream ended");
                    return channel_id.is_some();
                };
                last_rx = Instant::now();
                split.push(&c);
                while let Some(doc) = split.next_doc() {
                    let doc = match doc {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(error = %e, "xsi: skipped bytes on the event stream");
                            continue;
                        }
                    };
                    match xml::parse_stream_doc(&doc) {
                        Ok(StreamDoc::Channel { channel_id: id, expires }) if channel_id.is_none() => {
                            tracing::info!(channel = %id, "xsi: event channel open");
                            let g = granted(expires, sh.timing.expires);
                            sh.with_lives(|l| l.channel_opened(&id, g, std::time::Instant::now()));
                            channel_id = Some(id.clone());
                            sh.channel.send_replace(Some(id.clone()));
                            if recovering {
                                restoring.spawn(recover(sh.clone(), id.clone()));
                            }
                            hb.reset();
                            last_rx = Instant::now();
                        }
                        Ok(StreamDoc::Event(ev)) => {
                            if !on_event(sh, ev) {
                                tracing::warn!("xsi: the channel was terminated");
                                return channel_id.is_some();
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "xsi: unreadable document on the event stream"),
                    }
                }
            }
            _ = hb.tick(), if channel_id.is_some() => {
                if let Some(id) = channel_id.clone() {
                    let sh = sh.clone();
                    beats.spawn(async move { heartbeat(&sh, &id).await });
                }
            }
            Some(ok) = beats.join_next() => {
                if !matches!(ok, Ok(true)) {
                    return channel_id.is_some();
                }
            }
            Some(done) = restoring.join_next() => {
                if done.is_ok() {
                    sh.emit(CarrierEvent::StreamRestored);
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let now = std::time::Instant::now();
                for d in sh.lives_quietly(|l| l.take_due(now)) {
                    work.spawn(refresh::run(sh.clone(), d));
                }
            }
            _ = sh.resched.notified() => {}
            Some(alive) = work.join_next() => {
                if matches!(alive, Ok(false)) {
                    tracing::warn!("xsi: the event channel is gone");
                    return channel_id.is_some();
                }
            }
            _ = tokio::time::sleep_until(last_rx + silence) => {
                tracing::warn!(ms = silence.as_millis() as u64, "xsi: event stream silent");
                return channel_id.is_some();
            }
        }
    }
}

async fn heartbeat(sh: &Shared, channel_id: &str) -> bool {
    let url = sh
        .client
        .events_url(&format!("/channel/{}/heartbeat", seg(channel_id)));
    match sh.client.send("heartbeat", Method::PUT, &url, None).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "xsi: heartbeat failed");
            false
        }
    }
}

/// Handle one event; `false` when the channel is terminated.
fn on_event(sh: &Arc<Shared>, ev: XsiEvent) -> bool {
    let ack = sh.clone();
    let id = ev.event_id.clone();
    tokio::spawn(async move {
        let url = ack.client.events_url("/channel/eventresponse");
        let body = xml::event_response_body(&id);
        if let Err(e) = ack
            .client
            .send("eventresponse", Method::POST, &url, Some(body))
            .await
        {
            tracing::warn!(error = %e, "xsi: event acknowledgement failed");
        }
    });
    if !sh.first_time(&ev.event_id) {
        tracing::debug!("xsi: duplicate event ignored");
        return true;
    }
    match &ev.data {
        EventData::Call { .. } => {
            if let Some(ce) = ev.normalise() {
                sh.with_known(|k| {
                    let m = k.entry(ce.user.clone()).or_default();
                    if ce.kind == CallEventKind::Released {
                        m.remove(&ce.call_id);
                    } else {
                        m.insert(ce.call_id.clone(), ce.remote.clone());
                    }
                });
                sh.emit(CarrierEvent::Call(ce));
            }
        }
        EventData::SubscriptionTerminated => {
            if let Some(user) = ev.user() {
                // Re-subscribed by the refresher (with backoff) if it is watched.
                sh.with_lives(|l| l.sub_gone(user, std::time::Instant::now()));
            }
        }
        EventData::ChannelTerminated => return false,
        EventData::Other(_) => {}
    }
    true
}

/// After a new channel opened: re-subscribe everyone (retrying failures with the backoff
/// until all are subscribed), re-read their calls, and report `Released` for each known call
/// that is gone. The caller emits `StreamRestored` when this returns.
async fn recover(sh: Arc<Shared>, channel_id: String) {
    let users: Vec<String> = sh.watched.lock().await.iter().cloned().collect();
    loop {
        let pending = sh.lives_quietly(|l| l.unsubscribed());
        if pending.is_empty() {
            if sh.lives_quietly(|l| l.all_subscribed()) {
                break;
            }
            // A re-subscription scheduled by the refresher is under way.
            tokio::time::sleep(sh.timing.backoff_min).await;
            continue;
        }
        let mut worst = 0u32;
        for user in &pending {
            if let Err(e) = subscribe(&sh, user).await {
                tracing::warn!(user, error = %e, "xsi: re-subscription failed");
                worst = worst.max(sh.with_lives(|l| l.recovery_failed(user)));
            }
        }
        if worst > 0 {
            tokio::time::sleep(sh.timing.backoff(worst - 1)).await;
        }
    }
    for user in users.iter() {
        let ids = match call_ids(&sh, user).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(user, error = %e, "xsi: could not re-read calls");
                continue;
            }
        };
        let vanished = sh.with_known(|k| {
            let m = k.entry(user.clone()).or_default();
            let gone: Vec<(String, Option<String>)> = m
                .iter()
                .filter(|(id, _)| !ids.contains(id))
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect();
            for (id, _) in &gone {
                m.remove(id);
            }
            for id in &ids {
                m.entry(id.clone()).or_insert(None);
            }
            gone
        });
        for (call_id, remote) in vanished {
            sh.emit(CarrierEvent::Call(CallEvent {
                user: user.clone(),
                event_id: format!("recovered:{channel_id}:{call_id}"),
                call_id,
                kind: CallEventKind::Released,
                remote,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let t = Timing::default();
        let ms: Vec<u128> = (0..8).map(|n| t.backoff(n).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(t.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn dedup_is_bounded() {
        let mut d = Dedup::default();
        assert!(d.first("a"));
        assert!(!d.first("a"));
        for i in 0..DEDUP_CAP {
            d.first(&i.to_string());
        }
        assert!(d.first("a"), "the oldest id is forgotten");
        assert!(d.seen.len() <= DEDUP_CAP);
    }
}
