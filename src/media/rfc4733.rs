//! RFC 4733 telephone-events: payload parsing and the de-duplication state machine that
//! turns a stream of event packets into exactly one report per key press.
//!
//! A key press is identified by (SSRC, RTP timestamp, event code): every packet of one
//! press — start, continuations with growing duration, the end packet and its redundant
//! copies — carries the same timestamp. The press is reported on the first of its packets
//! that arrives, whichever that is (the start may be lost). A later press has a later
//! timestamp, even with the same key; comparisons use serial-number arithmetic, so the
//! 32-bit timestamp may wrap. A packet of an older press that was never seen (it arrives
//! after a newer press started) is ignored rather than reported out of order. The segments
//! of a long-duration event (RFC 4733 §2.5.1.3: a new timestamp right where a maximal-
//! duration segment without end bit stops) are one press.
//!
//! Must never: allocate, read the clock, or format a digit.

use zeroize::Zeroize;

use crate::digit::Digit;

/// The fields of one telephone-event block (RFC 4733 §2.3). The event code is a key the
/// customer pressed: `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl std::fmt::Debug for TelephoneEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelephoneEvent")
            .field("event", &"<redacted>")
            .field("end", &self.end)
            .field("volume", &self.volume)
            .field("duration", &self.duration)
            .finish()
    }
}

impl TelephoneEvent {
    /// Parse the first 4-byte block of a telephone-event payload.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b = payload.get(..4)?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// Write the block into `out[..4]`.
    pub fn write(&self, out: &mut [u8]) -> Option<()> {
        let b = out.get_mut(..4)?;
        b[0] = self.event;
        b[1] = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f);
        b[2..4].copy_from_slice(&self.duration.to_be_bytes());
        Some(())
    }
}

/// What one telephone-event packet meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// The first packet of a new press; the digit when the event is a keypad key (0–15).
    NewPress(Option<Digit>),
    /// Another packet of a press already reported.
    Known,
    /// A packet of a press older than the newest one, never seen before: ignored.
    Stale,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    ssrc: u32,
    ts: u32,
    event: u8,
}

/// How many recent presses are remembered for de-duplication.
const RECENT: usize = 8;

/// The de-duplication state machine of one incoming stream direction. It remembers the
/// event codes (keys) of recent presses: they are wiped on drop and never shown by `Debug`.
#[derive(Clone, Default)]
pub struct EventDedup {
    recent: [Option<Seen>; RECENT],
    next: usize,
    /// (SSRC, timestamp) of the newest press.
    newest: Option<(u32, u32)>,
    /// Event code, longest duration seen and end bit of the newest press's segment.
    newest_event: u8,
    newest_duration: u16,
    newest_ended: bool,
}

/// A segment this long is a long-duration event split by the sender (RFC 4733 §2.5.1.3).
const SEGMENT_MIN: u16 = 0xFF00;

/// `a` is strictly before `b` in 32-bit serial-number arithmetic.
pub fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl std::fmt::Debug for EventDedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventDedup(<redacted>)")
    }
}

impl Drop for EventDedup {
    fn drop(&mut self) {
        for s in self.recent.iter_mut().flatten() {
            s.event.zeroize();
        }
        self.newest_event.zeroize();
    }
}

impl EventDedup {
    pub fn new() -> EventDedup {
        EventDedup::default()
    }

