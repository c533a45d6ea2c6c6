//! A clean shutdown releases the carrier's resources: the real `tonewall` binary with a
//! `broadworks` carrier against the simulator secures a call (so an Xsi-Events channel is
//! open), is stopped with SIGTERM, and deletes its channel before it exits.

mod common;

use std::time::Duration;

use common::carrier::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deletes_the_xsi_events_channel() {
    let (mut rig, _customer, _rep, call) = call_in(10).await;
    rig.secure_until(&call, "bridged", Duration::from_secs(10))
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
