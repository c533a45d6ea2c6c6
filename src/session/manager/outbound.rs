//! What leaves the manager besides SIP and media: webhook deliveries of events and the
//! audit row written when a session ends (or, if its payment is still with the gateway,
//! when the gateway answers).
//!
//! Must never: block (both only enqueue); put anything but masked views in either.

use chrono::{DateTime, Utc};

use super::{Entry, ManagerError, SessionManager};
use crate::audit::{timestamp, AuditRecord};
use crate::session::events::Event;
use crate::session::state::Session;

impl SessionManager {
    /// Queue `event` for the tenant's webhook, if it has one.
    pub(super) fn webhook(&self, session: &Session, event: &Event, last: bool) {
        let Some(w) = &self.shared.services.webhooks else {
            return;
        };
        if !w.enabled(&session.tenant) {
            return;
        }
        match serde_json::to_string(event) {
            Ok(body) => w.send(&session.tenant, &session.id, body, last),
            Err(e) => tracing::error!(error = %e, "event not serialisable"),
        }
    }

    /// The session ended: write its audit row unless its payment is still in flight (then
    /// the payment task writes it).
    pub(super) fn audit_on_end(&self, e: &Entry) {
        let in_flight = e.payment.as_ref().is_some_and(|p| p.borrow().is_none());
        if !in_flight {
            self.write_audit(e);
        }
    }

    pub(super) fn write_audit(&self, e: &Entry) {
        let Some(audit) = &self.shared.services.audit else {
            return;
        };
        let s = &e.session;
        let ended = match (s.ended_at, std::time::Instant::now()) {
            (Some(t), now) => Utc::now() - chrono::Duration::from_std(now - t).unwrap_or_default(),
            (None, _) => Utc::now(),
        };
        let p = s.payment.as_ref();
        audit.record(AuditRecord {
            tenant: s.tenant.to_string(),
            session: s.id.to_string(),
            created_at: timestamp(e.created_at),
            ended_at: timestamp(ended),
            dnis: s.dnis.to_string(),
            call_id: s.call_id.clone(),
            rep: s.rep.clone(),
            state: format!("{:?}", s.state).to_lowercase(),
            reason: s.reason.clone(),
            masked_pan: p.map(|p| p.masked_pan.clone()),
            brand: p.map(|p| p.brand.to_string()),
            reference: p.and_then(|p| p.reference.clone()),
            payment_status: p.map(|p| p.status.to_string()),
        });
    }

    /// `GET /v1/sessions?from=&to=`: the tenant's ended sessions created in `[from, to)`
    /// (blocking: call it from `spawn_blocking`).
    pub fn audit_query(
        &self,
        tenant: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditRecord>, ManagerError> {
        let audit = self
            .shared
            .services
            .audit
            .as_ref()
            .ok_or(ManagerError::AuditUnavailable)?;
        audit.query(tenant, from, to).map_err(|e| {
            tracing::error!(error = %e, "audit query failed");
            ManagerError::AuditUnavailable
        })
    }

    /// The audit log, if configured (to flush it in tests and at shutdown).
    pub fn audit_log(&self) -> Option<crate::audit::AuditLog> {
        self.shared.services.audit.clone()
    }
}
