//! The hand-back watch (SPEC §2.8): the pure state of one REFER that tonewall sent on a
//! customer leg, deciding from the REFER's final response, the NOTIFYs' `message/sipfrag`
//! bodies, the leg's fate and the clock whether the customer was handed back.
//!
//! Pure logic. Must never: read the clock, do I/O, panic on input, or decide twice (every
//! input after the first decision returns `None`).

use std::time::{Duration, Instant};

/// How long tonewall waits for a final NOTIFY after sending REFER.
pub const HANDBACK_TIMEOUT: Duration = Duration::from_secs(8);

/// One REFER in flight and what is known of it.
#[derive(Debug)]
pub struct ReferWatch {
    deadline: Instant,
    decided: bool,
}

/// The status code of a `message/sipfrag` body's status line (`SIP/2.0 200 OK`), when it is
/// one.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.trim_start().lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..700).contains(&code).then_some(code)
}

impl ReferWatch {
    /// A REFER sent at `now`.
    pub fn new(now: Instant) -> ReferWatch {
        ReferWatch {
            deadline: now + HANDBACK_TIMEOUT,
            decided: false,
        }
    }

    #[cfg(test)]
    pub fn decided(&self) -> bool {
        self.decided
    }

    fn decide(&mut self, ok: bool) -> Option<bool> {
        if self.decided {
            return None;
        }
        self.decided = true;
        Some(ok)
    }

    /// The REFER's final response: `>= 300` means the transfer will not happen.
    pub fn on_refer_response(&mut self, status: u16) -> Option<bool> {
        if status >= 300 {
            self.decide(false)
        } else {
            None
        }
    }

    /// A NOTIFY for the REFER's implicit subscription: its body, and whether its
    /// `Subscription-State` is `terminated`. A final sipfrag status decides (2xx: handed
    /// back; >= 300: not); a subscription terminated without a final status is a failure.
    pub fn on_notify(&mut self, body: &[u8], terminated: bool) -> Option<bool> {
        match sipfrag_status(body) {
            Some(s) if (200..300).contains(&s) => self.decide(true),
            Some(s) if s >= 300 => self.decide(false),
            _ if terminated => self.decide(false),
            _ => None,
        }
    }

    /// The leg the REFER was sent on is gone.
    pub fn on_leg_gone(&mut self) -> Option<bool> {
        self.decide(false)
    }

    /// Time passes: no final NOTIFY by the deadline is a failure.
    pub fn on_tick(&mut self, now: Instant) -> Option<bool> {
        if now >= self.deadline {
            self.decide(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_parses_status_lines_only() {
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(
            sipfrag_status(b"\r\nSIP/2.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(sipfrag_status(b"sip/2.0 486 Busy Here"), Some(486));
        assert_eq!(sipfrag_status(b"INVITE sip:a@b SIP/2.0"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99999 x"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 42 x"), None);
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(b"\xff\xfe"), None);
    }

    #[test]
    fn trying_then_ok_decides_once() {
        let t0 = Instant::now();
        let mut w = ReferWatch::new(t0);
        assert_eq!(w.on_refer_response(202), None);
        assert_eq!(w.on_notify(b"SIP/2.0 100 Trying", false), None);
        assert!(!w.decided());
        assert_eq!(w.on_notify(b"SIP/2.0 200 OK", true), Some(true));
        assert!(w.decided());
        // Everything afterwards changes nothing.
        assert_eq!(w.on_notify(b"SIP/2.0 200 OK", true), None);
        assert_eq!(w.on_notify(b"SIP/2.0 503 x", true), None);
        assert_eq!(w.on_refer_response(500), None);
        assert_eq!(w.on_leg_gone(), None);
        assert_eq!(w.on_tick(t0 + HANDBACK_TIMEOUT * 2), None);
    }

    #[test]
    fn failures() {
        let t0 = Instant::now();
        let mut w = ReferWatch::new(t0);
        assert_eq!(
            w.on_notify(b"SIP/2.0 503 Service Unavailable", true),
            Some(false)
        );
        let mut w = ReferWatch::new(t0);
        assert_eq!(w.on_refer_response(501), Some(false));
        let mut w = ReferWatch::new(t0);
        assert_eq!(w.on_leg_gone(), Some(false));
        let mut w = ReferWatch::new(t0);
        assert_eq!(w.on_notify(b"garbage", false), None);
        assert_eq!(w.on_notify(b"garbage", true), Some(false));
    }

    #[test]
    fn times_out_on_virtual_time() {
        let t0 = Instant::now();
        let mut w = ReferWatch::new(t0);
        assert_eq!(w.on_notify(b"SIP/2.0 100 Trying", false), None);
        assert_eq!(w.on_tick(t0 + Duration::from_millis(7_990)), None);
        assert_eq!(w.on_tick(t0 + HANDBACK_TIMEOUT), Some(false));
        assert_eq!(w.on_tick(t0 + HANDBACK_TIMEOUT * 2), None);
    }

    proptest::proptest! {
        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200), t in proptest::bool::ANY) {
            let mut w = ReferWatch::new(Instant::now());
            let _ = sipfrag_status(&body);
            let _ = w.on_notify(&body, t);
        }
    }
}
