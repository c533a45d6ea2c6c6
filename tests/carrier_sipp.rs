//! Securing a live call with real SIP peers: SIPp plays the customer's phone
//! (`tests/sipp/phone_customer.xml`, UAC) and the representative's phone
//! (`tests/sipp/phone_rep.xml`, UAS) behind the in-process BroadWorks simulator, and the
//! real `tonewall` binary secures the call through Xsi. The test owns both phones' RTP
//! sockets (named in their SDP) and checks audio both ways through tonewall, that the
//! customer's RFC 4733 key presses fill the fields and never reach the representative,
//! the hand-back on `DELETE`, and that both SIPp phones are still in their calls until the
//! carrier releases them. Skipped without SIPp outside CI.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use common::carrier::*;
use common::pcap::{audio_frame, StreamBuilder};
use common::{free_port, scenario, sipp_available, Sipp};

const PAN: &str = "4111111111111111";
const TE_PT: u8 = 101;

/// What one phone's RTP socket has seen and what it is asked to send.
#[derive(Default)]
struct RtpState {
    /// tonewall's leg address, learned from the first packet received (symmetric RTP).
    peer: Option<SocketAddr>,
    /// Every source address packets came from.
    sources: Vec<SocketAddr>,
    received: usize,
    /// PCMU packets whose payload is exactly the far side's tone frame.
    tone_frames: usize,
    /// Packets with the telephone-event payload type.
    te_packets: usize,
    sent: usize,
    /// Telephone-event packets sent.
    te_sent: usize,
    /// Keys still to press (RFC 4733), interleaved with the audio.
    keys: VecDeque<u8>,
    /// Sending stops once this is set (after the hand-back).
    muted: bool,
}

/// A test-owned RTP endpoint: receives, learns tonewall's address, then sends 20 ms PCMU
/// frames of `tone` (and key presses when asked) to it.
struct RtpEnd {
    addr: SocketAddr,
    state: Arc<Mutex<RtpState>>,
    task: JoinHandle<()>,
}

impl RtpEnd {
    async fn start(ssrc: u32, tone: [u8; 160], far_tone: [u8; 160]) -> RtpEnd {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("rtp socket");
        let addr = sock.local_addr().expect("rtp addr");
        let state = Arc::new(Mutex::new(RtpState::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut stream = StreamBuilder::new(ssrc, 0, TE_PT);
            let mut next = 0usize;
            let mut t0: Option<tokio::time::Instant> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut buf = [0u8; 2048];
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, from)) = r else { continue };
                        if n < 12 {
                            continue;
                        }
                        let mut s = st.lock().expect("state");
                        s.peer.get_or_insert(from);
                        if !s.sources.contains(&from) {
                            s.sources.push(from);
                        }
                        s.received += 1;
                        let pt = buf[1] & 0x7f;
                        if pt == TE_PT {
                            s.te_packets += 1;
                        }
                        if pt == 0 && buf[12..n] == far_tone[..] {
                            s.tone_frames += 1;
                        }
                    }
                    _ = tick.tick() => {
                        let (peer, key) = {
                            let mut s = st.lock().expect("state");
                            match s.peer {
                                Some(p) if !s.muted => {
                                    let key = if next >= stream.packets.len() {
                                        s.keys.pop_front()
                                    } else {
                                        None
                                    };
                                    (p, key)
                                }
                                _ => continue,
                            }
                        };
                        let start = *t0.get_or_insert_with(tokio::time::Instant::now);
                        if next >= stream.packets.len() {
                            match key {
                                Some(k) => {
                                    stream.key(k, 5);
                                    audio(&mut stream, 3, &tone);
                                }
                                None => audio(&mut stream, 1, &tone),
                            }
                        }
                        let now_ms = start.elapsed().as_millis() as u32;
                        let (mut sent, mut te_sent) = (0, 0);
                        while next < stream.packets.len() && stream.packets[next].at_ms <= now_ms {
                            let _ = sock.send_to(&stream.packets[next].bytes, peer).await;
                            if stream.packets[next].bytes[1] & 0x7f == TE_PT {
                                te_sent += 1;
                            }
                            next += 1;
                            sent += 1;
                        }
                        let mut s = st.lock().expect("state");
                        s.sent += sent;
                        s.te_sent += te_sent;
                    }
                }
            }
        });
        RtpEnd { addr, state, task }
    }

    fn with<T>(&self, f: impl FnOnce(&mut RtpState) -> T) -> T {
        f(&mut self.state.lock().expect("state"))
    }
}

/// `frames` × 20 ms of audio whose payload is `tone`.
fn audio(stream: &mut StreamBuilder, frames: usize, tone: &[u8; 160]) {
    let from = stream.packets.len();
    stream.audio(frames);
    for p in &mut stream.packets[from..] {
        p.bytes.truncate(12);
        p.bytes.extend_from_slice(tone);
    }
}

