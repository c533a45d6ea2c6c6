//! The REST API (SPEC §5): sessions, SSE events, health and Prometheus metrics and the
//! representative's page (`ui`).
//!
//! Must never: answer with an unmasked digit; accept a request without a valid API key on
//! `/v1/`; hold the session lock across an `.await` (it calls the manager's sync methods).

pub mod auth;
pub mod error;
pub mod sessions;
pub mod ui;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::api::error::ApiError;
use crate::session::manager::SessionManager;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub manager: SessionManager,
    pub metrics: PrometheusHandle,
}

impl ApiState {
    /// State with the process-wide Prometheus recorder (installed on first use).
    pub fn new(manager: SessionManager) -> ApiState {
        ApiState {
            manager,
            metrics: crate::metrics::install(),
        }
    }
}

/// The HTTP API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/v1/sessions/{id}/events", get(sessions::events))
        .route(
            "/v1/sessions/{id}/fields/{name}/activate",
            post(sessions::activate),
        )
        .route(
            "/v1/sessions/{id}/fields/{name}/reset",
            post(sessions::reset),
        )
        .route("/v1/sessions/{id}/payment", post(sessions::payment))
        .merge(ui::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    if state.manager.is_ready() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
