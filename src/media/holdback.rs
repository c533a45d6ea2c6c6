//! The customer→representative hold-back buffer: every audio packet waits a fixed
//! `holdback_ms` (release time = arrival + hold-back) in a preallocated ring of slots, and
//! passes an `Inspector` twice — when it enters (analysis: the in-band DTMF detector of
//! issue 3 sees the audio `holdback_ms` ahead of what leaves) and just before it leaves
//! (masking in place). Release is driven by the bridge's timer through `pop_due`.
//!
//! Must never: allocate per packet, read the clock (the caller passes `Instant`s), or let
//! a packet leave without `Inspector::inspect` having seen it.

use std::time::{Duration, Instant};

use crate::digit::Digit;
use crate::media::Codec;

/// Largest datagram a slot holds (G.711 at 20 ms is 172 bytes; 60 ms is 492, plus room
/// for CSRCs and header extensions). Larger packets are not audio tonewall negotiates.
pub const SLOT_BYTES: usize = 640;

/// What the inspector is told about a packet besides its payload.
#[derive(Clone, Copy, Debug)]
pub struct PacketInfo {
    /// The law of the payload (the outgoing leg's codec: transcoding happened already).
    pub codec: Codec,
    /// The packet's (outgoing) RTP timestamp.
    pub timestamp: u32,
    /// When the packet arrived at tonewall.
    pub arrived: Instant,
}

/// The hook through which every customer→representative audio packet passes.
/// The defaults do nothing: issue 3 plugs the in-band detector and masker in here.
pub trait Inspector: Send {
    /// A packet entered the hold-back buffer: analyse it (it leaves `holdback_ms` later).
    fn on_arrival(&mut self, _payload: &[u8], _info: &PacketInfo) {}
    /// A packet is about to leave: replace its payload in place if it must be masked.
    fn inspect(&mut self, _payload: &mut [u8], _info: &PacketInfo) {}
    /// A digit the inspector recognised in-band (polled by the bridge after each packet).
    fn take_digit(&mut self) -> Option<Digit> {
        None
    }
}

/// The no-op inspector.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough;

impl Inspector for PassThrough {}

struct Slot {
    buf: [u8; SLOT_BYTES],
    len: usize,
    /// Payload range within `buf`.
    payload: (usize, usize),
    info: PacketInfo,
    due: Instant,
}

/// A fixed-delay FIFO of RTP packets with preallocated storage.
pub struct Holdback {
    slots: Box<[Slot]>,
    head: usize,
    len: usize,
    delay: Duration,
}

impl Holdback {
    /// `capacity` slots (at least 1) of `SLOT_BYTES`, allocated once here.
    pub fn new(delay: Duration, capacity: usize, epoch: Instant) -> Holdback {
        let capacity = capacity.max(1);
        let slots: Vec<Slot> = (0..capacity)
            .map(|_| Slot {
                buf: [0u8; SLOT_BYTES],
                len: 0,
                payload: (0, 0),
                info: PacketInfo {
                    codec: Codec::Pcmu,
                    timestamp: 0,
                    arrived: epoch,
                },
                due: epoch,
            })
            .collect();
        Holdback {
            slots: slots.into_boxed_slice(),
            head: 0,
            len: 0,
            delay,
        }
    }

    /// Capacity for `holdback_ms` at the shortest ptime (10 ms) with room for bursts.
    pub fn capacity_for(holdback_ms: u32) -> usize {
        (holdback_ms as usize / 10) * 2 + 8
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// When the oldest packet is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.slots[self.head].due)
    }

    /// Queue `pkt` (a whole RTP packet whose payload is `pkt[payload]`), arrived at `now`,
    /// and show it to the inspector. Returns `false` (and drops it) when it is too large or
    /// the buffer is full: the caller releases the oldest packet first (`pop_oldest`).
    pub fn push(
        &mut self,
        pkt: &[u8],
        payload: std::ops::Range<usize>,
        info: PacketInfo,
        inspector: &mut dyn Inspector,
    ) -> bool {
        if self.is_full() || pkt.len() > SLOT_BYTES || payload.end > pkt.len() {
            return false;
        }
        let idx = (self.head + self.len) % self.slots.len();
        let slot = &mut self.slots[idx];
        slot.buf[..pkt.len()].copy_from_slice(pkt);
        slot.len = pkt.len();
        slot.payload = (payload.start, payload.end.max(payload.start));
        slot.info = info;
        slot.due = info.arrived + self.delay;
        self.len += 1;
        inspector.on_arrival(&slot.buf[slot.payload.0..slot.payload.1], &slot.info);
        true
    }

