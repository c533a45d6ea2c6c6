//! The RFC 3261 §17 state tables walked on virtual time.

use super::*;

fn req(method: &str) -> Request {
    let text = format!(
        "{method} sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKt\r\n\
From: <sip:a@10.0.0.2>;tag=f\r\nTo: <sip:x@10.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n\
Route: <sip:p;lr>\r\nContent-Length: 0\r\n\r\n"
    );
    match Message::parse(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        _ => panic!("test request"),
    }
}

fn sends(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Send(_))).count()
}

fn timer_at(out: &[Output], t: Timer) -> Option<Instant> {
    out.iter().find_map(|o| match o {
        Output::SetTimer(x, at) if *x == t => Some(*at),
        _ => None,
    })
}

fn terminated(out: &[Output]) -> Option<End> {
    out.iter().find_map(|o| match o {
        Output::Terminated(e) => Some(*e),
        _ => None,
    })
}

#[test]
fn invite_client_retransmits_on_a_doubling_schedule_until_b() {
    let t0 = Instant::now();
    let (mut tx, out) = Transaction::client(req("INVITE"), false, t0);
    assert_eq!(sends(&out), 1);
    assert_eq!(timer_at(&out, Timer::A), Some(t0 + T1));
    assert_eq!(timer_at(&out, Timer::B), Some(t0 + 64 * T1));
    let mut now = t0 + T1;
    let mut gaps = Vec::new();
    let mut last = t0;
    loop {
        let (t, at) = tx.next_timer().expect("timer");
        now = now.max(at);
        let out = tx.on_timer(t, at);
        if t == Timer::B {
            assert_eq!(terminated(&out), Some(End::Timeout));
            break;
        }
        assert_eq!(sends(&out), 1);
        gaps.push(at - last);
        last = at;
    }
    let ms: Vec<u128> = gaps.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, vec![500, 1000, 2000, 4000, 8000, 16000]);
    assert_eq!(tx.state(), State::Terminated);
    let _ = now;
}

#[test]
fn invite_client_non_2xx_acks_and_absorbs_retransmissions() {
    let t0 = Instant::now();
    let (mut tx, _) = Transaction::client(req("INVITE"), false, t0);
    let r = req("INVITE");
    let out = tx.on_response(r.response(180, "Ringing", Some("tt")), t0);
    assert_eq!(tx.state(), State::Proceeding);
    assert!(out.contains(&Output::ClearTimer(Timer::A)));
    let out = tx.on_response(r.response(486, "Busy Here", Some("tt")), t0);
    assert_eq!(tx.state(), State::Completed);
    let ack = out.iter().find_map(|o| match o {
        Output::Send(Message::Request(a)) => Some(a.clone()),
        _ => None,
    });
    let ack = ack.expect("ack sent");
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.tag("To").as_deref(), Some("tt"));
    assert_eq!(ack.headers.cseq(), Some((1, Method::Ack)));
    assert_eq!(ack.headers.get("Route"), Some("<sip:p;lr>"));
    assert_eq!(timer_at(&out, Timer::D), Some(t0 + Duration::from_secs(32)));
    let again = tx.on_response(r.response(486, "Busy Here", Some("tt")), t0);
    assert_eq!(sends(&again), 1);
    assert!(!again.iter().any(|o| matches!(o, Output::ToTu(_))));
    let out = tx.on_timer(Timer::D, t0 + Duration::from_secs(32));
    assert_eq!(terminated(&out), Some(End::Done));
}

#[test]
fn invite_client_2xx_goes_accepted_then_m() {
    let t0 = Instant::now();
    let (mut tx, _) = Transaction::client(req("INVITE"), true, t0);
    let r = req("INVITE");
    let out = tx.on_response(r.response(200, "OK", Some("tt")), t0);
    assert_eq!(tx.state(), State::Accepted);
    assert_eq!(sends(&out), 0, "the TU ACKs a 2xx");
    let dup = tx.on_response(r.response(200, "OK", Some("tt")), t0);
    assert!(matches!(dup.as_slice(), [Output::ToTu(_)]));
    let out = tx.on_timer(Timer::M, t0 + 64 * T1);
    assert_eq!(terminated(&out), Some(End::Done));
}

#[test]
fn non_invite_client_caps_at_t2_and_times_out_with_f() {
    let t0 = Instant::now();
    let (mut tx, out) = Transaction::client(req("BYE"), false, t0);
    assert_eq!(timer_at(&out, Timer::E), Some(t0 + T1));
    let mut gaps = Vec::new();
    let mut last = t0;
    loop {
        let (t, at) = tx.next_timer().expect("timer");
        let out = tx.on_timer(t, at);
        if t == Timer::F {
            assert_eq!(terminated(&out), Some(End::Timeout));
            break;
        }
        gaps.push((at - last).as_millis());
        last = at;
    }
    assert_eq!(&gaps[..6], &[500, 1000, 2000, 4000, 4000, 4000]);
}

