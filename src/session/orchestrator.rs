//! The pure state machine of third-party call control for one session (SPEC §2 steps 3–4):
//! hold the live call → have the representative's line dial the DNIS → wait for the
//! representative leg → blind-transfer the customer to the DNIS → wait for the customer
//! leg. Each step has a deadline; any failure undoes what was done (resume the held call,
//! or `Reconnect`, falling back to releasing the new call and resuming) so the customer is
//! back with the representative.
//!
//! Inputs: the result of the carrier action in flight, legs arriving or ending on the trunk,
//! normalised carrier events, a cancel, the time. Outputs: the next carrier action,
//! `Secured` (the transfer is done), `Fail(reason)`, `Finished`. One action is in flight at
//! a time. Must never: read the clock, await, or touch a socket; act twice on a duplicate
//! or late event.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::carrier::{CallEvent, CallEventKind};
use crate::leg::LegRole;

/// What to secure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The representative's carrier user id (Xsi `userId`).
    pub rep: String,
    /// The live call on the representative's line (Xsi `callId`).
    pub call: String,
    /// What the representative's line dials, and where the customer is sent: the dial
    /// prefix and the DNIS.
    pub dial: String,
    /// Each step's deadline.
    pub step_timeout: Duration,
}

/// A carrier action to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Watch {
        user: String,
    },
    Hold {
        user: String,
        call: String,
    },
    Originate {
        user: String,
        address: String,
    },
    BlindTransfer {
        user: String,
        call: String,
        address: String,
    },
    Resume {
        user: String,
        call: String,
    },
    Reconnect {
        user: String,
    },
    HangUp {
        user: String,
        call: String,
    },
}

impl Op {
    /// The action's name, for logs and alarms.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Watch { .. } => "subscribe",
            Op::Hold { .. } => "hold",
            Op::Originate { .. } => "originate",
            Op::BlindTransfer { .. } => "blind_transfer",
            Op::Resume { .. } => "resume",
            Op::Reconnect { .. } => "reconnect",
            Op::HangUp { .. } => "hang_up",
        }
    }
}

/// How the action in flight went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Ok,
    /// Originate succeeded: the new call's id.
    Call(String),
    Failed,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Run(Op),
    /// The customer is on the way to the DNIS: the session waits for its legs.
    Secured,
    /// Securing failed: the session fails with this reason (undo follows).
    Fail(&'static str),
    /// Nothing more to do.
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Watching,
    Holding,
    Originating,
    WaitRep,
    Transferring,
    WaitCustomer,
    Undoing,
    Done,
}

/// One session's third-party call control.
#[derive(Debug)]
pub struct Orchestrator {
    plan: Plan,
    phase: Phase,
    in_flight: Option<Op>,
    deadline: Option<Instant>,
    held: bool,
    new_call: Option<String>,
    rep_up: bool,
    customer_up: bool,
    customer_gone: bool,
    /// Originate was abandoned unanswered: a new call may exist without an id.
    maybe_new_call: bool,
    failure: Option<&'static str>,
    undo: VecDeque<Op>,
}

impl Orchestrator {
    /// Start: subscribe to the representative's line, then hold.
    pub fn start(plan: Plan, now: Instant) -> (Orchestrator, Vec<Output>) {
        let mut o = Orchestrator {
            plan,
            phase: Phase::Watching,
            in_flight: None,
            deadline: None,
            held: false,
            new_call: None,
            rep_up: false,
            customer_up: false,
            customer_gone: false,
            maybe_new_call: false,
            failure: None,
            undo: VecDeque::new(),
        };
        let mut out = Vec::new();
        let op = Op::Watch {
            user: o.plan.rep.clone(),
        };
        o.enter(Phase::Watching, now);
        o.run(op, &mut out);
        (o, out)
    }

