//! The card fields of a session (pan, expiry, cvv): digits in zeroised fixed-capacity
//! storage, the keypad rules (`*` clears, `#` completes and moves on), validation (Luhn,
//! length, expiry not in the past) and the masked views that may leave `session/`.
//!
//! Must never: format, log or return an unmasked digit (there is no `Display`, and `Debug`
//! shows only lengths); keep digits after `wipe()` or drop.

use serde::ser::SerializeMap;
use serde::Serialize;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::digit::Digit;

/// The most digits any field holds (a 19-digit PAN).
const CAP: usize = 19;

/// Which card field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    Pan,
    Expiry,
    Cvv,
}

impl FieldKind {
    pub fn from_name(name: &str) -> Option<FieldKind> {
        match name {
            "pan" => Some(FieldKind::Pan),
            "expiry" => Some(FieldKind::Expiry),
            "cvv" => Some(FieldKind::Cvv),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Pan => "pan",
            FieldKind::Expiry => "expiry",
            FieldKind::Cvv => "cvv",
        }
    }

    /// Digits at which the field completes by itself.
    fn max_len(self) -> usize {
        match self {
            FieldKind::Pan => 19,
            FieldKind::Expiry => 4,
            FieldKind::Cvv => 4,
        }
    }
}

/// "Today" for the expiry check: a calendar year and month (1–12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

impl YearMonth {
    /// The current UTC year and month.
    pub fn now() -> YearMonth {
        use chrono::Datelike;
        let d = chrono::Utc::now().date_naive();
        YearMonth {
            year: u16::try_from(d.year()).unwrap_or(0),
            month: u8::try_from(d.month()).unwrap_or(1),
        }
    }
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct Field {
    #[zeroize(skip)]
    kind: FieldKind,
    buf: [u8; CAP],
    len: u8,
    complete: bool,
}

impl Field {
    fn new(kind: FieldKind) -> Field {
        Field {
            kind,
            buf: [0; CAP],
            len: 0,
            complete: false,
        }
    }

    fn digits(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    fn clear(&mut self) {
        self.buf.zeroize();
        self.len = 0;
        self.complete = false;
    }

    fn valid(&self, today: YearMonth) -> bool {
        let d = self.digits();
        match self.kind {
            FieldKind::Pan => (12..=19).contains(&d.len()) && luhn(d),
            FieldKind::Cvv => (3..=4).contains(&d.len()),
            FieldKind::Expiry => {
                if d.len() != 4 {
                    return false;
                }
                let mm = (d[0] - b'0') * 10 + (d[1] - b'0');
                let yy = u16::from(d[2] - b'0') * 10 + u16::from(d[3] - b'0');
                let year = 2000 + yy;
                (1..=12).contains(&mm) && (year, mm) >= (today.year, today.month)
            }
        }
    }

    fn view(&self, today: YearMonth) -> FieldView {
        let len = self.len as usize;
        let mut masked = String::with_capacity(len);
        if self.kind == FieldKind::Pan && len >= 12 {
            masked.extend(std::iter::repeat_n('*', len - 4));
            masked.extend(self.digits()[len - 4..].iter().map(|b| char::from(*b)));
        } else {
            masked.extend(std::iter::repeat_n('*', len));
        }
        FieldView {
            name: self.kind.name(),
            masked,
            length: len,
            complete: self.complete,
            valid: self.valid(today),
        }
    }
}

/// The Luhn check over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.iter().rev().enumerate() {
        let mut v = u32::from(b.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum % 10 == 0
}

/// The masked view of one field (SPEC §5): safe to serialise anywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldView {
    #[serde(skip)]
    pub name: &'static str,
    pub masked: String,
    pub length: usize,
    pub complete: bool,
    pub valid: bool,
}

/// The masked views of all fields, in order; serialises as a JSON object keyed by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldsView(pub Vec<FieldView>);

impl Serialize for FieldsView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for f in &self.0 {
            m.serialize_entry(f.name, f)?;
        }
        m.end()
    }
}

/// What a key press or a command did, for events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldChange {
    /// A digit went into the field (the view is masked).
    Digit(FieldView),
    /// The field was cleared (`*` or reset).
    Cleared(FieldView),
    /// The field was completed (`#` or full).
    Completed(FieldView),
    /// This field is now active.
    Activated(FieldView),
}

/// The fields of one session and which is active.
pub struct Fields {
    fields: Vec<Field>,
    active: Option<usize>,
}

/// Asked for a field this session doesn't have.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown field")]
pub struct UnknownField;

