//! ITU-T Q.24 conformance of the in-band detector (`Sensitivity::Standard`), generated in
//! the style of the Mitel/Bellcore tests spandsp runs: frequency deviation, level, twist,
//! duration, pause, interruption and noise sweeps. Every row asserts operate (exactly the
//! pressed digit, once) or not operate (no digit); all failing rows are reported together.

mod common;

use common::detect;
use common::tones::{self, Tone};
use tonewall::media::detector::{Sensitivity, ToneEvent};

/// Silence before and after each tone.
const LEAD_MS: f64 = 100.0;

/// Lead-in offsets (samples) so a tone starts at several phases of the detector's blocks.
const PHASES: [f64; 4] = [0.0, 3.1, 6.4, 9.6];

struct Rows {
    failures: Vec<String>,
    count: usize,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            failures: Vec::new(),
            count: 0,
        }
    }

    /// One tone, several block phases: operate means exactly `key`, once.
    fn tone(&mut self, label: &str, tone: Tone, operate: bool) {
        for lead in PHASES {
            let (s, _) = tones::sequence(&[tone], LEAD_MS + lead, 0.0, LEAD_MS);
            self.signal(&format!("{label} lead+{lead}ms"), &s, operate, tone.key);
        }
    }

    fn signal(&mut self, label: &str, s: &[i16], operate: bool, key: u8) {
        self.count += 1;
        let got = detect::run(Sensitivity::Standard, s).digits();
        let want = if operate {
            (key as char).to_string()
        } else {
            String::new()
        };
        if got != want {
            self.failures.push(format!(
                "{label}: expected {} ; got {} digit(s){}",
                if operate { "operate" } else { "no operate" },
                got.len(),
                if got.len() == 1 && operate {
                    " (wrong key)"
                } else {
                    ""
                }
            ));
        }
    }

    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} rows, {} failed",
            self.count,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} rows failed:\n{}",
            self.failures.len(),
            self.count,
            self.failures.join("\n")
        );
    }
}

#[test]
fn frequency_deviation_sweep() {
    let mut rows = Rows::new();
    for &key in tones::KEYS {
        let k = key as char;
        // Operate within ±1.5 % (both tones, same and opposite signs).
        for (r, c) in [
            (1.5, 1.5),
            (-1.5, -1.5),
            (1.5, -1.5),
            (-1.5, 1.5),
            (1.0, 0.0),
        ] {
            let t = Tone::new(key).dev(r / 100.0, c / 100.0);
            rows.tone(&format!("key {k} dev row {r:+}% col {c:+}%"), t, true);
        }
        // Never beyond ±3.5 % (either tone alone, or both).
        for (r, c) in [
            (3.5, 0.0),
            (-3.5, 0.0),
            (0.0, 3.5),
            (0.0, -3.5),
            (3.5, 3.5),
            (-3.5, -3.5),
            (5.0, -5.0),
        ] {
            let t = Tone::new(key).dev(r / 100.0, c / 100.0);
            rows.tone(&format!("key {k} dev row {r:+}% col {c:+}%"), t, false);
        }
    }
    rows.finish("frequency deviation");
}

#[test]
fn level_sweep() {
    let mut rows = Rows::new();
    for &key in tones::KEYS {
        let k = key as char;
        // Operate from 0 to −30 dBm0 per tone (0 dBm0 per tone clips at the peaks, as in a
        // real codec).
        for level in [0.0, -3.0, -6.0, -10.0, -15.0, -20.0, -25.0, -28.0, -30.0] {
            let t = Tone::new(key).level(level);
            rows.tone(&format!("key {k} level {level} dBm0"), t, true);
        }
        // Never at −55 dBm0 or below.
        for level in [-55.0, -60.0, -70.0] {
            let t = Tone::new(key).level(level);
            rows.tone(&format!("key {k} level {level} dBm0"), t, false);
        }
    }
    rows.finish("level");
}

#[test]
fn twist_sweep() {
    let mut rows = Rows::new();
    for &key in tones::KEYS {
        let k = key as char;
        // twist = high − low: +4 dB reverse … −8 dB normal, with the row tone at −10 and −20.
        for level in [-10.0, -20.0] {
            for twist in [4.0, 3.0, 2.0, 0.0, -2.0, -4.0, -6.0, -7.0, -8.0] {
                let t = Tone::new(key).level(level).twist(twist);
                rows.tone(
                    &format!("key {k} row {level} dBm0 twist {twist:+} dB"),
                    t,
                    true,
                );
            }
        }
    }
    rows.finish("twist");
}

#[test]
fn duration() {
    let mut rows = Rows::new();
    for &key in b"1590*#AD" {
        let k = key as char;
        for ms in [40.0, 45.0, 50.0, 60.0, 100.0, 500.0, 2000.0] {
            rows.tone(&format!("key {k} {ms} ms"), Tone::new(key).ms(ms), true);
        }
        for ms in [5.0, 10.0, 15.0, 20.0, 23.0] {
            rows.tone(&format!("key {k} {ms} ms"), Tone::new(key).ms(ms), false);
        }
    }
    rows.finish("duration");
}

