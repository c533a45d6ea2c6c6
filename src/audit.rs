//! The audit trail: an append-only SQLite table with one row per ended session (tenant,
//! times, DNIS, carrier call id, representative, outcome, masked PAN, brand, gateway
//! reference, payment status). Rows are written by one writer thread, off the hot path;
//! queries open their own read connection (call them from `spawn_blocking`).
//!
//! Must never: store card data or a security code (records carry masked views only);
//! update or delete a row (triggers refuse it); block the caller of `record`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags};
use serde::Serialize;

/// One ended session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub tenant: String,
    pub session: String,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
    pub ended_at: String,
    pub dnis: String,
    pub call_id: String,
    pub rep: String,
    /// `ended` / `failed`.
    pub state: String,
    pub reason: Option<String>,
    pub masked_pan: Option<String>,
    pub brand: Option<String>,
    pub reference: Option<String>,
    /// `approved` / `declined` / `error`; `None` without a payment.
    pub payment_status: Option<String>,
}

/// RFC 3339 UTC with milliseconds: the stored form, ordered as text.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(mpsc::SyncSender<()>),
}

/// The audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    path: PathBuf,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA cache_size = -256;
CREATE TABLE IF NOT EXISTS sessions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    session TEXT NOT NULL,
    created_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    dnis TEXT NOT NULL,
    call_id TEXT NOT NULL,
    rep TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    masked_pan TEXT,
    brand TEXT,
    reference TEXT,
    payment_status TEXT
);
CREATE INDEX IF NOT EXISTS sessions_tenant_created ON sessions (tenant, created_at);
CREATE TRIGGER IF NOT EXISTS sessions_no_update BEFORE UPDATE ON sessions
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS sessions_no_delete BEFORE DELETE ON sessions
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
";

/// Most rows one query returns.
pub const MAX_ROWS: usize = 10_000;

impl AuditLog {
    /// Open (creating if needed) the database and start the writer thread.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<AuditLog> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)
            .with_context(|| format!("audit.path: cannot open {}", path.display()))?;
        conn.execute_batch(SCHEMA).with_context(|| {
            format!("audit.path: cannot create the schema in {}", path.display())
        })?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(conn, rx))
            .context("audit: cannot start the writer thread")?;
        Ok(AuditLog { tx, path })
    }

    /// Queue one row (never blocks).
    pub fn record(&self, r: AuditRecord) {
        let _ = self.tx.send(Msg::Record(Box::new(r)));
    }

    /// Wait until every queued row is written (blocking; for shutdown and tests).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// One tenant's sessions created in `[from, to)`, oldest first (blocking).
    pub fn query(
        &self,
        tenant: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<AuditRecord>> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let from = from.map(timestamp).unwrap_or_default();
        let to = to.map(timestamp).unwrap_or_else(|| "9999".into());
        let mut stmt = conn.prepare(
            "SELECT tenant, session, created_at, ended_at, dnis, call_id, rep, state, reason,
                    masked_pan, brand, reference, payment_status
             FROM sessions WHERE tenant = ?1 AND created_at >= ?2 AND created_at < ?3
             ORDER BY created_at, seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![tenant, from, to, MAX_ROWS as i64], |r| {
            Ok(AuditRecord {
                tenant: r.get(0)?,
                session: r.get(1)?,
                created_at: r.get(2)?,
                ended_at: r.get(3)?,
                dnis: r.get(4)?,
                call_id: r.get(5)?,
                rep: r.get(6)?,
                state: r.get(7)?,
                reason: r.get(8)?,
                masked_pan: r.get(9)?,
                brand: r.get(10)?,
                reference: r.get(11)?,
                payment_status: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

fn insert(conn: &Connection, r: &AuditRecord) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO sessions (tenant, session, created_at, ended_at, dnis, call_id,
            rep, state, reason, masked_pan, brand, reference, payment_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    stmt.execute(params![
        r.tenant,
        r.session,
        r.created_at,
        r.ended_at,
        r.dnis,
        r.call_id,
        r.rep,
        r.state,
        r.reason,
        r.masked_pan,
        r.brand,
        r.reference,
        r.payment_status
    ])
}

/// Writes rows in batches: everything queued when it wakes goes in one transaction.
fn writer(conn: Connection, rx: mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let res = (|| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN")?;
            for m in batch {
                match m {
                    Msg::Record(r) => {
                        if let Err(e) = insert(&conn, &r) {
                            tracing::error!(session = %r.session, error = %e, "audit row not written");
                        }
                    }
                    Msg::Flush(done) => flushes.push(done),
                }
            }
            conn.execute_batch("COMMIT")
        })();
        if let Err(e) = res {
            tracing::error!(error = %e, "audit batch not written");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tenant: &str, session: &str, created: &str) -> AuditRecord {
        AuditRecord {
            tenant: tenant.into(),
            session: session.into(),
            created_at: created.into(),
            ended_at: created.into(),
            dnis: "+61390001000".into(),
            call_id: "call-1".into(),
            rep: "rep-1".into(),
            state: "ended".into(),
            reason: Some("deleted".into()),
            masked_pan: Some("************1111".into()),
            brand: Some("visa".into()),
            reference: Some("sbx_1".into()),
            payment_status: Some("approved".into()),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn time_ranges_tenants_and_append_only() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.db");
        let log = AuditLog::open(&path).expect("open");
        log.record(rec("acme", "s1", "2026-01-01T10:00:00.000Z"));
        log.record(rec("acme", "s2", "2026-01-01T11:00:00.000Z"));
        log.record(rec("acme", "s3", "2026-01-02T10:00:00.000Z"));
        log.record(rec("other", "o1", "2026-01-01T10:30:00.000Z"));
        log.flush();
        let ids = |v: Vec<AuditRecord>| v.into_iter().map(|r| r.session).collect::<Vec<_>>();
        assert_eq!(
            ids(log.query("acme", None, None).expect("q")),
            ["s1", "s2", "s3"]
        );
        assert_eq!(
            ids(log
                .query(
                    "acme",
                    Some(t("2026-01-01T10:30:00Z")),
                    Some(t("2026-01-02T10:00:00Z"))
                )
                .expect("q")),
            ["s2"]
        );
        // Another timezone, same instant.
        assert_eq!(
            ids(log
                .query("acme", Some(t("2026-01-02T11:00:00+01:00")), None)
                .expect("q")),
            ["s3"]
        );
        assert_eq!(ids(log.query("other", None, None).expect("q")), ["o1"]);
        assert!(log.query("nobody", None, None).expect("q").is_empty());
        let full = log.query("acme", None, None).expect("q");
        assert_eq!(full[0], rec("acme", "s1", "2026-01-01T10:00:00.000Z"));
        // Append-only.
        let conn = Connection::open(&path).expect("open");
        assert!(conn.execute("UPDATE sessions SET rep = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM sessions", []).is_err());
        // Reopening keeps the rows.
        drop(log);
        let log = AuditLog::open(&path).expect("reopen");
        assert_eq!(log.query("acme", None, None).expect("q").len(), 3);
    }
}
