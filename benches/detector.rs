//! Cost of the in-band DTMF detector per 20 ms frame (160 samples at 8 kHz), on speech-
//! like audio and on a DTMF tone.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use tonewall::media::detector::{Detector, Sensitivity};

fn frames(tone: bool) -> Vec<[i16; 160]> {
    let mut rng: u32 = 0x1234_5678;
    (0..50)
        .map(|f| {
            let mut fr = [0i16; 160];
            for (i, s) in fr.iter_mut().enumerate() {
                let t = (f * 160 + i) as f32 / 8000.0;
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let v = if tone {
                    6000.0 * (2.0 * std::f32::consts::PI * 770.0 * t).sin()
                        + 6000.0 * (2.0 * std::f32::consts::PI * 1336.0 * t).sin()
                } else {
                    3000.0 * (2.0 * std::f32::consts::PI * 140.0 * t).sin()
                        + ((rng >> 20) as f32 - 2048.0)
                };
                *s = v as i16;
            }
            fr
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    for (name, tone) in [
        ("detector_20ms_frame_speech", false),
        ("detector_20ms_frame_tone", true),
    ] {
        let fr = frames(tone);
        let mut d = Detector::new(Sensitivity::Standard);
        let mut i = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % fr.len();
                let mut n = 0u32;
                d.push(black_box(&fr[i]), &mut |_| n += 1);
                black_box(n)
            })
        });
    }
}

criterion_group!(detector, benches);
criterion_main!(detector);
