//! Test signal generator for the in-band DTMF tests: dual tones for the 16 keys with
//! per-tone frequency deviation, level (dBm0), twist, duration, pauses and interruptions;
//! white noise at an SNR; mixing over other audio; a speech-like babble; G.711 μ/A-law
//! encode/decode; 20 ms RTP payload framing; WAV output and a `multimon-ng` runner used as
//! an independent second detector.
//!
//! Must never: depend on the code under test (it is the yardstick), or be non-deterministic
//! (every random source is a seeded xorshift).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// Sample rate of everything here.
pub const RATE: u32 = 8000;
/// Samples in a 20 ms RTP payload.
pub const FRAME: usize = 160;

/// The 16 keys, in RFC 4733 event order.
pub const KEYS: &[u8; 16] = b"0123456789*#ABCD";
/// Low ("row") group, Hz.
pub const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// High ("column") group, Hz.
pub const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// The (row, column) frequencies of a key (`0`–`9`, `*`, `#`, `A`–`D`).
pub fn key_freqs(key: u8) -> (f64, f64) {
    let (r, c) = match key.to_ascii_uppercase() {
        b'1' => (0, 0),
        b'2' => (0, 1),
        b'3' => (0, 2),
        b'A' => (0, 3),
        b'4' => (1, 0),
        b'5' => (1, 1),
        b'6' => (1, 2),
        b'B' => (1, 3),
        b'7' => (2, 0),
        b'8' => (2, 1),
        b'9' => (2, 2),
        b'C' => (2, 3),
        b'*' => (3, 0),
        b'0' => (3, 1),
        b'#' => (3, 2),
        b'D' => (3, 3),
        other => panic!("not a DTMF key: {other}"),
    };
    (ROWS[r], COLS[c])
}

/// dBm0 of a full-scale (32767 peak) sine: the G.711 digital milliwatt headroom (not π).
#[allow(clippy::approx_constant)]
pub const FULL_SCALE_DBM0: f64 = 3.14;

/// Peak amplitude (16-bit linear) of a sine at `dbm0`: A = 32767 · 10^((dBm0 − 3.14)/20).
pub fn amplitude(dbm0: f64) -> f64 {
    32767.0 * 10f64.powf((dbm0 - FULL_SCALE_DBM0) / 20.0)
}

/// The level in dBm0 of a sine whose peak amplitude is `amp` (inverse of [`amplitude`]).
pub fn dbm0_of_amplitude(amp: f64) -> f64 {
    20.0 * (amp.max(1e-9) / 32767.0).log10() + FULL_SCALE_DBM0
}

/// One dual tone.
///
/// Twist sign: `twist_db` = level(high/column tone) − level(low/row tone). **Positive is
/// reverse twist** (high group louder), **negative is normal twist** (high group quieter, as
/// line loss makes it). The row tone is at `level_dbm0`; the column tone at
/// `level_dbm0 + twist_db`.
#[derive(Clone, Copy, Debug)]
pub struct Tone {
    pub key: u8,
    /// Level of the row (low group) tone, dBm0.
    pub level_dbm0: f64,
    pub twist_db: f64,
    /// Relative frequency deviation of the row tone (0.015 = +1.5 %).
    pub row_dev: f64,
    /// Relative frequency deviation of the column tone.
    pub col_dev: f64,
    pub duration_ms: f64,
    /// A gap of this many ms (silence) in the middle of the tone; 0 for none. The tone's
    /// total span (tone + gap + tone) is `duration_ms`.
    pub gap_ms: f64,
}

impl Tone {
    /// A clean tone: −10 dBm0 per tone, no twist, no deviation, 60 ms.
    pub fn new(key: u8) -> Tone {
        Tone {
            key,
            level_dbm0: -10.0,
            twist_db: 0.0,
            row_dev: 0.0,
            col_dev: 0.0,
            duration_ms: 60.0,
            gap_ms: 0.0,
        }
    }
    pub fn level(mut self, dbm0: f64) -> Tone {
        self.level_dbm0 = dbm0;
        self
    }
    pub fn twist(mut self, db: f64) -> Tone {
        self.twist_db = db;
        self
    }
    pub fn dev(mut self, row: f64, col: f64) -> Tone {
        self.row_dev = row;
        self.col_dev = col;
        self
    }
    pub fn ms(mut self, ms: f64) -> Tone {
        self.duration_ms = ms;
        self
    }
    pub fn gap(mut self, ms: f64) -> Tone {
        self.gap_ms = ms;
        self
    }

    /// The mean power of the tone (sum of both sines, linear units²).
    pub fn power(&self) -> f64 {
        let a = amplitude(self.level_dbm0);
        let b = amplitude(self.level_dbm0 + self.twist_db);
        (a * a + b * b) / 2.0
    }

