//! The media engine: a few OS threads, each an epoll loop (mio) over the sockets of the
//! bridges it owns. A bridge lives on one thread for its whole life; the control plane
//! reaches it only by message (`EngineCmd`) and a waker. Per packet there is no task
//! switch, no lock, no allocation and no map lookup: an epoll token names the bridge's
//! slot and the socket, and each readable socket is drained until it would block.
//!
//! Timers (hold-back release, parked silence, RTP timeouts, metric flushes) run on a 1 ms
//! tick per thread that visits only bridges whose deadline has passed.
//!
//! Must never: block on anything but `epoll_wait`; call into async code; format a digit.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::leg::LegRole;
use crate::media::bridge::{Bridge, BridgeCommand};

/// The tick of the timer wheel-less timer scan.
const TICK: Duration = Duration::from_millis(1);
/// Largest datagram read; longer ones are truncated by the kernel and then fail checks.
const BUF: usize = 2048;
const WAKER: Token = Token(usize::MAX);

/// Which of a bridge's sockets a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Rtp(LegRole),
    Rtcp(LegRole),
}

impl SocketKind {
    fn index(self) -> usize {
        match self {
            SocketKind::Rtp(LegRole::Customer) => 0,
            SocketKind::Rtp(LegRole::Rep) => 1,
            SocketKind::Rtcp(LegRole::Customer) => 2,
            SocketKind::Rtcp(LegRole::Rep) => 3,
        }
    }

    fn from_index(i: usize) -> SocketKind {
        match i & 3 {
            0 => SocketKind::Rtp(LegRole::Customer),
            1 => SocketKind::Rtp(LegRole::Rep),
            2 => SocketKind::Rtcp(LegRole::Customer),
            _ => SocketKind::Rtcp(LegRole::Rep),
        }
    }
}

/// The epoll token of a bridge slot's socket.
pub(crate) fn token(slot: usize, kind: SocketKind) -> Token {
    Token(slot * 4 + kind.index())
}

/// What the control plane sends to a media thread.
pub(crate) enum EngineCmd {
    Add { id: u64, bridge: Box<Bridge> },
    Command { id: u64, cmd: BridgeCommand },
    Remove { id: u64 },
}

struct WorkerHandle {
    tx: std_mpsc::Sender<EngineCmd>,
    waker: Arc<Waker>,
}

/// The process-wide engine: its threads start on first use.
pub(crate) struct Engine {
    workers: Vec<WorkerHandle>,
    next: AtomicUsize,
    ids: AtomicU64,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

impl Engine {
    pub(crate) fn global() -> &'static Engine {
        ENGINE.get_or_init(|| {
            let n = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8);
            let mut workers = Vec::with_capacity(n);
            for i in 0..n {
                match spawn_worker(i) {
                    Ok(w) => workers.push(w),
                    Err(e) => tracing::error!(error = %e, "media: cannot start a media thread"),
                }
            }
            Engine {
                workers,
                next: AtomicUsize::new(0),
                ids: AtomicU64::new(1),
            }
        })
    }

    /// Place a new bridge on the next thread; returns (thread, id).
    pub(crate) fn add(&self, bridge: Box<Bridge>) -> Option<(usize, u64)> {
        if self.workers.is_empty() {
            return None;
        }
        let w = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.send(w, EngineCmd::Add { id, bridge });
        Some((w, id))
    }

    pub(crate) fn send(&self, worker: usize, cmd: EngineCmd) {
        if let Some(w) = self.workers.get(worker) {
            if w.tx.send(cmd).is_ok() {
                let _ = w.waker.wake();
            }
        }
    }
}

fn spawn_worker(i: usize) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name(format!("tonewall-media-{i}"))
        .spawn(move || Worker::new(poll, rx).run())?;
    Ok(WorkerHandle { tx, waker })
}

struct Worker {
    poll: Poll,
    rx: std_mpsc::Receiver<EngineCmd>,
    slots: Vec<Option<Box<Bridge>>>,
    /// Each slot's next timer deadline, kept beside the slots so the tick scans a small,
    /// dense array instead of touching every bridge.
    deadlines: Vec<Instant>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
}

impl Worker {
    fn new(poll: Poll, rx: std_mpsc::Receiver<EngineCmd>) -> Worker {
        Worker {
            poll,
            rx,
            slots: Vec::new(),
            deadlines: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; BUF];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let timeout = if self.by_id.is_empty() {
                None
            } else {
                Some(next_tick.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media: poll failed");
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    continue;
                }
                let slot = t.0 / 4;
                let kind = SocketKind::from_index(t.0);
                if let Some(Some(bridge)) = self.slots.get_mut(slot) {
                    bridge.drain(kind, &mut buf);
                    self.deadlines[slot] = bridge.next_deadline();
                }
            }
            if !self.commands() {
                return;
            }
            let now = Instant::now();
            if now >= next_tick {
                for (slot, d) in self.deadlines.iter_mut().enumerate() {
                    if *d <= now {
                        if let Some(Some(b)) = self.slots.get_mut(slot) {
                            b.on_timer(now);
                            *d = b.next_deadline();
                        } else {
                            *d = far_future(now);
                        }
                    }
                }
                next_tick = now + TICK;
            }
        }
    }

    /// Apply pending commands; `false` when the engine is gone.
    fn commands(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(EngineCmd::Add { id, mut bridge }) => {
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.slots.push(None);
                        self.deadlines.push(Instant::now());
                        self.slots.len() - 1
                    });
                    register(&mut bridge, self.poll.registry(), slot);
                    self.deadlines[slot] = bridge.next_deadline();
                    self.slots[slot] = Some(bridge);
                    self.by_id.insert(id, slot);
                }
                Ok(EngineCmd::Command { id, cmd }) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        if let Some(Some(b)) = self.slots.get_mut(slot) {
                            b.command(cmd, Instant::now());
                            register(b, self.poll.registry(), slot);
                            self.deadlines[slot] = b.next_deadline();
                        }
                    }
                }
                Ok(EngineCmd::Remove { id }) => {
                    if let Some(slot) = self.by_id.remove(&id) {
                        if let Some(mut b) = self.slots.get_mut(slot).and_then(Option::take) {
                            b.finish(self.poll.registry());
                        }
                        if let Some(d) = self.deadlines.get_mut(slot) {
                            *d = far_future(Instant::now());
                        }
                        self.free.push(slot);
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }
}

/// A deadline that never comes (for free slots).
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400)
}

fn register(bridge: &mut Bridge, registry: &Registry, slot: usize) {
    bridge.register(registry, |kind| token(slot, kind), Interest::READABLE);
}
