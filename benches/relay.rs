//! ns per packet of the pure relay step (`media::relay`), and of the step plus the
//! hold-back buffer. Each iteration also copies a fresh 172-byte packet into the buffer
//! (the relay edits in place), which is part of the measured time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use tonewall::config::MaskMode;
use tonewall::media::holdback::{Holdback, Inspector, PacketInfo, PassThrough};
use tonewall::media::masker::Masker;
use tonewall::media::relay::{LegCodec, Relay, Step};
use tonewall::media::rfc4733::TelephoneEvent;
use tonewall::media::rtp;
use tonewall::media::Codec;

const PCMU: LegCodec = LegCodec {
    codec: Codec::Pcmu,
    pt: 0,
    te_pt: Some(101),
};
const PCMA: LegCodec = LegCodec {
    codec: Codec::Pcma,
    pt: 8,
    te_pt: Some(101),
};

fn audio(pt: u8) -> [u8; 172] {
    let mut p = [0u8; 172];
    for (i, b) in p.iter_mut().enumerate() {
        *b = i as u8;
    }
    let _ = rtp::write_header(&mut p, pt, 0, 0, 0x1234, false);
    p
}

fn run(c: &mut Criterion, name: &str, from: LegCodec, to: LegCodec, template: &[u8]) {
    let mut relay = Relay::new(from, to, true, 1, 0, 0);
    let now = Instant::now();
    let mut buf = [0u8; 2048];
    let len = template.len();
    let mut seq: u16 = 0;
    let mut ts: u32 = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            buf[..len].copy_from_slice(template);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            if template[1] & 0x7f != 101 {
                buf[4..8].copy_from_slice(&ts.to_be_bytes());
            }
            black_box(relay.step(black_box(&mut buf[..len]), now))
        })
    });
}

fn benches(c: &mut Criterion) {
    let pcmu = audio(0);
    run(c, "relay_pcmu_to_pcmu", PCMU, PCMU, &pcmu);
    run(c, "relay_pcmu_to_pcma_transcode", PCMU, PCMA, &pcmu);
    let mut te = [0u8; 16];
    let _ = rtp::write_header(&mut te, 101, 0, 4242, 0x1234, false);
    let _ = TelephoneEvent {
        event: 5,
        end: false,
        volume: 10,
        duration: 160,
    }
    .write(&mut te[12..]);
    run(c, "relay_telephone_event_drop", PCMU, PCMU, &te);

    // relay step + hold-back push + release of the packet that is due: without in-band
    // detection (PassThrough) and with the detector + masker
    holdback(c, "relay_pcmu_through_holdback", &pcmu, &mut PassThrough);
    let mut masker = Masker::new(MaskMode::Silence, true);
    holdback(
        c,
        "relay_pcmu_through_holdback_with_masker",
        &pcmu,
        &mut masker,
    );
}

fn holdback(c: &mut Criterion, name: &str, pcmu: &[u8; 172], ins: &mut dyn Inspector) {
    let mut relay = Relay::new(PCMU, PCMU, true, 1, 0, 0);
    let t0 = Instant::now();
    let mut hb = Holdback::new(Duration::from_millis(40), Holdback::capacity_for(40), t0);
    let mut buf = [0u8; 2048];
    let mut n: u64 = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            let now = t0 + Duration::from_millis(20 * n);
            buf[..172].copy_from_slice(pcmu);
            buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            buf[4..8].copy_from_slice(&((n as u32).wrapping_mul(160)).to_be_bytes());
            if let Step::Forward { payload } = relay.step(&mut buf[..172], now) {
                let info = PacketInfo {
                    codec: Codec::Pcmu,
                    timestamp: (n as u32).wrapping_mul(160),
                    arrived: now,
                };
                if hb.is_full() {
                    let _ = hb.pop_oldest(ins);
                }
                hb.push(&buf[..172], payload, info, ins);
            }
            while let Some(p) = hb.pop_due(now, ins) {
                black_box(p);
            }
            black_box(ins.take_digit())
        })
    });
}

criterion_group!(relay, benches);
criterion_main!(relay);
