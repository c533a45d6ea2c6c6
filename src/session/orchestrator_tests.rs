//! Tests of the third-party call control state machine, on virtual time.

use super::*;

const STEP: Duration = Duration::from_secs(5);

fn plan() -> Plan {
    Plan {
        rep: "rep1@bw".into(),
        call: "callhalf-1:0".into(),
        dial: "+61390001042".into(),
        step_timeout: STEP,
    }
}

fn rep() -> String {
    "rep1@bw".into()
}

fn run(op: Op) -> Vec<Output> {
    vec![Output::Run(op)]
}

fn hold() -> Op {
    Op::Hold {
        user: rep(),
        call: "callhalf-1:0".into(),
    }
}

fn originate() -> Op {
    Op::Originate {
        user: rep(),
        address: "+61390001042".into(),
    }
}

fn transfer() -> Op {
    Op::BlindTransfer {
        user: rep(),
        call: "callhalf-1:0".into(),
        address: "+61390001042".into(),
    }
}

fn resume() -> Op {
    Op::Resume {
        user: rep(),
        call: "callhalf-1:0".into(),
    }
}

fn released(call: &str, id: &str) -> CallEvent {
    CallEvent {
        user: rep(),
        call_id: call.into(),
        kind: CallEventKind::Released,
        remote: None,
        event_id: id.into(),
    }
}

/// Drive to the point where the representative's line has dialled the DNIS.
fn to_wait_rep(t0: Instant) -> Orchestrator {
    let (mut o, out) = Orchestrator::start(plan(), t0);
    assert_eq!(out, run(Op::Watch { user: rep() }));
    assert_eq!(o.on_done(OpResult::Ok, t0), run(hold()));
    assert_eq!(o.on_done(OpResult::Ok, t0), run(originate()));
    assert_eq!(o.on_done(OpResult::Call("callhalf-2:0".into()), t0), vec![]);
    o
}

#[test]
fn happy_path_in_order() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    assert_eq!(o.on_leg_up(LegRole::Rep, t0), run(transfer()));
    assert_eq!(o.on_done(OpResult::Ok, t0), vec![Output::Secured]);
    assert_eq!(o.on_leg_up(LegRole::Customer, t0), vec![Output::Finished]);
    assert!(o.is_finished());
    assert_eq!(o.failure(), None);
    // Late and duplicate inputs change nothing.
    assert!(o.on_leg_up(LegRole::Customer, t0).is_empty());
    assert!(o.on_event(&released("callhalf-1:0", "e1"), t0).is_empty());
    assert!(o.on_tick(t0 + STEP * 10).is_empty());
}

#[test]
fn rep_leg_before_originate_answers() {
    // The INVITE on the DNIS can beat the carrier's answer to `calls/new`.
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    o.on_done(OpResult::Ok, t0);
    o.on_done(OpResult::Ok, t0);
    assert!(o.on_leg_up(LegRole::Rep, t0).is_empty());
    assert_eq!(
        o.on_done(OpResult::Call("callhalf-2:0".into()), t0),
        run(transfer())
    );
}

#[test]
fn customer_leg_during_transfer_finishes_on_answer() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    o.on_leg_up(LegRole::Rep, t0);
    assert!(o.on_leg_up(LegRole::Customer, t0).is_empty());
    assert_eq!(
        o.on_done(OpResult::Ok, t0),
        vec![Output::Secured, Output::Finished]
    );
}

#[test]
fn hold_failure_undoes_nothing() {
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    o.on_done(OpResult::Ok, t0);
    assert_eq!(
        o.on_done(OpResult::Failed, t0),
        vec![Output::Fail("hold_failed"), Output::Finished]
    );
}

#[test]
fn subscribe_failure_still_secures() {
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    assert_eq!(o.on_done(OpResult::Failed, t0), run(hold()));
}

#[test]
fn originate_failure_resumes_the_customer() {
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    o.on_done(OpResult::Ok, t0);
    o.on_done(OpResult::Ok, t0);
    assert_eq!(
        o.on_done(OpResult::Failed, t0),
        vec![Output::Fail("originate_failed"), Output::Run(resume())]
    );
    assert_eq!(o.on_done(OpResult::Ok, t0), vec![Output::Finished]);
}

#[test]
fn transfer_failure_reconnects() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    o.on_leg_up(LegRole::Rep, t0);
    assert_eq!(
        o.on_done(OpResult::Failed, t0),
        vec![
            Output::Fail("transfer_failed"),
            Output::Run(Op::Reconnect { user: rep() })
        ]
    );
    assert_eq!(o.on_done(OpResult::Ok, t0), vec![Output::Finished]);
}

