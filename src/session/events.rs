//! Session events (SPEC §7): JSON objects with `type`, `session`, `at` and type-specific
//! fields, sent on a per-session broadcast to SSE clients (and, later, webhooks).
//!
//! Must never: carry a digit; events about fields carry masked views only.

use serde::Serialize;

use crate::session::fields::FieldView;
use crate::session::state::SessionState;

/// One event as it goes out.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub session: String,
    /// RFC 3339 UTC time.
    pub at: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// The type-specific part; `type` is the tag.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventBody {
    /// The session changed state.
    State {
        state: SessionState,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A key press went into a field (masked).
    Digit {
        field: &'static str,
        masked: String,
        length: usize,
    },
    /// A field was activated, cleared or completed.
    Field {
        field: &'static str,
        action: FieldAction,
        masked: String,
        length: usize,
        complete: bool,
        valid: bool,
    },
    /// The payment's outcome (masked PAN, brand and gateway reference only).
    Payment(crate::session::state::PaymentRecord),
    /// Something an operator should know about.
    Alarm { code: &'static str, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldAction {
    Activated,
    Cleared,
    Completed,
}

impl EventBody {
    /// The `type` value, also the SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::State { .. } => "state",
            EventBody::Digit { .. } => "digit",
            EventBody::Field { .. } => "field",
            EventBody::Payment(_) => "payment",
            EventBody::Alarm { .. } => "alarm",
        }
    }

    /// A field event from a masked view.
    pub fn field(action: FieldAction, v: FieldView) -> EventBody {
        EventBody::Field {
            field: v.name,
            action,
            masked: v.masked,
            length: v.length,
            complete: v.complete,
            valid: v.valid,
        }
    }

    /// Whether this event ends the session's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventBody::State {
                state: SessionState::Ended | SessionState::Failed,
                ..
            }
        )
    }
}

impl Event {
    pub fn new(session: &str, body: EventBody) -> Event {
        Event {
            session: session.to_string(),
            at: now_rfc3339(),
            body,
        }
    }
}

/// The current UTC time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let e = Event::new(
            "ses_1",
            EventBody::State {
                state: SessionState::WaitingLegs,
                reason: None,
            },
        );
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["type"], "state");
        assert_eq!(v["session"], "ses_1");
        assert_eq!(v["state"], "waiting_legs");
        assert!(v.get("reason").is_none());
        assert!(v["at"].as_str().is_some_and(|s| s.ends_with('Z')));
        let a = Event::new(
            "ses_1",
            EventBody::Alarm {
                code: "third_leg",
                message: "m".into(),
            },
        );
        let v = serde_json::to_value(&a).expect("json");
        assert_eq!(v["type"], "alarm");
        assert_eq!(v["code"], "third_leg");
        let d = EventBody::Digit {
            field: "pan",
            masked: "***".into(),
            length: 3,
        };
        assert_eq!(d.kind(), "digit");
        let v = serde_json::to_value(Event::new("s", d)).expect("json");
        assert_eq!(v["masked"], "***");
    }
}
