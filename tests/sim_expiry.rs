//! Xsi-Events lifetimes in the carrier simulator, over real HTTP and SIP on loopback: the
//! granted `expires` is capped by `SimConfig::expires`; an unrefreshed subscription stops
//! delivering (with a `SubscriptionTerminatedEvent`), a refreshed one keeps delivering; an
//! unrefreshed channel's stream ends; refresh `PUT`s and the channel `DELETE` are answered
//! and logged.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tonewall::carrier::broadworks::stream::DocSplitter;
use tonewall::sim::{self, Phone, PhoneConfig, SimConfig, SimHandle, SimUser};

const REP: &str = "rep1@sim.example";
const USER: &str = "xsiuser";
const PASS: &str = "s3cret";
const EVT: &str = "/com.broadsoft.xsi-events/v2.0";
const CHANNEL: &str = "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel";
const NS: &str = "http://schema.broadsoft.com/xsi";

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn phone(number: &str, proxy: SocketAddr) -> Phone {
    Phone::start(PhoneConfig {
        sip_listen: lo(),
        rtp_listen: lo(),
        proxy,
        number: number.into(),
    })
    .await
    .unwrap()
}

struct Xsi {
    sim: SimHandle,
    http: reqwest::Client,
}

impl Xsi {
    async fn req(&self, method: &str, path: &str, body: String) -> (u16, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .http
            .request(m, format!("{}{path}", self.sim.xsi_url()))
            .basic_auth(USER, Some(PASS))
            .body(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    }

    /// Open a channel asking for 3600 s; its id, the Channel document, and its documents.
    async fn open(&self) -> (String, String, mpsc::UnboundedReceiver<String>) {
        let body = format!("<Channel xmlns=\"{NS}\"><channelSetId>set1</channelSetId><priority>1</priority><weight>100</weight><expires>3600</expires></Channel>");
        let resp = self
            .http
            .post(format!("{}{CHANNEL}", self.sim.xsi_url()))
            .basic_auth(USER, Some(PASS))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut split = DocSplitter::new();
            while let Some(Ok(chunk)) = stream.next().await {
                split.push(&chunk);
                while let Some(doc) = split.next_doc() {
                    if tx.send(doc.unwrap()).is_err() {
                        return;
                    }
                }
            }
        });
        let first = doc(&mut rx).await.expect("Channel document");
        (between(&first, "<channelId>", "</channelId>"), first, rx)
    }

    async fn subscribe(&self) -> String {
        let body = format!("<Subscription xmlns=\"{NS}\"><event>Advanced Call</event><expires>3600</expires><channelSetId>set1</channelSetId><applicationId>tonewall</applicationId></Subscription>");
        let (st, answer) = self.req("POST", &format!("{EVT}/user/{REP}"), body).await;
        assert_eq!(st, 200, "{answer}");
        assert!(answer.contains("<expires>1</expires>"), "{answer}");
        between(&answer, "<subscriptionId>", "</subscriptionId>")
    }

    async fn refresh_channel(&self, id: &str) -> (u16, String) {
        let body = format!("<Channel xmlns=\"{NS}\"><expires>3600</expires></Channel>");
        self.req("PUT", &format!("{EVT}/channel/{id}"), body).await
    }

    async fn refresh_subscription(&self, id: &str) -> (u16, String) {
        let body = format!("<Subscription xmlns=\"{NS}\"><expires>3600</expires></Subscription>");
        self.req("PUT", &format!("{EVT}/subscription/{id}"), body)
            .await
    }

    fn logged(&self, line: &str) -> usize {
        self.sim.log().iter().filter(|l| *l == line).count()
    }
}

fn between(s: &str, a: &str, b: &str) -> String {
    s.split(a)
        .nth(1)
        .and_then(|x| x.split(b).next())
        .unwrap_or("")
        .to_string()
}

/// The next document, `None` when the stream ended; panics after 3 s.
async fn doc(rx: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("a document or the end within 3 s")
}

