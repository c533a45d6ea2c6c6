//! Masker tests: audio in 20 ms G.711 packets through a real `Holdback` in virtual time.

use std::time::{Duration, Instant};

use super::*;
use crate::media::holdback::Holdback;

const TONES: [(u8, f32, f32); 4] = [
    (b'1', 697.0, 1209.0),
    (b'5', 770.0, 1336.0),
    (b'9', 852.0, 1477.0),
    (b'D', 941.0, 1633.0),
];

#[allow(clippy::approx_constant)] // 3.14 dB, not π
fn amp(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - 3.14) / 20.0)
}

/// A speech-like signal: a wandering, amplitude-modulated mix of harmonics and noise.
fn speechish(n: usize, seed: u32) -> Vec<f32> {
    let mut rng = seed | 1;
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let t = i as f32 / 8000.0;
            let f0 =
                100.0 + 20.0 * seed as f32 + 30.0 * (2.0 * std::f32::consts::PI * 1.3 * t).sin();
            phase =
                (phase + 2.0 * std::f32::consts::PI * f0 / 8000.0) % (2.0 * std::f32::consts::PI);
            let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin().abs();
            let mut v = 0.0;
            for h in 1..12 {
                v += (phase * h as f32).sin() / h as f32;
            }
            let noise = (rng >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
            env * (3000.0 * v + 800.0 * noise)
        })
        .collect()
}

fn add_tone(x: &mut [f32], key: usize, from: usize, len: usize, dbm0: f32) {
    let (_, fr, fc) = TONES[key];
    for i in from..(from + len).min(x.len()) {
        let t = i as f32 / 8000.0;
        x[i] += amp(dbm0)
            * ((2.0 * std::f32::consts::PI * fr * t).sin()
                + (2.0 * std::f32::consts::PI * fc * t).sin());
    }
}

fn encode(x: &[f32], codec: Codec) -> Vec<u8> {
    x.iter()
        .map(|v| g711::encode(codec, v.round().clamp(-32768.0, 32767.0) as i16))
        .collect()
}

struct Out {
    sent: Vec<u8>,
    received: Vec<u8>,
    digits: Vec<u8>,
}

/// Send `audio` as 20 ms packets through a hold-back of `holdback_ms`; `release_first`
/// releases due packets before queueing the one arriving at the same instant.
fn through(
    audio: &[u8],
    codec: Codec,
    mode: MaskMode,
    holdback_ms: u64,
    release_first: bool,
) -> Out {
    let t0 = Instant::now();
    let mut hb = Holdback::new(Duration::from_millis(holdback_ms), 32, t0);
    let mut m = Masker::new(mode, true);
    let mut received = Vec::new();
    let mut digits = Vec::new();
    let mut release = |hb: &mut Holdback, m: &mut Masker, now| {
        while let Some(p) = hb.pop_due(now, m) {
            received.extend_from_slice(&p[12..]);
        }
    };
    for (i, chunk) in audio.chunks(160).enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        if release_first {
            release(&mut hb, &mut m, now);
        }
        let mut pkt = [0u8; 172];
        pkt[12..12 + chunk.len()].copy_from_slice(chunk);
        let info = PacketInfo {
            codec,
            timestamp: 1000 + 160 * i as u32,
            arrived: now,
        };
        assert!(hb.push(&pkt[..12 + chunk.len()], 12..12 + chunk.len(), info, &mut m));
        while let Some(d) = m.take_digit() {
            digits.push(d.key());
        }
        release(&mut hb, &mut m, now);
    }
    while let Some(p) = hb.pop_oldest(&mut m) {
        received.extend_from_slice(&p[12..]);
    }
    Out {
        sent: audio.to_vec(),
        received,
        digits,
    }
}

fn events(payload: &[u8], codec: Codec, sens: Sensitivity) -> Vec<ToneEvent> {
    let s: Vec<i16> = payload.iter().map(|b| g711::decode(codec, *b)).collect();
    let mut d = Detector::new(sens);
    let mut ev = Vec::new();
    d.push(&s, &mut |e| ev.push(e));
    ev
}

fn has_digit(ev: &[ToneEvent]) -> bool {
    ev.iter().any(|e| matches!(e, ToneEvent::Digit { .. }))
}

#[test]
fn tones_alone_are_removed_and_reported_once() {
    for codec in [Codec::Pcmu, Codec::Pcma] {
        for release_first in [false, true] {
            for offset in [0usize, 37, 80, 123, 159] {
                let mut x = vec![0.0f32; 8000];
                for (k, at) in [(0usize, 800), (1, 2400), (2, 4000), (3, 5600)] {
                    add_tone(&mut x, k, at + offset, 400, -8.0);
                }
                let out = through(
                    &encode(&x, codec),
                    codec,
                    MaskMode::Silence,
                    40,
                    release_first,
                );
                assert_eq!(out.digits, b"159D".to_vec(), "{offset} {release_first}");
                // nothing a lenient detector would even call an onset is left
                let ev = events(&out.received, codec, Sensitivity::Standard);
                assert!(ev.is_empty(), "{offset} {release_first}: {ev:?}");
                assert!(!has_digit(&events(
                    &out.received,
                    codec,
                    Sensitivity::Strict
                )));
            }
        }
    }
}

