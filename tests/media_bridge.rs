//! The bridge task over real UDP sockets on 127.0.0.1: two fake phones and a `BridgeHandle`
//! whose legs come from `PortPool::bind`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

use tonewall::config::MaskMode;
use tonewall::digit::DigitMethod;
use tonewall::leg::{LegRole, SessionId};
use tonewall::media::bridge::{BridgeConfig, BridgeHandle, LegMedia, MediaEvent};
use tonewall::media::ports::PortPool;
use tonewall::media::rfc4733::TelephoneEvent;
use tonewall::media::rtp::{self, RtpPacket};
use tonewall::media::{Codec, Direction, LegParams};

struct Phone {
    sock: UdpSocket,
    /// The tonewall RTP port this phone talks to.
    leg: SocketAddr,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

impl Phone {
    async fn new(ssrc: u32) -> Phone {
        Phone {
            sock: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            leg: "127.0.0.1:9".parse().expect("addr"),
            seq: 100,
            ts: 1000,
            ssrc,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    async fn send_audio(&mut self, pt: u8, byte: u8) {
        let mut p = [byte; 172];
        rtp::write_header(&mut p, pt, self.seq, self.ts, self.ssrc, false).expect("hdr");
        self.sock.send_to(&p, self.leg).await.expect("send");
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }

    async fn send_event(&mut self, pt: u8, event: u8, ts: u32, end: bool, duration: u16) {
        let mut p = [0u8; 16];
        rtp::write_header(&mut p, pt, self.seq, ts, self.ssrc, false).expect("hdr");
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .write(&mut p[12..])
        .expect("room");
        self.sock.send_to(&p, self.leg).await.expect("send");
        self.seq = self.seq.wrapping_add(1);
    }

    async fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        match timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// The next packet whose payload starts with `byte` (skipping parked silence).
    async fn recv_audio(&self, byte: u8) -> Option<Vec<u8>> {
        loop {
            let p = self.recv(Duration::from_secs(2)).await?;
            if p.len() > 12 && p[12] == byte {
                return Some(p);
            }
        }
    }

    /// Everything that arrives within `wait`.
    async fn drain(&self, wait: Duration) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(p) = self.recv(wait).await {
            v.push(p);
        }
        v
    }
}

fn params(phone: &Phone, codec: Codec, direction: Direction) -> LegParams {
    LegParams {
        remote: Some(phone.addr()),
        codec,
        pt: codec.static_pt(),
        te_pt: Some(101),
        ptime_ms: 20,
        direction,
    }
}

fn config(rtp_timeout: Duration) -> BridgeConfig {
    BridgeConfig {
        holdback_ms: 40,
        mask_mode: MaskMode::Silence,
        rtp_timeout,
        masking: true,
    }
}

struct Setup {
    pool: PortPool,
    handle: BridgeHandle,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    rep: Phone,
    customer: Phone,
}

/// A bridge with the rep parked; the customer attached when `attach`.
async fn setup(range: &str, rep_codec: Codec, cust_codec: Codec, attach: bool) -> Setup {
    setup_with(
        range,
        rep_codec,
        cust_codec,
        attach,
        Duration::from_secs(30),
    )
    .await
}

async fn setup_with(
    range: &str,
    rep_codec: Codec,
    cust_codec: Codec,
    attach: bool,
    rtp_timeout: Duration,
) -> Setup {
    let pool = PortPool::parse(range).expect("pool");
    let ip = "127.0.0.1".parse().expect("ip");
    let mut rep = Phone::new(0x1111).await;
    let mut customer = Phone::new(0x2222).await;
    let rs = pool.bind(ip).expect("rep ports");
    let cs = pool.bind(ip).expect("customer ports");
    rep.leg = rs.rtp.local_addr().expect("addr");
    customer.leg = cs.rtp.local_addr().expect("addr");
    let (tx, events) = mpsc::unbounded_channel();
    let session: SessionId = Arc::from("ses_test");
    let handle = BridgeHandle::spawn(
        session,
        LegRole::Rep,
        LegMedia {
            sockets: rs,
            params: params(&rep, rep_codec, Direction::SendRecv),
        },
        config(rtp_timeout),
        tx,
    );
    let cust_leg = LegMedia {
        sockets: cs,
        params: params(&customer, cust_codec, Direction::SendRecv),
    };
    if attach {
        handle.attach(LegRole::Customer, cust_leg);
    } else {
        drop(cust_leg);
    }
    Setup {
        pool,
        handle,
        events,
        rep,
        customer,
    }
}

fn hdr(p: &[u8]) -> (u8, u16, u32, u32) {
    let r = RtpPacket::new_checked(p).expect("rtp");
    (
        r.payload_type(),
        r.sequence_number(),
        r.timestamp(),
        r.ssrc(),
    )
}

#[tokio::test]
async fn parked_leg_gets_silence() {
    let s = setup("46000-46019", Codec::Pcma, Codec::Pcmu, false).await;
    let mut prev: Option<(u8, u16, u32, u32)> = None;
    for _ in 0..5 {
        let p = s.rep.recv(Duration::from_secs(1)).await.expect("silence");
        assert_eq!(p.len(), 172);
        assert!(p[12..].iter().all(|b| *b == 0xD5), "PCMA silence");
        let h = hdr(&p);
        assert_eq!(h.0, 8);
        if let Some(q) = prev {
            assert_eq!(h.1, q.1.wrapping_add(1));
            assert_eq!(h.2, q.2.wrapping_add(160));
            assert_eq!(h.3, q.3);
        }
        prev = Some(h);
    }
    drop(s.handle);
}

#[tokio::test]
async fn bridged_relay_both_ways_with_continuous_stream() {
    let mut s = setup("46020-46039", Codec::Pcmu, Codec::Pcmu, true).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        s.customer.send_audio(0, 0x11).await;
        got.push(hdr(&s.rep.recv_audio(0x11).await.expect("to rep")));
    }
    for w in got.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1));
        assert_eq!(w[1].2, w[0].2.wrapping_add(160));
        assert_eq!(w[1].3, w[0].3);
        assert_ne!(w[1].3, 0x2222, "SSRC rewritten");
    }
    for _ in 0..3 {
        s.rep.send_audio(0, 0x22).await;
        let p = s.customer.recv_audio(0x22).await.expect("to customer");
        assert_eq!(p.len(), 172);
        assert_eq!(hdr(&p).0, 0);
    }
}

