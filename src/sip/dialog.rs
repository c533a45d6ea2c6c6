//! The dialog (RFC 3261 §12), as a UAS forms it from an INVITE or a UAC from its INVITE and
//! the 2xx: identifiers, route set, remote target, CSeq spaces; building in-dialog requests
//! (BYE, REFER, re-INVITE) and the ACK of a 2xx; and the 2xx retransmission schedule until
//! ACK (§13.3.1.4).
//!
//! Pure logic. Must never: read the clock, do I/O, or panic on input.

use std::time::{Duration, Instant};

use super::message::{Method, Request, Response};
use super::transaction::{T1, T2};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our party, tag included: the From value of our requests.
    local_party: String,
    /// The peer's party, tag included: the To value of our requests.
    remote_party: String,
    /// The peer's Contact URI: where in-dialog requests go.
    pub remote_target: String,
    /// Record-Route in the order requests use it (a UAS keeps the INVITE's order, a UAC
    /// reverses the 2xx's).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
}

impl Dialog {
    /// The dialog a UAS forms when it answers `invite` with `local_tag`. `None` when the
    /// INVITE lacks Call-ID, From tag, CSeq or Contact.
    pub fn uas(invite: &Request, local_tag: &str) -> Option<Dialog> {
        let h = &invite.headers;
        Some(Dialog {
            call_id: h.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: h.tag("From")?,
            local_party: format!("{};tag={local_tag}", h.get("To")?),
            remote_party: h.get("From")?.to_string(),
            remote_target: h.contact_uri()?,
            route_set: h.record_route(),
            local_cseq: 1,
            remote_cseq: h.cseq()?.0,
        })
    }

    /// The dialog a UAC forms from its `invite` and the 2xx `ok` (§12.1.2). `None` when they
    /// lack Call-ID, tags or CSeq; without a Contact the Request-URI stays the target.
    pub fn uac(invite: &Request, ok: &Response) -> Option<Dialog> {
        let (h, r) = (&invite.headers, &ok.headers);
        let mut route_set = r.record_route();
        route_set.reverse();
        Some(Dialog {
            call_id: h.call_id()?.to_string(),
            local_tag: h.tag("From")?,
            remote_tag: r.tag("To")?,
            local_party: h.get("From")?.to_string(),
            remote_party: r.get("To")?.to_string(),
            remote_target: r.contact_uri().unwrap_or_else(|| invite.uri.clone()),
            route_set,
            local_cseq: h.cseq()?.0,
            remote_cseq: 0,
        })
    }

    /// Does an in-dialog request belong here (Call-ID, tags)?
    pub fn matches(&self, req: &Request) -> bool {
        req.headers.call_id() == Some(self.call_id.as_str())
            && req.headers.tag("To").as_deref() == Some(self.local_tag.as_str())
            && req.headers.tag("From").as_deref() == Some(self.remote_tag.as_str())
    }

    /// Accept a new remote CSeq (§12.2.2): lower than the last one is out of order (500).
    pub fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        if seq < self.remote_cseq {
            return false;
        }
        self.remote_cseq = seq;
        true
    }

    /// An in-dialog request (§12.2.1.1) with a fresh local CSeq; `via` is the whole Via value.
    pub fn request(&mut self, method: Method, via: &str) -> Request {
        self.local_cseq = self.local_cseq.saturating_add(1);
        self.build(method, self.local_cseq, via)
    }

    /// The ACK of the 2xx to our INVITE with CSeq number `seq` (§13.2.2.4).
    pub fn ack(&self, seq: u32, via: &str) -> Request {
        self.build(Method::Ack, seq, via)
    }

    fn build(&self, method: Method, seq: u32, via: &str) -> Request {
        let mut r = Request::new(method.clone(), self.remote_target.clone());
        r.headers.push("Via", via);
        for route in &self.route_set {
            r.headers.push("Route", route.as_str());
        }
        r.headers.push("Max-Forwards", "70");
        r.headers.push("From", self.local_party.as_str());
        r.headers.push("To", self.remote_party.as_str());
        r.headers.push("Call-ID", self.call_id.as_str());
        r.headers.push("CSeq", format!("{seq} {}", method.as_str()));
        r
    }

    /// Where an in-dialog request is sent first: the first route (loose routing) or the
    /// remote target.
    pub fn next_hop(&self) -> &str {
        self.route_set
            .first()
            .map(String::as_str)
            .unwrap_or(self.remote_target.as_str())
    }
}

/// Retransmits a 2xx to an INVITE until its ACK arrives (§13.3.1.4): T1, doubling to T2,
/// giving up after 64*T1.
#[derive(Debug)]
pub struct AnswerRetransmit {
    pub response: Response,
    interval: Duration,
    next: Instant,
    deadline: Instant,
    reliable: bool,
}

