use reqwest::Method;

use super::client::Replay;
use crate::error::{Classify, ErrorClass};

/// A failed call to Metabase: what was asked, and Metabase's own words when it answered.
///
/// Holds no header and no body that was sent, so the API key and passwords cannot leak through
/// it into logs or dead-letter headers.
///
/// A transport failure is one of two things, and the difference decides what may be sent again:
/// [`MetabaseError::NotSent`] (the request never reached Metabase: safe to retry anything) or
/// [`MetabaseError::OutcomeUnknown`] / [`MetabaseError::Timeout`] (it may have been applied:
/// a creating request must be looked up before it is sent again).
#[derive(Debug, thiserror::Error)]
pub enum MetabaseError {
    /// Connection refused, DNS, TLS handshake, connect timeout: nothing was written.
    #[error("{method} {route}: cannot reach Metabase (request not sent): {detail}")]
    NotSent {
        method: Method,
        route: String,
        detail: String,
    },
    /// The connection broke after the request was written (no answer, or a broken answer).
    #[error(
        "{method} {route}: the connection broke after the request was sent; it may have been applied: {detail}"
    )]
    OutcomeUnknown {
        method: Method,
        route: String,
        detail: String,
    },
    /// No whole answer in time: the request may have been applied.
    #[error("{method} {route}: Metabase did not answer in time; the request may have been applied")]
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

    /// The request may have been applied although no answer says so.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(
            self,
            MetabaseError::OutcomeUnknown { .. } | MetabaseError::Timeout { .. }
        )
    }

    /// Worth retrying inside the same request: the server may answer differently in a moment.
    /// 409 is not: it needs a fresh read first, which only the caller can do. A creating POST
    /// is sent again only when it surely never left: after a lost answer it may exist, and
    /// after an error answer the job's own retry looks it up before creating it again.
    pub(crate) fn is_retryable_now(&self, replay: Replay) -> bool {
        match replay {
            Replay::OnlyIfUnsent => matches!(self, MetabaseError::NotSent { .. }),
            Replay::Safe => match self {
                MetabaseError::NotSent { .. }
                | MetabaseError::OutcomeUnknown { .. }
                | MetabaseError::Timeout { .. } => true,
                MetabaseError::Status { status, .. } => *status >= 500 || *status == 429,
                _ => false,
            },
        }
    }
}

impl Classify for MetabaseError {
    fn class(&self) -> ErrorClass {
        match self {
            MetabaseError::NotSent { .. } => ErrorClass::Transient,
            MetabaseError::OutcomeUnknown { .. } | MetabaseError::Timeout { .. } => {
                ErrorClass::OutcomeUnknown
            }
            MetabaseError::Status { status, route, .. } => status_class(*status, route),
            _ => ErrorClass::Permanent,
        }
    }
}

