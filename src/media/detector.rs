//! The in-band DTMF detector: a pure state machine over 8 kHz linear samples (Goertzel,
//! ITU-T Q.24), in the manner of spandsp's `dtmf_rx` but with our own block scheme.
//!
//! Analysis: eight Goertzel bins over half-blocks of 51 samples (6.4 ms); every half-block
//! the last two halves form a 102-sample window (12.75 ms, hop 51) whose DFT values are
//! the two halves' combined, and whose phase difference gives each tone's frequency
//! offset. A window votes for a key when the best row and best column tone each pass the
//! level threshold, their twist is in range, each stands above the others of its group,
//! their measured frequencies are within tolerance, and together they hold (nearly) all of
//! the window's energy *and* of each half's energy (so windows straddling a tone edge do
//! not vote). `Standard` declares a digit after 4 consecutive windows agree (≥ 255 samples
//! of tone: a 40 ms tone always has 4 full windows, a 23 ms one at most 3); `Strict` after
//! 3. A lenient test (lower level, wider twist, no frequency check, lower energy share)
//! raises `Onset` on the first window that looks like dual-tone energy and `End` after
//! 5 windows (≈ 32 ms) without it, so interruptions of ≤ 10 ms are bridged and 40 ms
//! pauses separate digits.
//!
//! Level convention (also used by `tests/common/tones.rs`): a sine of peak amplitude
//! `A(dBm0) = 32767 · 10^((dBm0 − 3.14)/20)` is at `dBm0` (so 0 dBm0 is 3.14 dB below a
//! full-scale sine); its power `A²/2` is what the thresholds compare against.
//!
//! Must never: read the clock, allocate per call, or format a digit.

use zeroize::Zeroize;

use crate::digit::Digit;
use crate::media::goertzel::{cmul, norm2, Bin, State};

/// How eager the detector is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sensitivity {
    /// Q.24 operating limits (what the relay uses to report digits).
    #[default]
    Standard,
    /// Wider limits and lower thresholds: used by tests to check that what the
    /// representative received contains no usable DTMF at all.
    Strict,
}

/// What the detector reports, with the sample position (counted from the first sample
/// pushed, at 8 kHz) where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToneEvent {
    /// Dual-tone energy began (lenient: may never become a digit). `at` is the first
    /// sample of the block where it was seen.
    Onset { at: u64 },
    /// A digit is declared (Q.24: ≥ 40 ms tones; never ≤ 23 ms). `at` is where its tone began.
    Digit { digit: Digit, at: u64 },
    /// The dual-tone energy is gone. `at` is the first sample after it.
    End { at: u64 },
}

const RATE: f32 = 8000.0;
/// Half-block length; a window is two halves.
pub const HALF: usize = 51;
const WINDOW: u64 = 2 * HALF as u64;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[u8; 4]; 4] = [
    *b"123A", //
    *b"456B", *b"789C", *b"*0#D",
];
/// Power of a 0 dBm0 sine: `A²/2` with `A = 32767 · 10^(−3.14/20)`.
const P0: f32 = 2.584e8;
/// Windows without dual-tone energy that end a tone.
const END_MISSES: u32 = 5;

fn db(x: f32) -> f32 {
    10f32.powf(x / 10.0)
}

/// One set of acceptance limits.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Minimum power per tone (linear, relative to P0).
    min_power: f32,
    /// Max power ratio column/row (reverse twist) and row/column (normal twist).
    reverse: f32,
    normal: f32,
    /// Best tone over the second best of its group.
    rel_peak: f32,
    /// Share of the window energy (and of each half's) the two tones must hold.
    share: f32,
    half_share: f32,
    /// Max relative frequency deviation of either tone (`None`: not checked).
    freq_tol: Option<f32>,
    /// Consecutive agreeing windows to declare a digit.
    need: u32,
}

const STANDARD: Limits = Limits {
    min_power: -36.0,
    reverse: 6.0,
    normal: 10.0,
    rel_peak: 6.0,
    share: 0.75,
    half_share: 0.65,
    freq_tol: Some(0.028),
    need: 4,
};

const STRICT: Limits = Limits {
    min_power: -45.0,
    reverse: 10.0,
    normal: 14.0,
    rel_peak: 4.0,
    share: 0.6,
    half_share: 0.5,
    freq_tol: Some(0.045),
    need: 3,
};

const LENIENT: Limits = Limits {
    min_power: -48.0,
    reverse: 12.0,
    normal: 16.0,
    rel_peak: 4.0,
    share: 0.65,
    half_share: 0.5,
    freq_tol: Some(0.04),
    need: 1,
};

/// The dB limits of a `Limits` as linear factors, computed once per detector.
#[derive(Clone, Copy)]
struct Linear {
    min_power: f32,
    reverse: f32,
    normal: f32,
    rel_peak: f32,
}

impl Linear {
    fn of(lim: &Limits) -> Linear {
        Linear {
            min_power: db(lim.min_power),
            reverse: db(lim.reverse),
            normal: db(lim.normal),
            rel_peak: db(lim.rel_peak),
        }
    }
}

