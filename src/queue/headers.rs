//! The `x-mbprov-*` headers that carry a job's failure history through retry tiers and into
//! `P.dead`, and how a dead letter's headers are read back (CONTRACT.md section 2).

use std::time::SystemTime;

use lapin::types::{AMQPValue, FieldTable, LongString};

/// Attempts made so far (integer). Absent on a fresh job.
pub const ATTEMPTS: &str = "x-mbprov-attempts";
/// The last error (text, never a secret).
pub const ERROR: &str = "x-mbprov-error";
/// `permanent`, `exhausted` (ours) on a dead letter.
pub const ERROR_CLASS: &str = "x-mbprov-error-class";
/// RFC 3339 time of the first failure, kept across retries.
pub const FIRST_FAILED_AT: &str = "x-mbprov-first-failed-at";
/// RFC 3339 time of the latest failure.
pub const LAST_FAILED_AT: &str = "x-mbprov-last-failed-at";
/// The routing key the job was published with. Retry tiers send jobs back to `P.jobs` through
/// the default exchange, which replaces the routing key with the queue name; this keeps it.
pub const ROUTING_KEY: &str = "x-mbprov-routing-key";

/// RFC 3339 time an operator replaced the job's payload (`dlq replay ID --payload FILE`). Kept
/// by every later retry and replay: the body is still the edited one.
pub const EDITED_AT: &str = "x-mbprov-edited-at";
/// Who did (`--by`), when given.
pub const EDITED_BY: &str = "x-mbprov-edited-by";

/// Our headers that a replay keeps; the rest of `x-mbprov-*` is failure history.
const KEPT_ON_REPLAY: [&str; 2] = [EDITED_AT, EDITED_BY];

/// Headers RabbitMQ adds when it dead-letters or redelivers; a republished copy drops them so
/// that its history is ours alone and RabbitMQ starts its own afresh.
const BROKER_HEADERS: [&str; 6] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
    "x-last-death-reason",
];

/// The error class of a dead letter, as `dlq list` shows it.
pub const CLASS_DELIVERY_LIMIT: &str = "delivery-limit";

/// Now, the way every `*-failed-at` header is written.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A header as text, whichever string type the publisher used.
pub fn get_str(headers: &FieldTable, key: &str) -> Option<String> {
    value_str(headers.inner().get(key)?)
}

fn value_str(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header as an integer, whichever integer type the publisher used (negative reads as 0).
pub fn get_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let n: i128 = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        other => value_str(other)?.trim().parse().ok()?,
    };
    Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// The message's headers without RabbitMQ's dead-letter history and, when `keep_ours` is false,
/// without our failure history (an edit record stays): the starting point of every
/// republished copy.
pub fn carried_over(headers: Option<&FieldTable>, keep_ours: bool) -> FieldTable {
    let mut out = FieldTable::default();
    for (key, value) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        let k = key.as_str();
        let history = k.starts_with("x-mbprov-") && !KEPT_ON_REPLAY.contains(&k);
        if BROKER_HEADERS.contains(&k) || (!keep_ours && history) {
            continue;
        }
        out.insert(key.clone(), value.clone());
    }
    out
}

/// The job's original routing key: ours when it went through a retry tier, else the delivery's.
pub fn original_routing_key(headers: Option<&FieldTable>, delivery_key: &str) -> String {
    headers
        .and_then(|h| get_str(h, ROUTING_KEY))
        .unwrap_or_else(|| delivery_key.to_owned())
}

/// What a dead letter says about why it is dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeathNote {
    /// `permanent`, `exhausted`, `delivery-limit`, or `unknown`.
    pub class: String,
    pub error: String,
    pub attempts: u32,
    /// RFC 3339, when known.
    pub last_failed_at: Option<String>,
}

