//! INTERFACE STUB (issue 3 implements it): the in-band DTMF detector, a pure state machine
//! over 8 kHz linear samples (Goertzel, ITU-T Q.24), in the manner of spandsp's `dtmf_rx`.
//!
//! Must never: read the clock, allocate per call, or format a digit.

use crate::digit::Digit;

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

/// The detector.
pub struct Detector {
    sensitivity: Sensitivity,
    position: u64,
}

impl Detector {
    pub fn new(sensitivity: Sensitivity) -> Detector {
        Detector {
            sensitivity,
            position: 0,
        }
    }

    /// Feed samples; each event is passed to `emit` in order.
    pub fn push(&mut self, samples: &[i16], emit: &mut dyn FnMut(ToneEvent)) {
        let _ = (self.sensitivity, emit);
        self.position += samples.len() as u64;
    }

    /// Samples pushed so far.
    pub fn position(&self) -> u64 {
        self.position
    }
}
