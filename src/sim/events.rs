//! Xsi-Events of the simulator: streaming channels, subscriptions, event documents in order
//! (with the `event_delay` and `drop_events` faults), heartbeats, acknowledgements, and one
//! re-send of an event left unacknowledged for 2 s.
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

/// An open channel's stream.
pub(crate) struct ChannelTx {
    pub set: String,
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub opened: u64,
}

pub(crate) type Channels = Mutex<HashMap<String, ChannelTx>>;

#[derive(Clone)]
struct Sub {
    id: String,
    set: String,
    app: String,
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
pub(crate) fn channel_doc(id: &str, set: &str) -> String {
    format!(
        "{XML_DECL}<Channel xmlns=\"{NS}\"><channelId>{id}</channelId><channelSetId>{set}</channelSetId>\
<priority>1</priority><weight>100</weight><expires>3600</expires></Channel>"
    )
}

impl Events {
    pub fn new(faults: Arc<Faults>, log: Arc<Log>) -> Arc<Events> {
        let (queue, rx) = mpsc::unbounded_channel();
        let ev = Arc::new(Events {
            faults,
            log,
            subs: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            queue,
            seq: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        });
        tokio::spawn(writer(Arc::downgrade(&ev), rx));
        ev
    }

    /// Open a channel in `set`; the stream of documents (the Channel document first).
    pub fn open(&self, set: &str) -> (String, mpsc::UnboundedReceiver<Bytes>) {
        let id = uuid();
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Bytes::from(channel_doc(&id, set)));
        let opened = self.opened.fetch_add(1, Ordering::Relaxed);
        lock(&self.faults.channels).insert(
            id.clone(),
            ChannelTx {
                set: set.to_string(),
                tx,
                opened,
            },
        );
        self.log.push(format!("channel open {id}"));
        (id, rx)
    }

    pub fn close(&self, id: &str) -> bool {
        lock(&self.faults.channels).remove(id).is_some()
    }

    /// Write a heartbeat on the channel; false when it is not open.
    pub fn heartbeat(&self, id: &str) -> bool {
        let doc = format!("{XML_DECL}<ChannelHeartBeat xmlns=\"{NS}\"/>");
        match lock(&self.faults.channels).get(id) {
            Some(c) => c.tx.send(Bytes::from(doc)).is_ok(),
            None => false,
        }
    }

    pub fn subscribe(&self, user: &str, set: &str, app: &str) -> String {
        let id = uuid();
        lock(&self.subs).insert(
            user.to_string(),
            Sub {
                id: id.clone(),
                set: set.to_string(),
                app: app.to_string(),
            },
        );
        self.log.push(format!("subscribe {user}"));
        id
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

    /// Write an event on the newest channel of its set; false when none is open.
    fn write(&self, q: &Queued) -> bool {
        let chans = lock(&self.faults.channels);
        let Some((cid, ch)) = chans
            .iter()
            .filter(|(_, c)| c.set == q.sub.set)
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
<xsi:eventData xsi1:type=\"xsi:{}\"><xsi:call>{}</xsi:call></xsi:eventData></xsi:Event>",
            q.event_id,
            q.seq,
            q.sub.app,
            q.sub.id,
            q.kind,
            q.call_xml,
            u = q.user,
        );
        ch.tx.send(Bytes::from(doc)).is_ok()
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