/// Reads our headers, or RabbitMQ's `x-death` when the delivery limit dead-lettered the message
/// before the worker could say anything (a job that kills the process has no last words).
pub fn death_note(headers: Option<&FieldTable>) -> DeathNote {
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty);
    let attempts = get_u32(headers, ATTEMPTS).unwrap_or(0);
    if let Some(class) = get_str(headers, ERROR_CLASS) {
        return DeathNote {
            class,
            error: get_str(headers, ERROR).unwrap_or_default(),
            attempts,
            last_failed_at: get_str(headers, LAST_FAILED_AT),
        };
    }
    // The most recent death comes first in `x-death`.
    let latest = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().iter().find_map(|d| match d {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    match latest {
        Some(death) => {
            let reason = get_str(&death, "reason").unwrap_or_else(|| "unknown".into());
            let queue = get_str(&death, "queue").unwrap_or_default();
            let time = match death.inner().get("time") {
                Some(AMQPValue::Timestamp(secs)) => Some(rfc3339(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(*secs),
                )),
                _ => None,
            };
            DeathNote {
                class: CLASS_DELIVERY_LIMIT.into(),
                error: format!("dead-lettered by RabbitMQ from {queue}: {reason}"),
                attempts,
                last_failed_at: time,
            }
        }
        None => DeathNote {
            class: "unknown".into(),
            error: String::new(),
            attempts,
            last_failed_at: None,
        },
    }
}

/// Every header as JSON, for `dlq show` (tables and arrays nested, bytes as lossy text).
pub fn to_json(headers: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        headers
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Float(f) => J::from(*f),
        AMQPValue::Double(f) => J::from(*f),
        AMQPValue::Timestamp(secs) => J::String(rfc3339(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(*secs),
        )),
        AMQPValue::FieldArray(a) => J::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::FieldTable(t) => to_json(t),
        AMQPValue::ByteArray(b) => J::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::Void => J::Null,
        other => value_str(other)
            .map(J::String)
            .unwrap_or_else(|| J::String(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn attempts_read_from_any_integer_or_text() {
        let table_ = [
            (AMQPValue::LongLongInt(3), Some(3)),
            (AMQPValue::LongInt(4), Some(4)),
            (AMQPValue::ShortShortUInt(2), Some(2)),
            (AMQPValue::LongLongInt(-1), Some(0)),
            (long_string("7"), Some(7)),
            (long_string("seven"), None),
            (AMQPValue::Boolean(true), None),
        ];
        for (value, want) in table_ {
            assert_eq!(
                get_u32(&table(&[(ATTEMPTS, value.clone())]), ATTEMPTS),
                want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn our_headers_win_over_x_death() {
        let h = table(&[
            (ERROR_CLASS, long_string("permanent")),
            (ERROR, long_string("bad payload")),
            (ATTEMPTS, AMQPValue::LongLongInt(1)),
            (LAST_FAILED_AT, long_string("2025-01-01T00:00:00.000Z")),
            ("x-death", AMQPValue::FieldArray(FieldArray::default())),
        ]);
        let note = death_note(Some(&h));
        assert_eq!(note.class, "permanent");
        assert_eq!(note.error, "bad payload");
        assert_eq!(note.attempts, 1);
    }

    #[test]
    fn x_death_alone_means_the_delivery_limit() {
        let death = table(&[
            ("reason", long_string("delivery_limit")),
            ("queue", long_string("P.jobs")),
            ("time", AMQPValue::Timestamp(0)),
        ]);
        let h = table(&[(
            "x-death",
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        )]);
        let note = death_note(Some(&h));
        assert_eq!(note.class, CLASS_DELIVERY_LIMIT);
        assert!(note.error.contains("delivery_limit"), "{}", note.error);
        assert_eq!(
            note.last_failed_at.as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn carried_over_drops_broker_history_and_optionally_ours() {
        let h = table(&[
            ("x-death", AMQPValue::FieldArray(FieldArray::default())),
            ("x-delivery-count", AMQPValue::LongLongInt(2)),
            (ATTEMPTS, AMQPValue::LongLongInt(2)),
            ("traceparent", long_string("00-abc")),
        ]);
        let kept: Vec<String> = carried_over(Some(&h), true)
            .inner()
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(kept, vec!["traceparent", ATTEMPTS]);
        let fresh = carried_over(Some(&h), false);
        assert_eq!(fresh.inner().len(), 1);

        let edited = table(&[
            (ATTEMPTS, AMQPValue::LongLongInt(2)),
            (EDITED_AT, long_string("2026-12-01T00:00:00.000Z")),
            (EDITED_BY, long_string("ada")),
        ]);
        let kept: Vec<String> = carried_over(Some(&edited), false)
            .inner()
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            kept,
            vec![EDITED_AT, EDITED_BY],
            "an edit record survives a replay"
        );
    }
}
