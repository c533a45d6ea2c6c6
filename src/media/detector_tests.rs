//! Unit tests of the detector: one row per Q.24 limit, at a few points each (the full
//! generated conformance suite lives in `tests/`).

use super::*;

const KEYS: &[u8; 16] = b"123A456B789C*0#D";

fn freqs(key: u8) -> (f32, f32) {
    for (r, row) in KEYPAD.iter().enumerate() {
        for (c, k) in row.iter().enumerate() {
            if *k == key {
                return (ROWS[r], COLS[c]);
            }
        }
    }
    panic!("no key");
}

/// Peak amplitude of a sine at `dbm0` (the module's convention).
#[allow(clippy::approx_constant)] // 3.14 dB, not π
fn amp(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - 3.14) / 20.0)
}

struct Gen {
    out: Vec<f32>,
    rng: u64,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            out: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
    fn tone(&mut self, key: u8, row_db: f32, col_db: f32, dev: f32, ms: f32) -> &mut Self {
        let (fr, fc) = freqs(key);
        let (fr, fc) = (fr * (1.0 + dev), fc * (1.0 + dev));
        let n = (ms * 8.0).round() as usize;
        let start = self.out.len();
        for i in 0..n {
            let t = (start + i) as f32 / 8000.0;
            let v = amp(row_db) * (2.0 * std::f32::consts::PI * fr * t).sin()
                + amp(col_db) * (2.0 * std::f32::consts::PI * fc * t + 0.7).sin();
            self.out.push(v);
        }
        self
    }
    fn silence(&mut self, ms: f32) -> &mut Self {
        let n = (ms * 8.0).round() as usize;
        self.out.extend(std::iter::repeat_n(0.0, n));
        self
    }
    fn gauss(&mut self) -> f32 {
        let mut s = 0.0;
        for _ in 0..12 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            s += (self.rng >> 40) as f32 / (1u64 << 24) as f32;
        }
        s - 6.0
    }
    /// White noise whose power is `snr_db` below that of a tone pair at `dbm0` each.
    fn noise(&mut self, dbm0: f32, snr_db: f32) -> &mut Self {
        let p = amp(dbm0).powi(2); // two tones: 2 · A²/2
        let sigma = (p / 10f32.powf(snr_db / 10.0)).sqrt();
        for i in 0..self.out.len() {
            let g = self.gauss();
            self.out[i] += sigma * g;
        }
        self
    }
    fn samples(&self) -> Vec<i16> {
        self.out
            .iter()
            .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }
}

fn run(sens: Sensitivity, samples: &[i16]) -> Vec<ToneEvent> {
    let mut d = Detector::new(sens);
    let mut ev = Vec::new();
    // odd chunk sizes: the detector must not care how samples are split
    for chunk in samples.chunks(97) {
        d.push(chunk, &mut |e| ev.push(e));
    }
    ev
}

fn digits(sens: Sensitivity, samples: &[i16]) -> Vec<u8> {
    run(sens, samples)
        .into_iter()
        .filter_map(|e| match e {
            ToneEvent::Digit { digit, .. } => Some(digit.key()),
            _ => None,
        })
        .collect()
}

fn press(key: u8, row_db: f32, col_db: f32, dev: f32, ms: f32) -> Vec<i16> {
    Gen::new()
        .silence(30.0)
        .tone(key, row_db, col_db, dev, ms)
        .silence(60.0)
        .samples()
}

#[test]
fn all_sixteen_keys() {
    for &k in KEYS {
        let s = press(k, -10.0, -10.0, 0.0, 50.0);
        assert_eq!(
            digits(Sensitivity::Standard, &s),
            vec![k],
            "key {}",
            k as char
        );
        assert_eq!(
            digits(Sensitivity::Strict, &s),
            vec![k],
            "key {}",
            k as char
        );
    }
}

#[test]
fn frequency_deviation_operate_within_1_5_percent() {
    for &k in KEYS {
        for dev in [-0.015, -0.01, 0.0, 0.01, 0.015] {
            let s = press(k, -10.0, -10.0, dev, 45.0);
            assert_eq!(
                digits(Sensitivity::Standard, &s),
                vec![k],
                "{} {dev}",
                k as char
            );
        }
    }
}

#[test]
fn frequency_deviation_no_operate_beyond_3_5_percent() {
    for &k in KEYS {
        for dev in [-0.06, -0.045, -0.035, 0.035, 0.045, 0.06] {
            let s = press(k, -10.0, -10.0, dev, 60.0);
            assert!(
                digits(Sensitivity::Standard, &s).is_empty(),
                "{} {dev}",
                k as char
            );
        }
    }
}

#[test]
fn level_operate_0_to_minus_30_and_never_at_minus_55() {
    for &k in b"15#D" {
        for lvl in [0.0, -10.0, -20.0, -25.0, -30.0] {
            let s = press(k, lvl, lvl, 0.0, 45.0);
            assert_eq!(
                digits(Sensitivity::Standard, &s),
                vec![k],
                "{} {lvl}",
                k as char
            );
        }
        for lvl in [-55.0, -60.0] {
            let s = press(k, lvl, lvl, 0.0, 80.0);
            assert!(digits(Sensitivity::Standard, &s).is_empty());
            assert!(digits(Sensitivity::Strict, &s).is_empty());
        }
        let s = press(k, -42.0, -42.0, 0.0, 60.0);
        assert_eq!(digits(Sensitivity::Strict, &s), vec![k], "strict at -42");
    }
}

