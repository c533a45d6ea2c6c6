//! The async driver of third-party call control: one tokio task per session whose tenant
//! has a carrier adapter. It runs the pure `Orchestrator`, executes its carrier actions
//! one at a time, feeds it the carrier's events for the representative's line, the legs
//! arriving on the DNIS and the clock, and reports back to the session (`secured`,
//! `failed` with a reason, an alarm per carrier error).
//!
//! Must never: hold the manager's lock across an `.await`; outlive the orchestrator (the
//! task ends when it is finished); see a digit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc};

use super::SessionManager;
use crate::carrier::{Carrier, CarrierError, CarrierEvent};
use crate::leg::{LegRole, SessionId};
use crate::session::events::EventBody;
use crate::session::orchestrator::{Op, OpResult, Orchestrator, Output, Plan};
use crate::session::state::{Action, SessionState};

/// What the session layer tells a session's securing task.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SecuringInput {
    LegUp(LegRole),
    LegEnded(LegRole),
    Cancel,
}

type OpFuture = BoxFuture<'static, Result<OpResult, CarrierError>>;

fn execute(carrier: Arc<dyn Carrier>, op: Op) -> OpFuture {
    Box::pin(async move {
        let c = carrier.as_ref();
        match op {
            Op::Watch { user } => c.watch(&user).await.map(|_| OpResult::Ok),
            Op::Hold { user, call } => c.hold(&user, &call).await.map(|_| OpResult::Ok),
            Op::Originate { user, address } => {
                c.originate(&user, &address).await.map(OpResult::Call)
            }
            Op::BlindTransfer {
                user,
                call,
                address,
            } => c
                .blind_transfer(&user, &call, &address)
                .await
                .map(|_| OpResult::Ok),
            Op::Resume { user, call } => c.resume(&user, &call).await.map(|_| OpResult::Ok),
            Op::Reconnect { user } => c.reconnect(&user).await.map(|_| OpResult::Ok),
            Op::HangUp { user, call } => c.hang_up(&user, &call).await.map(|_| OpResult::Ok),
        }
    })
}

impl SessionManager {
    /// Start securing `id` through `carrier`; the sender feeds the task. Needs a tokio
    /// runtime (the API handlers run in one); `None` without one.
    pub(super) fn spawn_securing(
        &self,
        id: &SessionId,
        carrier: Arc<dyn Carrier>,
        plan: Plan,
    ) -> Option<mpsc::UnboundedSender<SecuringInput>> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let events = carrier.events();
        rt.spawn(drive(self.clone(), id.clone(), carrier, plan, rx, events));
        Some(tx)
    }

    /// Forward a trunk happening to the session's securing task, if it has one.
    pub(super) fn to_securing(&self, inner: &super::Inner, id: &SessionId, input: SecuringInput) {
        if let Some(tx) = inner.sessions.get(id).and_then(|e| e.securing.as_ref()) {
            let _ = tx.send(input);
        }
    }

    fn on_securing_output(&self, id: &SessionId, out: &Output) {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(e) = inner.sessions.get_mut(id) else {
            return;
        };
        let actions = match out {
            Output::Secured => e.session.secured(),
            Output::Fail(reason) => {
                tracing::warn!(session = %id, reason, "securing failed, undoing");
                metrics::counter!("tonewall_securing_failed_total", "reason" => *reason)
                    .increment(1);
                e.session.end(now, SessionState::Failed, reason)
            }
            Output::Finished => {
                e.securing = None;
                Vec::new()
            }
            Output::Run(_) => Vec::new(),
        };
        self.apply(&mut inner, id, actions, now);
    }

    fn securing_alarm(&self, id: &SessionId, op: &'static str, err: &CarrierError) {
        let now = Instant::now();
        tracing::warn!(session = %id, action = op, error = %err, "carrier action failed");
        let mut inner = self.lock();
        let body = EventBody::Alarm {
            code: "carrier_error",
            message: format!("{op}: {err}"),
        };
        self.apply(&mut inner, id, vec![Action::Emit(body)], now);
    }
}

async fn drive(
    manager: SessionManager,
    id: SessionId,
    carrier: Arc<dyn Carrier>,
    plan: Plan,
    mut inputs: mpsc::UnboundedReceiver<SecuringInput>,
    mut events: broadcast::Receiver<CarrierEvent>,
) {
    let (mut orch, first) = Orchestrator::start(plan, Instant::now());
    let mut in_flight: Option<(&'static str, OpFuture)> = None;
    let mut events_open = true;
    let mut inputs_open = true;
    let mut pending = first;
    loop {
        for out in pending.drain(..) {
            if let Output::Run(op) = &out {
                tracing::info!(session = %id, action = op.name(), "carrier action");
                in_flight = Some((op.name(), execute(carrier.clone(), op.clone())));
            }
            manager.on_securing_output(&id, &out);
        }
        if orch.is_finished() {
            break;
        }
        // Without a deadline the orchestrator only waits on inputs; wake up anyway now and
        // then so a lost input cannot park the task forever.
        let wake = orch
            .deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        let op_done = async {
            match in_flight.as_mut() {
                Some((_, f)) => f.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = op_done => {
                let name = in_flight.take().map(|(n, _)| n).unwrap_or("action");
                let result = match r {
                    Ok(r) => r,
                    Err(e) => {
                        manager.securing_alarm(&id, name, &e);
                        OpResult::Failed
                    }
                };
                let outcome = if result == OpResult::Failed { "failed" } else { "ok" };
                metrics::counter!("tonewall_carrier_actions_total", "action" => name, "result" => outcome)
                    .increment(1);
                pending = orch.on_done(result, Instant::now());
            }
            ev = events.recv(), if events_open => match ev {
                Ok(CarrierEvent::Call(ev)) => pending = orch.on_event(&ev, Instant::now()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(session = %id, missed = n, "carrier events lagged");
                }
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            i = inputs.recv(), if inputs_open => {
                let now = Instant::now();
                pending = match i {
                    Some(SecuringInput::LegUp(r)) => orch.on_leg_up(r, now),
                    Some(SecuringInput::LegEnded(r)) => orch.on_leg_ended(r, now),
                    Some(SecuringInput::Cancel) => orch.on_cancel(now),
                    None => {
                        inputs_open = false;
                        Vec::new()
                    }
                };
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                pending = orch.on_tick(Instant::now());
            }
        }
        // An abandoned action (the orchestrator moved on without its answer) is dropped
        // when the next `Run` replaces it.
    }
    tracing::debug!(session = %id, failure = ?orch.failure(), "securing task done");
}
