//! The load generator's RTP side: a few media threads, each owning many legs' UDP sockets,
//! one level-triggered epoll and one 5 ms tick (every leg sends once per 20 ms, in one of
//! four staggered slots). Customer payloads carry a mark (session, sequence, send time) so
//! the representative's leg measures one-way latency and loss; with RFC 4733 enabled the
//! customers send a key press every 2 s. No task or timer per leg, no allocation per packet;
//! card-like digits sent here are test data and are never printed.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::MediaStats;

pub const MAGIC: [u8; 4] = *b"TwLg";
pub const PCMU_PT: u8 = 0;
const PAYLOAD_LEN: usize = 160;
const RTP_HEADER: usize = 12;
const SLOTS: u64 = 4;
const SLOT_NS: u64 = 5_000_000;
/// One key press every 100 ticks (2 s): 5 packets of 20 ms, the end packet 3 times.
const EVENT_PERIOD_TICKS: u64 = 100;
const EVENT_TICKS: u64 = 7;
/// Key presses the customers send, in a cycle (a test card number then `#`).
const DIGITS: [u8; 17] = [4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 11];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Rep,
    Customer,
}

/// Run-wide state shared with the media threads.
pub struct Shared {
    pub start: Instant,
    /// The measurement window, in ns since `start` (end is exclusive). Written once, before
    /// the window begins.
    pub window_start_ns: AtomicU64,
    pub window_end_ns: AtomicU64,
    pub quit: AtomicBool,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            start: Instant::now(),
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
            quit: AtomicBool::new(false),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// A leg handed to a media thread once its INVITE was answered.
pub struct MediaLeg {
    pub socket: UdpSocket,
    pub dest: SocketAddr,
    pub role: Role,
    pub session: u32,
    /// telephone-event payload type negotiated on this leg.
    pub te_pt: u8,
    /// Send RFC 4733 key presses (customer legs with `--rfc4733`).
    pub send_events: bool,
}

pub enum Cmd {
    Add(MediaLeg),
    /// Stop sending on this leg and close its socket.
    Remove {
        session: u32,
        role: Role,
    },
}

struct LegState {
    leg: MediaLeg,
    ssrc: u32,
    seq: u16,
    rtp_ts: u32,
    mark_seq: u32,
    ticks: u64,
    event_phase: u64,
    event_ts: u32,
    digit_idx: usize,
}

/// Write the RTP header into `buf`.
pub fn write_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    if buf.len() < RTP_HEADER {
        return;
    }
    buf[0] = 0x80;
    buf[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Write a marked PCMU payload: magic, session, sequence, send time; silence after.
pub fn write_mark(payload: &mut [u8], session: u32, seq: u32, sent_ns: u64) {
    if payload.len() < 20 {
        return;
    }
    payload[0..4].copy_from_slice(&MAGIC);
    payload[4..8].copy_from_slice(&session.to_be_bytes());
    payload[8..12].copy_from_slice(&seq.to_be_bytes());
    payload[12..20].copy_from_slice(&sent_ns.to_be_bytes());
}

/// What a received datagram is.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    NotRtp,
    Event,
    Unmarked,
    Marked { session: u32, sent_ns: u64 },
}

/// Classify a received datagram (`te_pt`: the leg's telephone-event payload type).
pub fn classify(pkt: &[u8], te_pt: u8) -> Received {
    if pkt.len() < RTP_HEADER || pkt[0] >> 6 != 2 {
        return Received::NotRtp;
    }
    let pt = pkt[1] & 0x7f;
    if (72..=79).contains(&pt) {
        return Received::NotRtp; // RTCP
    }
    if pt == te_pt {
        return Received::Event;
    }
    let mut off = RTP_HEADER + 4 * usize::from(pkt[0] & 0x0f);
    if pkt[0] & 0x10 != 0 {
        let Some(ext) = pkt.get(off + 2..off + 4) else {
            return Received::NotRtp;
        };
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let Some(p) = pkt.get(off..) else {
        return Received::NotRtp;
    };
    if p.len() < 20 || p[0..4] != MAGIC {
        return Received::Unmarked;
    }
    let session = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&p[12..20]);
    Received::Marked {
        session,
        sent_ns: u64::from_be_bytes(ns),
    }
}

fn ssrc_for(session: u32, role: Role) -> u32 {
    let x = session.wrapping_mul(0x9E37_79B9)
        ^ if role == Role::Rep {
            0x5A5A_0001
        } else {
            0xA5A5_0002
        };
    x.rotate_left(7)
}

/// Build this tick's packet for a leg into `buf`; returns its length and whether it is an
/// audio packet (counted) rather than a telephone-event.
fn next_packet(
    st: &mut LegState,
    buf: &mut [u8; RTP_HEADER + PAYLOAD_LEN],
    now_ns: u64,
) -> (usize, bool) {
    let tick = st.ticks;
    st.ticks += 1;
    let audio_ts = st.rtp_ts;
    st.rtp_ts = st.rtp_ts.wrapping_add(160);
    let seq = st.seq;
    st.seq = st.seq.wrapping_add(1);
    if st.leg.send_events {
        let offset = u64::from(st.leg.session).wrapping_mul(37) % EVENT_PERIOD_TICKS;
        if st.event_phase == 0 && (tick + offset) % EVENT_PERIOD_TICKS == 0 && tick > 0 {
            st.event_phase = 1;
            st.event_ts = audio_ts;
            st.digit_idx = (st.digit_idx + 1) % DIGITS.len();
        }
        if st.event_phase > 0 {
            let k = st.event_phase - 1;
            st.event_phase = if st.event_phase >= EVENT_TICKS {
                0
            } else {
                st.event_phase + 1
            };
            let end = k >= 4;
            let duration = (160 * (k.min(4) + 1)) as u16;
            write_header(
                &mut buf[..],
                k == 0,
                st.leg.te_pt,
                seq,
                st.event_ts,
                st.ssrc,
            );
            let ev = &mut buf[RTP_HEADER..RTP_HEADER + 4];
            ev[0] = DIGITS.get(st.digit_idx).copied().unwrap_or(1);
            ev[1] = (u8::from(end) << 7) | 10; // volume -10 dBm0
            ev[2..4].copy_from_slice(&duration.to_be_bytes());
            return (RTP_HEADER + 4, false);
        }
    }
    write_header(&mut buf[..], false, PCMU_PT, seq, audio_ts, st.ssrc);
    let payload = &mut buf[RTP_HEADER..];
    payload.fill(0xFF);
    write_mark(payload, st.leg.session, st.mark_seq, now_ns);
    st.mark_seq = st.mark_seq.wrapping_add(1);
    (RTP_HEADER + PAYLOAD_LEN, true)
}

struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; a non-negative return is a new fd we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: i32, data: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: both fds are valid for the call; ev outlives it.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: the buffer is valid for `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

/// One media thread: runs until `shared.quit`, then returns what it measured.
pub fn run_shard(
    rx: Receiver<Cmd>,
    shared: Arc<Shared>,
    phase_ns: u64,
) -> std::io::Result<MediaStats> {
    let ep = Epoll::new()?;
    let mut slots: Vec<Option<LegState>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut index: HashMap<(u32, Role), usize> = HashMap::new();
    let mut stats = MediaStats::default();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut rbuf = [0u8; 2048];
    let mut sbuf = [0u8; RTP_HEADER + PAYLOAD_LEN];
    let mut next_tick_ns = shared.now_ns() + phase_ns;
    let mut tick_no: u64 = 0;

    loop {
        if shared.quit.load(Ordering::Relaxed) {
            break;
        }
        loop {
            match rx.try_recv() {
                Ok(Cmd::Add(leg)) => {
                    let key = (leg.session, leg.role);
                    let st = LegState {
                        ssrc: ssrc_for(leg.session, leg.role),
                        seq: (leg.session as u16).wrapping_mul(31),
                        rtp_ts: leg.session.wrapping_mul(7919),
                        mark_seq: 0,
                        ticks: 0,
                        event_phase: 0,
                        event_ts: 0,
                        digit_idx: 0,
                        leg,
                    };
                    let slot = free.pop().unwrap_or_else(|| {
                        slots.push(None);
                        slots.len() - 1
                    });
                    if ep
                        .ctl(libc::EPOLL_CTL_ADD, st.leg.socket.as_raw_fd(), slot as u64)
                        .is_err()
                    {
                        free.push(slot);
                        continue;
                    }
                    slots[slot] = Some(st);
                    index.insert(key, slot);
                }
                Ok(Cmd::Remove { session, role }) => {
                    if let Some(slot) = index.remove(&(session, role)) {
                        if let Some(st) = slots.get_mut(slot).and_then(Option::take) {
                            let _ = ep.ctl(libc::EPOLL_CTL_DEL, st.leg.socket.as_raw_fd(), 0);
                            free.push(slot);
                        }
                    }
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }

        let now = shared.now_ns();
        let timeout_ms = if next_tick_ns > now {
            (next_tick_ns - now).div_ceil(1_000_000).min(50) as i32
        } else {
            0
        };
        let n = ep.wait(&mut events, timeout_ms);
        let ws = shared.window_start_ns.load(Ordering::Relaxed);
        let we = shared.window_end_ns.load(Ordering::Relaxed);
        for ev in events.iter().take(n) {
            let slot = ev.u64 as usize;
            let Some(Some(st)) = slots.get_mut(slot) else {
                continue;
            };
            let len = match st.leg.socket.recv_from(&mut rbuf) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    stats.recv_errors += 1;
                    continue;
                }
            };
            let now_ns = shared.now_ns();
            let dir = match st.leg.role {
                Role::Rep => &mut stats.c2r,
                Role::Customer => &mut stats.r2c,
            };
            match classify(&rbuf[..len], st.leg.te_pt) {
                Received::NotRtp => {}
                Received::Event => dir.events_received += 1,
                Received::Unmarked => dir.recv_unmarked += 1,
                Received::Marked { session, sent_ns } => {
                    if session != st.leg.session {
                        dir.misrouted += 1;
                        continue;
                    }
                    dir.recv_total += 1;
                    if sent_ns >= ws && sent_ns < we {
                        dir.recv_window += 1;
                        dir.latency.record(now_ns.saturating_sub(sent_ns) / 1000);
                    }
                }
            }
        }

        let now = shared.now_ns();
        if now < next_tick_ns {
            continue;
        }
        if now > next_tick_ns + SLOT_NS {
            stats.late_ticks += 1;
        }
        let slot_of_tick = tick_no % SLOTS;
        tick_no += 1;
        next_tick_ns += SLOT_NS;
        if next_tick_ns + SLOT_NS < now {
            // Far behind (stalled): re-anchor instead of bursting.
            next_tick_ns = now + SLOT_NS;
        }
        for (i, cell) in slots.iter_mut().enumerate() {
            if i as u64 % SLOTS != slot_of_tick {
                continue;
            }
            let Some(st) = cell else { continue };
            let now_ns = shared.now_ns();
            let (len, audio) = next_packet(st, &mut sbuf, now_ns);
            match st.leg.socket.send_to(&sbuf[..len], st.leg.dest) {
                Ok(_) => {
                    if audio {
                        let dir = match st.leg.role {
                            Role::Rep => &mut stats.r2c,
                            Role::Customer => &mut stats.c2r,
                        };
                        dir.sent_total += 1;
                        if now_ns >= ws && now_ns < we {
                            dir.sent_window += 1;
                        }
                    } else {
                        stats.events_sent += 1;
                    }
                }
                Err(_) => stats.send_errors += 1,
            }
        }
    }
    Ok(stats)
}

/// Spread between the media threads' ticks so their bursts do not coincide.
pub fn shard_phase(shard: usize, shards: usize) -> u64 {
    (SLOT_NS * shard as u64) / shards.max(1) as u64
}

/// How long the server may hold a packet before we call it lost (hold-back + slack).
pub fn drain_time(holdback_ms: u64) -> Duration {
    Duration::from_millis(holdback_ms + 500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn mark_round_trips_and_events_are_recognised() {
        let mut buf = [0u8; RTP_HEADER + PAYLOAD_LEN];
        write_header(&mut buf, false, PCMU_PT, 7, 160, 42);
        write_mark(&mut buf[RTP_HEADER..], 5, 9, 123_456_789);
        assert_eq!(
            classify(&buf, 101),
            Received::Marked {
                session: 5,
                sent_ns: 123_456_789
            }
        );
        write_header(&mut buf, true, 101, 8, 160, 42);
        assert_eq!(classify(&buf[..16], 101), Received::Event);
        assert_eq!(classify(&buf[..5], 101), Received::NotRtp);
        let mut silence = [0xFFu8; RTP_HEADER + PAYLOAD_LEN];
        write_header(&mut silence, false, PCMU_PT, 1, 1, 1);
        assert_eq!(classify(&silence, 101), Received::Unmarked);
        // Header extension bigger than the packet: not RTP, no panic.
        silence[0] = 0x90;
        silence[14] = 0xFF;
        silence[15] = 0xFF;
        assert_eq!(classify(&silence, 101), Received::NotRtp);
    }

    #[test]
    fn key_press_is_rfc4733_shaped() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = sock.local_addr().unwrap();
        let mut st = LegState {
            leg: MediaLeg {
                socket: sock,
                dest,
                role: Role::Customer,
                session: 0,
                te_pt: 101,
                send_events: true,
            },
            ssrc: 1,
            seq: 0,
            rtp_ts: 0,
            mark_seq: 0,
            ticks: 0,
            event_phase: 0,
            event_ts: 0,
            digit_idx: 0,
        };
        let mut buf = [0u8; RTP_HEADER + PAYLOAD_LEN];
        let mut kinds = Vec::new();
        for _ in 0..(2 * EVENT_PERIOD_TICKS) {
            let (len, audio) = next_packet(&mut st, &mut buf, 0);
            if !audio {
                assert_eq!(len, 16);
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let end = buf[13] & 0x80 != 0;
                let dur = u16::from_be_bytes([buf[14], buf[15]]);
                kinds.push((buf[1] & 0x80 != 0, ts, end, dur));
            }
        }
        // One key press in 2 s: 7 packets, marker on the first, same timestamp, 3 ends.
        assert_eq!(kinds.len(), EVENT_TICKS as usize);
        assert!(kinds[0].0 && kinds[1..].iter().all(|k| !k.0));
        assert!(kinds.iter().all(|k| k.1 == kinds[0].1));
        assert_eq!(kinds.iter().filter(|k| k.2).count(), 3);
        assert_eq!(kinds.last().map(|k| k.3), Some(800));
    }

    #[test]
    fn shard_relays_marks_over_real_sockets() {
        // Two legs of one session pointed at each other: each receives the other's marks.
        let shared = Arc::new(Shared::new());
        shared.window_start_ns.store(0, Ordering::Relaxed);
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        tx.send(Cmd::Add(MediaLeg {
            socket: a,
            dest: ba,
            role: Role::Rep,
            session: 3,
            te_pt: 101,
            send_events: false,
        }))
        .unwrap();
        tx.send(Cmd::Add(MediaLeg {
            socket: b,
            dest: aa,
            role: Role::Customer,
            session: 3,
            te_pt: 101,
            send_events: false,
        }))
        .unwrap();
        let sh = shared.clone();
        let h = std::thread::spawn(move || run_shard(rx, sh, 0));
        // Real I/O on a real clock: wait until both directions have traffic.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if shared.now_ns() > 200_000_000 {
                break;
            }
        }
        shared
            .window_end_ns
            .store(shared.now_ns(), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(60));
        shared.quit.store(true, Ordering::Relaxed);
        let st = h.join().unwrap().unwrap();
        assert!(st.c2r.sent_total >= 5 && st.r2c.sent_total >= 5);
        assert!(st.c2r.recv_total >= 4 && st.r2c.recv_total >= 4);
        assert_eq!(st.c2r.misrouted + st.r2c.misrouted, 0);
        assert_eq!(st.c2r.events_received, 0);
        assert!(st.c2r.latency.count() > 0);
        assert!(st.c2r.loss_pct() < 50.0);
    }
}
