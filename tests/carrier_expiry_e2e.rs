//! The Xsi-Events lifetimes end to end: the real `tonewall` binary with a `broadworks`
//! carrier against the simulator granting only 2 s to channels and subscriptions. After 5 s
//! the adapter has refreshed both (nothing expired, no new channel), and securing still
//! sees carrier events: the busy-DNIS failure is detected by its release event.

mod common;

use std::time::Duration;

use common::carrier::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_events_outlive_the_granted_expiry() {
    let rep = phone("127.0.0.1:9".parse().unwrap(), REP_NUMBER).await;
    let rig = Rig::start_with_expires(rep.sip_addr(), 5, Duration::from_secs(2)).await;
    let customer = phone(rig.sim.sip_addr(), CUSTOMER_NUMBER).await;
    customer
        .dial(REP_NUMBER)
        .await
        .expect("customer calls the rep");
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;

    // The first session opens the channel and subscribes the rep.
    let call = rig.rep_call_id();
    let s = rig.secure(&call).await;
    let id = s["id"].as_str().expect("session id").to_string();
    rig.wait_state(&id, "bridged", Duration::from_secs(10))
        .await;
    rig.delete(&id).await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;

    // Well past the 2 s granted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = rig.sim.log();
    let count = |p: &str| log.iter().filter(|l| l.starts_with(p)).count();
    assert!(count("channel refresh ") >= 2, "{log:#?}");
    assert!(
        count(&format!("subscription refresh {REP_USER}")) >= 2,
        "{log:#?}"
    );
    assert_eq!(
        count("channel open "),
        1,
        "no recovery was needed: {log:#?}"
    );
    assert_eq!(count("subscription expired "), 0, "{log:#?}");
    assert_eq!(count("channel expired "), 0, "{log:#?}");

    // Events still flow: the refused DNIS is seen by the rep leg's release event.
    let call = rig.rep_call_id();
    rig.sim.faults().set_dnis_busy(true);
    let s = rig.secure(&call).await;
    let id = s["id"].as_str().expect("session id").to_string();
    let s = rig.wait_state(&id, "failed", Duration::from_secs(15)).await;
    assert_eq!(s["reason"], "rep_call_released", "{s}");
    talking_directly(&customer, &rep, Duration::from_secs(10)).await;
    assert!(rig
        .sim
        .log()
        .iter()
        .any(|l| l.starts_with("event CallReleasedEvent")));
    rig.sim.shutdown().await;
}
