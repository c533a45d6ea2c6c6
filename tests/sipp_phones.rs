//! The SIPp phone scenarios of the carrier-simulator tests (`tests/sipp/phone_customer.xml`,
//! `tests/sipp/phone_rep.xml`), checked against the test UA playing the simulator: the
//! exact sequences docs/carrier.md's flows send a phone (call in, click-to-dial with
//! auto-answer and no SDP, hold with sendonly, offerless re-INVITE of a transfer or
//! hand-back, OPTIONS/INFO/NOTIFY, BYE). Each SIPp run must exit 0. Skipped without SIPp
//! outside CI.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use common::uac::{sdp, sdp_rtp_addr, Callee, Conn, Leg};
use common::{free_port, scenario, sipp_available, Sipp};

const WAIT: Duration = Duration::from_secs(10);

/// SIPp with `-p port` is up once the port is taken.
async fn wait_bound(port: u16) {
    let deadline = Instant::now() + WAIT;
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "SIPp never bound port {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phone_keys(rtp_port: &str) -> Vec<&str> {
    vec!["-key", "rtp_ip", "127.0.0.1", "-key", "rtp_port", rtp_port]
}

#[tokio::test]
async fn phone_customer_survives_hold_transfer_hand_back_and_bye() {
    if !sipp_available() {
        return;
    }
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("rtp");
    let rtp_addr = rtp.local_addr().expect("addr");
    let port = rtp_addr.port().to_string();
    let sim = UdpSocket::bind("127.0.0.1:0").await.expect("sim");
    let sim_addr = sim.local_addr().expect("addr");
    let sipp = Sipp::start(
        "phone_customer",
        &scenario("phone_customer.xml"),
        &sim_addr.to_string(),
        "2001",
        &phone_keys(&port),
    );
    // Call in: the phone's INVITE carries the test-owned RTP address.
    let rep_sdp = sdp(40_000, 0, "PCMU", "sendrecv", 1);
    let mut call = Callee::accept(sim, &rep_sdp, WAIT).await;
    assert_eq!(sdp_rtp_addr(&call.offer), Some(rtp_addr), "{}", call.offer);
    // Hold: re-INVITE with the rep's SDP marked sendonly.
    let held = call
        .reinvite(&sdp(40_000, 0, "PCMU", "sendonly", 2), "")
        .await;
    assert_eq!(sdp_rtp_addr(&held), Some(rtp_addr), "{held}");
    // Blind transfer: offerless re-INVITE; the phone offers, the trunk's answer in the ACK.
    let offer = call
        .reinvite("", &sdp(30_000, 0, "PCMU", "sendrecv", 1))
        .await;
    assert_eq!(sdp_rtp_addr(&offer), Some(rtp_addr), "{offer}");
    // Hand-back: re-INVITE with the rep's new offer.
    let back = call
        .reinvite(&sdp(40_000, 0, "PCMU", "sendrecv", 3), "")
        .await;
    assert_eq!(sdp_rtp_addr(&back), Some(rtp_addr), "{back}");
    // Whatever else a switch may send in the call.
    assert_eq!(call.transact("OPTIONS", "", "", "").await, Some(200));
    assert_eq!(call.transact("INFO", "", "", "").await, Some(200));
    let notify = "Event: refer\r\nSubscription-State: terminated\r\n";
    assert_eq!(
        call.transact("NOTIFY", notify, "message/sipfrag", "SIP/2.0 200 OK\r\n")
            .await,
        Some(200)
    );
    // Release.
    assert_eq!(call.transact("BYE", "", "", "").await, Some(200));
    let (ok, out) = tokio::task::spawn_blocking(move || sipp.wait(WAIT))
        .await
        .expect("join");
    assert!(ok, "phone_customer failed:\n{out}");
}

#[tokio::test]
async fn phone_rep_answers_call_in_and_auto_answer_click_to_dial() {
    if !sipp_available() {
        return;
    }
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("rtp");
    let rtp_addr = rtp.local_addr().expect("addr");
    let port = rtp_addr.port().to_string();
    let sipp_port = free_port();
    let sipp_addr: SocketAddr = ([127, 0, 0, 1], sipp_port).into();
    let sp = sipp_port.to_string();
    let mut args = phone_keys(&port);
    args.extend(["-m", "2", "-p", &sp]);
    // SIPp needs a remote host argument even as a UAS; it is never used.
    let sipp = Sipp::start(
        "phone_rep",
        &scenario("phone_rep.xml"),
        "127.0.0.1:9",
        "2001",
        &args,
    );
    wait_bound(sipp_port).await;
    // Call in: the customer's INVITE with its offer.
    let mut call_in = Leg::dial(Conn::udp(sipp_addr).await, sipp_addr, "2001", 0, "PCMU").await;
    assert_eq!(call_in.remote_rtp, rtp_addr, "{}", call_in.answer);
    // Click-to-dial: auto-answer INVITE with no SDP, its own Call-ID; the 200 offers.
    let mut c2d = Leg::dial_offerless(
        Conn::udp(sipp_addr).await,
        sipp_addr,
        "2001",
        "Call-Info: <sip:sim.example>;answer-after=0\r\n",
    )
    .await;
    assert_eq!(c2d.remote_rtp, rtp_addr, "{}", c2d.answer);
    // Hand-back: offerless re-INVITE of the rep's call with the trunk.
    let offer = c2d.reinvite_offerless().await;
    assert_eq!(sdp_rtp_addr(&offer), Some(rtp_addr), "{offer}");
    // A hold-style re-INVITE with SDP on the other call.
    let answer = call_in.reinvite(0, "PCMU", "sendonly").await;
    assert_eq!(sdp_rtp_addr(&answer), Some(rtp_addr), "{answer}");
    assert_eq!(call_in.transact("OPTIONS", "").await, Some(200));
    assert_eq!(c2d.transact("INFO", "").await, Some(200));
    call_in.bye().await;
    c2d.bye().await;
    let (ok, out) = tokio::task::spawn_blocking(move || sipp.wait(WAIT))
        .await
        .expect("join");
    assert!(ok, "phone_rep failed:\n{out}");
}