    /// Feed one telephone-event packet of stream `ssrc` with RTP timestamp `ts`.
    pub fn on_packet(&mut self, ssrc: u32, ts: u32, ev: &TelephoneEvent) -> EventOutcome {
        let key = Seen {
            ssrc,
            ts,
            event: ev.event,
        };
        if self.recent.contains(&Some(key)) {
            if self.newest == Some((ssrc, ts)) {
                self.newest_duration = self.newest_duration.max(ev.duration);
                self.newest_ended |= ev.end;
            }
            return EventOutcome::Known;
        }
        let mut continuation = false;
        if let Some((nssrc, nts)) = self.newest {
            if nssrc == ssrc && ts_before(ts, nts) {
                return EventOutcome::Stale;
            }
            // the next segment of a long event starts where the previous one ended
            continuation = nssrc == ssrc
                && self.newest_event == ev.event
                && !self.newest_ended
                && self.newest_duration >= SEGMENT_MIN
                && ts == nts.wrapping_add(u32::from(self.newest_duration));
        }
        self.recent[self.next] = Some(key);
        self.next = (self.next + 1) % RECENT;
        self.newest = Some((ssrc, ts));
        self.newest_event = ev.event;
        self.newest_duration = ev.duration;
        self.newest_ended = ev.end;
        if continuation {
            EventOutcome::Known
        } else {
            EventOutcome::NewPress(Digit::from_event(ev.event))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_never_shows_the_key() {
        let ev = TelephoneEvent {
            event: 9,
            end: false,
            volume: 10,
            duration: 160,
        };
        let shown = format!("{ev:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("event: 9"),
            "{shown}"
        );
        let mut d = EventDedup::new();
        let _ = d.on_packet(1, 1000, &ev);
        assert_eq!(format!("{d:?}"), "EventDedup(<redacted>)");
    }

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    fn key(o: EventOutcome) -> Option<u8> {
        match o {
            EventOutcome::NewPress(Some(d)) => Some(d.key()),
            _ => None,
        }
    }

    #[test]
    fn parse_and_write() {
        let p = [5u8, 0x8a, 0x03, 0x20];
        let e = TelephoneEvent::parse(&p).expect("event");
        assert_eq!(e, ev(5, true, 800));
        let mut out = [0u8; 4];
        e.write(&mut out).expect("room");
        assert_eq!(out, p);
        assert!(TelephoneEvent::parse(&p[..3]).is_none());
    }

    #[test]
    fn start_continuations_and_three_ends_give_one_digit() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 1000, &ev(7, false, 160))), Some(b'7'));
        assert_eq!(
            d.on_packet(1, 1000, &ev(7, false, 320)),
            EventOutcome::Known
        );
        assert_eq!(
            d.on_packet(1, 1000, &ev(7, false, 480)),
            EventOutcome::Known
        );
        for _ in 0..3 {
            assert_eq!(d.on_packet(1, 1000, &ev(7, true, 640)), EventOutcome::Known);
        }
    }

    #[test]
    fn lost_start_reports_on_first_continuation() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 1000, &ev(3, false, 480))), Some(b'3'));
        assert_eq!(d.on_packet(1, 1000, &ev(3, true, 800)), EventOutcome::Known);
    }

    #[test]
    fn only_end_packet_arrives() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 1000, &ev(11, true, 800))), Some(b'#'));
    }

    #[test]
    fn lost_end_packets_then_next_press() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 1000, &ev(1, false, 160))), Some(b'1'));
        // no end packet ever arrives; next press of the same key has a new timestamp
        assert_eq!(key(d.on_packet(1, 2600, &ev(1, false, 160))), Some(b'1'));
        assert_eq!(d.on_packet(1, 2600, &ev(1, true, 400)), EventOutcome::Known);
    }

    #[test]
    fn same_key_new_timestamp_is_a_new_press() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 1000, &ev(4, true, 800))), Some(b'4'));
        assert_eq!(key(d.on_packet(1, 3000, &ev(4, true, 800))), Some(b'4'));
        assert_eq!(d.on_packet(1, 3000, &ev(4, true, 800)), EventOutcome::Known);
    }

    #[test]
    fn timestamp_wrap() {
        let mut d = EventDedup::new();
        assert_eq!(
            key(d.on_packet(9, u32::MAX - 100, &ev(2, false, 160))),
            Some(b'2')
        );
        assert_eq!(key(d.on_packet(9, 1500, &ev(2, false, 160))), Some(b'2'));
        // a straggler of the first press is still recognised, not stale and not new
        assert_eq!(
            d.on_packet(9, u32::MAX - 100, &ev(2, true, 800)),
            EventOutcome::Known
        );
        // a never-seen press from before the wrap is stale
        assert_eq!(
            d.on_packet(9, u32::MAX - 5000, &ev(6, true, 800)),
            EventOutcome::Stale
        );
    }

    #[test]
    fn new_ssrc_is_a_new_stream() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 5000, &ev(8, false, 160))), Some(b'8'));
        assert_eq!(key(d.on_packet(2, 100, &ev(8, false, 160))), Some(b'8'));
        assert_eq!(d.on_packet(1, 5000, &ev(8, true, 800)), EventOutcome::Known);
    }

    #[test]
    fn long_event_segments_are_one_press() {
        let mut d = EventDedup::new();
        assert_eq!(key(d.on_packet(1, 100, &ev(0, false, 160))), Some(b'0'));
        assert_eq!(
            d.on_packet(1, 100, &ev(0, false, 0xFFFF)),
            EventOutcome::Known
        );
        // next segment: timestamp advanced by the previous segment's duration
        let next = 100 + 0xFFFF;
        assert_eq!(
            d.on_packet(1, next, &ev(0, false, 160)),
            EventOutcome::Known
        );
        assert_eq!(d.on_packet(1, next, &ev(0, true, 800)), EventOutcome::Known);
        // a fresh press after the end is new again
        assert_eq!(
            key(d.on_packet(1, next + 5000, &ev(0, false, 160))),
            Some(b'0')
        );
    }

    #[test]
    fn non_key_events_are_not_digits() {
        let mut d = EventDedup::new();
        assert_eq!(
            d.on_packet(1, 10, &ev(16, false, 160)),
            EventOutcome::NewPress(None)
        );
        assert_eq!(d.on_packet(1, 10, &ev(16, true, 320)), EventOutcome::Known);
    }

    /// All packets a sender emits for one press: continuations then three ends.
    fn press_packets(n_cont: usize) -> Vec<TelephoneEvent> {
        let mut v: Vec<TelephoneEvent> = (1..=n_cont)
            .map(|i| ev(5, false, (i * 160) as u16))
            .collect();
        for _ in 0..3 {
            v.push(ev(5, true, ((n_cont + 1) * 160) as u16));
        }
        v
    }

    proptest! {
        #[test]
        fn any_permutation_duplication_or_loss_gives_one_digit(
            n_cont in 1usize..20,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
            ts in any::<u32>(),
            ssrc in any::<u32>(),
        ) {
            let all = press_packets(n_cont);
            let mut d = EventDedup::new();
            let mut digits = 0;
            for p in &picks {
                let e = all[p.index(all.len())];
                match d.on_packet(ssrc, ts, &e) {
                    EventOutcome::NewPress(Some(_)) => digits += 1,
                    EventOutcome::NewPress(None) | EventOutcome::Stale => {
                        prop_assert!(false, "unexpected outcome")
                    }
                    EventOutcome::Known => {}
                }
            }
            prop_assert_eq!(digits, 1);
        }

        #[test]
        fn presses_in_order_each_give_one_digit(
            gaps in proptest::collection::vec(800u32..20000, 1..12),
            start in any::<u32>(),
            losses in proptest::collection::vec(any::<bool>(), 96),
        ) {
            let mut d = EventDedup::new();
            let mut ts = start;
            let mut li = 0;
            let mut digits = 0;
            for g in &gaps {
                ts = ts.wrapping_add(*g);
                let pkts = press_packets(4);
                let mut sent = 0;
                for (i, e) in pkts.iter().enumerate() {
                    // lose packets at random, but keep at least one per press
                    let lost = losses[li % losses.len()] && !(i + 1 == pkts.len() && sent == 0);
                    li += 1;
                    if lost { continue; }
                    sent += 1;
                    if let EventOutcome::NewPress(Some(_)) = d.on_packet(7, ts, e) {
                        digits += 1;
                    }
                }
            }
            prop_assert_eq!(digits, gaps.len());
        }
    }
}