    /// The samples (saturated to i16; levels near 0 dBm0 per tone clip, as a codec would).
    pub fn render(&self) -> Vec<i16> {
        let (fr, fc) = key_freqs(self.key);
        let (fr, fc) = (fr * (1.0 + self.row_dev), fc * (1.0 + self.col_dev));
        let (ar, ac) = (
            amplitude(self.level_dbm0),
            amplitude(self.level_dbm0 + self.twist_db),
        );
        let n = ms_to_samples(self.duration_ms);
        let gap = ms_to_samples(self.gap_ms).min(n);
        let gap_start = (n - gap) / 2;
        (0..n)
            .map(|i| {
                if gap > 0 && i >= gap_start && i < gap_start + gap {
                    return 0;
                }
                let t = i as f64 / RATE as f64;
                let v = ar * (std::f64::consts::TAU * fr * t).sin()
                    + ac * (std::f64::consts::TAU * fc * t).sin();
                sat(v)
            })
            .collect()
    }
}

pub fn ms_to_samples(ms: f64) -> usize {
    (ms * RATE as f64 / 1000.0).round() as usize
}

fn sat(v: f64) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}

/// Silence of `ms`.
pub fn silence(ms: f64) -> Vec<i16> {
    vec![0; ms_to_samples(ms)]
}

/// Where a tone sits in a rendered sequence (sample positions).
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub key: u8,
    pub start: usize,
    pub end: usize,
}

/// `lead_ms` of silence, then each tone followed by `pause_ms` of silence, then `tail_ms`.
pub fn sequence(
    tones: &[Tone],
    lead_ms: f64,
    pause_ms: f64,
    tail_ms: f64,
) -> (Vec<i16>, Vec<Placed>) {
    let mut out = silence(lead_ms);
    let mut placed = Vec::new();
    for t in tones {
        let start = out.len();
        out.extend(t.render());
        placed.push(Placed {
            key: t.key,
            start,
            end: out.len(),
        });
        out.extend(silence(pause_ms));
    }
    out.extend(silence(tail_ms));
    (out, placed)
}

/// A deterministic xorshift64* generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn gauss(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Add white Gaussian noise whose power is `signal_power / 10^(snr_db/10)`.
pub fn add_noise(samples: &mut [i16], signal_power: f64, snr_db: f64, seed: u64) {
    let sigma = (signal_power / 10f64.powf(snr_db / 10.0)).sqrt();
    let mut rng = Rng::new(seed);
    for s in samples {
        *s = sat(*s as f64 + sigma * rng.gauss());
    }
}

/// Mean power of a signal (linear units²).
pub fn power(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len() as f64
}

/// Mix `over` into `base` starting at sample `at` (saturating; `base` grows if needed).
pub fn mix(base: &mut Vec<i16>, over: &[i16], at: usize) {
    if base.len() < at + over.len() {
        base.resize(at + over.len(), 0);
    }
    for (b, o) in base[at..].iter_mut().zip(over) {
        *b = sat(*b as f64 + *o as f64);
    }
}

/// Scale a signal by `db`.
pub fn gain(samples: &mut [i16], db: f64) {
    let g = 10f64.powf(db / 20.0);
    for s in samples {
        *s = sat(*s as f64 * g);
    }
}

/// A speech-like babble of `ms`: voiced "syllables" (a harmonic series on a gliding pitch
/// of 90–220 Hz, shaped by two moving formants, 4–6 per second) with short gaps, at about
/// `level_dbm0` average. Deterministic for a seed; contains no DTMF pair by construction
/// (its energy is spread over many harmonics).
pub fn babble(ms: f64, level_dbm0: f64, seed: u64) -> Vec<i16> {
    let n = ms_to_samples(ms);
    let mut rng = Rng::new(seed);
    let mut out = vec![0f64; n];
    let mut i = 0usize;
    while i < n {
        let syl = ms_to_samples(120.0 + 100.0 * rng.unit());
        let gap = ms_to_samples(20.0 + 60.0 * rng.unit());
        let f0a = 90.0 + 130.0 * rng.unit();
        let f0b = f0a * (0.8 + 0.4 * rng.unit());
        let f1 = 300.0 + 500.0 * rng.unit();
        let f2 = 900.0 + 1400.0 * rng.unit();
        let mut phase = 0.0f64;
        for k in 0..syl.min(n - i) {
            let x = k as f64 / syl as f64;
            let f0 = f0a + (f0b - f0a) * x;
            phase += std::f64::consts::TAU * f0 / RATE as f64;
            let env = (std::f64::consts::PI * x).sin();
            let mut v = 0.0;
            let mut h = 1.0;
            while h * f0 < 3400.0 {
                let f = h * f0;
                let w = 1.0 / (1.0 + ((f - f1) / 150.0).powi(2))
                    + 0.5 / (1.0 + ((f - f2) / 200.0).powi(2))
                    + 0.02;
                v += w * (h * phase).sin();
                h += 1.0;
            }
            out[i + k] = v * env;
        }
        i += syl + gap;
    }
    let p = out.iter().map(|v| v * v).sum::<f64>() / n.max(1) as f64;
    let want = amplitude(level_dbm0).powi(2) / 2.0;
    let g = if p > 0.0 { (want / p).sqrt() } else { 0.0 };
    out.into_iter().map(|v| sat(v * g)).collect()
}