/// One 20 ms μ-law frame of a pure tone of `hz` (a divisor of 8000/160 cycles per frame,
/// so every frame is the same bytes).
fn sine_frame(hz: f64) -> [u8; 160] {
    let mut f = [0u8; 160];
    for (i, b) in f.iter_mut().enumerate() {
        let x = (std::f64::consts::TAU * hz * i as f64 / 8000.0).sin() * 4000.0;
        *b = common::tones::ulaw(x as i16);
    }
    f
}

fn phone_keys(rtp: SocketAddr) -> Vec<String> {
    [
        "-key",
        "rtp_ip",
        "127.0.0.1",
        "-key",
        "rtp_port",
        &rtp.port().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// `phone_customer.xml` with the caller's user part set to the customer's number (the
/// simulator names the customer after the From user).
fn customer_scenario(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(scenario("phone_customer.xml")).expect("scenario");
    let text = text.replace("<sip:customer@", &format!("<sip:{CUSTOMER_NUMBER}@"));
    let path = dir.join("phone_customer.xml");
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// SIPp with `-p port` is up once the port is taken.
async fn wait_bound(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "SIPp never bound port {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index of the first log line starting with `prefix`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_phones_secured_masked_and_handed_back() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cust_tone = audio_frame(0); // 500 Hz
    let rep_tone = sine_frame(1000.0);
    let cust_rtp = RtpEnd::start(0xC057, cust_tone, rep_tone).await;
    let rep_rtp = RtpEnd::start(0x2E9, rep_tone, cust_tone).await;

    // 1. The rep's phone (UAS, two calls: the call in and the click-to-dial), tonewall and
    //    the simulator, then the customer's phone calling the rep.
    let rep_port = free_port();
    let rep_addr: SocketAddr = ([127, 0, 0, 1], rep_port).into();
    let mut args = phone_keys(rep_rtp.addr);
    args.extend(["-m", "2", "-p", &rep_port.to_string()].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let rep_sipp = Sipp::start(
        "phone_rep",
        &scenario("phone_rep.xml"),
        "127.0.0.1:9",
        REP_NUMBER,
        &args,
    );
    wait_bound(rep_port).await;
    let rig = Rig::start(rep_addr, 10).await;
    let cargs = phone_keys(cust_rtp.addr);
    let cargs: Vec<&str> = cargs.iter().map(String::as_str).collect();
    let cust_sipp = Sipp::start(
        "phone_customer",
        &customer_scenario(dir.path()),
        &rig.sim.sip_addr().to_string(),
        REP_NUMBER,
        &cargs,
    );
    eventually(
        "the rep's line has the call",
        Duration::from_secs(10),
        || rig.sim.calls(REP_USER).iter().any(|c| c.state == "Active"),
    )
    .await;
    let call = rig.rep_call_id();
    let calls = rig.sim.calls(REP_USER);
    assert!(
        calls[0].remote.contains(CUSTOMER_NUMBER),
        "the call is from the customer: {calls:?}"
    );

    // 2. Secure it: both legs arrive on the DNIS and are bridged.
    let s = rig.secure(&call).await;
    let id = s["id"].as_str().expect("session id").to_string();
    let dnis = s["dnis"].as_str().expect("dnis").to_string();
    let s = rig
        .wait_state(&id, "bridged", Duration::from_secs(10))
        .await;
    assert_eq!(s["legs"]["rep"]["state"], "up", "{s}");
    assert_eq!(s["legs"]["customer"]["state"], "up", "{s}");
    rig.assert_secured_sequence(&call, &dnis).await;

    // 3. Audio both ways through tonewall (each socket answers whoever sent to it first).
    eventually(
        "both phones hear the other's tone through tonewall",
        Duration::from_secs(5),
        || cust_rtp.with(|s| s.tone_frames > 10) && rep_rtp.with(|s| s.tone_frames > 10),
    )
    .await;
    let (cust_peer, cust_sources) = cust_rtp.with(|s| (s.peer, s.sources.clone()));
    let (rep_peer, rep_sources) = rep_rtp.with(|s| (s.peer, s.sources.clone()));
    assert!(cust_peer.is_some() && rep_peer.is_some());
    assert_ne!(cust_peer, rep_peer, "two legs on tonewall");
    assert_eq!(cust_sources, vec![cust_peer.unwrap()], "one source per leg");
    assert_eq!(rep_sources, vec![rep_peer.unwrap()], "one source per leg");
    assert!(!cust_sources.contains(&rep_rtp.addr) && !rep_sources.contains(&cust_rtp.addr));
    let (c0, r0) = (
        cust_rtp.with(|s| s.tone_frames),
        rep_rtp.with(|s| s.tone_frames),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        cust_rtp.with(|s| s.tone_frames) > c0 + 10,
        "rep → customer audio"
    );
    assert!(
        rep_rtp.with(|s| s.tone_frames) > r0 + 10,
        "customer → rep audio"
    );

    // 4. The customer presses keys (RFC 4733 between audio frames): fields fill, masked.
    cust_rtp.with(|s| {
        s.keys.extend(
            format!("{PAN}#")
                .bytes()
                .chain("1230".bytes())
                .chain("123#".bytes()),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = rig.get(&id).await;
        if s["fields"]["cvv"]["complete"] == true {
            break s;
        }
        assert!(Instant::now() < deadline, "digits never arrived: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cust_rtp.with(|s| s.keys.is_empty()));
    assert_eq!(s["fields"]["pan"]["masked"], "************1111", "{s}");
    assert_eq!(s["fields"]["pan"]["valid"], true, "{s}");
    assert_eq!(s["fields"]["expiry"]["masked"], "****", "{s}");
    assert_eq!(s["fields"]["expiry"]["valid"], true, "{s}");
    assert_eq!(s["fields"]["cvv"]["masked"], "***", "{s}");
    assert_eq!(s["fields"]["cvv"]["valid"], true, "{s}");
    // Audio still flows to the rep after the key presses.
    let r1 = rep_rtp.with(|s| s.tone_frames);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rep_rtp.with(|s| s.tone_frames) > r1 + 5,
        "customer → rep audio after keys"
    );

    // 5. DELETE hands the customer back to the representative (REFER through the switch).
    let s = rig.delete(&id).await;
    assert_eq!(s["state"], "ended", "{s}");
    cust_rtp.with(|s| s.muted = true);
    rep_rtp.with(|s| s.muted = true);
    rig.wait_log_in_order(
        &[
            "sip < REFER trunk:",
            &format!("sip > INVITE phone:{REP_NUMBER}"),
            &format!("sip > INVITE customer:{CUSTOMER_NUMBER}"),
            "sip > NOTIFY trunk:",
        ],
        Duration::from_secs(5),
    )
    .await;
    let log = rig.sim.log();
    let notify = log
        .iter()
        .find(|l| l.starts_with("sip > NOTIFY trunk:") && !l.ends_with(" 100"))
        .expect("final NOTIFY");
    assert!(notify.ends_with(" 200"), "{notify}");
    let s = rig.get(&id).await;
    assert_eq!(s["state"], "ended", "{s}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dnis = rig.metric("tonewall_dnis_allocated").await;
        let active = rig.metric("tonewall_sessions_active").await;
        let legs = rig.metric("tonewall_legs_active").await;
        if dnis == 0.0 && active == 0.0 && legs == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still allocated: dnis {dnis}, sessions {active}, legs {legs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not one telephone-event packet reached the representative (of the 8 per key sent).
    let te_sent = cust_rtp.with(|s| s.te_sent);
    assert!(te_sent >= 8 * 25, "key presses sent: {te_sent}");
    assert_eq!(
        rep_rtp.with(|s| s.te_packets),
        0,
        "a key press reached the rep"
    );

    // 6. The carrier releases the call: the simulator BYEs both phones, and both SIPp
    //    phones (still in their calls after the hand-back) finish cleanly.
    let calls = rig.sim.calls(REP_USER);
    let back = calls
        .iter()
        .find(|c| c.peer == format!("phone:{CUSTOMER_NUMBER}"))
        .unwrap_or_else(|| panic!("the rep talks to the customer again: {calls:?}"));
    let r = rig
        .http
        .delete(format!(
            "{}/com.broadsoft.xsi-actions/v2.0/user/{REP_USER}/calls/{}",
            rig.sim.xsi_url(),
            back.call_id
        ))
        .basic_auth(XSI_USER, Some(XSI_PASSWORD))
        .send()
        .await
        .expect("Xsi DELETE");
    assert_eq!(r.status(), 200, "release the call");
    let (cust_ok, cust_out) =
        tokio::task::spawn_blocking(move || cust_sipp.wait(Duration::from_secs(10)))
            .await
            .expect("join");
    assert!(cust_ok, "phone_customer failed:\n{cust_out}");
    let (rep_ok, rep_out) =
        tokio::task::spawn_blocking(move || rep_sipp.wait(Duration::from_secs(10)))
            .await
            .expect("join");
    assert!(rep_ok, "phone_rep failed:\n{rep_out}");
    assert!(rig.sim.calls(REP_USER).is_empty(), "the line is idle");

    // 7. The card number is nowhere in what the server wrote.
    cust_rtp.task.abort();
    rep_rtp.task.abort();
    let mut server = rig.server;
    let out = server.stop();
    for run in common::digit_runs(PAN, 7) {
        assert!(!out.contains(&run), "card digits in the server log");
    }
    rig.sim.shutdown().await;
}
