//! The in-band DTMF masker: an `Inspector` on the customer→representative hold-back
//! buffer. Each arriving payload is decoded (G.711) into the `Detector`; the sample spans
//! that carry dual-tone energy (from a lenient `Onset` to its `End`, widened by a guard of
//! one analysis window on each side, so leading edges, tails and bursts too short to be
//! digits are covered) are recorded, and when a packet leaves, its payload is replaced per
//! `MaskMode` if it overlaps one. Digits the detector declares go out via `take_digit`.
//!
//! Timing: the detector knows an onset ≤ ~14 ms (one window + one hop) after a tone
//! begins, and an end ≈ 32 ms after it stops, so with a hold-back of 40 ms (the default)
//! the leading edge and the tail are still in the buffer when their span is known.
//!
//! Must never: allocate per packet, touch a payload outside a masked span (speech leaves
//! byte for byte as it came), or format a digit.

use crate::config::MaskMode;
use crate::digit::Digit;
use crate::media::detector::{Detector, Sensitivity, ToneEvent};
use crate::media::g711;
use crate::media::holdback::{Inspector, PacketInfo, SLOT_BYTES};
use crate::media::Codec;

/// Samples masked before an onset and after an end (one 102-sample window).
pub const GUARD: u64 = 102;
/// Packets remembered between arrival and release (the hold-back holds fewer).
const PACKETS: usize = 64;
/// Closed masked spans remembered until their packets have left.
const SPANS: usize = 16;
/// Digits waiting for `take_digit`.
const DIGITS: usize = 8;
/// Level of the `tone` mask: a 2 kHz sine (no DTMF frequency within 20 %) at −20 dBm0.
const MASK_TONE_PEAK: f32 = 32767.0 * 0.069_9 * 0.698_2; // 10^(−23.14/20), × cos(π/4)
/// Ceiling of the comfort noise RMS (about −20 dBm0).
const NOISE_MAX_RMS: f32 = 1600.0;

#[derive(Clone, Copy, Default)]
struct Arrival {
    timestamp: u32,
    start: u64,
    len: u32,
    /// Mean square of the decoded samples.
    power: f32,
}

/// The masking inspector.
pub struct Masker {
    mode: MaskMode,
    masking: bool,
    detector: Detector,
    arrivals: [Arrival; PACKETS],
    a_head: usize,
    a_len: usize,
    /// Start of the span being tracked (between `Onset` and `End`).
    open: Option<u64>,
    spans: [(u64, u64); SPANS],
    s_head: usize,
    s_len: usize,
    digits: [Option<Digit>; DIGITS],
    d_head: usize,
    d_len: usize,
    /// Running mean square of the audio that left unmasked (for `noise`).
    level: f32,
    rng: u32,
    decoded: [i16; SLOT_BYTES],
    masked_packets: u64,
}

impl Masker {
    /// A masker replacing DTMF per `mode`; with `masking` false it only detects (a
    /// test-only switch: payloads then always leave untouched).
    pub fn new(mode: MaskMode, masking: bool) -> Masker {
        Masker {
            mode,
            masking,
            detector: Detector::new(Sensitivity::Standard),
            arrivals: [Arrival::default(); PACKETS],
            a_head: 0,
            a_len: 0,
            open: None,
            spans: [(0, 0); SPANS],
            s_head: 0,
            s_len: 0,
            digits: [None; DIGITS],
            d_head: 0,
            d_len: 0,
            level: 0.0,
            rng: 0x2545_F491,
            decoded: [0; SLOT_BYTES],
            masked_packets: 0,
        }
    }

    /// Packets whose payload was replaced so far.
    pub fn masked_packets(&self) -> u64 {
        self.masked_packets
    }

    fn push_arrival(&mut self, a: Arrival) {
        if self.a_len == PACKETS {
            self.a_head = (self.a_head + 1) % PACKETS;
            self.a_len -= 1;
        }
        self.arrivals[(self.a_head + self.a_len) % PACKETS] = a;
        self.a_len += 1;
    }

    /// The arrival record of the packet with `timestamp`, dropping older records
    /// (packets the buffer discarded without releasing them).
    fn take_arrival(&mut self, timestamp: u32) -> Option<Arrival> {
        let i = (0..self.a_len)
            .find(|i| self.arrivals[(self.a_head + i) % PACKETS].timestamp == timestamp)?;
        let a = self.arrivals[(self.a_head + i) % PACKETS];
        self.a_head = (self.a_head + i + 1) % PACKETS;
        self.a_len -= i + 1;
        Some(a)
    }

