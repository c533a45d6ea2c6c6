//! The pure per-direction relay step: one received datagram in, edited in place, and a
//! verdict out (forward it, it was a telephone-event, or drop it). No I/O, no clock: the
//! caller passes the arrival `Instant`.
//!
//! Per packet it validates RTP, drops RTCP multiplexed on the RTP port, (on
//! customer→representative) drops every telephone-event and feeds the RFC 4733
//! de-duplicator, maps payload types between the legs, transcodes PCMU↔PCMA in place, and
//! rewrites SSRC/sequence/timestamp so the outgoing stream is continuous: one constant
//! output SSRC; no sequence gaps for packets tonewall dropped, real loss gaps kept; when
//! the incoming SSRC changes (re-INVITE, new source) or after generated silence, sequence
//! and timestamp carry on from the last packet sent (the timestamp advanced by the time
//! elapsed), never jumping back. Stragglers of the previous source are dropped.
//!
//! Must never: allocate, read the clock, do I/O, panic on input, or format a digit.

use std::time::Instant;

use crate::digit::Digit;
use crate::media::g711;
use crate::media::rfc4733::{EventDedup, EventOutcome, TelephoneEvent};
use crate::media::rtp::{self, RtpPacket};
use crate::media::{Codec, LegParams};

/// RTP clock rate of G.711 and telephone-event/8000, in samples per millisecond.
const SAMPLES_PER_MS: u64 = 8;

/// The payload formats of one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegCodec {
    pub codec: Codec,
    pub pt: u8,
    pub te_pt: Option<u8>,
}

impl From<&LegParams> for LegCodec {
    fn from(p: &LegParams) -> LegCodec {
        LegCodec {
            codec: p.codec,
            pt: p.pt,
            te_pt: p.te_pt,
        }
    }
}

/// Why a datagram was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not RTP.
    Malformed,
    /// RTCP multiplexed on the RTP port (terminated, see `rtp`).
    Rtcp,
    /// A payload type neither leg negotiated (comfort noise, a stray codec).
    UnknownPayloadType,
    /// A late packet of the stream the current one replaced.
    OldSource,
    /// A telephone-event from the representative, but the customer leg has no
    /// telephone-event payload type.
    NoEventPt,
}

/// The verdict on one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `buf[..len]` (edited in place); the payload is `buf[payload]`.
    Forward {
        payload: std::ops::Range<usize>,
    },
    /// A customer telephone-event, dropped; carries the digit on a key press's first packet.
    Event(Option<Digit>),
    Drop(DropReason),
}

#[derive(Clone, Copy, Debug)]
struct Source {
    ssrc: u32,
    seq_off: u16,
    ts_off: u32,
    highest_in_seq: u16,
}

/// One direction of a bridge (customer→rep or rep→customer).
#[derive(Clone, Debug)]
pub struct Relay {
    from: LegCodec,
    to: LegCodec,
    strip_events: bool,
    dedup: EventDedup,
    out_ssrc: u32,
    src: Option<Source>,
    prev_ssrc: Option<u32>,
    /// The next packet re-derives the offsets (after silence we generated).
    resync: bool,
    marker: bool,
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
}

