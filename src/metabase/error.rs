use reqwest::Method;

use crate::error::{Classify, ErrorClass};

/// A failed call to Metabase: what was asked, and Metabase's own words when it answered.
///
/// Holds no header and no body that was sent, so the API key and passwords cannot leak through
/// it into logs or dead-letter headers.
#[derive(Debug, thiserror::Error)]
pub enum MetabaseError {
    #[error("{method} {route}: cannot reach Metabase: {detail}")]
    Connect {
        method: Method,
        route: String,
        detail: String,
    },
    #[error("{method} {route}: Metabase did not answer in time")]
    Timeout { method: Method, route: String },
    #[error("{method} {route}: HTTP {status}: {message}")]
    Status {
        method: Method,
        route: String,
        status: u16,
        message: String,
    },
    #[error("{method} {route}: unexpected response: {detail}")]
    Decode {
        method: Method,
        route: String,
        detail: String,
    },
    #[error("invalid Metabase configuration: {0}")]
    Config(String),
}

impl MetabaseError {
    pub fn status(&self) -> Option<u16> {
        match self {
            MetabaseError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Metabase's message for an HTTP error, e.g. `A group with that name already exists.`.
    pub fn message(&self) -> Option<&str> {
        match self {
            MetabaseError::Status { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Metabase refused to create something that already exists: a group name (any case) or
    /// an email. The caller should find the existing one instead.
    pub fn is_duplicate(&self) -> bool {
        match self {
            MetabaseError::Status {
                status: 400,
                message,
                ..
            } => {
                message.contains("already exists")
                    || message.contains("already in use")
                    || message.contains("already associated")
            }
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A 409 revision conflict on a permissions graph.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Worth retrying inside the same request: the server may answer differently in a moment.
    /// 409 is not: it needs a fresh read first, which only the caller can do.
    pub(crate) fn is_retryable_now(&self) -> bool {
        match self {
            MetabaseError::Connect { .. } | MetabaseError::Timeout { .. } => true,
            MetabaseError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

impl Classify for MetabaseError {
    fn class(&self) -> ErrorClass {
        match self {
            MetabaseError::Connect { .. } | MetabaseError::Timeout { .. } => ErrorClass::Transient,
            MetabaseError::Status { status, .. }
                if *status >= 500 || *status == 429 || *status == 409 =>
            {
                ErrorClass::Transient
            }
            _ => ErrorClass::Permanent,
        }
    }
}

/// Metabase's own message from an error body: plain text, `{"message"}`, or `{"errors": {field: msg}}`.
pub(crate) fn message_from_body(body: &str) -> String {
    const MAX: usize = 500;
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => {
            if let Some(serde_json::Value::Object(errors)) = map.get("errors") {
                errors
                    .iter()
                    .map(|(field, msg)| match msg {
                        serde_json::Value::String(s) => format!("{field}: {s}"),
                        other => format!("{field}: {other}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            } else if let Some(serde_json::Value::String(m)) = map.get("message") {
                m.clone()
            } else {
                body.to_string()
            }
        }
        Ok(serde_json::Value::String(s)) => s,
        _ => body.trim().to_string(),
    };
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_from_every_body_shape() {
        let cases = [
            ("Not found.", "Not found."),
            (
                r#"{"errors":{"email":"Email address already in use."}}"#,
                "email: Email address already in use.",
            ),
            (
                r#"{"message":"Not able to reactivate an active user","trace":[]}"#,
                "Not able to reactivate an active user",
            ),
            ("\"quoted\"", "quoted"),
        ];
        for (body, want) in cases {
            assert_eq!(message_from_body(body), want, "{body}");
        }
        assert!(message_from_body(&"x".repeat(2000)).chars().count() <= 501);
    }

    #[test]
    fn classification_follows_the_contract() {
        let status = |status| MetabaseError::Status {
            method: Method::GET,
            route: "/api/x".into(),
            status,
            message: String::new(),
        };
        for s in [500, 502, 503, 429, 409] {
            assert_eq!(status(s).class(), ErrorClass::Transient, "{s}");
        }
        for s in [400, 401, 402, 403, 404] {
            assert_eq!(status(s).class(), ErrorClass::Permanent, "{s}");
        }
        assert!(!status(409).is_retryable_now());
        let decode = MetabaseError::Decode {
            method: Method::GET,
            route: "/api/x".into(),
            detail: String::new(),
        };
        assert_eq!(decode.class(), ErrorClass::Permanent);
    }
}
