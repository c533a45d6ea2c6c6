//! Xsi-Events of the simulator: streaming channels, subscriptions, event documents in order
//! (with the `event_delay` and `drop_events` faults), heartbeats, acknowledgements, one
//! re-send of an event left unacknowledged for 2 s, and lifetimes: channels and
//! subscriptions are granted at most the configured `expires`, refreshed by `PUT`, and end
//! when not refreshed in time (the channel's stream closes; the subscription stops and, if
//! its channel is open, a `SubscriptionTerminatedEvent` is written).
//!
//! Must never: block the B2BUA (events are queued to a writer task), or panic on input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ua::lock;
use super::{Faults, Log};

pub(crate) const NS: &str = "http://schema.broadsoft.com/xsi";
const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const RESEND_AFTER: Duration = Duration::from_secs(2);
/// How often lifetimes are checked.
const REAP_EVERY: Duration = Duration::from_millis(50);

/// An open channel's stream.
pub(crate) struct ChannelTx {
    pub set: String,
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub opened: u64,
    pub expires_at: Instant,
}

pub(crate) type Channels = Mutex<HashMap<String, ChannelTx>>;

#[derive(Clone)]
struct Sub {
    id: String,
    set: String,
    app: String,
    expires_at: Instant,
}

struct Queued {
    due: Instant,
    user: String,
    sub: Sub,
    kind: String,
    call_id: String,
    call_xml: String,
    event_id: String,
    seq: u64,
}

pub(crate) struct Events {
    faults: Arc<Faults>,
    log: Arc<Log>,
    subs: Mutex<HashMap<String, Sub>>,
    pending: Mutex<HashMap<String, ()>>,
    queue: mpsc::UnboundedSender<Queued>,
    seq: AtomicU64,
    opened: AtomicU64,
    /// The longest `expires` granted.
    max_expires: Duration,
}

