//! Creating and ending sessions for the API: `POST /v1/sessions` (DNIS allocation, then
//! either waiting for the legs or starting third-party call control) and `DELETE` (undo
//! while securing, hand-back while bridged, hang-up otherwise).
//!
//! Must never: hold the lock across an `.await`; log a digit.

use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::broadcast;

use super::{CreateSession, Entry, ManagerError, SessionManager, EVENT_BUFFER};
use crate::carrier::Adapter;
use crate::leg::SessionId;
use crate::session::fields::YearMonth;
use crate::session::orchestrator::Plan;
use crate::session::state::{Session, SessionState, SessionView};

impl SessionManager {
    /// `POST /v1/sessions`.
    pub fn create(&self, tenant: &str, req: CreateSession) -> Result<SessionView, ManagerError> {
        let t = self
            .shared
            .tenants
            .get(tenant)
            .ok_or(ManagerError::SessionNotFound)?;
        if req.call_id.trim().is_empty() || req.rep.trim().is_empty() {
            return Err(ManagerError::InvalidRequest(
                "call_id and rep must not be empty".into(),
            ));
        }
        let fields = match req.fields {
            None => t.fields.clone(),
            Some(f) => {
                if f.is_empty() {
                    return Err(ManagerError::InvalidRequest(
                        "fields must not be empty".into(),
                    ));
                }
                for (i, name) in f.iter().enumerate() {
                    if !crate::config::FIELD_NAMES.contains(&name.as_str()) {
                        return Err(ManagerError::InvalidRequest(format!(
                            "fields[{i}]: unknown field (pan, expiry, cvv)"
                        )));
                    }
                    if f[..i].contains(name) {
                        return Err(ManagerError::InvalidRequest(format!(
                            "fields[{i}]: listed twice"
                        )));
                    }
                }
                f
            }
        };
        let now = Instant::now();
        let mut inner = self.lock();
        let active = inner
            .sessions
            .values()
            .filter(|e| !e.session.state.is_terminal())
            .count();
        if active >= self.shared.options.max_sessions {
            return Err(ManagerError::AtCapacity);
        }
        let id: SessionId =
            format!("ses_{}", Alphanumeric.sample_string(&mut rand::rng(), 20)).into();
        let pool = inner
            .pools
            .get_mut(tenant)
            .ok_or(ManagerError::NoDnisAvailable)?;
        let dnis = pool
            .allocate(id.clone(), now)
            .ok_or(ManagerError::NoDnisAvailable)?;
        let expires_at = (chrono::Utc::now()
            + chrono::Duration::from_std(self.shared.ttl).unwrap_or_default())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut session = Session::new(
            id.clone(),
            t.id.clone(),
            dnis,
            req.call_id,
            req.rep,
            &fields,
            now + self.shared.ttl,
            expires_at,
        );
        let mut actions = session.securing();
        let mut securing = None;
        match &t.adapter {
            Adapter::Manual => actions.extend(session.secured()),
            Adapter::Controlled {
                carrier,
                dial_prefix,
            } => {
                let plan = Plan {
                    rep: session.rep.clone(),
                    call: session.call_id.clone(),
                    dial: format!("{dial_prefix}{}", session.dnis),
                    step_timeout: t.step_timeout,
                };
                securing = self.spawn_securing(&id, carrier.clone(), plan);
                if securing.is_none() {
                    actions.extend(session.end(now, SessionState::Failed, "carrier_unavailable"));
                }
            }
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        inner.sessions.insert(
            id.clone(),
            Entry {
                session,
                bridge: None,
                events: Some(events),
                created_at: chrono::Utc::now(),
                payment: None,
                securing,
            },
        );
        tracing::info!(session = %id, tenant, "session created");
        self.apply(&mut inner, &id, actions, now);
        let view = inner
            .sessions
            .get(&id)
            .map(|e| e.session.view(YearMonth::now()))
            .ok_or(ManagerError::SessionNotFound);
        view
    }

    /// `DELETE /v1/sessions/{id}`: end the session. While securing, the carrier steps are
    /// undone; while bridged, the customer is handed back to the representative where the
    /// carrier can route it; otherwise the legs are hung up.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<SessionView, ManagerError> {
        self.with_session(tenant, id, |m, inner, sid, now| {
            let e = inner
                .sessions
                .get_mut(sid)
                .ok_or(ManagerError::SessionNotFound)?;
            let can_hand_back = m.handback_target(&e.session).is_some();
            let actions = if can_hand_back {
                e.session.end_handing_back(now, "deleted")
            } else {
                e.session.end(now, SessionState::Ended, "deleted")
            };
            m.apply(inner, sid, actions, now);
            Self::view_of(inner, sid)
        })
    }

    /// Where to REFER the customer to reach the representative, when the tenant's carrier
    /// routes it.
    pub(super) fn handback_target(&self, session: &Session) -> Option<String> {
        match &self.shared.tenants.get(&session.tenant)?.adapter {
            Adapter::Controlled { carrier, .. } => carrier.user_uri(&session.rep),
            Adapter::Manual => None,
        }
    }
}

impl SessionManager {
    /// Every tenant's carrier adapter with call control, each once (to `close` them at
    /// shutdown).
    pub fn carriers(&self) -> Vec<std::sync::Arc<dyn crate::carrier::Carrier>> {
        let mut out: Vec<std::sync::Arc<dyn crate::carrier::Carrier>> = Vec::new();
        for t in self.shared.tenants.values() {
            if let Adapter::Controlled { carrier, .. } = &t.adapter {
                if !out.iter().any(|c| std::sync::Arc::ptr_eq(c, carrier)) {
                    out.push(carrier.clone());
                }
            }
        }
        out
    }
}