/// What the 2xx retransmitter wants now.
#[derive(Debug, PartialEq)]
pub enum Retransmit {
    Nothing,
    Send,
    /// 64*T1 passed without ACK: end the dialog (BYE).
    GiveUp,
}

impl AnswerRetransmit {
    pub fn new(response: Response, reliable: bool, now: Instant) -> AnswerRetransmit {
        AnswerRetransmit {
            response,
            interval: T1,
            next: now + T1,
            deadline: now + 64 * T1,
            reliable,
        }
    }

    pub fn poll(&mut self, now: Instant) -> Retransmit {
        if now >= self.deadline {
            return Retransmit::GiveUp;
        }
        if self.reliable || now < self.next {
            return Retransmit::Nothing;
        }
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
        Retransmit::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn invite() -> Request {
        let t = "INVITE sip:+6139@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa\r\n\
From: \"A\" <sip:a@10.0.0.2>;tag=rt\r\nTo: <sip:+6139@10.0.0.1>\r\nCall-ID: cd\r\nCSeq: 7 INVITE\r\n\
Contact: <sip:a@10.0.0.2:5070>\r\nRecord-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n\
Content-Length: 0\r\n\r\n";
        match Message::parse(t.as_bytes()) {
            Ok(Message::Request(r)) => r,
            _ => panic!("invite"),
        }
    }

    #[test]
    fn uac_dialog_acks_and_reverses_the_route_set() {
        // We sent the INVITE (our tag rt); the 2xx carries their tag and Contact.
        let inv = invite();
        let ok = inv
            .response(200, "OK", Some("lt"))
            .with_header("Contact", "<sip:b@10.0.0.1:5060>")
            .with_header("Record-Route", "<sip:p1;lr>")
            .with_header("Record-Route", "<sip:p2;lr>");
        let mut d = Dialog::uac(&inv, &ok).expect("dialog");
        assert_eq!((d.local_tag.as_str(), d.remote_tag.as_str()), ("rt", "lt"));
        let ack = d.ack(7, "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKc");
        assert_eq!(ack.uri, "sip:b@10.0.0.1:5060");
        assert_eq!(ack.headers.cseq(), Some((7, Method::Ack)));
        assert_eq!(ack.headers.tag("From").as_deref(), Some("rt"));
        assert_eq!(ack.headers.tag("To").as_deref(), Some("lt"));
        assert_eq!(
            ack.headers.get_all("Route").collect::<Vec<_>>(),
            vec!["<sip:p2;lr>", "<sip:p1;lr>"]
        );
        let bye = d.request(Method::Bye, "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKd");
        assert_eq!(bye.headers.cseq(), Some((8, Method::Bye)));
    }

    #[test]
    fn uas_dialog_builds_bye() {
        let mut d = Dialog::uas(&invite(), "lt").expect("dialog");
        assert_eq!(d.remote_tag, "rt");
        assert_eq!(d.remote_cseq, 7);
        assert_eq!(d.next_hop(), "<sip:p1;lr>");
        let bye = d.request(Method::Bye, "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb");
        assert_eq!(bye.uri, "sip:a@10.0.0.2:5070");
        assert_eq!(
            bye.headers.get_all("Route").collect::<Vec<_>>(),
            vec!["<sip:p1;lr>", "<sip:p2;lr>"]
        );
        assert_eq!(bye.headers.tag("From").as_deref(), Some("lt"));
        assert_eq!(bye.headers.tag("To").as_deref(), Some("rt"));
        assert_eq!(bye.headers.cseq(), Some((2, Method::Bye)));
        assert!(!d.accept_remote_cseq(6));
        assert!(d.accept_remote_cseq(8));
        let mut inbound = invite();
        inbound.headers.set("To", "<sip:+6139@10.0.0.1>;tag=lt");
        assert!(d.matches(&inbound));
    }

    #[test]
    fn answer_retransmits_until_64_t1() {
        let t0 = Instant::now();
        let mut r = AnswerRetransmit::new(invite().response(200, "OK", Some("lt")), false, t0);
        let mut sends = Vec::new();
        let mut now = t0;
        loop {
            now += Duration::from_millis(50);
            match r.poll(now) {
                Retransmit::Send => sends.push((now - t0).as_millis()),
                Retransmit::GiveUp => break,
                Retransmit::Nothing => {}
            }
        }
        assert_eq!(&sends[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!((now - t0).as_millis(), 32000);
        let mut r = AnswerRetransmit::new(invite().response(200, "OK", Some("lt")), true, t0);
        assert_eq!(r.poll(t0 + T2), Retransmit::Nothing);
    }
}
