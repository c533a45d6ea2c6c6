//! A clean shutdown releases the carrier's resources: the real `tonewall` binary with a
//! `broadworks` carrier against the simulator secures a call (so an Xsi-Events channel is
//! open), is stopped with SIGTERM, and deletes its channel before it exits.

mod common;

use std::time::Duration;

use common::carrier::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deletes_the_xsi_events_channel() {
    let rep = phone("127.0.0.1:9".parse().unwrap(), REP_NUMBER).await;
    let mut rig = Rig::start(rep.sip_addr(), 10).await;
    let customer = phone(rig.sim.sip_addr(), CUSTOMER_NUMBER).await;
    customer
        .dial(REP_NUMBER)
        .await
        .expect("customer calls the rep");
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;

    let call = rig.rep_call_id();
    let s = rig.secure(&call).await;
    let id = s["id"].as_str().expect("session id").to_string();
    rig.wait_state(&id, "bridged", Duration::from_secs(10))
        .await;

    // Exactly one channel is open, and nothing has deleted it yet.
    let log = rig.sim.log();
    let opened: Vec<&str> = log
        .iter()
        .filter_map(|l| l.strip_prefix("channel open "))
        .collect();
    assert_eq!(opened.len(), 1, "{log:#?}");
    let channel = opened[0].to_string();
    assert!(
        !log.iter().any(|l| l.starts_with("channel delete ")),
        "{log:#?}"
    );

    let server_log = tokio::task::block_in_place(|| rig.server.stop());
    assert!(server_log.contains("shutting down"), "{server_log}");
    let log = rig.sim.log();
    assert!(
        log.contains(&format!("channel delete {channel}")),
        "no channel delete after SIGTERM:\n{}\nserver log tail:\n{}",
        log.join("\n"),
        tail(&server_log, 2000)
    );
    assert!(!server_log.contains(XSI_PASSWORD));
}