#[test]
fn pauses_of_40_ms_separate_digits() {
    let mut rows = Rows::new();
    let check = |rows: &mut Rows, label: &str, keys: &[u8], tone_ms: f64, pause_ms: f64| {
        for lead in PHASES {
            let seq: Vec<Tone> = keys.iter().map(|k| Tone::new(*k).ms(tone_ms)).collect();
            let (s, _) = tones::sequence(&seq, LEAD_MS + lead, pause_ms, LEAD_MS);
            rows.count += 1;
            let got = detect::run(Sensitivity::Standard, &s).digits();
            if got.as_bytes() != keys {
                rows.failures.push(format!(
                    "{label} lead+{lead}ms: expected {} digits in order, got {} (match: {})",
                    keys.len(),
                    got.len(),
                    got.as_bytes() == keys
                ));
            }
        }
    };
    check(&mut rows, "all keys 50/40", tones::KEYS, 50.0, 40.0);
    check(&mut rows, "all keys 40/40", tones::KEYS, 40.0, 40.0);
    check(&mut rows, "repeated key 50/40", b"5555", 50.0, 40.0);
    check(&mut rows, "repeated key 100/60", b"0000", 100.0, 60.0);
    rows.finish("pause");
}

#[test]
fn interruptions_up_to_10_ms_are_bridged() {
    let mut rows = Rows::new();
    for &key in b"2580#D" {
        let k = key as char;
        for gap in [2.0, 5.0, 8.0, 10.0] {
            // 100 ms tone with a gap in the middle: one digit.
            let t = Tone::new(key).ms(100.0).gap(gap);
            rows.tone(&format!("key {k} 100 ms with {gap} ms gap"), t, true);
        }
    }
    rows.finish("interruption");
}

#[test]
fn white_noise_at_15_db_snr() {
    let mut rows = Rows::new();
    for &key in tones::KEYS {
        let k = key as char;
        for (level, seed) in [(-10.0, 1u64), (-20.0, 2), (-25.0, 3)] {
            let t = Tone::new(key).level(level).ms(60.0);
            let (mut s, _) = tones::sequence(&[t], LEAD_MS, 0.0, LEAD_MS);
            // Noise over the whole signal (silence included), 15 dB below the tone.
            tones::add_noise(&mut s, t.power(), 15.0, seed * 100 + key as u64);
            rows.signal(
                &format!("key {k} {level} dBm0 + noise 15 dB SNR"),
                &s,
                true,
                key,
            );
        }
    }
    // Noise alone never operates.
    for seed in 0..8u64 {
        let mut s = tones::silence(2000.0);
        tones::add_noise(&mut s, tones::amplitude(-10.0).powi(2), 0.0, seed);
        rows.signal(&format!("noise alone seed {seed}"), &s, false, b'0');
    }
    rows.finish("noise");
}

/// The events come in order (Onset, Digit, End) with sample positions near the tone's
/// edges: the masker depends on them.
#[test]
fn event_order_and_positions() {
    let seq: Vec<Tone> = b"38".iter().map(|k| Tone::new(*k).ms(80.0)).collect();
    let (s, placed) = tones::sequence(&seq, 200.0, 100.0, 200.0);
    let run = detect::run(Sensitivity::Standard, &s);
    assert_eq!(run.digits(), "38");
    let slack = 2 * 102 + 40; // two detector blocks and a bit
    let mut i = 0;
    for p in &placed {
        // Onset, then Digit, then End, for each press.
        let rest = &run.events[i..];
        let onset = rest
            .iter()
            .position(|e| matches!(e, ToneEvent::Onset { .. }))
            .expect("onset");
        let digit = rest
            .iter()
            .position(|e| matches!(e, ToneEvent::Digit { .. }))
            .expect("digit");
        let end = rest
            .iter()
            .position(|e| matches!(e, ToneEvent::End { .. }))
            .expect("end");
        assert!(onset < digit && digit < end, "order for one press");
        let at = |e: &ToneEvent| match e {
            ToneEvent::Onset { at } | ToneEvent::Digit { at, .. } | ToneEvent::End { at } => *at,
        };
        let (o, d, e) = (at(&rest[onset]), at(&rest[digit]), at(&rest[end]));
        let (start, stop) = (p.start as u64, p.end as u64);
        assert!(
            o + slack as u64 >= start && o <= start + slack as u64,
            "onset {o} vs {start}"
        );
        assert!(
            d + slack as u64 >= start && d <= start + slack as u64,
            "digit at {d} vs {start}"
        );
        assert!(
            e + 102 >= stop && e <= stop + slack as u64,
            "end {e} vs {stop}"
        );
        i += end + 1;
    }
    assert!(
        // Onset..End may fall short of a tone's edge by up to half a block (the window that
        // straddles the edge); the masker adds a one-block guard on each side.
        run.masked_samples(s.len() as u64) >= 2 * (80 * 8 - 51),
        "both tones inside Onset..End: {}",
        run.masked_samples(s.len() as u64)
    );
}
