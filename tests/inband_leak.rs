//! In-band DTMF leak tests through the real server on loopback: the customer sends generated
//! key presses as G.711 RTP at 20 ms pacing (alone, over speech, and with RFC 4733 events
//! that start only after 20–40 ms of in-band tone, as carriers do); the representative
//! records what it receives, which is checked by two independent detectors (ours in
//! `Sensitivity::Strict`, and multimon-ng) and a 10 ms dual-tone window check. The session's
//! fields must hold exactly the pressed digits, and audio outside the presses must arrive
//! byte-for-byte. With masking disabled the same checks must find the digits.

mod common;

use std::time::Duration;

use common::tones::{self, Law, Placed, Tone};
use common::uac::{Conn, Leg, RtpIn};
use common::{detect, Server, ServerOpts, API_KEY};
use serde_json::{json, Value};
use tonewall::media::detector::Sensitivity;

/// The presses: decimal, so they land in the `pan` field (`*` and `#` are keypad commands).
const KEYS: &[u8] = b"4921";
/// Margin around each press (ms) within which the masker may alter audio.
const MASK_MARGIN_MS: f64 = 60.0;

/// How the customer's phone sends the presses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In-band only.
    Inband,
    /// In-band for the first `edge_ms` of each press, then RFC 4733 events.
    CarrierEdge,
}

struct Outcome {
    /// Decoded audio the rep received (in order of sequence number).
    received: Vec<i16>,
    /// Audio payloads sent and received, in order.
    sent_payloads: Vec<Vec<u8>>,
    recv_payloads: Vec<Vec<u8>>,
    /// Where each press is in the customer's audio (samples).
    placed: Vec<Placed>,
    pan_length: u64,
}

