//! Handing the customer back (SPEC §2.8): the trunk endpoint in-process on 127.0.0.1:0 with
//! a recording `TrunkHandler`, and the test UA as the carrier answering tonewall's REFER on
//! the customer leg and sending the NOTIFYs of its subscription.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use common::uac::{Conn, Leg, Msg};
use tonewall::leg::{LegRole, SessionId};
use tonewall::media::ports::PortPool;
use tonewall::media::{Codec, LegParams};
use tonewall::sip::endpoint::{start, EndpointConfig, EndpointHandle, HANDBACK_TIMEOUT};
use tonewall::sip::transport::Transport;
use tonewall::sip::trunk::{
    Admission, InviteInfo, LegEnd, LegUp, Rejection, TrunkCommand, TrunkHandler,
};

const TARGET: &str = "sip:rep1@sim.example";
const WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Up(LegRole),
    Ended(LegRole, LegEnd),
    HandedBack(bool),
}

/// Admits the first INVITE on a DNIS as the rep leg, the next as the customer leg, of
/// session `ses_{dnis}`; records what the endpoint reports.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    events: Mutex<Vec<Ev>>,
}

impl Recorder {
    fn events(&self) -> Vec<Ev> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn push(&self, e: Ev) {
        self.events.lock().expect("lock").push(e);
    }
    async fn wait_for(&self, e: Ev) {
        let deadline = Instant::now() + Duration::from_secs(12);
        while !self.events().contains(&e) {
            assert!(Instant::now() < deadline, "no {e:?} in {:?}", self.events());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl TrunkHandler for Recorder {
    fn admit(&self, i: &InviteInfo) -> Result<Admission, Rejection> {
        let mut seen = self.seen.lock().expect("lock");
        let n = seen.iter().filter(|d| **d == i.dnis).count();
        seen.push(i.dnis.clone());
        let role = match n {
            0 => LegRole::Rep,
            1 => LegRole::Customer,
            _ => {
                return Err(Rejection {
                    status: 486,
                    reason: "Busy Here",
                    retry_after: None,
                })
            }
        };
        Ok(Admission {
            session: SessionId::from(format!("ses_{}", i.dnis)),
            role,
        })
    }
    fn leg_up(&self, up: LegUp) {
        self.push(Ev::Up(up.role));
    }
    fn leg_media(&self, _s: &SessionId, _r: LegRole, _p: LegParams) {}
    fn leg_ended(&self, _s: &SessionId, role: LegRole, why: LegEnd) {
        self.push(Ev::Ended(role, why));
    }
    fn handed_back(&self, _s: &SessionId, ok: bool) {
        self.push(Ev::HandedBack(ok));
    }
}

struct Rig {
    rec: Arc<Recorder>,
    ep: EndpointHandle,
    cmd: mpsc::UnboundedSender<TrunkCommand>,
    addr: SocketAddr,
    session: SessionId,
    rep: Leg,
    customer: Leg,
}

/// An endpoint with a bridged-looking session: rep and customer legs up.
async fn rig(range: &str) -> Rig {
    let rec = Arc::new(Recorder::default());
    let (cmd, rx) = mpsc::unbounded_channel();
    let cfg = EndpointConfig {
        listen: vec!["udp:127.0.0.1:0".into()],
        advertise: None,
        media_bind: "127.0.0.1".parse().expect("ip"),
        media_advertise: None,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
    };
    let ep = start(cfg, PortPool::parse(range).expect("pool"), rec.clone(), rx)
        .await
        .expect("start");
    let addr = ep
        .local_addrs()
        .into_iter()
        .find(|(t, _)| *t == Transport::Udp)
        .map(|(_, a)| a)
        .expect("udp addr");
    let dnis = "+61390001042";
    let rep = Leg::dial(Conn::udp(addr).await, addr, dnis, 0, "PCMU").await;
    rec.wait_for(Ev::Up(LegRole::Rep)).await;
    let customer = Leg::dial(Conn::udp(addr).await, addr, dnis, 0, "PCMU").await;
    rec.wait_for(Ev::Up(LegRole::Customer)).await;
    Rig {
        rec,
        ep,
        cmd,
        addr,
        session: SessionId::from(format!("ses_{dnis}")),
        rep,
        customer,
    }
}

impl Rig {
    fn hand_back(&self) {
        self.cmd
            .send(TrunkCommand::HandBack {
                session: self.session.clone(),
                target: TARGET.into(),
            })
            .expect("send command");
    }

    async fn refer(&mut self) -> Msg {
        self.hand_back();
        self.customer
            .expect_request("REFER", WAIT)
            .await
            .expect("REFER on the customer leg")
    }

    /// Both legs get BYE, then the handler hears both ends and the outcome, in that order.
    async fn expect_released(&mut self, ok: bool) {
        assert!(self.rep.expect_bye(WAIT).await, "BYE on the rep leg");
        assert!(
            self.customer.expect_bye(WAIT).await,
            "BYE on the customer leg"
        );
        self.rec.wait_for(Ev::HandedBack(ok)).await;
        let tail: Vec<Ev> = self.rec.events().into_iter().skip(2).collect();
        assert_eq!(
            tail,
            vec![
                Ev::Ended(LegRole::Rep, LegEnd::HungUp),
                Ev::Ended(LegRole::Customer, LegEnd::HungUp),
                Ev::HandedBack(ok),
            ]
        );
    }

    /// Nothing more arrives on either leg, and nothing more is reported.
    async fn expect_quiet(&mut self) {
        let before = self.rec.events();
        let quiet = Duration::from_millis(700);
        assert!(self.rep.conn.recv(quiet).await.is_none(), "rep leg quiet");
        assert!(
            self.customer.conn.recv(quiet).await.is_none(),
            "customer leg quiet"
        );
        assert_eq!(self.rec.events(), before);
    }
}

#[tokio::test]
async fn refer_in_customer_dialog_then_notify_200_releases_both() {
    let mut r = rig("47000-47019").await;
    let refer = r.refer().await;
    // The REFER is in the customer leg's dialog, from tonewall's side of it.
    let (call_id, our_tag, their_tag) = r.customer.dialog_ids();
    let (call_id, our_tag, their_tag) = (
        call_id.to_string(),
        our_tag.to_string(),
        their_tag.to_string(),
    );
    assert_eq!(refer.header("Call-ID").as_deref(), Some(call_id.as_str()));
    let from = refer.header("From").expect("From");
    let to = refer.header("To").expect("To");
    assert!(from.ends_with(&format!(";tag={their_tag}")), "{from}");
    assert!(to.ends_with(&format!(";tag={our_tag}")), "{to}");
    assert!(
        refer.text.starts_with("REFER sip:caller@"),
        "sent to the customer's Contact: {}",
        refer.text
    );
    assert_eq!(
        refer.header("Refer-To").as_deref(),
        Some("<sip:rep1@sim.example>")
    );
    let referred_by = refer.header("Referred-By").expect("Referred-By");
    assert!(
        referred_by.starts_with("<sip:tonewall@127.0.0.1"),
        "{referred_by}"
    );
    assert!(refer
        .header("Contact")
        .expect("Contact")
        .starts_with("<sip:tonewall@127.0.0.1:"));
    let cseq = refer.header("CSeq").expect("CSeq");
    assert!(cseq.ends_with(" REFER"), "{cseq}");
    let allow = refer.header("Allow").expect("Allow");
    assert!(
        allow.contains("REFER") && allow.contains("NOTIFY"),
        "{allow}"
    );
    // Nothing went to the rep leg.
    assert!(r.rep.conn.recv(Duration::from_millis(200)).await.is_none());

    r.customer.reply(&refer, 202, "Accepted").await;
    assert_eq!(
        r.customer.notify("100 Trying", "active;expires=60").await,
        Some(200)
    );
    // A provisional NOTIFY changes nothing.
    assert!(r.rep.conn.recv(Duration::from_millis(300)).await.is_none());
    assert!(!r
        .rec
        .events()
        .iter()
        .any(|e| matches!(e, Ev::HandedBack(_))));
    assert_eq!(
        r.customer
            .notify("200 OK", "terminated;reason=noresource")
            .await,
        Some(200)
    );
    r.expect_released(true).await;
    r.expect_quiet().await;
    r.ep.shutdown();
}

#[tokio::test]
async fn notify_503_releases_both_and_fails() {
    let mut r = rig("47020-47039").await;
    let refer = r.refer().await;
    r.customer.reply(&refer, 202, "Accepted").await;
    assert_eq!(r.customer.notify("100 Trying", "active").await, Some(200));
    assert_eq!(
        r.customer
            .notify("503 Service Unavailable", "terminated")
            .await,
        Some(200)
    );
    r.expect_released(false).await;
    r.ep.shutdown();
}

#[tokio::test]
async fn refer_refused_releases_both_and_fails() {
    let mut r = rig("47040-47059").await;
    let refer = r.refer().await;
    r.customer.reply(&refer, 501, "Not Implemented").await;
    r.expect_released(false).await;
    r.expect_quiet().await;
    r.ep.shutdown();
}

#[tokio::test]
async fn no_final_notify_times_out_and_fails() {
    let mut r = rig("47060-47079").await;
    let refer = r.refer().await;
    let sent = Instant::now();
    r.customer.reply(&refer, 202, "Accepted").await;
    assert_eq!(r.customer.notify("100 Trying", "active").await, Some(200));
    assert!(
        r.rep.expect_bye(HANDBACK_TIMEOUT + WAIT).await,
        "BYE on the rep leg"
    );
    let waited = sent.elapsed();
    assert!(
        waited >= HANDBACK_TIMEOUT - Duration::from_millis(300),
        "released after {waited:?}, before the timeout"
    );
    assert!(r.customer.expect_bye(WAIT).await, "BYE on the customer leg");
    r.rec.wait_for(Ev::HandedBack(false)).await;
    r.ep.shutdown();
}

#[tokio::test]
async fn retransmitted_notify_is_answered_again_and_nothing_is_done_twice() {
    let mut r = rig("47080-47099").await;
    let refer = r.refer().await;
    r.customer.reply(&refer, 202, "Accepted").await;
    let notify = r.customer.notify_text("200 OK", "terminated");
    r.customer.conn.send(&notify).await;
    let ok = r
        .customer
        .conn
        .final_response(WAIT)
        .await
        .expect("NOTIFY answered");
    assert_eq!(ok.status(), Some(200));
    r.expect_released(true).await;
    // The same NOTIFY again (a retransmission): the same answer, nothing else.
    r.customer.conn.send(&notify).await;
    let again = r
        .customer
        .conn
        .final_response(WAIT)
        .await
        .expect("retransmission answered");
    assert_eq!(again.status(), Some(200));
    assert_eq!(again.header("CSeq"), ok.header("CSeq"));
    // A second HandBack for the finished session changes nothing either.
    let before = r.rec.events();
    r.hand_back();
    r.rec.wait_for(Ev::HandedBack(false)).await;
    assert_eq!(r.rec.events().len(), before.len() + 1);
    r.expect_quiet().await;
    r.ep.shutdown();
}

#[tokio::test]
async fn notify_without_a_subscription_is_481() {
    let mut r = rig("47100-47119").await;
    // In a known dialog, but no REFER was sent.
    assert_eq!(r.customer.notify("200 OK", "terminated").await, Some(481));
    // In a dialog tonewall does not know.
    let (_, _, their_tag) = r.customer.dialog_ids();
    let their_tag = their_tag.to_string();
    let bogus = r
        .customer
        .notify_text("200 OK", "terminated")
        .replace(&format!("tag={their_tag}"), "tag=nosuchdialog");
    r.customer.conn.send(&bogus).await;
    let resp = r
        .customer
        .conn
        .final_response(WAIT)
        .await
        .expect("answered");
    assert_eq!(resp.status(), Some(481));
    // Outside any dialog.
    let outside = r
        .customer
        .notify_text("200 OK", "terminated")
        .replace(&format!(";tag={their_tag}"), "");
    r.customer.conn.send(&outside).await;
    let resp = r
        .customer
        .conn
        .final_response(WAIT)
        .await
        .expect("answered");
    assert_eq!(resp.status(), Some(481));
    // Both legs are still up; nothing was reported.
    assert_eq!(
        r.rec.events(),
        vec![Ev::Up(LegRole::Rep), Ev::Up(LegRole::Customer)]
    );
    let _ = r.addr;
    r.ep.shutdown();
}

#[tokio::test]
async fn customer_gone_during_hand_back_fails_and_releases_rep() {
    let mut r = rig("47120-47139").await;
    let refer = r.refer().await;
    r.customer.reply(&refer, 202, "Accepted").await;
    r.customer.bye().await;
    assert!(r.rep.expect_bye(WAIT).await, "BYE on the rep leg");
    r.rec.wait_for(Ev::HandedBack(false)).await;
    let tail: Vec<Ev> = r.rec.events().into_iter().skip(2).collect();
    assert_eq!(
        tail,
        vec![
            Ev::Ended(LegRole::Customer, LegEnd::Bye),
            Ev::Ended(LegRole::Rep, LegEnd::HungUp),
            Ev::HandedBack(false),
        ]
    );
    r.ep.shutdown();
}

#[tokio::test]
async fn hand_back_without_customer_leg_releases_rep_and_fails() {
    let rec = Arc::new(Recorder::default());
    let (cmd, rx) = mpsc::unbounded_channel();
    let cfg = EndpointConfig {
        listen: vec!["udp:127.0.0.1:0".into()],
        advertise: None,
        media_bind: "127.0.0.1".parse().expect("ip"),
        media_advertise: None,
        codecs: vec![Codec::Pcmu],
    };
    let ep = start(
        cfg,
        PortPool::parse("47140-47159").expect("pool"),
        rec.clone(),
        rx,
    )
    .await
    .expect("start");
    let addr = ep.local_addrs()[0].1;
    let mut rep = Leg::dial(Conn::udp(addr).await, addr, "+61390001043", 0, "PCMU").await;
    rec.wait_for(Ev::Up(LegRole::Rep)).await;
    cmd.send(TrunkCommand::HandBack {
        session: SessionId::from("ses_+61390001043"),
        target: TARGET.into(),
    })
    .expect("send");
    assert!(rep.expect_bye(WAIT).await);
    rec.wait_for(Ev::HandedBack(false)).await;
    assert_eq!(
        rec.events(),
        vec![
            Ev::Up(LegRole::Rep),
            Ev::Ended(LegRole::Rep, LegEnd::HungUp),
            Ev::HandedBack(false)
        ]
    );
    ep.shutdown();
}
