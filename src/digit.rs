//! A DTMF key press: the one value in tonewall that may be card data.
//!
//! `Digit` deliberately has no `Display`, and its `Debug` is redacted, so a digit can never
//! reach a log line, an error or a panic message by accident. Only `session::fields` reads
//! the key it carries (`Digit::key`), to store it in zeroised memory.

use zeroize::Zeroize;

/// One key of the 16-key DTMF keypad (0–9, `*`, `#`, A–D).
#[derive(Clone, Copy, PartialEq, Eq, Zeroize)]
pub struct Digit(u8);

/// How a digit reached tonewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigitMethod {
    /// An RFC 4733 telephone-event.
    Rfc4733,
    /// An in-band dual tone detected in the audio.
    Inband,
}

impl DigitMethod {
    /// The label used in metrics (`tonewall_dtmf_masked_total{method}`).
    pub fn label(self) -> &'static str {
        match self {
            DigitMethod::Rfc4733 => "rfc4733",
            DigitMethod::Inband => "inband",
        }
    }
}

const KEYS: &[u8; 16] = b"0123456789*#ABCD";

impl Digit {
    /// From an RFC 4733 event code (0–15); other events (flash, tones) are not digits.
    pub fn from_event(code: u8) -> Option<Digit> {
        KEYS.get(code as usize).map(|k| Digit(*k))
    }

    /// From the keypad character (`0`–`9`, `*`, `#`, `A`–`D`, case-insensitive).
    pub fn from_key(key: u8) -> Option<Digit> {
        let k = key.to_ascii_uppercase();
        KEYS.contains(&k).then_some(Digit(k))
    }

    /// The RFC 4733 event code of this key (0–15).
    pub fn event_code(self) -> u8 {
        KEYS.iter().position(|k| *k == self.0).unwrap_or(0) as u8
    }

    /// The keypad character. Card data: only `session::fields` and test code may call this.
    pub fn key(self) -> u8 {
        self.0
    }

    /// `0`–`9`.
    pub fn is_decimal(self) -> bool {
        self.0.is_ascii_digit()
    }
}

impl std::fmt::Debug for Digit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digit(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_round_trip() {
        for code in 0..16u8 {
            let d = Digit::from_event(code).expect("digit");
            assert_eq!(d.event_code(), code);
        }
        assert!(Digit::from_event(16).is_none());
        assert_eq!(Digit::from_key(b'a').map(|d| d.key()), Some(b'A'));
        assert!(Digit::from_key(b'x').is_none());
    }

    #[test]
    fn debug_is_redacted() {
        let d = Digit::from_key(b'7').expect("digit");
        assert_eq!(format!("{d:?}"), "Digit(<redacted>)");
    }
}