/// Per-bin results of one half-block.
#[derive(Clone, Copy, Default)]
struct Half {
    /// DFT values, rows then columns.
    x: [(f32, f32); 8],
    energy: f32,
}

/// The detector.
pub struct Detector {
    sensitivity: Sensitivity,
    position: u64,
    limits: Limits,
    limits_lin: Linear,
    lenient_lin: Linear,
    bins: [Bin; 8],
    /// Goertzel state, structure-of-arrays so the 8 bins update as one vector.
    coeff: [f32; 8],
    s1: [f32; 8],
    s2: [f32; 8],
    energy: f32,
    fill: usize,
    /// The previous half-block, once there is one.
    prev: Option<Half>,
    // tone tracking
    in_run: bool,
    /// The key the previous window voted for under the lenient limits.
    prev_lenient: Option<u8>,
    run_start: u64,
    last_valid_end: u64,
    misses: u32,
    cand: Option<(u8, u32, u64)>,
    declared: Option<u8>,
}

impl Drop for Detector {
    /// The candidate and declared keys are card digits: wipe them.
    fn drop(&mut self) {
        if let Some((k, _, _)) = &mut self.cand {
            k.zeroize();
        }
        if let Some(k) = &mut self.declared {
            k.zeroize();
        }
    }
}

impl Detector {
    pub fn new(sensitivity: Sensitivity) -> Detector {
        let mut bins = [Bin::new(ROWS[0], RATE, HALF); 8];
        for (i, hz) in ROWS.iter().chain(COLS.iter()).enumerate() {
            bins[i] = Bin::new(*hz, RATE, HALF);
        }
        let limits = match sensitivity {
            Sensitivity::Standard => STANDARD,
            Sensitivity::Strict => STRICT,
        };
        Detector {
            sensitivity,
            position: 0,
            limits,
            limits_lin: Linear::of(&limits),
            lenient_lin: Linear::of(&LENIENT),
            bins,
            coeff: bins.map(|b| b.coeff),
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            fill: 0,
            prev: None,
            in_run: false,
            prev_lenient: None,
            run_start: 0,
            last_valid_end: 0,
            misses: 0,
            cand: None,
            declared: None,
        }
    }

    pub fn sensitivity(&self) -> Sensitivity {
        self.sensitivity
    }

    /// Whether dual-tone energy is currently being tracked (between `Onset` and `End`).
    pub fn in_tone(&self) -> bool {
        self.in_run
    }

    /// Feed samples; each event is passed to `emit` in order.
    pub fn push(&mut self, samples: &[i16], emit: &mut dyn FnMut(ToneEvent)) {
        for &s in samples {
            let x = f32::from(s);
            for i in 0..8 {
                let v = x + self.coeff[i] * self.s1[i] - self.s2[i];
                self.s2[i] = self.s1[i];
                self.s1[i] = v;
            }
            self.energy += x * x;
            self.fill += 1;
            self.position += 1;
            if self.fill == HALF {
                self.finish_half(emit);
            }
        }
    }

    /// Samples pushed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn finish_half(&mut self, emit: &mut dyn FnMut(ToneEvent)) {
        let mut half = Half {
            energy: self.energy,
            ..Half::default()
        };
        for i in 0..8 {
            half.x[i] = State::from_parts(self.s1[i], self.s2[i]).finish(&self.bins[i]);
        }
        self.s1 = [0.0; 8];
        self.s2 = [0.0; 8];
        self.energy = 0.0;
        self.fill = 0;
        if let Some(prev) = self.prev {
            let start = self.position - WINDOW;
            self.window(&prev, &half, start, emit);
        }
        self.prev = Some(half);
    }

    /// Evaluate the window made of halves `a` then `b`, starting at sample `start`.
    fn window(&mut self, a: &Half, b: &Half, start: u64, emit: &mut dyn FnMut(ToneEvent)) {
        let w = Window::new(a, b, &self.bins);
        let lenient_key = w.key(&LENIENT, &self.lenient_lin);
        let lenient = lenient_key.is_some();
        // An onset needs two overlapping windows voting (leniently) for the same key: a
        // single window is too easily a vowel's harmonics; two are known 19 ms into a tone,
        // well inside the 40 ms hold-back.
        let onset_key = lenient_key.filter(|k| self.prev_lenient == Some(*k));
        self.prev_lenient = lenient_key;
        let key = w.key(&self.limits, &self.limits_lin);
        let starts = onset_key.is_some() || key.is_some();
        if (self.in_run && lenient) || starts {
            if !self.in_run {
                self.in_run = true;
                let at = if onset_key.is_some() {
                    start.saturating_sub(HALF as u64)
                } else {
                    start
                };
                self.run_start = at;
                self.declared = None;
                emit(ToneEvent::Onset { at });
            }
            self.misses = 0;
            self.last_valid_end = start + WINDOW;
        } else if self.in_run {
            self.misses += 1;
            if self.misses >= END_MISSES {
                self.in_run = false;
                self.cand = None;
                self.declared = None;
                emit(ToneEvent::End {
                    at: self.last_valid_end,
                });
            }
        }
        let Some(k) = key else {
            self.cand = None;
            return;
        };
        let (count, first) = match self.cand {
            Some((c, n, at)) if c == k => (n + 1, at),
            _ => (1, start),
        };
        self.cand = Some((k, count, first));
        if count >= self.limits.need && self.declared != Some(k) {
            let at = if self.declared.is_none() {
                self.run_start.min(first)
            } else {
                first
            };
            self.declared = Some(k);
            if let Some(digit) = Digit::from_key(k) {
                emit(ToneEvent::Digit { digit, at });
            }
        }
    }
}