impl Fields {
    /// Fields in this order (unknown names are skipped; validate names beforehand). The
    /// first one is active.
    pub fn new(names: &[impl AsRef<str>]) -> Fields {
        let mut fields: Vec<Field> = Vec::with_capacity(names.len());
        for n in names {
            if let Some(k) = FieldKind::from_name(n.as_ref()) {
                if !fields.iter().any(|f| f.kind == k) {
                    fields.push(Field::new(k));
                }
            }
        }
        let active = if fields.is_empty() { None } else { Some(0) };
        Fields { fields, active }
    }

    /// The active field's name.
    pub fn active(&self) -> Option<&'static str> {
        self.active
            .and_then(|i| self.fields.get(i))
            .map(|f| f.kind.name())
    }

    fn index(&self, name: &str) -> Result<usize, UnknownField> {
        let k = FieldKind::from_name(name).ok_or(UnknownField)?;
        self.fields
            .iter()
            .position(|f| f.kind == k)
            .ok_or(UnknownField)
    }

    /// A key press. Decimal digits fill the active field; `*` clears it; `#` completes it
    /// and activates the next incomplete field; A–D and keys with no active field are
    /// ignored. A field that reaches its maximum length completes by itself.
    pub fn input(&mut self, digit: Digit, today: YearMonth) -> Vec<FieldChange> {
        let mut out = Vec::new();
        let Some(i) = self.active else {
            return out;
        };
        let key = digit.key();
        match key {
            b'*' => {
                self.fields[i].clear();
                out.push(FieldChange::Cleared(self.fields[i].view(today)));
            }
            // `#` on an empty field is ignored: a field that completed itself at its
            // maximum length is commonly followed by a `#` that must not skip the next one.
            b'#' if self.fields[i].len == 0 => {}
            b'#' => self.complete(i, today, &mut out),
            k if k.is_ascii_digit() => {
                let f = &mut self.fields[i];
                if f.complete || (f.len as usize) >= f.kind.max_len() {
                    return out;
                }
                f.buf[f.len as usize] = k;
                f.len += 1;
                out.push(FieldChange::Digit(f.view(today)));
                if (f.len as usize) >= f.kind.max_len() {
                    self.complete(i, today, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    fn complete(&mut self, i: usize, today: YearMonth, out: &mut Vec<FieldChange>) {
        self.fields[i].complete = true;
        out.push(FieldChange::Completed(self.fields[i].view(today)));
        let n = self.fields.len();
        self.active = (1..n)
            .map(|d| (i + d) % n)
            .find(|j| !self.fields[*j].complete);
        if let Some(j) = self.active {
            out.push(FieldChange::Activated(self.fields[j].view(today)));
        }
    }

    /// Make `name` the active field (reopening it if it was complete).
    pub fn activate(&mut self, name: &str, today: YearMonth) -> Result<FieldChange, UnknownField> {
        let i = self.index(name)?;
        self.fields[i].complete = false;
        self.active = Some(i);
        Ok(FieldChange::Activated(self.fields[i].view(today)))
    }

    /// Clear `name` (it stays or becomes incomplete; the active field doesn't change,
    /// unless none was active, then `name` becomes active).
    pub fn reset(&mut self, name: &str, today: YearMonth) -> Result<FieldChange, UnknownField> {
        let i = self.index(name)?;
        self.fields[i].clear();
        if self.active.is_none() {
            self.active = Some(i);
        }
        Ok(FieldChange::Cleared(self.fields[i].view(today)))
    }

    /// Masked views of all fields, in order.
    pub fn view(&self, today: YearMonth) -> FieldsView {
        FieldsView(self.fields.iter().map(|f| f.view(today)).collect())
    }

    /// The raw digits of one field, for the payment hand-off only. Card data.
    pub(crate) fn digits(&self, kind: FieldKind) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.kind == kind)
            .map(Field::digits)
    }

    /// Whether every digit buffer is zero and empty.
    pub fn is_wiped(&self) -> bool {
        self.fields
            .iter()
            .all(|f| f.len == 0 && f.buf.iter().all(|b| *b == 0))
    }

    /// Zero every digit.
    pub fn wipe(&mut self) {
        for f in &mut self.fields {
            f.clear();
        }
        if !self.fields.is_empty() {
            self.active = Some(0);
        }
    }
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for x in &self.fields {
            l.entry(&format_args!(
                "{}(len={}, complete={})",
                x.kind.name(),
                if x.len == 0 { "none" } else { "some" },
                x.complete
            ));
        }
        l.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: YearMonth = YearMonth {
        year: 2026,
        month: 5,
    };

    fn press(f: &mut Fields, keys: &str) -> Vec<FieldChange> {
        let mut out = Vec::new();
        for k in keys.bytes() {
            out.extend(f.input(Digit::from_key(k).expect("key"), TODAY));
        }
        out
    }

    fn std_fields() -> Fields {
        Fields::new(&["pan", "expiry", "cvv"])
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4000000000000002"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b""));
        assert!(!luhn(b"41x1"));
    }

    #[test]
    fn fills_in_order_and_masks() {
        let mut f = std_fields();
        press(&mut f, "41111111111");
        let v = f.view(TODAY);
        assert_eq!(v.0[0].masked, "***********");
        press(&mut f, "11111#");
        let v = f.view(TODAY);
        assert_eq!(v.0[0].masked, "************1111");
        assert_eq!(v.0[0].length, 16);
        assert!(v.0[0].complete && v.0[0].valid);
        assert_eq!(f.active(), Some("expiry"));
        press(&mut f, "1230");
        let v = f.view(TODAY);
        assert_eq!(v.0[1].masked, "****");
        assert!(v.0[1].complete && v.0[1].valid);
        assert_eq!(f.active(), Some("cvv"));
        press(&mut f, "12");
        let v = f.view(TODAY);
        assert_eq!(v.0[2].masked, "**");
        assert!(!v.0[2].valid);
        press(&mut f, "3#");
        assert!(f.view(TODAY).0[2].valid);
        assert_eq!(f.active(), None);
        // further keys are ignored
        assert!(press(&mut f, "9").is_empty());
    }

    #[test]
    fn hash_after_a_self_completed_field_skips_nothing() {
        let mut f = std_fields();
        press(&mut f, "4111111111111111#1230");
        assert_eq!(f.active(), Some("cvv"));
        // The customer presses `#` after the expiry out of habit: cvv stays active.
        assert!(press(&mut f, "#").is_empty());
        assert_eq!(f.active(), Some("cvv"));
        press(&mut f, "123#");
        let v = f.view(TODAY);
        assert_eq!(v.0[2].masked, "***");
        assert!(v.0[2].complete && v.0[2].valid);
    }

    #[test]
    fn star_clears_and_abcd_ignored() {
        let mut f = std_fields();
        press(&mut f, "1234");
        let ch = press(&mut f, "*");
        assert!(matches!(&ch[..], [FieldChange::Cleared(v)] if v.length == 0));
        assert!(press(&mut f, "ABCD").is_empty());
        assert_eq!(f.view(TODAY).0[0].length, 0);
        assert_eq!(f.active(), Some("pan"));
    }

    #[test]
    fn pan_completes_at_19_and_cvv_at_4() {
        let mut f = std_fields();
        let ch = press(&mut f, "4000000000000000006");
        assert!(ch
            .iter()
            .any(|c| matches!(c, FieldChange::Completed(v) if v.name == "pan")));
        assert_eq!(f.active(), Some("expiry"));
        press(&mut f, "0199"); // January 2099
        assert!(f.view(TODAY).0[1].valid);
        press(&mut f, "1234");
        assert_eq!(f.active(), None);
        assert!(f.view(TODAY).0[2].complete);
    }

    #[test]
    fn expiry_rules() {
        for (exp, ok) in [
            ("0526", true),
            ("0426", false),
            ("1325", false),
            ("0026", false),
            ("1299", true),
        ] {
            let mut f = Fields::new(&["expiry"]);
            press(&mut f, exp);
            assert_eq!(f.view(TODAY).0[0].valid, ok, "{exp}");
        }
    }

    #[test]
    fn activate_reset_and_unknown() {
        let mut f = std_fields();
        press(&mut f, "4111111111111111#12");
        f.activate("pan", TODAY).expect("pan");
        assert_eq!(f.active(), Some("pan"));
        assert!(!f.view(TODAY).0[0].complete);
        f.reset("expiry", TODAY).expect("expiry");
        assert_eq!(f.view(TODAY).0[1].length, 0);
        assert_eq!(f.activate("pin", TODAY), Err(UnknownField));
        let mut g = Fields::new(&["pan"]);
        assert_eq!(g.reset("cvv", TODAY), Err(UnknownField));
    }

    #[test]
    fn wipe_and_debug_hold_no_digits() {
        let mut f = std_fields();
        press(&mut f, "4111111111111111#1230#123");
        let dbg = format!("{f:?}");
        assert!(!dbg.bytes().any(|b| b.is_ascii_digit()), "{dbg}");
        let json = serde_json::to_string(&f.view(TODAY)).expect("json");
        assert!(!json.contains("4111111"), "{json}");
        assert!(
            json.starts_with("{\"pan\":{\"masked\":\"************1111\""),
            "{json}"
        );
        f.wipe();
        assert_eq!(f.digits(FieldKind::Pan), Some(&b""[..]));
        assert!(f.fields.iter().all(|x| x.buf.iter().all(|b| *b == 0)));
    }
}