#[test]
fn non_invite_client_proceeding_uses_t2_and_k() {
    let t0 = Instant::now();
    let (mut tx, _) = Transaction::client(req("BYE"), false, t0);
    let r = req("BYE");
    tx.on_response(r.response(100, "Trying", None), t0);
    assert_eq!(tx.state(), State::Proceeding);
    let out = tx.on_timer(Timer::E, t0 + T1);
    assert_eq!(timer_at(&out, Timer::E), Some(t0 + T1 + T2));
    let out = tx.on_response(r.response(200, "OK", None), t0 + T1);
    assert!(out.contains(&Output::ClearTimer(Timer::F)));
    assert_eq!(timer_at(&out, Timer::K), Some(t0 + T1 + T4));
    // Reliable: K is zero, terminated immediately.
    let (mut tx, out) = Transaction::client(req("BYE"), true, t0);
    assert_eq!(timer_at(&out, Timer::E), None);
    let out = tx.on_response(r.response(200, "OK", None), t0);
    assert_eq!(terminated(&out), Some(End::Done));
}

#[test]
fn invite_server_non_2xx_g_h_and_ack() {
    let t0 = Instant::now();
    let (mut tx, out) = Transaction::server(req("INVITE"), false);
    assert!(matches!(out.as_slice(), [Output::ToTu(_)]));
    let r = req("INVITE");
    tx.send_response(r.response(100, "Trying", None), t0);
    // A retransmitted INVITE gets the last provisional again.
    assert_eq!(sends(&tx.on_request(req("INVITE"), t0)), 1);
    let out = tx.send_response(r.response(486, "Busy Here", Some("x")), t0);
    assert_eq!(timer_at(&out, Timer::G), Some(t0 + T1));
    assert_eq!(timer_at(&out, Timer::H), Some(t0 + 64 * T1));
    let mut gaps = Vec::new();
    let mut last = t0;
    for _ in 0..5 {
        let (t, at) = tx.next_timer().expect("timer");
        assert_eq!(t, Timer::G);
        assert_eq!(sends(&tx.on_timer(t, at)), 1);
        gaps.push((at - last).as_millis());
        last = at;
    }
    assert_eq!(gaps, vec![500, 1000, 2000, 4000, 4000]);
    assert_eq!(sends(&tx.on_request(req("INVITE"), last)), 1);
    let out = tx.on_request(req("ACK"), last);
    assert_eq!(tx.state(), State::Confirmed);
    assert!(out.contains(&Output::ClearTimer(Timer::G)));
    assert_eq!(timer_at(&out, Timer::I), Some(last + T4));
    assert!(tx.on_request(req("ACK"), last).is_empty(), "ACKs absorbed");
    let out = tx.on_timer(Timer::I, last + T4);
    assert_eq!(terminated(&out), Some(End::Done));
}

#[test]
fn invite_server_h_times_out_without_ack() {
    let t0 = Instant::now();
    let (mut tx, _) = Transaction::server(req("INVITE"), true);
    let out = tx.send_response(req("INVITE").response(404, "Not Found", Some("x")), t0);
    assert_eq!(
        timer_at(&out, Timer::G),
        None,
        "no G on reliable transports"
    );
    let out = tx.on_timer(Timer::H, t0 + 64 * T1);
    assert_eq!(terminated(&out), Some(End::Timeout));
    // Stale timers are ignored.
    assert!(tx.on_timer(Timer::G, t0).is_empty());
}

#[test]
fn invite_server_2xx_accepted_absorbs_and_l() {
    let t0 = Instant::now();
    let (mut tx, _) = Transaction::server(req("INVITE"), false);
    let out = tx.send_response(req("INVITE").response(200, "OK", Some("x")), t0);
    assert_eq!(tx.state(), State::Accepted);
    assert_eq!(timer_at(&out, Timer::L), Some(t0 + 64 * T1));
    assert!(tx.on_request(req("INVITE"), t0).is_empty());
    let again = tx.send_response(req("INVITE").response(200, "OK", Some("x")), t0);
    assert_eq!(sends(&again), 1, "TU 2xx retransmissions pass");
    let out = tx.on_timer(Timer::L, t0 + 64 * T1);
    assert_eq!(terminated(&out), Some(End::Done));
}

#[test]
fn non_invite_server_trying_proceeding_completed_j() {
    let t0 = Instant::now();
    let (mut tx, _) = Transaction::server(req("BYE"), false);
    assert!(tx.on_request(req("BYE"), t0).is_empty(), "Trying absorbs");
    tx.send_response(req("BYE").response(100, "Trying", None), t0);
    assert_eq!(sends(&tx.on_request(req("BYE"), t0)), 1);
    let out = tx.send_response(req("BYE").response(200, "OK", None), t0);
    assert_eq!(timer_at(&out, Timer::J), Some(t0 + 64 * T1));
    assert_eq!(sends(&tx.on_request(req("BYE"), t0)), 1, "final resent");
    let out = tx.on_timer(Timer::J, t0 + 64 * T1);
    assert_eq!(terminated(&out), Some(End::Done));
    let (mut tx, _) = Transaction::server(req("OPTIONS"), true);
    let out = tx.send_response(req("OPTIONS").response(200, "OK", None), t0);
    assert_eq!(terminated(&out), Some(End::Done));
}