async fn get_session(server: &Server, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v1/sessions/{id}", server.http))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Drop whatever the server sent the rep before the customer spoke (the bridge's start-up
/// silence), so the recording starts with the customer's first packet.
async fn drain(rep: &Leg) {
    while !rep.recv_rtp(Duration::from_millis(150)).await.is_empty() {}
}

/// Set up a bridged session, send the presses, and collect what the rep received.
async fn run_call(server: &Server, law: Law, mode: Mode, over_speech: bool) -> Outcome {
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/v1/sessions", server.http))
        .bearer_auth(API_KEY)
        .json(&json!({"call_id": "leak", "rep": "r1"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = resp["id"].as_str().expect("id").to_string();
    let dnis = resp["dnis"].as_str().expect("dnis").to_string();
    let target: std::net::SocketAddr = server.sip_target().parse().expect("addr");
    let rep = Leg::dial(Conn::udp(target).await, target, &dnis, law.pt(), law.name()).await;
    let cust = Leg::dial(Conn::udp(target).await, target, &dnis, law.pt(), law.name()).await;
    for _ in 0..200 {
        if get_session(server, &id).await["state"] == "bridged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&rep).await;

    // The customer's audio: presses (80 ms tone, 120 ms pause) after 400 ms, over speech or
    // silence.
    let presses: Vec<Tone> = KEYS
        .iter()
        .enumerate()
        .map(|(i, k)| Tone::new(*k).level(-8.0 - 3.0 * i as f64).ms(80.0))
        .collect();
    let (tonesig, placed) = tones::sequence(&presses, 400.0, 120.0, 400.0);
    let mut audio = if over_speech {
        // Background talk 12 dB below the weakest press.
        tones::babble(tonesig.len() as f64 / 8.0, -26.0, 11)
    } else {
        tones::silence(tonesig.len() as f64 / 8.0)
    };
    tones::mix(&mut audio, &tonesig, 0);
    let frames = tones::payloads(law, &audio);

    // The rep records concurrently.
    let rep_task = tokio::spawn(async move {
        let mut got: Vec<RtpIn> = Vec::new();
        loop {
            let more = rep.recv_rtp(Duration::from_millis(500)).await;
            if more.is_empty() {
                return (rep, got);
            }
            got.extend(more);
        }
    });

    // Send at 20 ms pacing.
    let ssrc = 0x5EC0_0001;
    let mut seq = 1000u16;
    let mut sent_payloads = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, frame) in frames.iter().enumerate() {
        tick.tick().await;
        let ts = 8000 + 160 * i as u32;
        let start = i * tones::FRAME;
        let press = placed
            .iter()
            .position(|p| start + tones::FRAME > p.start && start < p.end);
        if let (Mode::CarrierEdge, Some(n)) = (mode, press) {
            let p = placed[n];
            // 20 ms of in-band edge for even presses, 40 ms for odd ones.
            let edge = tones::ms_to_samples(if n % 2 == 0 { 20.0 } else { 40.0 });
            if start >= p.start + edge {
                // The carrier now sends RFC 4733 instead of audio.
                let ev_ts = 8000 + (p.start + edge) as u32;
                let code = tonewall::digit::Digit::from_key(p.key)
                    .expect("key")
                    .event_code();
                let dur = (start + tones::FRAME - p.start - edge) as u16;
                let last = start + tones::FRAME >= p.end;
                let marker = start < p.start + edge + tones::FRAME;
                let flags = if last { 0x80 | 10 } else { 10 };
                let body = [code, flags, (dur >> 8) as u8, dur as u8];
                for _ in 0..if last { 3 } else { 1 } {
                    cust.send_rtp(101, seq, ev_ts, ssrc, marker, &body).await;
                    seq = seq.wrapping_add(1);
                }
                continue;
            }
        }
        cust.send_rtp(law.pt(), seq, ts, ssrc, i == 0, frame).await;
        seq = seq.wrapping_add(1);
        sent_payloads.push(frame.clone());
    }
    let (_rep, mut got) = rep_task.await.expect("rep task");
    got.retain(|p| p.pt == law.pt() && p.payload.len() == tones::FRAME);
    got.sort_by_key(|p| p.seq);
    let recv_payloads: Vec<Vec<u8>> = got.iter().map(|p| p.payload.clone()).collect();
    let received: Vec<i16> = recv_payloads.iter().flat_map(|p| law.decode(p)).collect();
    let s = get_session(server, &id).await;
    let pan_length = s["fields"]["pan"]["length"].as_u64().unwrap_or(0);
    Outcome {
        received,
        sent_payloads,
        recv_payloads,
        placed,
        pan_length,
    }
}

/// What the three checks found in the rep's audio.
struct Leak {
    strict_digits: usize,
    multimon_digits: usize,
    windows: usize,
}

fn leak_check(audio: &[i16]) -> Leak {
    let strict_digits = detect::run(Sensitivity::Strict, audio).digits().len();
    let multimon_digits = if tones::tools_available(&["multimon-ng", "sox"]) {
        tones::multimon_digits(audio).len()
    } else {
        0
    };
    let windows = detect::dual_tone_windows(audio, detect::WindowCheck::default()).len();
    Leak {
        strict_digits,
        multimon_digits,
        windows,
    }
}

fn assert_no_leak(o: &Outcome, label: &str) {
    assert!(
        o.received.len() > 8000,
        "{label}: rep received only {} samples",
        o.received.len()
    );
    let l = leak_check(&o.received);
    assert_eq!(
        l.strict_digits, 0,
        "{label}: Strict detector found digits in the rep's audio"
    );
    assert_eq!(
        l.multimon_digits, 0,
        "{label}: multimon-ng found digits in the rep's audio"
    );
    assert_eq!(
        l.windows, 0,
        "{label}: 10 ms windows with dual-tone energy reached the rep"
    );
    assert_eq!(
        o.pan_length,
        KEYS.len() as u64,
        "{label}: one digit per press in the session's fields"
    );
}

/// Outside the presses (± the margin), every payload the rep got is the one the customer
/// sent, byte for byte, in order.
fn assert_untouched_outside_presses(o: &Outcome, label: &str) {
    assert_eq!(
        o.recv_payloads.len(),
        o.sent_payloads.len(),
        "{label}: every audio packet relayed"
    );
    let margin = tones::ms_to_samples(MASK_MARGIN_MS);
    let mut checked = 0;
    for (i, (sent, got)) in o.sent_payloads.iter().zip(&o.recv_payloads).enumerate() {
        let (a, b) = (i * tones::FRAME, (i + 1) * tones::FRAME);
        let near = o
            .placed
            .iter()
            .any(|p| b + margin > p.start && a < p.end + margin);
        if !near {
            assert_eq!(sent, got, "{label}: packet {i} altered outside a press");
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "{label}: only {checked} packets outside presses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_tones_alone_pcmu_do_not_leak() {
    let server = Server::start(ServerOpts::default());
    let o = run_call(&server, Law::Mu, Mode::Inband, false).await;
    assert_no_leak(&o, "PCMU alone");
    assert_untouched_outside_presses(&o, "PCMU alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_tones_alone_pcma_do_not_leak() {
    let server = Server::start(ServerOpts::default());
    let o = run_call(&server, Law::A, Mode::Inband, false).await;
    assert_no_leak(&o, "PCMA alone");
    assert_untouched_outside_presses(&o, "PCMA alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inband_tones_over_speech_do_not_leak_and_speech_is_untouched() {
    let server = Server::start(ServerOpts::default());
    for law in [Law::Mu, Law::A] {
        let o = run_call(&server, law, Mode::Inband, true).await;
        let label = format!("{law:?} over speech");
        assert_no_leak(&o, &label);
        assert_untouched_outside_presses(&o, &label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_edge_then_rfc4733_is_one_digit_per_press_and_no_leak() {
    let server = Server::start(ServerOpts::default());
    for (law, speech) in [(Law::Mu, false), (Law::A, true)] {
        let o = run_call(&server, law, Mode::CarrierEdge, speech).await;
        let label = format!("{law:?} carrier edge (speech {speech})");
        assert_no_leak(&o, &label);
        assert_untouched_outside_presses(&o, &label);
    }
}

fn assert_same_payloads(sent: &[Vec<u8>], got: &[Vec<u8>], label: &str) {
    let first_diff = sent.iter().zip(got).position(|(a, b)| a != b);
    assert!(
        sent.len() == got.len() && first_diff.is_none(),
        "{label}: sent {} payloads, received {}, first differing index {first_diff:?}",
        sent.len(),
        got.len()
    );
}

/// Speech alone goes through untouched, and the checks find nothing in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_alone_passes_untouched_and_checks_stay_quiet() {
    let server = Server::start(ServerOpts::default());
    let resp = run_speech_only(&server).await;
    assert_same_payloads(&resp.0, &resp.1, "speech alone");
    let audio: Vec<i16> = resp.1.iter().flat_map(|p| Law::Mu.decode(p)).collect();
    let l = leak_check(&audio);
    assert_eq!((l.strict_digits, l.multimon_digits, l.windows), (0, 0, 0));
}

async fn run_speech_only(server: &Server) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/v1/sessions", server.http))
        .bearer_auth(API_KEY)
        .json(&json!({"call_id": "speech", "rep": "r1"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let dnis = resp["dnis"].as_str().expect("dnis").to_string();
    let target: std::net::SocketAddr = server.sip_target().parse().expect("addr");
    let rep = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
    let cust = Leg::dial(Conn::udp(target).await, target, &dnis, 0, "PCMU").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&rep).await;
    let frames = tones::payloads(Law::Mu, &tones::babble(3000.0, -18.0, 5));
    let rep_task = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let more = rep.recv_rtp(Duration::from_millis(500)).await;
            if more.is_empty() {
                return got;
            }
            got.extend(more);
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, f) in frames.iter().enumerate() {
        tick.tick().await;
        cust.send_rtp(0, 7 + i as u16, 160 * i as u32, 77, i == 0, f)
            .await;
    }
    let mut got = rep_task.await.expect("rep");
    got.sort_by_key(|p| p.seq);
    (frames, got.into_iter().map(|p| p.payload).collect())
}

/// The same presses with masking switched off: the leak check must find them (it can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_check_finds_the_digits_when_masking_is_disabled() {
    let server = Server::start(ServerOpts {
        env: vec![("TONEWALL_TEST_DISABLE_MASKING".into(), "1".into())],
        ..ServerOpts::default()
    });
    let o = run_call(&server, Law::Mu, Mode::Inband, true).await;
    let l = leak_check(&o.received);
    assert!(
        l.windows >= KEYS.len() * 5,
        "the window check sees every unmasked press: {} windows",
        l.windows
    );
    if tones::tools_available(&["multimon-ng", "sox"]) {
        assert_eq!(
            tones::multimon_digits(&o.received),
            std::str::from_utf8(KEYS).expect("ascii"),
            "multimon-ng reads the unmasked presses"
        );
    }
    // Unmasked, the audio is the customer's audio exactly.
    assert_same_payloads(&o.sent_payloads, &o.recv_payloads, "masking disabled");
}

/// With masking off, the Strict detector also reads every press (it is a real detector).
/// Red until the detector lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_detector_finds_the_digits_when_masking_is_disabled() {
    let server = Server::start(ServerOpts {
        env: vec![("TONEWALL_TEST_DISABLE_MASKING".into(), "1".into())],
        ..ServerOpts::default()
    });
    let o = run_call(&server, Law::A, Mode::Inband, false).await;
    let found = detect::run(Sensitivity::Strict, &o.received).digits();
    assert_eq!(
        found.as_bytes(),
        KEYS,
        "Strict detector reads the unmasked presses"
    );
}
