//! Runs detectors over test audio: tonewall's `Detector` (fed in 20 ms frames, as the relay
//! feeds it) and a brute-force 10 ms Goertzel window check that is independent of it.
//!
//! Must never: print a digit outside a test assertion (digits here are test data).
#![allow(dead_code)]

use tonewall::media::detector::{Detector, Sensitivity, ToneEvent};

use super::tones::{self, COLS, ROWS};

/// Everything the detector reported.
pub struct Run {
    pub events: Vec<ToneEvent>,
}

impl Run {
    /// The declared digits as keypad characters, in order.
    pub fn digits(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Digit { digit, .. } => Some(digit.key() as char),
                _ => None,
            })
            .collect()
    }

    /// (sample position, key) of each declared digit.
    pub fn digits_at(&self) -> Vec<(u64, u8)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Digit { digit, at } => Some((*at, digit.key())),
                _ => None,
            })
            .collect()
    }

    /// Samples between each Onset and the End that follows it (an unclosed onset counts to
    /// `total`).
    pub fn masked_samples(&self, total: u64) -> u64 {
        let mut sum = 0;
        let mut open: Option<u64> = None;
        for e in &self.events {
            match e {
                ToneEvent::Onset { at } => {
                    if open.is_none() {
                        open = Some(*at);
                    }
                }
                ToneEvent::End { at } => {
                    if let Some(s) = open.take() {
                        sum += at.saturating_sub(s);
                    }
                }
                ToneEvent::Digit { .. } => {}
            }
        }
        if let Some(s) = open {
            sum += total.saturating_sub(s);
        }
        sum
    }
}

/// Run a fresh detector over `samples` in 160-sample frames.
pub fn run(sensitivity: Sensitivity, samples: &[i16]) -> Run {
    let mut d = Detector::new(sensitivity);
    let mut events = Vec::new();
    for chunk in samples.chunks(tones::FRAME) {
        d.push(chunk, &mut |e| events.push(e));
    }
    Run { events }
}

/// The 10 ms leak check's thresholds.
#[derive(Clone, Copy, Debug)]
pub struct WindowCheck {
    /// Both the best row and the best column tone at or above this level (dBm0). The
    /// Standard detector must operate down to −30 dBm0 per tone; this is well below.
    pub min_level_dbm0: f64,
    /// |twist| within this (dB).
    pub max_twist_db: f64,
    /// The two tones hold at least this fraction of the window's energy.
    pub min_fraction: f64,
}

impl Default for WindowCheck {
    fn default() -> Self {
        WindowCheck {
            min_level_dbm0: -36.0,
            max_twist_db: 10.0,
            min_fraction: 0.8,
        }
    }
}

/// Level (dBm0) of a sine at `f` within `s`, by Goertzel.
pub fn goertzel_dbm0(s: &[i16], f: f64) -> f64 {
    let w = std::f64::consts::TAU * f / tones::RATE as f64;
    let c = 2.0 * w.cos();
    let (mut q1, mut q2) = (0.0f64, 0.0f64);
    for x in s {
        let q0 = c * q1 - q2 + *x as f64;
        q2 = q1;
        q1 = q0;
    }
    let p = (q1 * q1 + q2 * q2 - c * q1 * q2).max(0.0);
    tones::dbm0_of_amplitude(2.0 * p.sqrt() / s.len().max(1) as f64)
}

/// Start sample of each 10 ms window (80 samples, hop 40) that carries dual-tone energy
/// above the check's thresholds.
pub fn dual_tone_windows(samples: &[i16], check: WindowCheck) -> Vec<usize> {
    const WIN: usize = 80;
    const HOP: usize = 40;
    let mut hits = Vec::new();
    let mut start = 0;
    while start + WIN <= samples.len() {
        let w = &samples[start..start + WIN];
        let best = |fs: &[f64; 4]| {
            fs.iter()
                .map(|f| goertzel_dbm0(w, *f))
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let (r, c) = (best(&ROWS), best(&COLS));
        if r >= check.min_level_dbm0
            && c >= check.min_level_dbm0
            && (r - c).abs() <= check.max_twist_db
        {
            let tone_power = (tones::amplitude(r).powi(2) + tones::amplitude(c).powi(2)) / 2.0;
            let total = tones::power(w);
            if total > 0.0 && tone_power / total >= check.min_fraction {
                hits.push(start);
            }
        }
        start += HOP;
    }
    hits
}
