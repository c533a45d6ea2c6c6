//! The talk-off corpus, built at test time and cached under `target/`: speech in several
//! voices from `espeak-ng` and music-like signals from `sox` (chords, sweeps, tremolo,
//! noise), at mixed levels, as 8 kHz 16-bit mono raw files.
//!
//! Must never: synthesise a DTMF pair on purpose (no sweep or chord here crosses a row and
//! a column frequency at the same time), or be committed to the repository (it is built).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tones;

/// Bump when the recipe changes, so a stale cache is rebuilt.
const VERSION: &str = "v1";

/// What a clip is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Speech,
    Music,
}

/// One clip of the corpus.
pub struct Clip {
    pub name: String,
    pub kind: Kind,
    pub samples: Vec<i16>,
}

const TEXT: &str = "Thank you for calling, my name is Sam and I will be looking after you today. \
Before we go any further, I need to confirm a few details. Could you please tell me your full \
name and the first line of your address? That is great, thank you. I can see the order you \
placed last Tuesday, the one with the blue kettle and the two boxes of tea. It looks like the \
delivery was delayed because the warehouse was closed over the long weekend. I am very sorry \
about that. What I can do is arrange a new delivery for Thursday morning, between eight and \
twelve, and refund the shipping cost. Would that work for you? Wonderful. Now, to process the \
refund I need to take a payment card, and for your security this part of the call is protected. \
When I say so, please type the long number on the front of your card using the keypad on your \
phone, followed by the hash key. You will hear a short tone for each key, and I will not hear \
the numbers. Then the expiry date, the month and then the year, and finally the three digit \
code on the back. Oh, and if you make a mistake, press star and start that part again. Right, \
I can see the card number has arrived and it has been accepted. The expiry date is fine as \
well. Perfect, everything has gone through. Your reference number is on its way by email, and \
you should see the refund within three to five working days. Is there anything else I can \
help you with today? No? Well, thank you so much for your patience, and have a lovely \
afternoon. Goodbye now. Hello, hello, can you hear me? The line is a bit quiet. Yes, sorry, \
I was saying one, two, three, four, five, six, seven, eight, nine, zero. Oh, look at the time, \
it is already quarter past four. Seven hundred and seventy seven. Nine hundred and forty one.";

/// (espeak-ng voice, words per minute, pitch 0–99, level dBFS peak).
const VOICES: &[(&str, u32, u32, i32)] = &[
    ("en-us", 160, 50, -1),
    ("en-us+f3", 175, 60, -6),
    ("en-gb+m3", 150, 40, -12),
    ("en-gb-scotland+f2", 165, 70, -3),
    ("en-029+m5", 180, 35, -20),
    ("en+f4", 155, 80, -9),
    ("en-gb-x-rp+m7", 145, 25, -15),
    ("en-us+klatt", 170, 55, -4),
    ("de+f5", 150, 65, -10),
    ("fr+m2", 160, 45, -25),
    ("es+f1", 170, 75, -2),
    ("en-us+croak", 140, 30, -8),
    ("en-gb+whisper", 160, 50, -6),
];

/// sox synth recipes: (name, synth arguments after `synth SECONDS`, level dBFS peak).
const MUSIC: &[(&str, &str, i32)] = &[
    (
        "saw-chord-c3-tremolo",
        "sawtooth C3 sawtooth E3 sawtooth G3 remix - tremolo 4 60",
        -3,
    ),
    (
        "sine-chord-c4",
        "sine 261.6 sine 329.6 sine 392 sine 523.3 remix - tremolo 0.5 30",
        -10,
    ),
    (
        "pluck-a4-major",
        "pluck A4 pluck C#5 pluck E5 remix - tremolo 2 90",
        -6,
    ),
    (
        "square-fifth",
        "square 220 square 330 remix - tremolo 6 40",
        -15,
    ),
    (
        "triangle-g-major",
        "triangle 196 triangle 247 triangle 294 remix - tremolo 6 50",
        -1,
    ),
    ("exp-sweeps", "sine 300:1000 sine 1000:2500 remix -", -8),
    ("lin-sweep", "sine 200-3400 remix -", -12),
    ("pink-noise-tremolo", "pinknoise remix - tremolo 3 80", -10),
    ("brown-noise", "brownnoise remix -", -4),
    (
        "white-noise-band",
        "whitenoise remix - bandpass 1000 800",
        -18,
    ),
];