#[tokio::test]
async fn customer_rfc4733_never_reaches_rep_and_gives_one_digit_per_press() {
    let mut s = setup("46040-46059", Codec::Pcmu, Codec::Pcmu, true).await;
    s.customer.send_audio(0, 0x11).await;
    s.rep.recv_audio(0x11).await.expect("audio");
    for (ts, key) in [(5000u32, 5u8), (9000, 5), (13000, 11)] {
        s.customer.send_event(101, key, ts, false, 160).await;
        s.customer.send_event(101, key, ts, false, 320).await;
        s.customer.send_event(101, key, ts, false, 480).await;
        for _ in 0..3 {
            s.customer.send_event(101, key, ts, true, 640).await;
        }
        s.customer.send_audio(0, 0x33).await;
    }
    let mut keys = Vec::new();
    for _ in 0..3 {
        match timeout(Duration::from_secs(2), s.events.recv()).await {
            Ok(Some(MediaEvent::Digit { digit, method, .. })) => {
                assert_eq!(method, DigitMethod::Rfc4733);
                keys.push(digit.key());
            }
            other => panic!("expected a digit, got {other:?}"),
        }
    }
    assert_eq!(keys, b"55#");
    let received = s.rep.drain(Duration::from_millis(300)).await;
    assert!(received.iter().filter(|p| p[12] == 0x33).count() == 3);
    assert!(received.iter().all(|p| hdr(p).0 == 0), "no telephone-event");
    // sequence numbers have no gap where the events were dropped
    let seqs: Vec<u16> = received
        .iter()
        .filter(|p| p[12] == 0x33)
        .map(|p| hdr(p).1)
        .collect();
    assert_eq!(seqs[1], seqs[0].wrapping_add(1));
    assert!(
        timeout(Duration::from_millis(200), s.events.recv())
            .await
            .is_err(),
        "no extra digit"
    );
}

