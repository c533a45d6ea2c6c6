//! Proves the test signal generator (`tests/common/tones.rs`) before anything is measured
//! with it: levels, twist, G.711 round trips, framing, noise SNR, and an independent decoder
//! (`multimon-ng`) reading all 16 keys from what it generates.

mod common;

use common::tones::{self, Law, Tone};

#[test]
fn amplitude_formula_and_levels() {
    // A(dBm0) = 32767 · 10^((dBm0 − 3.14)/20)
    assert!((tones::amplitude(tones::FULL_SCALE_DBM0) - 32767.0).abs() < 1e-6);
    assert!((tones::amplitude(0.0) - 22_826.0).abs() < 1.0);
    assert!((tones::amplitude(-20.0) - 2282.6).abs() < 0.1);
    let t = Tone::new(b'5').level(-20.0).ms(1000.0).render();
    // Two sines at the same peak amplitude A: mean power A².
    let a = tones::amplitude(-20.0);
    let p = tones::power(&t);
    assert!((p / (a * a) - 1.0).abs() < 0.01, "power {p} vs {}", a * a);
    assert_eq!(t.len(), 8000);
}

#[test]
fn twist_sign_is_high_minus_low() {
    // +6 dB reverse twist: the column tone is 6 dB louder than the row tone.
    let t = Tone::new(b'1').level(-20.0).twist(6.0).ms(500.0).render();
    let row = goertzel_level(&t, 697.0);
    let col = goertzel_level(&t, 1209.0);
    assert!((col - row - 6.0).abs() < 0.3, "row {row} col {col}");
    assert!((row - -20.0).abs() < 0.3, "row level {row}");
    let t = Tone::new(b'1').level(-20.0).twist(-8.0).ms(500.0).render();
    let (row, col) = (goertzel_level(&t, 697.0), goertzel_level(&t, 1209.0));
    assert!((col - row + 8.0).abs() < 0.3, "row {row} col {col}");
}

#[test]
fn frequency_deviation_moves_the_tones() {
    let t = Tone::new(b'D').dev(0.035, -0.035).ms(1000.0).render();
    let row = goertzel_level(&t, 941.0 * 1.035);
    let col = goertzel_level(&t, 1633.0 * 0.965);
    assert!((row + 10.0).abs() < 0.3 && (col + 10.0).abs() < 0.3);
    // And not at the nominal frequencies (1 s window: a few Hz wide).
    assert!(goertzel_level(&t, 941.0) < -30.0);
}

#[test]
fn duration_gap_and_sequence_positions() {
    let t = Tone::new(b'7').ms(100.0).gap(10.0).render();
    assert_eq!(t.len(), 800);
    let zeros = t.iter().filter(|s| **s == 0).count();
    assert!((80..90).contains(&zeros), "gap of 80 samples: {zeros}");
    assert!(t[360..440].iter().all(|s| *s == 0));
    let (s, placed) = tones::sequence(
        &[Tone::new(b'1'), Tone::new(b'2').ms(40.0)],
        100.0,
        40.0,
        50.0,
    );
    assert_eq!(placed[0].start, 800);
    assert_eq!(placed[0].end, 800 + 480);
    assert_eq!(placed[1].start, 800 + 480 + 320);
    assert_eq!(placed[1].end, placed[1].start + 320);
    assert_eq!(s.len(), placed[1].end + 320 + 400);
}

#[test]
fn noise_at_snr() {
    let tone = Tone::new(b'9').level(-10.0).ms(2000.0);
    let clean = tone.render();
    let mut noisy = clean.clone();
    tones::add_noise(&mut noisy, tone.power(), 15.0, 7);
    let noise: Vec<i16> = noisy.iter().zip(&clean).map(|(n, c)| n - c).collect();
    let snr = 10.0 * (tones::power(&clean) / tones::power(&noise)).log10();
    assert!((snr - 15.0).abs() < 0.2, "snr {snr}");
    // Deterministic per seed.
    let mut again = clean.clone();
    tones::add_noise(&mut again, tone.power(), 15.0, 7);
    assert_eq!(again, noisy);
}

#[test]
fn g711_round_trips() {
    for b in 0..=255u8 {
        let lin = tones::unulaw(b);
        let back = tones::ulaw(lin);
        // 0x7f and 0xff both decode to 0 (negative and positive zero).
        assert!(
            back == b || (lin == 0 && back == 0xff),
            "μ {b:#x} -> {lin} -> {back:#x}"
        );
        assert_eq!(tones::alaw(tones::unalaw(b)), b, "A {b:#x}");
    }
    // Encoding error is within the law's step size.
    for s in (-32000i32..32000).step_by(37) {
        let s = s as i16;
        for law in [Law::Mu, Law::A] {
            let d = law.decode(&law.encode(&[s]))[0];
            let err = (d as i32 - s as i32).abs();
            assert!(err <= (s as i32).abs() / 16 + 16, "{law:?} {s} -> {d}");
        }
    }
    // Against the known reference values.
    assert_eq!(tones::ulaw(0), 0xff);
    assert_eq!(tones::alaw(0), 0xd5);
    assert_eq!(tones::unulaw(0x00), -32124);
    assert_eq!(tones::unalaw(0xaa), 32256);
}

