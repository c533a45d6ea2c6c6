//! One key press, one digit: the same press may be detected both in-band and as an RFC
//! 4733 event. A detection is reported at once unless it matches an earlier, unmatched
//! detection of the *other* method, of the same key, within `WINDOW`; each detection is
//! matched at most once, so two real presses of one key stay two digits.
//!
//! Must never: allocate, read the clock (callers pass `Instant`s), or format a digit.

use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::digit::{Digit, DigitMethod};

/// How far apart the two detections of one press may be.
pub const WINDOW: Duration = Duration::from_millis(150);
const SLOTS: usize = 8;

#[derive(Clone, Copy)]
struct Seen {
    digit: Digit,
    method: DigitMethod,
    at: Instant,
    matched: bool,
}

/// Recent detections, in a fixed ring.
#[derive(Default)]
pub struct PressDedup {
    seen: [Option<Seen>; SLOTS],
    next: usize,
}

impl Drop for PressDedup {
    /// The remembered keys are card digits: wipe them.
    fn drop(&mut self) {
        for s in self.seen.iter_mut().flatten() {
            s.digit.zeroize();
        }
    }
}

impl PressDedup {
    pub fn new() -> PressDedup {
        PressDedup::default()
    }

    /// Whether this detection is a new press (report it) or the other method's view of
    /// a press already reported (suppress it).
    pub fn accept(&mut self, digit: Digit, method: DigitMethod, now: Instant) -> bool {
        let twin = self.seen.iter_mut().flatten().find(|s| {
            !s.matched
                && s.method != method
                && s.digit == digit
                && now.saturating_duration_since(s.at) <= WINDOW
        });
        if let Some(s) = twin {
            s.matched = true;
            return false;
        }
        self.seen[self.next] = Some(Seen {
            digit,
            method,
            at: now,
            matched: false,
        });
        self.next = (self.next + 1) % SLOTS;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(k: u8) -> Digit {
        Digit::from_key(k).expect("key")
    }

    const IB: DigitMethod = DigitMethod::Inband;
    const EV: DigitMethod = DigitMethod::Rfc4733;

    #[test]
    fn both_methods_of_one_press_give_one_digit_first_wins() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PressDedup::new();
        assert!(p.accept(d(b'4'), EV, t));
        assert!(!p.accept(d(b'4'), IB, t + ms(30)));
        // and the other order
        assert!(p.accept(d(b'7'), IB, t + ms(500)));
        assert!(!p.accept(d(b'7'), EV, t + ms(600)));
    }

    #[test]
    fn each_detection_is_matched_at_most_once() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PressDedup::new();
        // "55" pressed quickly, each seen both ways
        assert!(p.accept(d(b'5'), EV, t));
        assert!(!p.accept(d(b'5'), IB, t + ms(25)));
        assert!(p.accept(d(b'5'), EV, t + ms(90)));
        assert!(!p.accept(d(b'5'), IB, t + ms(115)));
        // a third in-band detection has nothing left to match
        assert!(p.accept(d(b'5'), IB, t + ms(130)));
    }

    #[test]
    fn same_method_repeats_and_other_keys_and_late_ones_are_new_presses() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PressDedup::new();
        assert!(p.accept(d(b'1'), IB, t));
        assert!(p.accept(d(b'1'), IB, t + ms(90)));
        assert!(p.accept(d(b'2'), EV, t + ms(100)));
        assert!(p.accept(d(b'3'), EV, t + ms(100)));
        assert!(!p.accept(d(b'3'), IB, t + ms(100) + WINDOW));
        assert!(p.accept(d(b'9'), EV, t + ms(1000)));
        assert!(p.accept(d(b'9'), IB, t + ms(1000) + WINDOW + ms(1)));
    }
}
