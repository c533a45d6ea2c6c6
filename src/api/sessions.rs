//! The session endpoints of SPEC §5: create, get, list (audit), events (SSE), field
//! commands, payment, delete.
//!
//! Must never: return or log anything but masked views of the fields.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::broadcast;

use crate::api::auth::Tenant;
use crate::api::error::{scrub_digits, ApiError};
use crate::api::ApiState;
use crate::session::events::Event;
use crate::session::manager::{CreateSession, PaymentRequest};

/// Parse a JSON body: 400 when it is not JSON, 422 when it has the wrong shape. Messages
/// never echo digits of the body.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                scrub_digits(&e.to_string()),
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "the body is not valid JSON ({})",
                    scrub_digits(&e.to_string())
                ),
            ),
        }
    })
}

pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: CreateSession = parse_body(&body)?;
    let view = state.manager.create(&tenant, req)?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    from: Option<String>,
    to: Option<String>,
}

fn parse_time(name: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_time",
                    format!("{name} must be an RFC 3339 time such as 2026-01-31T09:00:00Z"),
                )
            }),
    }
}

/// `GET /v1/sessions?from=&to=`: the tenant's ended sessions (audit rows) created in
/// `[from, to)`.
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    let manager = state.manager.clone();
    let rows = tokio::task::spawn_blocking(move || manager.audit_query(&tenant, from, to))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the audit query failed",
            )
        })??;
    Ok(Json(serde_json::json!({ "sessions": rows })))
}

pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.manager.get(&tenant, &id)?))
}

pub async fn delete(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.manager.delete(&tenant, &id)?))
}

pub async fn activate(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path((id, name)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.manager.activate(&tenant, &id, &name)?))
}

pub async fn reset(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path((id, name)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.manager.reset(&tenant, &id, &name)?))
}

pub async fn payment(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // An unknown or foreign session is 404 before the body is looked at.
    state.manager.get(&tenant, &id)?;
    let req: PaymentRequest = parse_body(&body)?;
    Ok(Json(state.manager.pay(&tenant, &id, req).await?))
}

fn sse_event(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default().event(e.body.kind()).data(data)
}

/// `GET /v1/sessions/{id}/events`: the current state first, then every event; the stream
/// ends after the terminal `state` event.
pub async fn events(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let (first, rx) = state.manager.subscribe(&tenant, &id)?;
    let done = first.body.is_terminal();
    let first = Some(first);
    let stream =
        futures::stream::unfold((first, rx, done), |(mut first, mut rx, done)| async move {
            if let Some(f) = first.take() {
                let ev = sse_event(&f);
                return Some((Ok(ev), (None, rx, done)));
            }
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        let e: Arc<Event> = e;
                        let done = e.body.is_terminal();
                        return Some((Ok(sse_event(&e)), (None, rx, done)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