/// The class of an HTTP error status on `route` (the path sent, e.g. `/api/user/7`).
///
/// 401 is Metabase's answer to missing or unknown credentials (`response-unauthentic` in
/// `src/metabase/server/middleware/session.clj`, ../shared/metabase-api.md section 8): the key
/// is wrong, not the job. A 403 means the key lost its rights only on routes that check
/// nothing but superuser status, since mbprov's key is an Administrators key: `/api/user`
/// (list, create, update, deactivate), `/api/permissions/*` (`fetch-groups-test` and the other
/// permissions API tests: "as rasta → 403", ../shared/metabase-test-facts.md items 2, 10, 15,
/// 35) and `/api/collection/graph`. Elsewhere a 403 can be the job's own doing (writing into
/// the Trash, `/api/setup` after the first user, sandboxes without the token feature answer 403
/// too), so it stays permanent.
fn status_class(status: u16, route: &str) -> ErrorClass {
    match status {
        401 => ErrorClass::Authentication,
        403 if superuser_only(route) => ErrorClass::Authentication,
        409 | 429 => ErrorClass::Transient,
        s if s >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Routes on which a superuser is never refused.
fn superuser_only(route: &str) -> bool {
    let path = route.split('?').next().unwrap_or(route);
    path == "/api/user"
        || (path.starts_with("/api/user/") && path != "/api/user/current")
        || path.starts_with("/api/permissions/")
        || path == "/api/collection/graph"
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
        for s in [400, 402, 403, 404] {
            assert_eq!(status(s).class(), ErrorClass::Permanent, "{s}");
        }
        assert_eq!(status(401).class(), ErrorClass::Authentication);
        assert!(!status(409).is_retryable_now(Replay::Safe));
        let decode = MetabaseError::Decode {
            method: Method::GET,
            route: "/api/x".into(),
            detail: String::new(),
        };
        assert_eq!(decode.class(), ErrorClass::Permanent);
    }

    /// Every failure a creating POST can meet: its class (what the job does) and whether the
    /// client sends it again at once, as a safe request and as a creating one.
    #[test]
    fn unknown_outcomes_are_never_replayed_as_creations() {
        let m = || Method::POST;
        let r = || "/api/permissions/group".to_string();
        let status = |status: u16, message: &str| MetabaseError::Status {
            method: m(),
            route: r(),
            status,
            message: message.into(),
        };
        use ErrorClass::{OutcomeUnknown, Permanent, Transient};
        #[rustfmt::skip]
        let cases: Vec<(&str, MetabaseError, ErrorClass, bool, bool)> = vec![
            // (what, error, class, retried now when Safe, retried now when OnlyIfUnsent)
            ("connection refused, DNS, TLS handshake",
             MetabaseError::NotSent { method: m(), route: r(), detail: "refused".into() },
             Transient, true, true),
            ("connection closed after the request was written",
             MetabaseError::OutcomeUnknown { method: m(), route: r(), detail: "closed".into() },
             OutcomeUnknown, true, false),
            ("no answer in time",
             MetabaseError::Timeout { method: m(), route: r() },
             OutcomeUnknown, true, false),
            // metabase-api.md, verified correction 9: concurrent collection POSTs and the
            // permissions cluster lock (metabase#73249) fail with 500; both are transient. The
            // job retries them; a creating POST is not replayed inside the request.
            ("500 on a creating POST", status(500, "Internal Server Error"),
             Transient, true, false),
            ("cluster lock contention", status(500, "Failed to obtain cluster lock"),
             Transient, true, false),
            ("Metabase starting or down", status(503, "Metabase is still initializing"),
             Transient, true, false),
            ("rate limited", status(429, "Too Many Requests"), Transient, true, false),
            ("revision conflict", status(409, "Looks like someone else edited"),
             Transient, false, false),
            ("name taken", status(400, "A group with that name already exists."),
             Permanent, false, false),
        ];
        for (what, e, class, safe, creating) in cases {
            assert_eq!(e.class(), class, "{what}");
            assert_eq!(
                e.is_retryable_now(Replay::Safe),
                safe,
                "{what}: safe request"
            );
            assert_eq!(
                e.is_retryable_now(Replay::OnlyIfUnsent),
                creating,
                "{what}: creating POST"
            );
            assert_eq!(e.is_outcome_unknown(), class == OutcomeUnknown, "{what}");
        }
    }

    #[test]
    fn authentication_is_a_401_or_a_403_where_a_superuser_is_never_refused() {
        use ErrorClass::{Authentication as Auth, Permanent, Transient};
        let table = [
            (401, "/api/collection/7", Auth),
            (401, "/api/user/current", Auth),
            (401, "/api/mt/gtap", Auth),
            (403, "/api/user", Auth),
            (403, "/api/user/12", Auth),
            (403, "/api/user/12/reactivate", Auth),
            (403, "/api/permissions/group", Auth),
            (403, "/api/permissions/membership/3/clear", Auth),
            (403, "/api/permissions/graph", Auth),
            (403, "/api/collection/graph", Auth),
            (403, "/api/collection/graph?namespace=x", Auth),
            (403, "/api/collection/9", Permanent),
            (403, "/api/collection", Permanent),
            (403, "/api/mt/gtap", Permanent),
            (403, "/api/setup", Permanent),
            (403, "/api/user/current", Permanent),
            (403, "/api/users", Permanent),
            (404, "/api/user/12", Permanent),
            (503, "/api/user", Transient),
        ];
        for (status, route, want) in table {
            assert_eq!(status_class(status, route), want, "{status} {route}");
        }
    }
}
