//! API errors: `{"error": {"code", "message"}}` with the right status.
//!
//! Must never: put a digit of card data or request body content in a message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::session::manager::ManagerError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> ApiError {
        let msg = e.to_string();
        match e {
            ManagerError::SessionNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "session_not_found", msg)
            }
            ManagerError::UnknownField => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_field", msg)
            }
            ManagerError::NoDnisAvailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_dnis_available", msg)
            }
            ManagerError::AtCapacity => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "at_capacity", msg)
            }
            ManagerError::InvalidRequest(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", msg)
            }
            ManagerError::InvalidPayment { code, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, scrub_digits(&msg))
            }
            ManagerError::SessionEnded => ApiError::new(StatusCode::CONFLICT, "session_ended", msg),
            ManagerError::PaymentGateway(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "gateway_error", scrub_digits(&msg))
            }
            ManagerError::AuditUnavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", msg)
            }
        }
    }
}

/// Replace every run of 5+ digits in `s` by `*`s (error messages from parsers may echo
/// input).
pub fn scrub_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 5 {
            out.extend(std::iter::repeat_n('*', run.len()));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_long_digit_runs() {
        assert_eq!(
            scrub_digits("line 1 column 4111111111"),
            "line 1 column **********"
        );
        assert_eq!(scrub_digits("a 1234 b"), "a 1234 b");
    }
}
