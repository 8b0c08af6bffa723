//! The one JSON error envelope every service answers with:
//! `{"error":{"code":"rate_limited","message":"…","request_id":"…"}}`, plus `"field"` when the
//! error is about one field of the request body (a client shows it next to that field).

use serde::{Deserialize, Serialize};

/// The error envelope as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, in a machine-readable code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, snake_case, documented: clients branch on this.
    pub code: String,
    /// For humans; never carries secrets or internal causes.
    pub message: String,
    /// Correlates the answer with the logs of every hop.
    pub request_id: String,
    /// The body field the error is about, as a JSON path (`inference.temperature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// Builds the envelope.
    pub fn new(
        code: impl Into<String>,
        message: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                request_id: request_id.into(),
                field: None,
            },
        }
    }

    /// Names the body field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    /// Serialises the envelope; infallible for this plain-string shape.
    pub fn to_json(&self) -> String {
        // Serialising a struct of three `String`s cannot fail; fall back to a fixed body anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"error":{"code":"internal","message":"internal error","request_id":""}}"#.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_the_documented_shape() {
        let body = ErrorBody::new("rate_limited", "slow down", "req-1");
        let value: serde_json::Value = serde_json::from_str(&body.to_json()).expect("valid json");
        assert_eq!(
            value,
            serde_json::json!({"error":{"code":"rate_limited","message":"slow down","request_id":"req-1"}})
        );
    }

    #[test]
    fn names_the_field_only_when_there_is_one() {
        let body = ErrorBody::new("invalid_agent", "bad", "r").with_field("inference.top_p");
        let value: serde_json::Value = serde_json::from_str(&body.to_json()).expect("valid json");
        assert_eq!(value["error"]["field"], "inference.top_p");
        let back: ErrorBody = serde_json::from_str(&body.to_json()).expect("round trip");
        assert_eq!(back, body);
        let plain: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"c","message":"m","request_id":"r"}}"#)
                .expect("an envelope without a field still parses");
        assert_eq!(plain.error.field, None);
    }

    #[test]
    fn escapes_quotes_in_messages() {
        let body = ErrorBody::new("bad_request", r#"field "x" is "odd""#, "r");
        let back: ErrorBody = serde_json::from_str(&body.to_json()).expect("round trip");
        assert_eq!(back, body);
    }
}