#[test]
fn short_bursts_and_leading_edges_are_masked_too() {
    // 15 ms and 25 ms bursts: never digits, still masked.
    let mut x = vec![0.0f32; 6000];
    add_tone(&mut x, 0, 1000, 120, -10.0);
    add_tone(&mut x, 3, 3000, 200, -10.0);
    let out = through(
        &encode(&x, Codec::Pcmu),
        Codec::Pcmu,
        MaskMode::Silence,
        40,
        true,
    );
    assert!(out.digits.is_empty());
    let ev = events(&out.received, Codec::Pcmu, Sensitivity::Strict);
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn speech_passes_byte_for_byte_outside_masked_spans() {
    let mut x = speechish(24_000, 7);
    let (from, len) = (10_000usize, 480usize);
    add_tone(&mut x, 1, from, len, -6.0);
    let sent = encode(&x, Codec::Pcmu);
    let out = through(&sent, Codec::Pcmu, MaskMode::Silence, 40, false);
    assert_eq!(out.digits, b"5".to_vec());
    assert_eq!(out.received.len(), out.sent.len());
    let pkt = 160;
    let mut masked = 0;
    for (i, (a, b)) in out
        .sent
        .chunks(pkt)
        .zip(out.received.chunks(pkt))
        .enumerate()
    {
        let (s, e) = (i * pkt, (i + 1) * pkt);
        let near = s < from + len + 2 * GUARD as usize && e + 2 * GUARD as usize > from;
        if a != b {
            masked += 1;
            assert!(near, "packet {i} changed outside the tone");
        }
    }
    // the tone covers 3-4 packets; guards add at most one on each side (+1 for the tail)
    assert!((3..=7).contains(&masked), "{masked}");
    assert!(!has_digit(&events(
        &out.received,
        Codec::Pcmu,
        Sensitivity::Strict
    )));
}

#[test]
fn pure_speech_is_untouched() {
    for seed in 1..4 {
        let x = speechish(40_000, seed);
        let sent = encode(&x, Codec::Pcma);
        let out = through(&sent, Codec::Pcma, MaskMode::Noise, 40, false);
        assert!(out.digits.is_empty());
        assert!(out.received == out.sent, "speech was altered");
    }
}

#[test]
fn mask_modes_replace_without_leaving_dtmf() {
    let mut x = speechish(16_000, 3);
    for v in x.iter_mut() {
        *v *= 0.2;
    }
    add_tone(&mut x, 2, 6000, 640, -6.0);
    let sent = encode(&x, Codec::Pcmu);
    for mode in [MaskMode::Silence, MaskMode::Tone, MaskMode::Noise] {
        let out = through(&sent, Codec::Pcmu, mode, 60, false);
        assert_eq!(out.digits, b"9".to_vec(), "{mode:?}");
        assert!(!has_digit(&events(
            &out.received,
            Codec::Pcmu,
            Sensitivity::Strict
        )));
        let tone_pkt = &out.received[6080..6240];
        match mode {
            MaskMode::Silence => assert!(tone_pkt.iter().all(|b| *b == 0xFF)),
            MaskMode::Tone => {
                let s: Vec<i16> = tone_pkt
                    .iter()
                    .map(|b| g711::decode(Codec::Pcmu, *b))
                    .collect();
                assert!(s.iter().all(|v| (1400..1800).contains(&v.abs())), "{s:?}");
            }
            MaskMode::Noise => {
                let rms = |p: &[u8]| {
                    let e: f32 = p
                        .iter()
                        .map(|b| f32::from(g711::decode(Codec::Pcmu, *b)).powi(2))
                        .sum();
                    (e / p.len() as f32).sqrt()
                };
                let around = rms(&out.received[2000..5000]);
                let got = rms(tone_pkt);
                assert!(
                    got > around * 0.3 && got < around * 2.5,
                    "{got} vs {around}"
                );
            }
        }
    }
}

#[test]
fn masking_off_detects_but_leaves_payloads() {
    let mut x = vec![0.0f32; 4000];
    add_tone(&mut x, 0, 1000, 400, -10.0);
    let sent = encode(&x, Codec::Pcmu);
    let t0 = Instant::now();
    let mut hb = Holdback::new(Duration::from_millis(40), 32, t0);
    let mut m = Masker::new(MaskMode::Silence, false);
    let mut received = Vec::new();
    let mut n = 0;
    for (i, chunk) in sent.chunks(160).enumerate() {
        let mut pkt = [0u8; 172];
        pkt[12..].copy_from_slice(chunk);
        let now = t0 + Duration::from_millis(20 * i as u64);
        let info = PacketInfo {
            codec: Codec::Pcmu,
            timestamp: 160 * i as u32,
            arrived: now,
        };
        hb.push(&pkt, 12..172, info, &mut m);
        while m.take_digit().is_some() {
            n += 1;
        }
        while let Some(p) = hb.pop_due(now, &mut m) {
            received.extend_from_slice(&p[12..]);
        }
    }
    while let Some(p) = hb.pop_oldest(&mut m) {
        received.extend_from_slice(&p[12..]);
    }
    assert_eq!(n, 1);
    assert_eq!(received, sent);
}

#[test]
fn garbage_and_odd_packets_never_panic() {
    let mut m = Masker::new(MaskMode::Noise, true);
    let t0 = Instant::now();
    for i in 0..200u32 {
        let len = (i as usize * 37) % (SLOT_BYTES + 1);
        let mut p: Vec<u8> = (0..len)
            .map(|j| ((j as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let info = PacketInfo {
            codec: Codec::Pcma,
            timestamp: i.wrapping_mul(7919),
            arrived: t0,
        };
        m.on_arrival(&p, &info);
        m.inspect(&mut p, &info);
        let info2 = PacketInfo {
            timestamp: 5,
            ..info
        };
        m.inspect(&mut p, &info2);
        let _ = m.take_digit();
    }
}