fn uuid() -> String {
    let a: u128 = rand::random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The `<Channel>` document.
pub(crate) fn channel_doc(id: &str, set: &str, expires: u32) -> String {
    format!(
        "{XML_DECL}<Channel xmlns=\"{NS}\"><channelId>{id}</channelId><channelSetId>{set}</channelSetId>\
<priority>1</priority><weight>100</weight><expires>{expires}</expires></Channel>"
    )
}

impl Events {
    pub fn new(faults: Arc<Faults>, log: Arc<Log>, max_expires: Duration) -> Arc<Events> {
        let (queue, rx) = mpsc::unbounded_channel();
        let ev = Arc::new(Events {
            faults,
            log,
            subs: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            queue,
            seq: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            max_expires,
        });
        tokio::spawn(writer(Arc::downgrade(&ev), rx));
        tokio::spawn(reaper(Arc::downgrade(&ev)));
        ev
    }

    /// The `expires` (seconds) granted for a request of `asked`: at most the configured
    /// maximum, at least 1.
    pub fn grant(&self, asked: Option<u32>) -> u32 {
        let max = u32::try_from(self.max_expires.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        asked.map_or(max, |a| a.clamp(1, max))
    }

    /// Open a channel in `set`; the stream of documents (the Channel document first).
    pub fn open(&self, set: &str, asked: Option<u32>) -> (String, mpsc::UnboundedReceiver<Bytes>) {
        let id = uuid();
        let expires = self.grant(asked);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Bytes::from(channel_doc(&id, set, expires)));
        let opened = self.opened.fetch_add(1, Ordering::Relaxed);
        lock(&self.faults.channels).insert(
            id.clone(),
            ChannelTx {
                set: set.to_string(),
                tx,
                opened,
                expires_at: Instant::now() + secs(expires),
            },
        );
        self.log.push(format!("channel open {id}"));
        (id, rx)
    }

    /// `DELETE` of a channel: its stream ends. False when it is not open.
    pub fn close(&self, id: &str) -> bool {
        let closed = lock(&self.faults.channels).remove(id).is_some();
        if closed {
            self.log.push(format!("channel delete {id}"));
        }
        closed
    }

    /// Refresh a channel; the granted `expires`, `None` when it is not open.
    pub fn refresh_channel(&self, id: &str, asked: Option<u32>) -> Option<u32> {
        let expires = self.grant(asked);
        {
            let mut chans = lock(&self.faults.channels);
            let c = chans.get_mut(id)?;
            c.expires_at = Instant::now() + secs(expires);
        }
        self.log.push(format!("channel refresh {id}"));
        Some(expires)
    }

    /// Refresh a subscription by id; the granted `expires`, `None` when it is gone.
    pub fn refresh_subscription(&self, sub_id: &str, asked: Option<u32>) -> Option<u32> {
        let expires = self.grant(asked);
        let user = {
            let mut subs = lock(&self.subs);
            let (user, sub) = subs.iter_mut().find(|(_, s)| s.id == sub_id)?;
            sub.expires_at = Instant::now() + secs(expires);
            user.clone()
        };
        self.log.push(format!("subscription refresh {user}"));
        Some(expires)
    }

    /// End every channel and subscription whose time is up.
    fn reap(&self, now: Instant) {
        let ended: Vec<String> = {
            let mut chans = lock(&self.faults.channels);
            let ids: Vec<String> = chans
                .iter()
                .filter(|(_, c)| c.expires_at <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                chans.remove(id);
            }
            ids
        };
        for id in ended {
            self.log.push(format!("channel expired {id}"));
        }
        let expired: Vec<(String, Sub)> = {
            let mut subs = lock(&self.subs);
            let users: Vec<String> = subs
                .iter()
                .filter(|(_, s)| s.expires_at <= now)
                .map(|(u, _)| u.clone())
                .collect();
            users
                .into_iter()
                .filter_map(|u| subs.remove(&u).map(|s| (u, s)))
                .collect()
        };
        for (user, sub) in expired {
            self.log.push(format!("subscription expired {user}"));
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            self.write_doc(&user, &sub, &uuid(), seq, "SubscriptionTerminatedEvent", "");
        }
    }

    /// Write a heartbeat on the channel; false when it is not open.
    pub fn heartbeat(&self, id: &str) -> bool {
        let doc = format!("{XML_DECL}<ChannelHeartBeat xmlns=\"{NS}\"/>");
        match lock(&self.faults.channels).get(id) {
            Some(c) => c.tx.send(Bytes::from(doc)).is_ok(),
            None => false,
        }
    }

    /// Subscribe `user` (replacing any subscription it had); the id and granted `expires`.
    pub fn subscribe(&self, user: &str, set: &str, app: &str, asked: Option<u32>) -> (String, u32) {
        let id = uuid();
        let expires = self.grant(asked);
        lock(&self.subs).insert(
            user.to_string(),
            Sub {
                id: id.clone(),
                set: set.to_string(),
                app: app.to_string(),
                expires_at: Instant::now() + secs(expires),
            },
        );
        self.log.push(format!("subscribe {user}"));
        (id, expires)
    }

    pub fn ack(&self, event_id: &str) {
        lock(&self.pending).remove(event_id);
        self.log.push(format!("ack {event_id}"));
    }

    /// Report `kind` (e.g. `CallHeldEvent`) about a call on `user`'s line.
    pub fn emit(&self, user: &str, kind: &str, call_id: &str, call_xml: String) {
        let Some(sub) = lock(&self.subs).get(user).cloned() else {
            return;
        };
        if self.faults.drop_events.load(Ordering::Relaxed) {
            self.log.push(format!("event-dropped {kind} {call_id}"));
            return;
        }
        let delay = *lock(&self.faults.event_delay);
        let _ = self.queue.send(Queued {
            due: Instant::now() + delay,
            user: user.to_string(),
            sub,
            kind: kind.to_string(),
            call_id: call_id.to_string(),
            call_xml,
            event_id: uuid(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        });
    }

    /// Write a call event on the newest channel of its set; false when none is open.
    fn write(&self, q: &Queued) -> bool {
        let call = format!("<xsi:call>{}</xsi:call>", q.call_xml);
        self.write_doc(&q.user, &q.sub, &q.event_id, q.seq, &q.kind, &call)
    }

    /// Write an event of type `kind` with `data` inside its `eventData` on the newest
    /// channel of the subscription's set; false when none is open.
    fn write_doc(
        &self,
        user: &str,
        sub: &Sub,
        event_id: &str,
        seq: u64,
        kind: &str,
        data: &str,
    ) -> bool {
        let chans = lock(&self.faults.channels);
        let Some((cid, ch)) = chans
            .iter()
            .filter(|(_, c)| c.set == sub.set)
            .max_by_key(|(_, c)| c.opened)
        else {
            return false;
        };
        let doc = format!(
            "{XML_DECL}<xsi:Event xsi1:type=\"xsi:SubscriptionEvent\" xmlns:xsi=\"{NS}\" \
xmlns:xsi1=\"http://www.w3.org/2001/XMLSchema-instance\"><xsi:eventID>{}</xsi:eventID>\
<xsi:sequenceNumber>{}</xsi:sequenceNumber><xsi:userId>{u}</xsi:userId>\
<xsi:externalApplicationId>{}</xsi:externalApplicationId><xsi:subscriptionId>{}</xsi:subscriptionId>\
<xsi:channelId>{cid}</xsi:channelId><xsi:targetId>{u}</xsi:targetId>\
<xsi:eventData xsi1:type=\"xsi:{kind}\">{data}</xsi:eventData></xsi:Event>",
            event_id,
            seq,
            sub.app,
            sub.id,
            u = user,
        );
        ch.tx.send(Bytes::from(doc)).is_ok()
    }
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

async fn reaper(ev: std::sync::Weak<Events>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        let now = tick.tick().await;
        let Some(ev) = ev.upgrade() else { return };
        ev.reap(now);
    }
}

async fn writer(ev: std::sync::Weak<Events>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    while let Some(q) = rx.recv().await {
        tokio::time::sleep_until(q.due).await;
        let Some(ev) = ev.upgrade() else { return };
        if !ev.write(&q) {
            ev.log.push(format!("event-lost {} {}", q.kind, q.call_id));
            continue;
        }
        ev.log.push(format!("event {} {}", q.kind, q.call_id));
        lock(&ev.pending).insert(q.event_id.clone(), ());
        let weak = Arc::downgrade(&ev);
        tokio::spawn(async move {
            tokio::time::sleep(RESEND_AFTER).await;
            let Some(ev) = weak.upgrade() else { return };
            if lock(&ev.pending).remove(&q.event_id).is_some() && ev.write(&q) {
                ev.log.push(format!("event {} {}", q.kind, q.call_id));
            }
        });
    }
}