    /// Whether samples `[start, end)` overlap dual-tone energy (with guards); forgets
    /// spans wholly before `start` (packets leave in order).
    fn overlaps(&mut self, start: u64, end: u64) -> bool {
        while self.s_len > 0 && self.spans[self.s_head].1 <= start {
            self.s_head = (self.s_head + 1) % SPANS;
            self.s_len -= 1;
        }
        if matches!(self.open, Some(o) if o < end) {
            return true;
        }
        (0..self.s_len).any(|i| {
            let (a, b) = self.spans[(self.s_head + i) % SPANS];
            a < end && b > start
        })
    }

    fn fill(&mut self, payload: &mut [u8], codec: Codec, start: u64) {
        match self.mode {
            MaskMode::Silence => payload.fill(g711::silence(codec)),
            MaskMode::Tone => {
                let hi = g711::encode(codec, MASK_TONE_PEAK as i16);
                let lo = g711::encode(codec, -(MASK_TONE_PEAK as i16));
                // cos(π/2·n + π/4): + − − + ... by absolute sample position (continuous)
                for (i, b) in payload.iter_mut().enumerate() {
                    let n = (start + i as u64) % 4;
                    *b = if n == 0 || n == 3 { hi } else { lo };
                }
            }
            MaskMode::Noise => {
                let rms = self.level.sqrt().min(NOISE_MAX_RMS);
                let scale = rms * 3f32.sqrt();
                for b in payload.iter_mut() {
                    // xorshift32, uniform in [-1, 1): white, nothing tonal
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 17;
                    self.rng ^= self.rng << 5;
                    let u = (self.rng >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
                    *b = g711::encode(codec, (u * scale) as i16);
                }
            }
        }
    }
}

impl Inspector for Masker {
    fn on_arrival(&mut self, payload: &[u8], info: &PacketInfo) {
        let n = payload.len().min(SLOT_BYTES);
        let mut power = 0.0f32;
        for (d, b) in self.decoded[..n].iter_mut().zip(payload) {
            *d = g711::decode(info.codec, *b);
            power += f32::from(*d) * f32::from(*d);
        }
        self.push_arrival(Arrival {
            timestamp: info.timestamp,
            start: self.detector.position(),
            len: n as u32,
            power: if n > 0 { power / n as f32 } else { 0.0 },
        });
        let Masker {
            detector,
            decoded,
            open,
            spans,
            s_head,
            s_len,
            digits,
            d_head,
            d_len,
            ..
        } = self;
        detector.push(&decoded[..n], &mut |e| match e {
            ToneEvent::Onset { at } => *open = Some(at.saturating_sub(GUARD)),
            ToneEvent::End { at } => {
                let start = open.take().unwrap_or(at);
                if *s_len == SPANS {
                    // merge into the newest rather than forget a span
                    let last = (*s_head + *s_len - 1) % SPANS;
                    spans[last].1 = at + GUARD;
                } else {
                    spans[(*s_head + *s_len) % SPANS] = (start, at + GUARD);
                    *s_len += 1;
                }
            }
            ToneEvent::Digit { digit, .. } => {
                if *d_len < DIGITS {
                    digits[(*d_head + *d_len) % DIGITS] = Some(digit);
                    *d_len += 1;
                }
            }
        });
    }

    fn inspect(&mut self, payload: &mut [u8], info: &PacketInfo) {
        let mask = match self.take_arrival(info.timestamp) {
            Some(a) => {
                let hit = self.overlaps(a.start, a.start + u64::from(a.len));
                if !hit {
                    self.level = if self.level == 0.0 {
                        a.power
                    } else {
                        self.level * 0.9 + a.power * 0.1
                    };
                }
                hit.then_some(a.start)
            }
            // never seen arriving (cannot happen through `Holdback`): err towards masking
            None => self.detector.in_tone().then_some(self.detector.position()),
        };
        if let (Some(start), true) = (mask, self.masking) {
            self.masked_packets += 1;
            self.fill(payload, info.codec, start);
        }
    }

    fn take_digit(&mut self) -> Option<Digit> {
        if self.d_len == 0 {
            return None;
        }
        let d = self.digits[self.d_head].take();
        self.d_head = (self.d_head + 1) % DIGITS;
        self.d_len -= 1;
        d
    }
}

#[cfg(test)]
#[path = "masker_tests.rs"]
mod tests;
