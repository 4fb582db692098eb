//! What is in `P.dead`, for `mbprov dlq`: one dead letter as read from the queue ([`DeadLetter`]),
//! which ones a command is about ([`filter`]), what a group of them says ([`summary`]), the
//! message a replay sends ([`replay`]), and the bounded walk through the queue ([`scan`]).

use std::time::SystemTime;

use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::Value;

use super::envelope_id::envelope_id;
use super::headers::{self, DeathNote};

pub mod filter;
pub mod replay;
pub mod scan;
pub mod summary;

pub use filter::Filter;
pub use scan::{Progress, ScanReport, Verdict, scan};

/// One dead-lettered job, as `dlq` shows it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub id: String,
    /// The routing key it was first published with (its kind, by convention).
    pub kind: String,
    pub note: DeathNote,
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub properties: BasicProperties,
    /// The routing key of this delivery, which a copy put back in `P.dead` must keep.
    pub routing_key: String,
}

impl DeadLetter {
    pub fn new(body: Vec<u8>, routing_key: &str, properties: BasicProperties) -> Self {
        let headers = properties.headers().clone().unwrap_or_default();
        let message_id = properties.message_id().as_ref().map(|m| m.to_string());
        Self {
            id: envelope_id(&body, message_id.as_deref()),
            kind: headers::original_routing_key(Some(&headers), routing_key),
            note: headers::death_note(Some(&headers)),
            body,
            headers,
            properties,
            routing_key: routing_key.to_owned(),
        }
    }

    /// `x-mbprov-last-failed-at` (or RabbitMQ's death time), when it is readable.
    pub fn failed_at(&self) -> Option<SystemTime> {
        parse_time(self.note.last_failed_at.as_deref()?)
    }

    /// The tenant the job is about: the payload's `tenant_id` (a string, or an integer read as
    /// its decimal string), and for `users.synced` each user's. Empty when the body is not an
    /// envelope or names no tenant.
    pub fn tenant_ids(&self) -> Vec<String> {
        let Ok(envelope) = serde_json::from_slice::<Value>(&self.body) else {
            return Vec::new();
        };
        let payload = envelope.get("payload");
        let users = payload
            .and_then(|p| p.get("users"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        payload
            .into_iter()
            .chain(users)
            .filter_map(|v| tenant_text(v.get("tenant_id")?))
            .collect()
    }
}

fn tenant_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// An RFC 3339 time as the headers hold it: `…Z` or without an offset (UTC), fractions
/// optional; a `+00:00` suffix (what other publishers may write) is read as UTC. Other offsets
/// are not understood: the letter then has no time, and `--since`/`--until` leave it out.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let utc = text.strip_suffix("+00:00").unwrap_or(text);
    humantime::parse_rfc3339_weak(utc).ok()
}

#[cfg(test)]
mod tests {
    use lapin::types::AMQPValue;

    use super::*;

    fn letter(body: &str) -> DeadLetter {
        DeadLetter::new(body.as_bytes().to_vec(), "k", BasicProperties::default())
    }

    #[test]
    fn tenants_come_from_the_payload() {
        let table = [
            (
                r#"{"kind":"tenant.created","payload":{"tenant_id":"42"}}"#,
                vec!["42"],
            ),
            (
                r#"{"kind":"tenant.created","payload":{"tenant_id":42}}"#,
                vec!["42"],
            ),
            (
                r#"{"kind":"users.synced","payload":{"users":[{"tenant_id":"1"},{"email":"x"},{"tenant_id":2}]}}"#,
                vec!["1", "2"],
            ),
            (
                r#"{"kind":"user.upserted","payload":{"email":"x"}}"#,
                vec![],
            ),
            (r#"{"kind":"k","payload":{"tenant_id":1.5}}"#, vec![]),
            ("not json", vec![]),
        ];
        for (body, want) in table {
            assert_eq!(letter(body).tenant_ids(), want, "{body}");
        }
    }

    #[test]
    fn times_read_as_written_by_the_worker_and_by_others() {
        let at = |s: &str| parse_time(s).map(|t| humantime::format_rfc3339_millis(t).to_string());
        let table = [
            ("2025-01-01T00:01:00.000Z", Some("2025-01-01T00:01:00.000Z")),
            ("2025-01-01T00:01:00Z", Some("2025-01-01T00:01:00.000Z")),
            (
                "2025-01-01T00:01:00+00:00",
                Some("2025-01-01T00:01:00.000Z"),
            ),
            ("yesterday", None),
        ];
        for (text, want) in table {
            assert_eq!(at(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn a_letter_reads_its_history_from_the_headers() {
        let mut h = FieldTable::default();
        h.insert(
            headers::ROUTING_KEY.into(),
            headers::long_string("user.upserted"),
        );
        h.insert(
            headers::LAST_FAILED_AT.into(),
            headers::long_string("2025-01-01T00:00:00.000Z"),
        );
        h.insert(
            headers::ERROR_CLASS.into(),
            headers::long_string("permanent"),
        );
        h.insert("x".into(), AMQPValue::Boolean(true));
        let l = DeadLetter::new(
            br#"{"id":"j","kind":"user.upserted","payload":{}}"#.to_vec(),
            "P.jobs",
            BasicProperties::default().with_headers(h),
        );
        assert_eq!((l.id.as_str(), l.kind.as_str()), ("j", "user.upserted"));
        assert_eq!(l.routing_key, "P.jobs");
        assert!(l.failed_at().is_some());
    }
}