#[tokio::test]
async fn subscriptions_and_channels_live_only_while_refreshed() {
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let rep = phone("2001", nowhere).await;
    let sim = sim::start(SimConfig {
        xsi_listen: lo(),
        sip_listen: lo(),
        xsi_user: USER.into(),
        xsi_password: PASS.into(),
        trunk: nowhere,
        users: vec![SimUser {
            id: REP.into(),
            number: "2001".into(),
            phone: rep.sip_addr(),
        }],
        expires: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let customer = phone("0400000001", sim.sip_addr()).await;
    let x = Xsi {
        sim,
        http: reqwest::Client::new(),
    };

    // Asked 3600, granted the configured 1 s.
    let (chan, first, mut rx) = x.open().await;
    assert!(first.contains("<expires>1</expires>"), "{first}");
    let sub = x.subscribe().await;

    // Only the channel is refreshed: the subscription ends after 1 s and says so.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (st, body) = x.refresh_channel(&chan).await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("<expires>1</expires>"), "{body}");
    }
    assert_eq!(x.logged(&format!("subscription expired {REP}")), 1);
    assert!(x.logged(&format!("channel refresh {chan}")) >= 3);
    let ended = doc(&mut rx).await.expect("stream open");
    assert!(
        ended.contains("xsi1:type=\"xsi:SubscriptionTerminatedEvent\""),
        "{ended}"
    );
    assert!(ended.contains(&format!("<xsi:userId>{REP}</xsi:userId>")));
    assert!(ended.contains(&format!("<xsi:channelId>{chan}</xsi:channelId>")));
    let (st, _) = x.refresh_subscription(&sub).await;
    assert_eq!(st, 404, "an expired subscription cannot be refreshed");
    // A call now is not reported.
    assert_eq!(x.refresh_channel(&chan).await.0, 200);
    customer.dial("2001").await.expect("dial");
    let call = x.sim.calls(REP)[0].call_id.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "no event without a subscription");
    assert!(!x
        .sim
        .log()
        .iter()
        .any(|l| l.starts_with("event CallReceivedEvent")));

    // Subscribed again and both refreshed: events keep coming well past 1 s.
    let sub = x.subscribe().await;
    for _ in 0..4 {
        assert_eq!(x.refresh_channel(&chan).await.0, 200);
        let (st, body) = x.refresh_subscription(&sub).await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains(&format!("<subscriptionId>{sub}</subscriptionId>")));
        assert!(body.contains("<expires>1</expires>"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(x.logged(&format!("subscription refresh {REP}")), 4);
    assert_eq!(x.logged(&format!("subscription expired {REP}")), 1);
    let (st, _) = x
        .req(
            "DELETE",
            &format!("/com.broadsoft.xsi-actions/v2.0/user/{REP}/calls/{call}"),
            String::new(),
        )
        .await;
    assert_eq!(st, 200);
    let ev = doc(&mut rx).await.expect("stream open");
    assert!(ev.contains("xsi:CallReleasedEvent"), "{ev}");

    // Nothing refreshed any more: the channel's stream ends after 1 s.
    // (The unacknowledged event's re-send may come first.)
    while doc(&mut rx).await.is_some() {}
    assert_eq!(x.logged(&format!("channel expired {chan}")), 1);
    assert_eq!(x.refresh_channel(&chan).await.0, 404);
    assert_eq!(
        x.req(
            "PUT",
            &format!("{EVT}/channel/{chan}/heartbeat"),
            String::new()
        )
        .await
        .0,
        404
    );

    // DELETE ends a channel at once.
    let (chan, _, mut rx) = x.open().await;
    let (st, _) = x
        .req("DELETE", &format!("{EVT}/channel/{chan}"), String::new())
        .await;
    assert_eq!(st, 200);
    assert_eq!(doc(&mut rx).await, None);
    assert_eq!(x.logged(&format!("channel delete {chan}")), 1);
    let (st, _) = x
        .req("DELETE", &format!("{EVT}/channel/{chan}"), String::new())
        .await;
    assert_eq!(st, 404);
    assert_eq!(x.logged(&format!("channel expired {chan}")), 0);
    x.sim.shutdown().await;
}