#[tokio::test]
async fn pcmu_pcma_transcoding() {
    let mut s = setup("46060-46079", Codec::Pcmu, Codec::Pcma, true).await;
    // customer speaks A-law 0xAA (max positive) -> rep hears μ-law 0x80
    s.customer.send_audio(8, 0xAA).await;
    let p = s.rep.recv_audio(0x80).await.expect("transcoded");
    assert_eq!(hdr(&p).0, 0);
    assert!(p[12..].iter().all(|b| *b == 0x80));
    // rep speaks μ-law 0x80 -> customer hears A-law 0xAA
    s.rep.send_audio(0, 0x80).await;
    let p = s.customer.recv_audio(0xAA).await.expect("transcoded");
    assert_eq!(hdr(&p).0, 8);
    assert!(p[12..].iter().all(|b| *b == 0xAA));
}

#[tokio::test]
async fn nothing_is_sent_to_a_leg_on_hold() {
    let mut s = setup("46080-46099", Codec::Pcmu, Codec::Pcmu, true).await;
    s.customer.send_audio(0, 0x11).await;
    s.rep.recv_audio(0x11).await.expect("before hold");
    for dir in [Direction::SendOnly, Direction::Inactive] {
        s.handle
            .update(LegRole::Rep, params(&s.rep, Codec::Pcmu, dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.rep.drain(Duration::from_millis(100)).await;
        for _ in 0..5 {
            s.customer.send_audio(0, 0x44).await;
        }
        assert!(s.rep.drain(Duration::from_millis(300)).await.is_empty());
    }
    // c=0.0.0.0 hold
    let mut p = params(&s.rep, Codec::Pcmu, Direction::SendRecv);
    p.remote = None;
    s.handle.update(LegRole::Rep, p);
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.customer.send_audio(0, 0x44).await;
    assert!(s.rep.drain(Duration::from_millis(300)).await.is_empty());
    // resume
    s.handle.update(
        LegRole::Rep,
        params(&s.rep, Codec::Pcmu, Direction::SendRecv),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.customer.send_audio(0, 0x55).await;
    s.rep.recv_audio(0x55).await.expect("after resume");
}

#[tokio::test]
async fn rtp_timeout_on_bridged_legs_but_not_on_hold() {
    let mut s = setup_with(
        "46100-46119",
        Codec::Pcmu,
        Codec::Pcmu,
        true,
        Duration::from_millis(300),
    )
    .await;
    s.handle.update(
        LegRole::Customer,
        params(&s.customer, Codec::Pcmu, Direction::Inactive),
    );
    match timeout(Duration::from_secs(2), s.events.recv()).await {
        Ok(Some(MediaEvent::RtpTimeout { role, .. })) => assert_eq!(role, LegRole::Rep),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // reported once, and never for the held customer
    assert!(timeout(Duration::from_millis(700), s.events.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn ports_return_to_the_pool_when_the_handle_is_dropped() {
    let s = setup("46120-46139", Codec::Pcmu, Codec::Pcmu, true).await;
    let total = s.pool.total();
    assert_eq!(s.pool.available(), total - 2);
    drop(s.handle);
    let mut ok = false;
    for _ in 0..100 {
        if s.pool.available() == total {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "ports back in the pool");
    // and the ports can be bound again
    let again = s.pool.bind("127.0.0.1".parse().expect("ip"));
    assert!(again.is_some());
}

#[tokio::test]
async fn garbage_on_rtp_and_rtcp_ports_is_ignored() {
    let mut s = setup("46140-46159", Codec::Pcmu, Codec::Pcmu, true).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let rtcp_port = SocketAddr::new(s.rep.leg.ip(), s.rep.leg.port() + 1);
    for junk in [
        &b""[..],
        b"\x00",
        b"hello world, not rtp",
        &[0xFF; 300],
        &[0x80, 200, 0, 1],
    ] {
        stranger.send_to(junk, s.rep.leg).await.expect("send");
        stranger.send_to(junk, s.customer.leg).await.expect("send");
        stranger.send_to(junk, rtcp_port).await.expect("send");
    }
    // the bridge still relays, and garbage did not latch the stranger's address
    s.rep.send_audio(0, 0x66).await;
    s.customer.recv_audio(0x66).await.expect("rep to customer");
    s.customer.send_audio(0, 0x77).await;
    s.rep.recv_audio(0x77).await.expect("customer to rep");
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), stranger.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing sent to the stranger"
    );
}