/// The measurements of one 102-sample window.
struct Window {
    /// Tone power (`A²/2`) per bin, relative to P0, deviation-corrected.
    power: [f32; 8],
    /// Raw window bin energies (for the group peak test).
    raw: [f32; 8],
    /// Relative frequency offset per bin.
    dev: [f32; 8],
    /// Per-half bin energies as tone energy (`2|X|²/n`).
    half_tone: [[f32; 8]; 2],
    energy: f32,
    half_energy: [f32; 2],
}

impl Window {
    fn new(a: &Half, b: &Half, bins: &[Bin; 8]) -> Window {
        let n = WINDOW as f32;
        let h = HALF as f32;
        let mut w = Window {
            power: [0.0; 8],
            raw: [0.0; 8],
            dev: [0.0; 8],
            half_tone: [[0.0; 8]; 2],
            energy: a.energy + b.energy,
            half_energy: [a.energy, b.energy],
        };
        let mut shifted = [(0.0f32, 0.0f32); 8];
        for (i, bin) in bins.iter().enumerate() {
            shifted[i] = cmul(b.x[i], bin.advance);
            let x = (a.x[i].0 + shifted[i].0, a.x[i].1 + shifted[i].1);
            w.raw[i] = norm2(x);
        }
        // Only the strongest row and column can vote: measure frequency, scalloping gain
        // and per-half energy for those two bins (the trigonometry is the costly part).
        let (r, _) = best_two(&w.raw[..4]);
        let (c, _) = best_two(&w.raw[4..]);
        for i in [r, c + 4] {
            let bin = &bins[i];
            let raw = w.raw[i];
            // phase advance over one half beyond the bin's own: Δω · HALF
            let cp = cmul(shifted[i], (a.x[i].0, -a.x[i].1));
            let dphi = cp.1.atan2(cp.0);
            let domega = dphi / h;
            // rectangular-window gain at that offset, to undo the scalloping loss
            let half_arg = domega * n / 2.0;
            let gain = if half_arg.abs() < 1e-4 {
                1.0
            } else {
                (half_arg.sin() / (n * (domega / 2.0).sin())).abs()
            };
            // only within the widest tolerance: far-off tones must not be boosted
            let gain = if w_dev_ok(domega / bin.omega) {
                gain.max(0.5)
            } else {
                1.0
            };
            w.power[i] = 2.0 * raw / (n * n) / (gain * gain) / P0;
            w.dev[i] = domega / bin.omega;
            w.half_tone[0][i] = 2.0 * norm2(a.x[i]) / h;
            w.half_tone[1][i] = 2.0 * norm2(b.x[i]) / h;
        }
        w
    }

    /// The key this window votes for under `lim`, if any.
    fn key(&self, lim: &Limits, lin: &Linear) -> Option<u8> {
        let (r, r2) = best_two(&self.raw[..4]);
        let (c, c2) = best_two(&self.raw[4..]);
        let ci = c + 4;
        let (pr, pc) = (self.power[r], self.power[ci]);
        let min = lin.min_power;
        if pr < min || pc < min {
            return None;
        }
        if pc > pr * lin.reverse || pr > pc * lin.normal {
            return None;
        }
        let rel = lin.rel_peak;
        if self.raw[r] < self.raw[r2] * rel || self.raw[ci] < self.raw[c2 + 4] * rel {
            return None;
        }
        if let Some(tol) = lim.freq_tol {
            if self.dev[r].abs() > tol || self.dev[ci].abs() > tol {
                return None;
            }
        }
        let n = WINDOW as f32;
        let tone_energy = (pr + pc) * P0 * n;
        if tone_energy < lim.share * self.energy {
            return None;
        }
        for k in 0..2 {
            let t = self.half_tone[k][r] + self.half_tone[k][ci];
            if t < lim.half_share * self.half_energy[k] {
                return None;
            }
        }
        Some(KEYPAD[r][c])
    }
}

/// Whether a relative deviation is small enough to correct the scalloping loss for.
fn w_dev_ok(dev: f32) -> bool {
    dev.abs() <= 0.05
}

/// Indexes of the largest and second largest of four values.
fn best_two(v: &[f32]) -> (usize, usize) {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    let mut second = if best == 0 { 1 } else { 0 };
    for i in 0..v.len() {
        if i != best && v[i] > v[second] {
            second = i;
        }
    }
    (best, second)
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