    /// Release the oldest packet if it is due at `now`, after the inspector's last look.
    pub fn pop_due(&mut self, now: Instant, inspector: &mut dyn Inspector) -> Option<&[u8]> {
        if self.len == 0 || self.slots[self.head].due > now {
            return None;
        }
        self.pop_oldest(inspector)
    }

    /// Release the oldest packet now, due or not (buffer full, or the bridge is closing).
    pub fn pop_oldest(&mut self, inspector: &mut dyn Inspector) -> Option<&[u8]> {
        if self.len == 0 {
            return None;
        }
        let idx = self.head;
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        let slot = &mut self.slots[idx];
        let (a, b) = slot.payload;
        inspector.inspect(&mut slot.buf[a..b], &slot.info);
        Some(&slot.buf[..slot.len])
    }

    /// Drop everything queued (e.g. the receiving leg went on hold).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        arrived: Vec<u32>,
        inspected: Vec<u32>,
    }

    impl Inspector for Recorder {
        fn on_arrival(&mut self, _p: &[u8], info: &PacketInfo) {
            self.arrived.push(info.timestamp);
        }
        fn inspect(&mut self, p: &mut [u8], info: &PacketInfo) {
            self.inspected.push(info.timestamp);
            p.fill(0xFF); // mask
        }
    }

    fn info(ts: u32, at: Instant) -> PacketInfo {
        PacketInfo {
            codec: Codec::Pcmu,
            timestamp: ts,
            arrived: at,
        }
    }

    #[test]
    fn packets_leave_after_the_delay_in_order_and_inspected() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut hb = Holdback::new(ms(40), 8, t0);
        let mut ins = Recorder::default();
        for i in 0..3u32 {
            let pkt = [i as u8; 20];
            let at = t0 + ms(20 * u64::from(i));
            assert!(hb.push(&pkt, 12..20, info(i, at), &mut ins));
        }
        assert_eq!(ins.arrived, vec![0, 1, 2]);
        assert_eq!(hb.next_due(), Some(t0 + ms(40)));
        assert!(hb.pop_due(t0 + ms(39), &mut ins).is_none());
        let p = hb.pop_due(t0 + ms(40), &mut ins).expect("due").to_vec();
        assert_eq!(&p[..12], &[0u8; 12]);
        assert_eq!(&p[12..], &[0xFF; 8]); // masked by the inspector, header untouched
        assert!(hb.pop_due(t0 + ms(40), &mut ins).is_none());
        assert!(hb.pop_due(t0 + ms(60), &mut ins).is_some());
        assert!(hb.pop_due(t0 + ms(80), &mut ins).is_some());
        assert!(hb.is_empty());
        assert_eq!(ins.inspected, vec![0, 1, 2]);
    }

    #[test]
    fn full_buffer_refuses_until_oldest_released() {
        let t0 = Instant::now();
        let mut hb = Holdback::new(Duration::from_millis(40), 2, t0);
        let mut ins = PassThrough;
        assert!(hb.push(&[1; 12], 12..12, info(1, t0), &mut ins));
        assert!(hb.push(&[2; 12], 12..12, info(2, t0), &mut ins));
        assert!(hb.is_full());
        assert!(!hb.push(&[3; 12], 12..12, info(3, t0), &mut ins));
        assert_eq!(hb.pop_oldest(&mut ins).map(|p| p[0]), Some(1));
        assert!(hb.push(&[3; 12], 12..12, info(3, t0), &mut ins));
        assert_eq!(hb.pop_oldest(&mut ins).map(|p| p[0]), Some(2));
        assert_eq!(hb.pop_oldest(&mut ins).map(|p| p[0]), Some(3));
        assert!(hb.pop_oldest(&mut ins).is_none());
    }

    #[test]
    fn oversized_or_inconsistent_packets_are_refused() {
        let t0 = Instant::now();
        let mut hb = Holdback::new(Duration::from_millis(40), 2, t0);
        let big = vec![0u8; SLOT_BYTES + 1];
        assert!(!hb.push(&big, 12..20, info(0, t0), &mut PassThrough));
        assert!(!hb.push(&[0; 12], 12..30, info(0, t0), &mut PassThrough));
        assert!(hb.is_empty());
    }

    #[test]
    fn zero_delay_releases_immediately() {
        let t0 = Instant::now();
        let mut hb = Holdback::new(Duration::ZERO, 4, t0);
        assert!(hb.push(&[7; 14], 12..14, info(0, t0), &mut PassThrough));
        assert!(hb.pop_due(t0, &mut PassThrough).is_some());
    }
}