// ---- G.711 (independent of the server's tables) ----

/// 16-bit linear to μ-law.
pub fn ulaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(32635) + 0x84;
    let mut exp = 7;
    while exp > 0 && s & (0x80 << exp) == 0 {
        exp -= 1;
    }
    let mant = (s >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) | mant) as u8
}

/// μ-law to 16-bit linear.
pub fn unulaw(u: u8) -> i16 {
    let u = !u;
    let t = ((((u & 0x0f) as i32) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// 16-bit linear to A-law.
pub fn alaw(sample: i16) -> u8 {
    let (mask, mut s) = if sample >= 0 {
        (0xd5u8, sample as i32)
    } else {
        (0x55u8, (-(sample as i32) - 8).max(0))
    };
    s = s.min(32767);
    let seg = (0..8).find(|k| s < (0x100 << k)).unwrap_or(8);
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let mut a = (seg as u8) << 4;
    a |= if seg < 2 {
        ((s >> 4) & 0x0f) as u8
    } else {
        ((s >> (seg + 3)) & 0x0f) as u8
    };
    a ^ mask
}

/// A-law to 16-bit linear.
pub fn unalaw(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// The G.711 laws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    /// PCMU, PT 0.
    Mu,
    /// PCMA, PT 8.
    A,
}

impl Law {
    pub fn pt(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Law::Mu => "PCMU",
            Law::A => "PCMA",
        }
    }
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Law::Mu => samples.iter().map(|s| ulaw(*s)).collect(),
            Law::A => samples.iter().map(|s| alaw(*s)).collect(),
        }
    }
    pub fn decode(self, bytes: &[u8]) -> Vec<i16> {
        match self {
            Law::Mu => bytes.iter().map(|b| unulaw(*b)).collect(),
            Law::A => bytes.iter().map(|b| unalaw(*b)).collect(),
        }
    }
}

/// Cut encoded audio into 20 ms (160-byte) RTP payloads; the last one is padded with the
/// law's silence.
pub fn payloads(law: Law, samples: &[i16]) -> Vec<Vec<u8>> {
    samples
        .chunks(FRAME)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(FRAME, 0);
            law.encode(&f)
        })
        .collect()
}

// ---- files and multimon-ng ----

/// Write 8 kHz 16-bit mono WAV.
pub fn write_wav(path: &Path, samples: &[i16]) -> std::io::Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&RATE.to_le_bytes());
    b.extend_from_slice(&(RATE * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b)
}

/// Read raw 16-bit little-endian mono samples.
pub fn read_raw(path: &Path) -> std::io::Result<Vec<i16>> {
    let b = std::fs::read(path)?;
    Ok(b.chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect())
}

/// Whether all `tools` are on PATH. In CI (`CI` set) a missing tool is a failure, not a skip.
pub fn tools_available(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{missing:?} not installed but CI is set: .ci/run must install them");
    }
    eprintln!("skipping: {missing:?} not installed (apt-get install espeak-ng sox multimon-ng)");
    false
}

/// Resample 8 kHz samples to the 22,050 Hz multimon-ng expects, with sox.
pub fn resample_for_multimon(samples: &[i16]) -> Vec<i16> {
    use std::io::Write;
    let mut child = Command::new("sox")
        .args([
            "-q", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .args([
            "-L", "-", "-t", "raw", "-r", "22050", "-e", "signed", "-b", "16",
        ])
        .args(["-c", "1", "-L", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sox");
    let mut raw = Vec::with_capacity(samples.len() * 2);
    // Half a second of silence on both ends so multimon-ng's filters settle and flush.
    raw.extend(std::iter::repeat_n(0u8, 8000));
    for s in samples {
        raw.extend_from_slice(&s.to_le_bytes());
    }
    raw.extend(std::iter::repeat_n(0u8, 8000));
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&raw);
    });
    let out = child.wait_with_output().expect("sox output");
    let _ = writer.join();
    assert!(out.status.success(), "sox failed");
    out.stdout
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The DTMF digits `multimon-ng` finds in 8 kHz samples, in order.
pub fn multimon_digits(samples: &[i16]) -> String {
    use std::io::Write;
    let resampled = resample_for_multimon(samples);
    let mut child = Command::new("multimon-ng")
        .args(["-q", "-c", "-a", "DTMF", "-t", "raw", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn multimon-ng");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut raw = Vec::with_capacity(resampled.len() * 2);
        for s in resampled {
            raw.extend_from_slice(&s.to_ne_bytes());
        }
        let _ = stdin.write_all(&raw);
    });
    let out = child.wait_with_output().expect("multimon output");
    let _ = writer.join();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DTMF: "))
        .filter_map(|d| d.trim().chars().next())
        .collect()
}