/// Seconds per music clip.
const MUSIC_S: u32 = 40;

/// The cache directory (`target/tmp/talkoff-<VERSION>`).
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("talkoff-{VERSION}"))
}

/// Build (or reuse) the corpus and load it. Needs `espeak-ng` and `sox`.
pub fn load() -> Vec<Clip> {
    // One builder at a time within a test binary (the tests of a binary run in parallel).
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dir();
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut clips = Vec::new();
    for (i, (voice, wpm, pitch, level)) in VOICES.iter().enumerate() {
        let name = format!("speech-{i:02}-{}", voice.replace('+', "_"));
        let raw = dir.join(format!("{name}.raw"));
        if !raw.exists() {
            let wav = dir.join(format!("{name}.wav"));
            let st = Command::new("espeak-ng")
                .args([
                    "-v",
                    voice,
                    "-s",
                    &wpm.to_string(),
                    "-p",
                    &pitch.to_string(),
                ])
                .arg("-w")
                .arg(&wav)
                .arg(TEXT)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("espeak-ng");
            assert!(st.success(), "espeak-ng failed for {voice}");
            to_raw(&wav, &raw, *level);
            let _ = std::fs::remove_file(&wav);
        }
        clips.push(Clip {
            name,
            kind: Kind::Speech,
            samples: tones::read_raw(&raw).expect("read clip"),
        });
    }
    for (name, recipe, level) in MUSIC {
        let name = format!("music-{name}");
        let raw = dir.join(format!("{name}.raw"));
        if !raw.exists() {
            let tmp = dir.join(format!("{name}.tmp.raw"));
            let args: Vec<String> = recipe.split_whitespace().map(String::from).collect();
            let channels = args.iter().filter(|a| is_generator(a)).count().max(1);
            let st = Command::new("sox")
                .args(["-q", "-R", "-r", "44100", "-c", &channels.to_string(), "-n"])
                .args(["-r", "8000", "-t", "raw", "-e", "signed", "-b", "16", "-L"])
                .arg(&tmp)
                .args(["synth", &MUSIC_S.to_string()])
                .args(&args)
                .args(["gain", "-n", &level.to_string()])
                .status()
                .expect("sox");
            assert!(st.success(), "sox failed for {name}");
            std::fs::rename(&tmp, &raw).expect("rename");
        }
        clips.push(Clip {
            name,
            kind: Kind::Music,
            samples: tones::read_raw(&raw).expect("read clip"),
        });
    }
    clips
}

fn is_generator(a: &str) -> bool {
    matches!(
        a,
        "sine"
            | "square"
            | "triangle"
            | "sawtooth"
            | "pluck"
            | "pinknoise"
            | "brownnoise"
            | "whitenoise"
            | "trapezium"
            | "exp"
            | "noise"
    )
}

/// Convert a WAV to 8 kHz 16-bit mono raw at `level` dBFS peak (written atomically).
fn to_raw(wav: &Path, raw: &Path, level: i32) {
    let tmp = raw.with_extension("tmp.raw");
    let st = Command::new("sox")
        .arg("-q")
        .arg(wav)
        .args([
            "-r", "8000", "-c", "1", "-t", "raw", "-e", "signed", "-b", "16", "-L",
        ])
        .arg(&tmp)
        .args(["gain", "-n", &level.to_string()])
        .status()
        .expect("sox");
    assert!(st.success(), "sox conversion failed");
    std::fs::rename(&tmp, raw).expect("rename");
}