#[test]
fn reconnect_failure_falls_back_to_release_and_resume() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    let out = o.on_tick(t0 + STEP);
    assert_eq!(
        out,
        vec![
            Output::Fail("rep_leg_timeout"),
            Output::Run(Op::Reconnect { user: rep() })
        ]
    );
    assert_eq!(
        o.on_done(OpResult::Failed, t0 + STEP),
        run(Op::HangUp {
            user: rep(),
            call: "callhalf-2:0".into()
        })
    );
    assert_eq!(o.on_done(OpResult::Failed, t0 + STEP), run(resume()));
    assert_eq!(o.on_done(OpResult::Ok, t0 + STEP), vec![Output::Finished]);
}

#[test]
fn busy_dnis_release_fails_before_the_deadline() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    let ev = released("callhalf-2:0", "e7");
    assert_eq!(
        o.on_event(&ev, t0),
        vec![
            Output::Fail("rep_call_released"),
            Output::Run(Op::Reconnect { user: rep() })
        ]
    );
    // The same event again, and the deadline passing, change nothing.
    assert!(o.on_event(&ev, t0).is_empty());
    assert_eq!(o.on_done(OpResult::Ok, t0), vec![Output::Finished]);
    assert!(o.on_tick(t0 + STEP * 3).is_empty());
}

#[test]
fn customer_hangup_while_securing_releases_the_new_call() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    assert_eq!(
        o.on_event(&released("callhalf-1:0", "e9"), t0),
        vec![
            Output::Fail("customer_hangup"),
            Output::Run(Op::HangUp {
                user: rep(),
                call: "callhalf-2:0".into()
            })
        ]
    );
}

#[test]
fn release_of_the_original_during_transfer_is_expected() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    o.on_leg_up(LegRole::Rep, t0);
    assert!(o.on_event(&released("callhalf-1:0", "e3"), t0).is_empty());
    assert_eq!(o.on_done(OpResult::Ok, t0), vec![Output::Secured]);
}

#[test]
fn events_for_other_users_and_kinds_are_ignored() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    let mut ev = released("callhalf-1:0", "e1");
    ev.user = "someone@bw".into();
    assert!(o.on_event(&ev, t0).is_empty());
    let mut ev = released("callhalf-1:0", "e2");
    ev.kind = CallEventKind::Held;
    assert!(o.on_event(&ev, t0).is_empty());
}

#[test]
fn failure_while_an_action_is_in_flight_waits_for_it() {
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    o.on_done(OpResult::Ok, t0);
    o.on_done(OpResult::Ok, t0); // originate in flight
    assert_eq!(o.on_cancel(t0), vec![Output::Fail("deleted")]);
    // Originate answers afterwards: the new call is undone with the hold.
    assert_eq!(
        o.on_done(OpResult::Call("callhalf-2:0".into()), t0),
        run(Op::Reconnect { user: rep() })
    );
}

#[test]
fn stuck_action_while_failing_is_abandoned_after_a_step() {
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    o.on_done(OpResult::Ok, t0); // hold in flight, never answers
    assert_eq!(o.on_tick(t0 + STEP), vec![Output::Fail("hold_timeout")]);
    // One more step: undo without waiting, as if the hold had happened.
    assert_eq!(o.on_tick(t0 + STEP * 2), run(resume()));
    assert_eq!(
        o.on_done(OpResult::Ok, t0 + STEP * 2),
        vec![Output::Finished]
    );
}

#[test]
fn customer_leg_timeout_after_transfer_fails_without_undo() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    o.on_leg_up(LegRole::Rep, t0);
    o.on_done(OpResult::Ok, t0);
    assert_eq!(
        o.on_tick(t0 + STEP),
        vec![Output::Fail("customer_leg_timeout"), Output::Finished]
    );
}

#[test]
fn rep_leg_ending_before_the_transfer_undoes() {
    let t0 = Instant::now();
    let mut o = to_wait_rep(t0);
    assert_eq!(
        o.on_leg_ended(LegRole::Rep, t0),
        vec![
            Output::Fail("rep_leg_ended"),
            Output::Run(Op::Reconnect { user: rep() })
        ]
    );
}

#[test]
fn undo_overrunning_its_deadline_gives_up() {
    let t0 = Instant::now();
    let (mut o, _) = Orchestrator::start(plan(), t0);
    o.on_done(OpResult::Ok, t0);
    o.on_done(OpResult::Ok, t0);
    o.on_done(OpResult::Failed, t0); // resume in flight
    assert_eq!(o.on_tick(t0 + STEP), vec![Output::Finished]);
    assert!(o.on_done(OpResult::Ok, t0 + STEP).is_empty());
}
