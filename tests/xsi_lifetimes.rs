//! Lifetimes of the BroadWorks adapter's Xsi-Events channel and subscriptions, against the
//! Xsi stub on 127.0.0.1: refresh `PUT`s at about 80 % of the granted `expires` with the
//! documented bodies, a 404 on refresh leads to re-subscription or channel recovery,
//! `StreamRestored` waits for every re-subscription, and the channel is deleted on drop.

mod xsi_stub;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use tonewall::carrier::{Carrier, CarrierEvent};
use xsi_stub::*;

const SUB: &str = "8a1f0e2c-5b7d-4f3e-9c61-2d4e8b0a7f13";

fn channel_put(n: u32) -> String {
    format!("{EVT}/channel/ch-{n}")
}

fn sub_put() -> String {
    format!("{EVT}/subscription/{SUB}")
}

fn subscribes(st: &Stub) -> usize {
    st.requests("POST", &format!("{EVT}/user/{REP}")).len()
}

fn quiet(rx: &mut broadcast::Receiver<CarrierEvent>) {
    assert!(matches!(
        rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn channel_and_subscription_are_refreshed_before_they_expire() {
    let (st, url) = stub().await;
    *st.grant.lock().unwrap() = 2;
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    let opened = st.requests("POST", CHANNEL)[0].at;
    let subscribed = st.requests("POST", &format!("{EVT}/user/{REP}"))[0].at;
    until("two refreshes of each", || {
        st.requests("PUT", &channel_put(1)).len() >= 2 && st.requests("PUT", &sub_put()).len() >= 2
    })
    .await;
    let ch = st.requests("PUT", &channel_put(1));
    let sub = st.requests("PUT", &sub_put());
    // About 80 % of the 2 s granted (1.6 s), each time from the previous answer, and
    // always before the grant runs out (slack for a loaded machine).
    let first = ch[0].at - opened;
    assert!(
        first >= Duration::from_millis(1400) && first < Duration::from_millis(2000),
        "{first:?}"
    );
    let first = sub[0].at - subscribed;
    assert!(
        first >= Duration::from_millis(1400) && first < Duration::from_millis(2000),
        "{first:?}"
    );
    let gap = ch[1].at - ch[0].at;
    assert!(
        gap >= Duration::from_millis(1400) && gap < Duration::from_millis(2000),
        "{gap:?}"
    );
    assert_eq!(ch[0].auth.as_deref(), Some(AUTH));
    assert_eq!(
        ch[0].body,
        r#"<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="http://schema.broadsoft.com/xsi"><expires>3600</expires></Channel>"#
    );
    assert_eq!(sub[0].auth.as_deref(), Some(AUTH));
    assert_eq!(
        sub[0].body,
        r#"<?xml version="1.0" encoding="UTF-8"?><Subscription xmlns="http://schema.broadsoft.com/xsi"><expires>3600</expires></Subscription>"#
    );
    // Refreshing is not recovering.
    assert_eq!(st.opened.load(Ordering::SeqCst), 1);
    assert_eq!(subscribes(&st), 1);
    quiet(&mut rx);
}

#[tokio::test]
async fn the_asked_expiry_comes_from_timing() {
    let (st, url) = stub().await;
    *st.grant.lock().unwrap() = 1;
    let mut t = timing();
    t.expires = Duration::from_secs(2);
    let bw = xsi_stub::adapter(&url).with_timing(t);
    bw.watch(REP).await.unwrap();
    assert!(st.requests("POST", CHANNEL)[0]
        .body
        .contains("<expires>2</expires>"));
    assert!(st.requests("POST", &format!("{EVT}/user/{REP}"))[0]
        .body
        .contains("<expires>2</expires>"));
    until("a refresh", || !st.requests("PUT", &sub_put()).is_empty()).await;
    assert!(st.requests("PUT", &sub_put())[0]
        .body
        .contains("<expires>2</expires>"));
}

#[tokio::test]
async fn a_gone_subscription_is_made_again() {
    let (st, url) = stub().await;
    *st.grant.lock().unwrap() = 1;
    st.subscription_refresh_status.store(404, Ordering::SeqCst);
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    until("a refresh answered 404, then a new subscription", || {
        !st.requests("PUT", &sub_put()).is_empty() && subscribes(&st) >= 2
    })
    .await;
    let refused = st.requests("PUT", &sub_put())[0].at;
    let again = st.requests("POST", &format!("{EVT}/user/{REP}"))[1].at;
    assert!(again >= refused);
    assert!(again - refused < Duration::from_millis(1000), "at once");
    // Refreshes of the new subscription are answered again.
    st.subscription_refresh_status.store(200, Ordering::SeqCst);
    let before = st.requests("PUT", &sub_put()).len();
    let subs = subscribes(&st);
    until("a refresh of the new subscription", || {
        st.requests("PUT", &sub_put()).len() > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(subscribes(&st), subs, "a refreshed subscription is kept");
    assert_eq!(st.opened.load(Ordering::SeqCst), 1, "the channel stays up");
    quiet(&mut rx);
}

#[tokio::test]
async fn a_gone_channel_is_recovered() {
    let (st, url) = stub().await;
    *st.grant.lock().unwrap() = 1;
    st.channel_refresh_status.store(404, Ordering::SeqCst);
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    let t0 = Instant::now();
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamLost);
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "lost on the refresh"
    );
    assert_eq!(st.requests("PUT", &channel_put(1)).len(), 1);
    st.channel_refresh_status.store(200, Ordering::SeqCst);
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamRestored);
    assert_eq!(st.opened.load(Ordering::SeqCst), 2);
    assert_eq!(subscribes(&st), 2);
    until("the new channel is refreshed", || {
        !st.requests("PUT", &channel_put(2)).is_empty()
    })
    .await;
    quiet(&mut rx);
}

#[tokio::test]
async fn stream_restored_waits_for_every_subscription() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    let mut rx = bw.events();
    bw.watch(REP).await.unwrap();
    st.subscribe_status.store(500, Ordering::SeqCst);
    st.cut();
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamLost);
    until("re-subscription retried", || subscribes(&st) >= 4).await;
    // The retries back off: 20 ms, 40 ms, …
    let posts = st.requests("POST", &format!("{EVT}/user/{REP}"));
    assert!(posts[3].at - posts[2].at >= Duration::from_millis(35));
    quiet(&mut rx);
    assert_eq!(st.opened.load(Ordering::SeqCst), 2);
    st.subscribe_status.store(200, Ordering::SeqCst);
    assert_eq!(next(&mut rx).await, CarrierEvent::StreamRestored);
    let n = subscribes(&st);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscribes(&st), n, "no more subscribing once subscribed");
    assert_eq!(
        st.requests("GET", &format!("{ACT}/user/{REP}/calls")).len(),
        2,
        "calls are re-read after the re-subscription"
    );
}

#[tokio::test]
async fn the_channel_is_deleted_on_drop_and_on_close() {
    let (st, url) = stub().await;
    let bw = adapter(&url);
    bw.watch(REP).await.unwrap();
    drop(bw);
    until("DELETE of the channel", || {
        st.requests("DELETE", &channel_put(1)).len() == 1
    })
    .await;
    assert_eq!(
        st.requests("DELETE", &channel_put(1))[0].auth.as_deref(),
        Some(AUTH)
    );

    let bw = adapter(&url);
    bw.watch(REP).await.unwrap();
    bw.close().await;
    assert_eq!(st.requests("DELETE", &channel_put(2)).len(), 1);
    drop(bw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        st.requests("DELETE", &channel_put(2)).len(),
        1,
        "deleted once"
    );
    // An adapter that never opened a channel deletes nothing.
    drop(adapter(&url));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(st.opened.load(Ordering::SeqCst), 2);
    assert_eq!(st.log().iter().filter(|r| r.method == "DELETE").count(), 2);
}