    /// When `on_tick` must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The reason securing failed, if it did.
    pub fn failure(&self) -> Option<&'static str> {
        self.failure
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.deadline = Some(now + self.plan.step_timeout);
    }

    fn run(&mut self, op: Op, out: &mut Vec<Output>) {
        self.in_flight = Some(op.clone());
        out.push(Output::Run(op));
    }

    fn finish(&mut self, out: &mut Vec<Output>) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.deadline = None;
            out.push(Output::Finished);
        }
    }

    fn hold_op(&self) -> Op {
        Op::Hold {
            user: self.plan.rep.clone(),
            call: self.plan.call.clone(),
        }
    }

    fn transfer(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.enter(Phase::Transferring, now);
        let op = Op::BlindTransfer {
            user: self.plan.rep.clone(),
            call: self.plan.call.clone(),
            address: self.plan.dial.clone(),
        };
        self.run(op, out);
    }

    /// The action in flight finished.
    pub fn on_done(&mut self, result: OpResult, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(op) = self.in_flight.take() else {
            return out;
        };
        let ok = result != OpResult::Failed;
        match self.phase {
            Phase::Watching => {
                // Events only speed failure detection up; deadlines cover their absence.
                if self.failure.is_some() {
                    self.begin_undo(now, &mut out);
                } else {
                    self.enter(Phase::Holding, now);
                    let hold = self.hold_op();
                    self.run(hold, &mut out);
                }
            }
            Phase::Holding => {
                self.held = ok;
                if self.failure.is_some() {
                    self.begin_undo(now, &mut out);
                } else if !ok {
                    self.fail("hold_failed", now, &mut out);
                } else {
                    self.enter(Phase::Originating, now);
                    let op = Op::Originate {
                        user: self.plan.rep.clone(),
                        address: self.plan.dial.clone(),
                    };
                    self.run(op, &mut out);
                }
            }
            Phase::Originating => {
                if let OpResult::Call(id) = result {
                    self.new_call = Some(id);
                }
                if self.failure.is_some() {
                    self.begin_undo(now, &mut out);
                } else if self.new_call.is_none() {
                    self.fail("originate_failed", now, &mut out);
                } else if self.rep_up {
                    self.transfer(now, &mut out);
                } else {
                    self.enter(Phase::WaitRep, now);
                }
            }
            Phase::Transferring => {
                if ok {
                    // The customer is on its way even if securing was cancelled meanwhile:
                    // the session's end hangs its leg up.
                    self.enter(Phase::WaitCustomer, now);
                    out.push(Output::Secured);
                    if self.customer_up || self.failure.is_some() {
                        self.finish(&mut out);
                    }
                } else if self.failure.is_some() {
                    self.begin_undo(now, &mut out);
                } else {
                    self.fail("transfer_failed", now, &mut out);
                }
            }
            Phase::Undoing => {
                if !ok && matches!(op, Op::Reconnect { .. }) {
                    // No Reconnect: release the new call and resume the held one.
                    if let Some(call) = self.new_call.clone() {
                        self.undo.push_front(Op::Resume {
                            user: self.plan.rep.clone(),
                            call: self.plan.call.clone(),
                        });
                        self.undo.push_front(Op::HangUp {
                            user: self.plan.rep.clone(),
                            call,
                        });
                    }
                }
                self.next_undo(&mut out);
            }
            Phase::WaitRep | Phase::WaitCustomer | Phase::Done => {}
        }
        out
    }

    /// Fail (once): report the reason, then undo as soon as no action is in flight.
    fn fail(&mut self, reason: &'static str, now: Instant, out: &mut Vec<Output>) {
        if self.failure.is_some() || matches!(self.phase, Phase::Undoing | Phase::Done) {
            return;
        }
        self.failure = Some(reason);
        out.push(Output::Fail(reason));
        if self.in_flight.is_none() {
            self.begin_undo(now, out);
        }
    }

    fn begin_undo(&mut self, now: Instant, out: &mut Vec<Output>) {
        if matches!(
            self.phase,
            Phase::WaitCustomer | Phase::Undoing | Phase::Done
        ) {
            self.finish(out);
            return;
        }
        self.enter(Phase::Undoing, now);
        let user = self.plan.rep.clone();
        let call = self.plan.call.clone();
        self.undo.clear();
        match (&self.new_call, self.held, self.customer_gone) {
            (Some(new), _, true) => self.undo.push_back(Op::HangUp {
                user,
                call: new.clone(),
            }),
            (Some(_), _, false) => self.undo.push_back(Op::Reconnect { user }),
            (None, _, false) if self.maybe_new_call => self.undo.push_back(Op::Reconnect { user }),
            (None, true, false) => self.undo.push_back(Op::Resume { user, call }),
            _ => {}
        }
        self.next_undo(out);
    }

    fn next_undo(&mut self, out: &mut Vec<Output>) {
        match self.undo.pop_front() {
            Some(op) => self.run(op, out),
            None => self.finish(out),
        }
    }

    /// A leg arrived on the DNIS and is up.
    pub fn on_leg_up(&mut self, role: LegRole, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match role {
            LegRole::Rep => {
                self.rep_up = true;
                if self.phase == Phase::WaitRep && self.failure.is_none() {
                    self.transfer(now, &mut out);
                }
            }
            LegRole::Customer => {
                self.customer_up = true;
                if self.phase == Phase::WaitCustomer {
                    self.finish(&mut out);
                }
            }
        }
        out
    }

    /// A leg on the DNIS ended (or failed to set up) before the bridge.
    pub fn on_leg_ended(&mut self, role: LegRole, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match (role, self.phase) {
            (_, Phase::Undoing | Phase::Done) => {}
            // After the transfer the session's own end handles it.
            (_, Phase::WaitCustomer) => self.finish(&mut out),
            (LegRole::Rep, _) => self.fail("rep_leg_ended", now, &mut out),
            (LegRole::Customer, _) => self.fail("customer_leg_ended", now, &mut out),
        }
        out
    }

    /// An event on a watched line. Only releases matter; duplicates and late ones are
    /// harmless because each fails at most once.
    pub fn on_event(&mut self, ev: &CallEvent, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if ev.user != self.plan.rep || ev.kind != CallEventKind::Released {
            return out;
        }
        let before_transfer = matches!(
            self.phase,
            Phase::Watching | Phase::Holding | Phase::Originating | Phase::WaitRep
        );
        if !before_transfer {
            return out;
        }
        if ev.call_id == self.plan.call {
            self.customer_gone = true;
            self.fail("customer_hangup", now, &mut out);
        } else if self.new_call.as_deref() == Some(ev.call_id.as_str()) && !self.rep_up {
            self.fail("rep_call_released", now, &mut out);
        }
        out
    }

    /// Securing was cancelled (`DELETE`): undo what was done.
    pub fn on_cancel(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase == Phase::WaitCustomer {
            self.finish(&mut out);
        } else {
            self.fail("deleted", now, &mut out);
        }
        out
    }

    /// Time passes: a step that overran its deadline fails; an undo that overran gives up.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(d) = self.deadline else {
            return out;
        };
        if now < d {
            return out;
        }
        let reason = match self.phase {
            Phase::Watching | Phase::Holding => "hold_timeout",
            Phase::Originating => "originate_timeout",
            Phase::WaitRep => "rep_leg_timeout",
            Phase::Transferring => "transfer_timeout",
            Phase::WaitCustomer => "customer_leg_timeout",
            Phase::Undoing | Phase::Done => {
                self.finish(&mut out);
                return out;
            }
        };
        if self.failure.is_some() {
            // Waiting on a stuck action while failing: stop waiting, undo now, assuming
            // the action took effect (resuming a call that is not held is harmless).
            match self.in_flight.take() {
                Some(Op::Hold { .. }) => self.held = true,
                Some(Op::Originate { .. }) => self.maybe_new_call = true,
                _ => {}
            }
            self.begin_undo(now, &mut out);
        } else {
            // If an action is still in flight, give it one more step before undoing anyway.
            self.deadline = Some(now + self.plan.step_timeout);
            self.fail(reason, now, &mut out);
        }
        out
    }
}

#[cfg(test)]
#[path = "orchestrator_tests.rs"]
mod tests;