fn seq_newer(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

impl Relay {
    /// A direction from leg `from` to leg `to`. `strip_events` on customer→rep. The output
    /// SSRC and the first sequence number and timestamp should be random.
    pub fn new(
        from: LegCodec,
        to: LegCodec,
        strip_events: bool,
        out_ssrc: u32,
        first_seq: u16,
        first_ts: u32,
    ) -> Relay {
        Relay {
            from,
            to,
            strip_events,
            dedup: EventDedup::new(),
            out_ssrc,
            src: None,
            prev_ssrc: None,
            resync: false,
            marker: true,
            last_seq: first_seq.wrapping_sub(1),
            last_ts: first_ts,
            last_at: None,
        }
    }

    pub fn set_from(&mut self, from: LegCodec) {
        self.from = from;
    }

    pub fn set_to(&mut self, to: LegCodec) {
        self.to = to;
    }

    pub fn to(&self) -> LegCodec {
        self.to
    }

    pub fn out_ssrc(&self) -> u32 {
        self.out_ssrc
    }

    /// The digit of a customer telephone-event packet, on the first packet of its press.
    fn capture_event(&mut self, ssrc: u32, ts: u32, payload: &[u8]) -> Option<Digit> {
        match self
            .dedup
            .on_packet(ssrc, ts, &TelephoneEvent::parse(payload)?)
        {
            EventOutcome::NewPress(d) => d,
            EventOutcome::Known | EventOutcome::Stale => None,
        }
    }

    /// Relay one datagram `buf` that arrived at `now`, editing it in place.
    pub fn step(&mut self, buf: &mut [u8], now: Instant) -> Step {
        if rtp::is_rtcp(buf) {
            return Step::Drop(DropReason::Rtcp);
        }
        let Ok(mut p) = RtpPacket::new_checked(&mut *buf) else {
            return Step::Drop(DropReason::Malformed);
        };
        let (ssrc, in_seq, in_ts, pt) = (
            p.ssrc(),
            p.sequence_number(),
            p.timestamp(),
            p.payload_type(),
        );
        // A customer's telephone-event from another SSRC than the audio's (some gateways
        // send events as their own stream, and one of them may look like an old source):
        // never forwarded, always captured, and it does not disturb the audio's source.
        let te = self.from.te_pt == Some(pt);
        if self.strip_events && te && self.src.is_some_and(|s| s.ssrc != ssrc) {
            return Step::Event(self.capture_event(ssrc, in_ts, p.payload()));
        }
        let mut src = match self.src {
            Some(s) if s.ssrc == ssrc && !self.resync => s,
            Some(s) if s.ssrc != ssrc && self.prev_ssrc == Some(ssrc) => {
                return Step::Drop(DropReason::OldSource);
            }
            cur => {
                if let Some(s) = cur {
                    if s.ssrc != ssrc {
                        self.prev_ssrc = Some(s.ssrc);
                    }
                }
                self.new_source(ssrc, in_seq, in_ts, now)
            }
        };
        let newer = seq_newer(in_seq, src.highest_in_seq);
        if newer {
            src.highest_in_seq = in_seq;
        }

        let out_pt = if te {
            match (self.strip_events, self.to.te_pt) {
                (false, Some(te_out)) => te_out,
                (strip, _) => {
                    // dropped by us: close the sequence gap it would leave
                    if newer {
                        src.seq_off = src.seq_off.wrapping_sub(1);
                    }
                    self.src = Some(src);
                    if !strip {
                        return Step::Drop(DropReason::NoEventPt);
                    }
                    return Step::Event(self.capture_event(ssrc, in_ts, p.payload()));
                }
            }
        } else {
            let codec = if pt == self.from.pt {
                Some(self.from.codec)
            } else if pt == Codec::Pcmu.static_pt() {
                Some(Codec::Pcmu)
            } else if pt == Codec::Pcma.static_pt() {
                Some(Codec::Pcma)
            } else {
                None
            };
            let Some(codec) = codec else {
                if newer {
                    src.seq_off = src.seq_off.wrapping_sub(1);
                }
                self.src = Some(src);
                return Step::Drop(DropReason::UnknownPayloadType);
            };
            g711::transcode_in_place(codec, self.to.codec, p.payload_mut());
            self.to.pt
        };

        let out_seq = in_seq.wrapping_add(src.seq_off);
        let out_ts = in_ts.wrapping_add(src.ts_off);
        p.set_payload_type(out_pt);
        p.set_ssrc(self.out_ssrc);
        p.set_sequence_number(out_seq);
        p.set_timestamp(out_ts);
        if self.marker {
            p.set_marker(true);
            self.marker = false;
        }
        if seq_newer(out_seq, self.last_seq) {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
            self.last_at = Some(now);
        }
        let payload = p.payload_range();
        self.src = Some(src);
        Step::Forward { payload }
    }

    fn new_source(&mut self, ssrc: u32, in_seq: u16, in_ts: u32, now: Instant) -> Source {
        self.resync = false;
        self.marker = true;
        let target_ts = match self.last_at {
            Some(at) => {
                let ms = now.saturating_duration_since(at).as_millis() as u64;
                self.last_ts
                    .wrapping_add((ms * SAMPLES_PER_MS).clamp(1, u64::from(u32::MAX >> 2)) as u32)
            }
            None => self.last_ts,
        };
        Source {
            ssrc,
            seq_off: self.last_seq.wrapping_add(1).wrapping_sub(in_seq),
            ts_off: target_ts.wrapping_sub(in_ts),
            highest_in_seq: in_seq.wrapping_sub(1),
        }
    }

    /// Write one packet of `samples` samples of silence in the outgoing codec into `buf`,
    /// continuing the outgoing stream. Returns its length (0 if `buf` is too small).
    pub fn silence(&mut self, buf: &mut [u8], samples: u32, now: Instant) -> usize {
        let len = rtp::HEADER_LEN + samples as usize;
        let Some(out) = buf.get_mut(..len) else {
            return 0;
        };
        let seq = self.last_seq.wrapping_add(1);
        let ts = match self.last_at {
            Some(_) => self.last_ts.wrapping_add(samples),
            None => self.last_ts,
        };
        if rtp::write_header(out, self.to.pt, seq, ts, self.out_ssrc, self.marker).is_none() {
            return 0;
        }
        out[rtp::HEADER_LEN..].fill(g711::silence(self.to.codec));
        self.marker = false;
        self.last_seq = seq;
        self.last_ts = ts;
        self.last_at = Some(now);
        self.resync = true;
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PCMU: LegCodec = LegCodec {
        codec: Codec::Pcmu,
        pt: 0,
        te_pt: Some(101),
    };
    const PCMA: LegCodec = LegCodec {
        codec: Codec::Pcma,
        pt: 8,
        te_pt: Some(96),
    };

    fn pkt(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 12 + payload.len()];
        rtp::write_header(&mut v, pt, seq, ts, ssrc, false).expect("hdr");
        v[12..].copy_from_slice(payload);
        v
    }

    fn te(pt: u8, seq: u16, ts: u32, ssrc: u32, event: u8, end: bool) -> Vec<u8> {
        let mut p = [0u8; 4];
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration: 160,
        }
        .write(&mut p)
        .expect("room");
        pkt(pt, seq, ts, ssrc, &p)
    }

    fn hdr(v: &[u8]) -> (u8, u16, u32, u32, bool) {
        let p = RtpPacket::new_checked(v).expect("rtp");
        (
            p.payload_type(),
            p.sequence_number(),
            p.timestamp(),
            p.ssrc(),
            p.marker(),
        )
    }

    fn fwd(r: &mut Relay, v: &mut [u8], now: Instant) -> (u8, u16, u32, u32, bool) {
        match r.step(v, now) {
            Step::Forward { payload } => assert_eq!(payload, 12..v.len()),
            other => panic!("expected forward, got {other:?}"),
        }
        hdr(v)
    }

    #[test]
    fn plain_relay_rewrites_ssrc_seq_ts_only() {
        let t0 = Instant::now();
        let mut r = Relay::new(PCMU, PCMU, true, 0xABCD, 500, 9000);
        let mut a = pkt(0, 10, 100, 7, &[1, 2, 3]);
        assert_eq!(fwd(&mut r, &mut a, t0), (0, 500, 9000, 0xABCD, true));
        assert_eq!(&a[12..], &[1, 2, 3]);
        let mut b = pkt(0, 11, 260, 7, &[4]);
        assert_eq!(
            fwd(&mut r, &mut b, t0 + Duration::from_millis(20)),
            (0, 501, 9160, 0xABCD, false)
        );
        // a real loss gap (seq 12 lost) is kept
        let mut c = pkt(0, 13, 580, 7, &[4]);
        assert_eq!(fwd(&mut r, &mut c, t0).1, 503);
    }

    #[test]
    fn transcodes_and_maps_payload_types() {
        let t0 = Instant::now();
        let mut r = Relay::new(PCMU, PCMA, true, 1, 0, 0);
        let mut a = pkt(0, 1, 0, 7, &[0xFF, 0x80, 0x00]);
        assert_eq!(fwd(&mut r, &mut a, t0).0, 8);
        assert_eq!(&a[12..], &[0xD5, 0xAA, 0x2A]);
        let mut back = Relay::new(PCMA, PCMU, false, 2, 0, 0);
        let mut b = pkt(8, 1, 0, 9, &[0xD5, 0xAA]);
        assert_eq!(fwd(&mut back, &mut b, t0).0, 0);
        assert_eq!(&b[12..], &[g711::ulaw_encode(8), 0x80]);
        // rep's telephone-events pass to the customer with the customer's PT
        let mut e = te(96, 2, 0, 9, 1, false);
        assert_eq!(fwd(&mut back, &mut e, t0).0, 101);
    }

    #[test]
    fn customer_events_are_dropped_once_per_press_and_seq_stays_gapless() {
        let t0 = Instant::now();
        let mut r = Relay::new(PCMU, PCMU, true, 1, 100, 0);
        let mut a = pkt(0, 1, 0, 7, &[0xFF]);
        assert_eq!(fwd(&mut r, &mut a, t0).1, 100);
        let mut digits = 0;
        for (seq, end) in [(2, false), (3, false), (4, true), (5, true), (6, true)] {
            let mut e = te(101, seq, 160, 7, 9, end);
            match r.step(&mut e, t0) {
                Step::Event(Some(d)) => {
                    assert_eq!(d.key(), b'9');
                    digits += 1;
                }
                Step::Event(None) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(digits, 1);
        let mut b = pkt(0, 7, 960, 7, &[0xFF]);
        assert_eq!(fwd(&mut r, &mut b, t0).1, 101);
        // redundant end packet re-sent with an old seq: dropped, gap accounting unchanged
        let mut e = te(101, 6, 160, 7, 9, true);
        assert_eq!(r.step(&mut e, t0), Step::Event(None));
        let mut c = pkt(0, 8, 1120, 7, &[0xFF]);
        assert_eq!(fwd(&mut r, &mut c, t0).1, 102);
    }

    #[test]
    fn ssrc_change_continues_seq_and_ts_and_drops_stragglers() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Relay::new(PCMU, PCMU, true, 1, 1000, 50_000);
        let mut a = pkt(0, 40_000, 7_000_000, 7, &[0]);
        assert_eq!(fwd(&mut r, &mut a, t0).1, 1000);
        let mut a2 = pkt(0, 40_001, 7_000_160, 7, &[0]);
        assert_eq!(
            fwd(&mut r, &mut a2, t0 + ms(20)),
            (0, 1001, 50_160, 1, false)
        );
        // new source with unrelated seq/ts, 20 ms later
        let mut b = pkt(0, 3, 12, 8, &[0]);
        assert_eq!(fwd(&mut r, &mut b, t0 + ms(40)), (0, 1002, 50_320, 1, true));
        let mut b2 = pkt(0, 4, 172, 8, &[0]);
        assert_eq!(
            fwd(&mut r, &mut b2, t0 + ms(60)),
            (0, 1003, 50_480, 1, false)
        );
        // a late packet of the old source is dropped
        let mut late = pkt(0, 40_002, 7_000_320, 7, &[0]);
        assert_eq!(r.step(&mut late, t0), Step::Drop(DropReason::OldSource));
    }

    #[test]
    fn events_on_their_own_ssrc_are_captured_while_audio_flows() {
        // Audio on SSRC 7, key presses on SSRC 8, interleaved, events first: no press is
        // lost, none is forwarded, and the audio is not taken for an old source.
        let t0 = Instant::now();
        let mut r = Relay::new(PCMU, PCMU, true, 1, 100, 0);
        let mut digits = Vec::new();
        let mut audio_seq = 50u16;
        for (i, key) in [4u8, 1, 1, 1].iter().enumerate() {
            let ts = 10_000 + 1600 * i as u32;
            for (k, end) in [(0u16, false), (1, false), (2, true), (3, true)] {
                let seq = 900 + (i as u16) * 4 + k;
                match r.step(&mut te(101, seq, ts, 8, *key, end), t0) {
                    Step::Event(Some(d)) => digits.push(d.key()),
                    Step::Event(None) => {}
                    other => panic!("event forwarded or dropped: {other:?}"),
                }
            }
            for _ in 0..3 {
                audio_seq += 1;
                let mut a = pkt(0, audio_seq, 160 * u32::from(audio_seq), 7, &[0xFF]);
                assert!(matches!(r.step(&mut a, t0), Step::Forward { .. }));
            }
        }
        assert_eq!(digits, b"4111".to_vec());
    }

    #[test]
    fn silence_then_stream_is_continuous() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Relay::new(PCMA, PCMA, false, 5, 10, 800);
        let mut buf = [0u8; 256];
        let n = r.silence(&mut buf, 160, t0);
        assert_eq!(n, 172);
        assert_eq!(hdr(&buf[..n]), (8, 10, 800, 5, true));
        assert!(buf[12..n].iter().all(|b| *b == 0xD5));
        let n = r.silence(&mut buf, 160, t0 + ms(20));
        assert_eq!(hdr(&buf[..n]), (8, 11, 960, 5, false));
        let mut a = pkt(8, 777, 123, 9, &[0xD5]);
        assert_eq!(fwd(&mut r, &mut a, t0 + ms(40)), (8, 12, 1120, 5, true));
        assert_eq!(r.silence(&mut [0u8; 20], 160, t0), 0);
    }

    #[test]
    fn garbage_rtcp_and_unknown_pt_are_dropped() {
        let t0 = Instant::now();
        let mut r = Relay::new(PCMU, PCMU, true, 1, 0, 0);
        assert_eq!(
            r.step(&mut [1, 2, 3], t0),
            Step::Drop(DropReason::Malformed)
        );
        let mut rtcp = [0x80u8, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(r.step(&mut rtcp, t0), Step::Drop(DropReason::Rtcp));
        let mut cn = pkt(13, 1, 0, 7, &[40]);
        assert_eq!(
            r.step(&mut cn, t0),
            Step::Drop(DropReason::UnknownPayloadType)
        );
        // the CN packet we dropped leaves no gap
        let mut a = pkt(0, 2, 160, 7, &[0]);
        assert_eq!(fwd(&mut r, &mut a, t0).1, 0);
        let mut nte = Relay::new(
            PCMA,
            LegCodec {
                te_pt: None,
                ..PCMU
            },
            false,
            1,
            0,
            0,
        );
        let mut e = te(96, 1, 0, 7, 1, false);
        assert_eq!(nte.step(&mut e, t0), Step::Drop(DropReason::NoEventPt));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            strip in proptest::prelude::any::<bool>(),
        ) {
            let mut r = Relay::new(PCMU, PCMA, strip, 1, 0, 0);
            let mut d = data.clone();
            if let Step::Forward { payload } = r.step(&mut d, Instant::now()) {
                proptest::prop_assert!(payload.end <= d.len());
                proptest::prop_assert_eq!(d.len(), data.len());
            }
        }
    }
}
