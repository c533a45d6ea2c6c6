//! Talk-off: the Standard detector over ≥ 20 minutes of speech (several espeak-ng voices)
//! and music-like signals (sox), built at test time and cached under `target/`. Reports
//! false digits and masked milliseconds (Onset → End) per minute, and keeps them under the
//! limits below. Skips without espeak-ng/sox on a laptop; fails in CI (`CI` set).

mod common;

use common::corpus::{self, Kind};
use common::{detect, tones};
use tonewall::media::detector::Sensitivity;

/// 10 ms dual-tone windows the leak check may find over the whole corpus.
const MAX_LEAK_WINDOWS_ON_CORPUS: usize = 20;
/// False digits allowed over the whole corpus (speech + music).
const MAX_FALSE_DIGITS: usize = 0;
/// Masked (Onset → End) milliseconds per minute of speech allowed.
const MAX_MASKED_MS_PER_MIN_SPEECH: f64 = 100.0;
/// Masked milliseconds per minute of music allowed.
const MAX_MASKED_MS_PER_MIN_MUSIC: f64 = 40.0;

#[derive(Default)]
struct Tally {
    samples: u64,
    digits: usize,
    masked: u64,
}

impl Tally {
    fn minutes(&self) -> f64 {
        self.samples as f64 / tones::RATE as f64 / 60.0
    }
    fn masked_ms_per_min(&self) -> f64 {
        let ms = self.masked as f64 / 8.0;
        if self.minutes() > 0.0 {
            ms / self.minutes()
        } else {
            0.0
        }
    }
}

#[test]
fn talkoff_corpus_report() {
    if !tones::tools_available(&["espeak-ng", "sox"]) {
        return;
    }
    let started = std::time::Instant::now();
    let clips = corpus::load();
    let built = started.elapsed();
    let (mut speech, mut music) = (Tally::default(), Tally::default());
    let mut lines = Vec::new();
    for clip in &clips {
        let run = detect::run(Sensitivity::Standard, &clip.samples);
        let n = clip.samples.len() as u64;
        let digits = run.digits().len();
        let masked = run.masked_samples(n);
        let t = match clip.kind {
            Kind::Speech => &mut speech,
            Kind::Music => &mut music,
        };
        t.samples += n;
        t.digits += digits;
        t.masked += masked;
        lines.push(format!(
            "  {:<40} {:>6.1} s  false digits {digits:>2}  masked {:>6.0} ms",
            clip.name,
            n as f64 / 8000.0,
            masked as f64 / 8.0
        ));
    }
    let total_min = speech.minutes() + music.minutes();
    eprintln!(
        "talk-off corpus: {} clips, {:.1} min ({:.1} speech, {:.1} music), built/loaded in {:.1?}, \
         detected in {:.1?}\n{}",
        clips.len(),
        total_min,
        speech.minutes(),
        music.minutes(),
        built,
        started.elapsed() - built,
        lines.join("\n")
    );
    eprintln!(
        "TALK-OFF REPORT: false digits: speech {} music {}; masked ms per minute: speech {:.1} \
         music {:.1}",
        speech.digits,
        music.digits,
        speech.masked_ms_per_min(),
        music.masked_ms_per_min()
    );
    assert!(total_min >= 20.0, "corpus too short: {total_min:.1} min");
    assert!(
        speech.minutes() >= 12.0,
        "speech: {:.1} min",
        speech.minutes()
    );
    // The corpus is not silence: every clip carries signal, at mixed levels.
    for clip in &clips {
        let peak = clip
            .samples
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!(peak > 1000, "{} is (nearly) silent", clip.name);
    }
    assert!(
        speech.digits + music.digits == MAX_FALSE_DIGITS,
        "false digits: speech {} music {}",
        speech.digits,
        music.digits
    );
    assert!(speech.masked_ms_per_min() <= MAX_MASKED_MS_PER_MIN_SPEECH);
    assert!(music.masked_ms_per_min() <= MAX_MASKED_MS_PER_MIN_MUSIC);
}

/// The corpus contains no literal DTMF: multimon-ng (an independent detector) finds no
/// digit in the music clips, which are synthetic and could hide a pair by mistake.
#[test]
fn music_corpus_has_no_literal_dtmf() {
    if !tones::tools_available(&["espeak-ng", "sox", "multimon-ng"]) {
        return;
    }
    for clip in corpus::load().iter().filter(|c| c.kind == Kind::Music) {
        let found = tones::multimon_digits(&clip.samples);
        assert!(
            found.is_empty(),
            "{}: multimon-ng found {} digits",
            clip.name,
            found.len()
        );
    }
}

/// The leak tests' 10 ms dual-tone window check (tests/common/detect.rs) must be quiet on
/// speech and music, or it could not tell a leak from the speech around it.
#[test]
fn leak_window_check_is_quiet_on_the_corpus() {
    if !tones::tools_available(&["espeak-ng", "sox"]) {
        return;
    }
    let mut total = 0;
    for clip in &corpus::load() {
        let hits = detect::dual_tone_windows(&clip.samples, detect::WindowCheck::default());
        if !hits.is_empty() {
            eprintln!("{}: {} windows", clip.name, hits.len());
        }
        total += hits.len();
    }
    eprintln!("leak window check over the corpus: {total} windows");
    assert!(total <= MAX_LEAK_WINDOWS_ON_CORPUS, "{total} windows");
}
