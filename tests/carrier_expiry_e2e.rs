//! The Xsi-Events lifetimes end to end: the real `tonewall` binary with a `broadworks`
//! carrier against the simulator granting only 2 s to channels and subscriptions. After 5 s
//! the adapter has refreshed both (nothing expired, no new channel), and securing still
//! sees carrier events: the busy-DNIS failure is detected by its release event.

mod common;

use std::time::Duration;

use common::carrier::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_events_outlive_the_granted_expiry() {
    let (rig, customer, rep, call) = call_in_with(5, Duration::from_secs(2), 30).await;

    // The first session opens the channel and subscribes the rep.
    let (id, _) = rig
        .secure_until(&call, "bridged", Duration::from_secs(10))
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
    rig.fails_and_restores(&customer, &rep, &call, "rep_call_released")
        .await;
    assert!(rig
        .sim
        .log()
        .iter()
        .any(|l| l.starts_with("event CallReleasedEvent")));
    rig.sim.shutdown().await;
}
