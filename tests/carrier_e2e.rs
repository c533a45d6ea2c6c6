//! Securing a live call through the carrier (issue 4), end to end over real SIP, RTP and
//! HTTP on loopback: the real `tonewall` binary with a `broadworks` carrier, the in-process
//! BroadWorks simulator (Xsi-Actions, Xsi-Events and a B2BUA), and two simulated phones.
//! The happy path, then one test per fault switch: each failure puts the customer back with
//! the representative, fails the session with a reason and leaves nothing allocated.

mod common;

use std::time::Duration;

use common::carrier::*;

const PAN: &str = "4111111111111111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_bridge_mask_and_hand_back() {
    let (rig, customer, rep, call) = call_in(10).await;
    let s = rig.secure(&call).await;
    let id = s["id"].as_str().expect("session id").to_string();
    assert!(
        s["state"] == "securing" || s["state"] == "waiting_legs" || s["state"] == "bridged",
        "{s}"
    );
    let dnis = s["dnis"].as_str().expect("dnis").to_string();
    let s = rig
        .wait_state(&id, "bridged", Duration::from_secs(10))
        .await;
    assert_eq!(s["legs"]["rep"]["state"], "up");
    assert_eq!(s["legs"]["customer"]["state"], "up");

    rig.assert_secured_sequence(&call, &dnis).await;

    // Both phones now talk to tonewall, not to each other, and audio flows both ways.
    eventually(
        "both phones talk to tonewall",
        Duration::from_secs(5),
        || {
            let (c, r) = (customer.stats(), rep.stats());
            c.last_rtp_from.is_some_and(|a| a != rep.rtp_addr())
                && r.last_rtp_from.is_some_and(|a| a != customer.rtp_addr())
                && c.remote_media != Some(rep.rtp_addr())
                && r.remote_media != Some(customer.rtp_addr())
        },
    )
    .await;
    let (c0, r0) = (customer.stats().rtp_received, rep.stats().rtp_received);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        customer.stats().rtp_received > c0 + 5,
        "rep → customer audio"
    );
    assert!(rep.stats().rtp_received > r0 + 5, "customer → rep audio");

    // The customer's key presses fill the fields and never reach the representative.
    let events_before = rep.stats().events_received;
    customer.send_digits(&format!("{PAN}#1230#123#"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = rig.get(&id).await;
        if s["fields"]["cvv"]["complete"] == true {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "digits never arrived: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["fields"]["pan"]["masked"], "************1111");
    assert_eq!(s["fields"]["pan"]["valid"], true);
    assert_eq!(s["fields"]["expiry"]["masked"], "****");
    assert_eq!(s["fields"]["cvv"]["masked"], "***", "{s}");
    assert_eq!(
        rep.stats().events_received,
        events_before,
        "a telephone-event reached the representative"
    );

    // DELETE hands the customer back to the representative.
    let s = rig.delete(&id).await;
    assert_eq!(s["state"], "ended");
    rig.wait_log_in_order(
        &["sip < REFER trunk:", "sip > NOTIFY trunk:"],
        Duration::from_secs(5),
    )
    .await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;
    rig.nothing_allocated().await;

    // The card number is nowhere in what the server wrote.
    let mut server = rig.server;
    let log = server.stop();
    for run in common::digit_runs(PAN, 7) {
        assert!(!log.contains(&run), "card digits in the server log");
    }
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_refused_leaves_the_call_alone() {
    let (rig, customer, rep, call) = call_in(3).await;
    rig.sim.faults().set_fail_action(Some("Hold"));
    rig.fails_and_restores(&customer, &rep, &call, "hold_failed")
        .await;
    assert!(rig.sim.log().iter().any(|l| l.contains("/Hold -> 500")));
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_refused_resumes_the_customer() {
    let (rig, customer, rep, call) = call_in(3).await;
    rig.sim.faults().set_fail_action(Some("new"));
    rig.fails_and_restores(&customer, &rep, &call, "originate_failed")
        .await;
    rig.wait_log_in_order(
        &[
            "/calls/new -> 500",
            &format!("xsi PUT /user/{REP_USER}/calls/{call}/Talk -> 200"),
        ],
        Duration::from_secs(2),
    )
    .await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_refused_reconnects() {
    let (rig, customer, rep, call) = call_in(3).await;
    rig.sim.faults().set_fail_action(Some("BlindTransfer"));
    rig.fails_and_restores(&customer, &rep, &call, "transfer_failed")
        .await;
    rig.wait_log_in_order(
        &["/BlindTransfer -> 500", "/Reconnect -> 200"],
        Duration::from_secs(2),
    )
    .await;
    let metrics = rig.metrics_text().await;
    for line in [
        r#"tonewall_carrier_actions_total{action="blind_transfer",result="failed"} 1"#,
        r#"tonewall_carrier_actions_total{action="reconnect",result="ok"} 1"#,
        r#"tonewall_securing_failed_total{reason="transfer_failed"} 1"#,
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_dnis_is_seen_in_the_events_and_undone() {
    let (rig, customer, rep, call) = call_in(5).await;
    rig.sim.faults().set_dnis_busy(true);
    rig.fails_and_restores(&customer, &rep, &call, "rep_call_released")
        .await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_dnis_without_events_times_out_and_is_undone() {
    let (rig, customer, rep, call) = call_in(2).await;
    rig.sim.faults().set_dnis_busy(true);
    rig.sim.faults().set_drop_events(true);
    rig.fails_and_restores(&customer, &rep, &call, "rep_leg_timeout")
        .await;
    assert!(rig
        .sim
        .log()
        .iter()
        .any(|l| l.starts_with("event-dropped ")));
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_while_securing_undoes() {
    // The DNIS is busy and the events are lost: securing waits for a representative leg
    // that never comes, and the CRM gives up first.
    let (rig, customer, rep, call) = call_in(10).await;
    rig.sim.faults().set_dnis_busy(true);
    rig.sim.faults().set_drop_events(true);
    let s = rig.secure(&call).await;
    let id = s["id"].as_str().expect("session id").to_string();
    rig.wait_log_in_order(
        &[&format!("xsi POST /user/{REP_USER}/calls/new -> 201")],
        Duration::from_secs(5),
    )
    .await;
    let s = rig.delete(&id).await;
    assert_eq!(s["state"], "ended");
    assert_eq!(s["reason"], "deleted");
    rig.wait_log_in_order(
        &["/calls/new -> 201", "/Reconnect -> 200"],
        Duration::from_secs(5),
    )
    .await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;
    rig.nothing_allocated().await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnis_expiry_while_securing_undoes() {
    // The DNIS's TTL (2 s) runs out before the step deadline (10 s): the session fails
    // `dnis_expired` and the steps already taken are undone all the same.
    let (rig, customer, rep, call) = call_in_with(10, tonewall::sim::DEFAULT_EXPIRES, 2).await;
    rig.sim.faults().set_dnis_busy(true);
    rig.sim.faults().set_drop_events(true);
    let (_, s) = rig
        .secure_until(&call, "failed", Duration::from_secs(8))
        .await;
    assert_eq!(s["reason"], "dnis_expired", "{s}");
    rig.wait_log_in_order(
        &["/calls/new -> 201", "/Reconnect -> 200"],
        Duration::from_secs(5),
    )
    .await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;
    rig.nothing_allocated().await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_events_change_nothing() {
    let (rig, customer, rep, call) = call_in(5).await;
    rig.sim
        .faults()
        .set_event_delay(Duration::from_millis(1500));
    let (id, _) = rig
        .secure_until(&call, "bridged", Duration::from_secs(10))
        .await;
    // The late events (held, released, …) arrive while bridged and change nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = rig.get(&id).await;
    assert_eq!(s["state"], "bridged", "{s}");
    rig.delete(&id).await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;
    rig.nothing_allocated().await;
    rig.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_cut_is_recovered() {
    let (rig, customer, rep, call) = call_in(5).await;
    // First session opens the channel and subscribes.
    let (id, _) = rig
        .secure_until(&call, "bridged", Duration::from_secs(10))
        .await;
    rig.delete(&id).await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;

    rig.sim.faults().cut_stream();
    // A new channel, a new subscription, the calls re-read.
    eventually(
        "the adapter recovers the stream",
        Duration::from_secs(10),
        || {
            let log = rig.sim.log();
            let opens = log.iter().filter(|l| l.starts_with("channel open")).count();
            let subs = log
                .iter()
                .filter(|l| l.starts_with(&format!("subscribe {REP_USER}")))
                .count();
            opens >= 2
                && subs >= 2
                && in_order(
                    &log,
                    &["channel cut", "channel open", "subscribe", "xsi GET"],
                )
                .is_ok()
        },
    )
    .await;

    // Securing works again, and a release event still undoes a failure.
    let call = rig.rep_call_id();
    rig.sim.faults().set_dnis_busy(true);
    rig.fails_and_restores(&customer, &rep, &call, "rep_call_released")
        .await;
    rig.sim.faults().set_dnis_busy(false);
    let call = rig.rep_call_id();
    let (id, _) = rig
        .secure_until(&call, "bridged", Duration::from_secs(10))
        .await;
    rig.delete(&id).await;
    talking_directly(&customer, &rep, Duration::from_secs(5)).await;
    rig.nothing_allocated().await;
    rig.sim.shutdown().await;
}
