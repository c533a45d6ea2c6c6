//! G.711 μ-law and A-law: decoding tables, encoders, and direct 256-entry μ↔A transcoding
//! tables, all computed at compile time (no allocation, no start-up work).
//!
//! Must never: allocate or branch on data in the per-packet transcoders.

use crate::media::Codec;

/// The silence byte of each law (linear 0 / the smallest positive step).
pub const fn silence(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0xFF,
        Codec::Pcma => 0xD5,
    }
}

/// μ-law byte -> linear 16-bit sample.
pub const fn ulaw_decode(u: u8) -> i16 {
    let u = !u;
    let mut t = (((u & 0x0f) as i32) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

/// A-law byte -> linear 16-bit sample.
pub const fn alaw_decode(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn segment(v: i32, ends: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if v <= ends[i] {
            return i;
        }
        i += 1;
    }
    8
}

/// Linear 16-bit sample -> μ-law byte.
pub const fn ulaw_encode(pcm: i16) -> u8 {
    const ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut v = (pcm as i32) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    if v > 8159 {
        v = 8159;
    }
    v += 0x21;
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as u8) << 4) | (((v >> (seg + 1)) & 0x0f) as u8);
    u ^ mask
}

/// Linear 16-bit sample -> A-law byte.
pub const fn alaw_encode(pcm: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = (pcm as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut a = (seg as u8) << 4;
    if seg < 2 {
        a |= ((v >> 1) & 0x0f) as u8;
    } else {
        a |= ((v >> seg) & 0x0f) as u8;
    }
    a ^ mask
}

const fn build_decode(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode(i as u8)
        } else {
            ulaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

const fn build_transcode(from_alaw: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if from_alaw {
            ulaw_encode(alaw_decode(i as u8))
        } else {
            alaw_encode(ulaw_decode(i as u8))
        };
        i += 1;
    }
    t
}

/// μ-law byte -> linear.
pub static ULAW_TO_LINEAR: [i16; 256] = build_decode(false);
/// A-law byte -> linear.
pub static ALAW_TO_LINEAR: [i16; 256] = build_decode(true);
/// μ-law byte -> A-law byte.
pub static ULAW_TO_ALAW: [u8; 256] = build_transcode(false);
/// A-law byte -> μ-law byte.
pub static ALAW_TO_ULAW: [u8; 256] = build_transcode(true);

/// Decode one byte of `codec` to linear.
pub fn decode(codec: Codec, b: u8) -> i16 {
    match codec {
        Codec::Pcmu => ULAW_TO_LINEAR[usize::from(b)],
        Codec::Pcma => ALAW_TO_LINEAR[usize::from(b)],
    }
}

/// Encode one linear sample in `codec`.
pub fn encode(codec: Codec, s: i16) -> u8 {
    match codec {
        Codec::Pcmu => ulaw_encode(s),
        Codec::Pcma => alaw_encode(s),
    }
}

/// Transcode a payload in place from one law to the other (no-op when they are equal).
pub fn transcode_in_place(from: Codec, to: Codec, payload: &mut [u8]) {
    let table = match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => &ULAW_TO_ALAW,
        (Codec::Pcma, Codec::Pcmu) => &ALAW_TO_ULAW,
        _ => return,
    };
    for b in payload.iter_mut() {
        *b = table[usize::from(*b)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_points() {
        // G.711 reference values (decoder outputs, 16-bit left-justified).
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xD4), 24);
        // encoders: silence, clipping
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(silence(Codec::Pcmu), ulaw_encode(0));
        assert_eq!(silence(Codec::Pcma), alaw_encode(0));
    }

    #[test]
    fn decode_encode_round_trips() {
        for b in 0..=255u8 {
            // μ-law 0x7F is "negative zero": it decodes to 0, which encodes as 0xFF.
            if b != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(b)), b, "ulaw {b:#x}");
            }
            assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#x}");
        }
    }

    #[test]
    fn encoders_are_monotonic() {
        let mut prev = i32::MIN;
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let d = i32::from(ulaw_decode(ulaw_encode(s)));
            assert!(d >= prev);
            prev = d;
            // quantisation error stays within half a step of the largest segment
            assert!((d - i32::from(s)).abs() <= 1024, "ulaw {s}");
            let a = i32::from(alaw_decode(alaw_encode(s)));
            assert!((a - i32::from(s)).abs() <= 1024, "alaw {s}");
        }
    }

    #[test]
    fn transcoding_tables() {
        assert_eq!(ULAW_TO_ALAW[0xFF], 0xD5);
        assert_eq!(ALAW_TO_ULAW[0xD5], ulaw_encode(8));
        assert_eq!(ULAW_TO_ALAW[0x80], 0xAA);
        assert_eq!(ULAW_TO_ALAW[0x00], 0x2A);
        // A -> μ -> A is the identity except where μ-law is coarser near zero.
        for a in 0..=255u8 {
            let back = ULAW_TO_ALAW[usize::from(ALAW_TO_ULAW[usize::from(a)])];
            let err = (i32::from(alaw_decode(back)) - i32::from(alaw_decode(a))).abs();
            let step = (i32::from(alaw_decode(a)).abs() / 16).max(16);
            assert!(err <= step, "a {a:#x} err {err}");
        }
        for u in 0..=255u8 {
            let back = ALAW_TO_ULAW[usize::from(ULAW_TO_ALAW[usize::from(u)])];
            let err = (i32::from(ulaw_decode(back)) - i32::from(ulaw_decode(u))).abs();
            let step = (i32::from(ulaw_decode(u)).abs() / 16).max(16);
            assert!(err <= step, "u {u:#x} err {err}");
        }
        let mut p = [0xFFu8, 0x80, 0x00];
        transcode_in_place(Codec::Pcmu, Codec::Pcma, &mut p);
        assert_eq!(p, [0xD5, 0xAA, 0x2A]);
        transcode_in_place(Codec::Pcma, Codec::Pcmu, &mut p);
        assert_eq!(p[0], ulaw_encode(8));
        transcode_in_place(Codec::Pcmu, Codec::Pcmu, &mut p);
    }
}