#[test]
fn twist_plus_4_to_minus_8() {
    for &k in b"19*D" {
        // reverse twist: high group louder by up to 4 dB
        for (row, col) in [
            (-14.0, -10.0),
            (-10.0, -10.0),
            (-10.0, -18.0),
            (-22.0, -30.0),
        ] {
            let s = press(k, row, col, 0.0, 45.0);
            assert_eq!(digits(Sensitivity::Standard, &s), vec![k], "{row} {col}");
        }
    }
}

#[test]
fn duration_40_ms_declared_23_ms_never() {
    for &k in KEYS {
        for lead in [0.0, 1.3, 3.1, 5.0, 7.7, 11.0] {
            let s = Gen::new()
                .silence(20.0 + lead)
                .tone(k, -10.0, -10.0, 0.0, 40.0)
                .silence(60.0)
                .samples();
            assert_eq!(
                digits(Sensitivity::Standard, &s),
                vec![k],
                "{} {lead}",
                k as char
            );
            let s = Gen::new()
                .silence(20.0 + lead)
                .tone(k, -10.0, -10.0, 0.0, 23.0)
                .silence(60.0)
                .samples();
            assert!(
                digits(Sensitivity::Standard, &s).is_empty(),
                "{}",
                k as char
            );
        }
    }
}

#[test]
fn forty_ms_pause_separates_digits_and_ten_ms_gap_is_bridged() {
    for lead in [0.0, 2.0, 4.5] {
        let s = Gen::new()
            .silence(10.0 + lead)
            .tone(b'5', -10.0, -10.0, 0.0, 45.0)
            .silence(40.0)
            .tone(b'5', -10.0, -10.0, 0.0, 45.0)
            .silence(40.0)
            .tone(b'8', -10.0, -10.0, 0.0, 45.0)
            .silence(60.0)
            .samples();
        assert_eq!(digits(Sensitivity::Standard, &s), b"558".to_vec(), "{lead}");
        let s = Gen::new()
            .silence(10.0 + lead)
            .tone(b'5', -10.0, -10.0, 0.0, 50.0)
            .silence(10.0)
            .tone(b'5', -10.0, -10.0, 0.0, 50.0)
            .silence(60.0)
            .samples();
        assert_eq!(digits(Sensitivity::Standard, &s), b"5".to_vec(), "{lead}");
    }
}

#[test]
fn works_in_white_noise_at_15_db_snr() {
    for &k in KEYS {
        let s = Gen::new()
            .silence(30.0)
            .tone(k, -20.0, -20.0, 0.01, 50.0)
            .silence(60.0)
            .noise(-20.0, 15.0)
            .samples();
        assert_eq!(digits(Sensitivity::Standard, &s), vec![k], "{}", k as char);
        let s = Gen::new()
            .silence(30.0)
            .tone(k, -30.0, -30.0, -0.01, 45.0)
            .silence(60.0)
            .noise(-30.0, 15.0)
            .samples();
        assert_eq!(
            digits(Sensitivity::Standard, &s),
            vec![k],
            "{} at -30",
            k as char
        );
    }
}

#[test]
fn events_have_positions_onset_then_digit_then_end() {
    let s = press(b'7', -10.0, -10.0, 0.0, 60.0); // tone from 240 to 720
    let ev = run(Sensitivity::Standard, &s);
    assert_eq!(ev.len(), 3, "{ev:?}");
    let ToneEvent::Onset { at: on } = ev[0] else {
        panic!("{ev:?}")
    };
    let ToneEvent::Digit { at, .. } = ev[1] else {
        panic!("{ev:?}")
    };
    let ToneEvent::End { at: end } = ev[2] else {
        panic!("{ev:?}")
    };
    assert!((240 - 102..=240 + 51).contains(&on), "{on}");
    assert_eq!(at, on);
    assert!((720 - 51..=720 + 102).contains(&end), "{end}");
}

#[test]
fn onset_is_known_within_about_one_block_of_the_tone() {
    for lead in 0..20u32 {
        let tone_start = 240 + u64::from(lead) * 7;
        let s = Gen::new()
            .silence(tone_start as f32 / 8.0)
            .tone(b'3', -20.0, -20.0, 0.0, 50.0)
            .samples();
        let mut d = Detector::new(Sensitivity::Standard);
        let mut seen = None;
        for (i, x) in s.iter().enumerate() {
            d.push(std::slice::from_ref(x), &mut |e| {
                if let ToneEvent::Onset { at } = e {
                    seen.get_or_insert((i as u64, at));
                }
            });
        }
        let (known, at) = seen.expect("onset");
        assert!(
            known < tone_start + 102 + 51,
            "{tone_start}: known at {known}"
        );
        assert!(at <= tone_start + 51, "{tone_start}: onset at {at}");
    }
}

#[test]
fn silence_and_single_tones_give_nothing() {
    let mut g = Gen::new();
    g.silence(500.0);
    let n = g.out.len();
    for hz in [400.0, 1000.0, 1100.0, 2000.0] {
        for i in 0..n {
            g.out[i] = 8000.0 * (2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin();
        }
        assert!(run(Sensitivity::Strict, &g.samples()).is_empty(), "{hz}");
    }
    let s = Gen::new().silence(300.0).noise(-10.0, 0.0).samples();
    assert!(digits(Sensitivity::Strict, &s).is_empty());
    assert!(run(Sensitivity::Standard, &vec![0i16; 4000]).is_empty());
}