#[test]
fn payload_framing() {
    let s = tones::silence(50.0);
    let p = tones::payloads(Law::Mu, &s);
    assert_eq!(p.len(), 3);
    assert!(p
        .iter()
        .all(|f| f.len() == 160 && f.iter().all(|b| *b == 0xff)));
    let p = tones::payloads(Law::A, &s);
    assert!(p.iter().all(|f| f.iter().all(|b| *b == 0xd5)));
}

#[test]
fn babble_is_speech_level_and_not_dtmf() {
    let b = tones::babble(3000.0, -20.0, 3);
    let level = tones::dbm0_of_amplitude((2.0 * tones::power(&b)).sqrt());
    assert!((level + 20.0).abs() < 0.5, "babble level {level}");
    assert_eq!(tones::babble(3000.0, -20.0, 3), b);
}

/// `multimon-ng` (an independent detector) decodes every key the generator makes, in
/// order, through both G.711 laws.
#[test]
fn multimon_decodes_all_sixteen_keys() {
    if !tones::tools_available(&["multimon-ng", "sox"]) {
        return;
    }
    let keys = tones::KEYS;
    let seq: Vec<Tone> = keys.iter().map(|k| Tone::new(*k).ms(100.0)).collect();
    let (samples, _) = tones::sequence(&seq, 200.0, 100.0, 200.0);
    assert_eq!(tones::multimon_digits(&samples), "0123456789*#ABCD");
    for law in [Law::Mu, Law::A] {
        let through = law.decode(&law.encode(&samples));
        assert_eq!(
            tones::multimon_digits(&through),
            "0123456789*#ABCD",
            "{law:?}"
        );
    }
    // Silence and babble: nothing.
    assert_eq!(tones::multimon_digits(&tones::silence(1000.0)), "");
    assert_eq!(tones::multimon_digits(&tones::babble(5000.0, -15.0, 1)), "");
}

/// The generated tones mixed over babble and noise are still read by multimon-ng.
#[test]
fn multimon_decodes_tones_over_babble() {
    if !tones::tools_available(&["multimon-ng", "sox"]) {
        return;
    }
    let seq: Vec<Tone> = b"4711".iter().map(|k| Tone::new(*k).ms(100.0)).collect();
    let (tonesig, _) = tones::sequence(&seq, 300.0, 150.0, 300.0);
    let mut mixed = tones::babble(tonesig.len() as f64 / 8.0, -25.0, 9);
    tones::mix(&mut mixed, &tonesig, 0);
    assert_eq!(tones::multimon_digits(&mixed), "4711");
}

/// Level of a sine at `f` in `s` (dBm0), by a Goertzel filter over the whole signal.
fn goertzel_level(s: &[i16], f: f64) -> f64 {
    let w = std::f64::consts::TAU * f / 8000.0;
    let c = 2.0 * w.cos();
    let (mut q1, mut q2) = (0.0f64, 0.0f64);
    for x in s {
        let q0 = c * q1 - q2 + *x as f64;
        q2 = q1;
        q1 = q0;
    }
    let p = q1 * q1 + q2 * q2 - c * q1 * q2;
    let amp = 2.0 * p.sqrt() / s.len() as f64;
    tones::dbm0_of_amplitude(amp)
}

/// The leak tests' 10 ms window check fires on every key (even quiet, short, or over
/// babble) and not on silence or babble alone.
#[test]
fn window_check_sees_every_key_and_not_babble() {
    use common::detect::{dual_tone_windows, WindowCheck};
    let check = WindowCheck::default();
    for &key in tones::KEYS {
        for t in [
            Tone::new(key).level(-30.0).ms(40.0),
            Tone::new(key).level(0.0).ms(40.0),
            Tone::new(key).level(-10.0).twist(-8.0).ms(20.0),
            Tone::new(key).level(-10.0).twist(4.0).ms(20.0),
        ] {
            let (s, _) = tones::sequence(&[t], 50.0, 0.0, 50.0);
            let hits = dual_tone_windows(&s, check);
            assert!(!hits.is_empty(), "key {} {t:?}", key as char);
        }
        let (s, _) = tones::sequence(&[Tone::new(key).ms(60.0)], 100.0, 0.0, 100.0);
        let mut over = tones::babble(260.0, -25.0, u64::from(key));
        tones::mix(&mut over, &s, 0);
        assert!(
            dual_tone_windows(&over, check).len() >= 5,
            "key {} over babble",
            key as char
        );
    }
    assert!(dual_tone_windows(&tones::silence(1000.0), check).is_empty());
    for seed in 0..5 {
        let b = tones::babble(10_000.0, -15.0, seed);
        assert!(
            dual_tone_windows(&b, check).is_empty(),
            "babble seed {seed}"
        );
    }
}
