//! The job id rule of CONTRACT.md section 3, in one place: the worker's de-duplication, `dlq`
//! and `publish` must all name a job the same way.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The id of the job in `body`: the envelope's `id` (a non-empty string), else the AMQP
/// `message_id` (non-empty), else the SHA-256 (lower-case hex) of the envelope's `kind`, one NUL
/// byte, and its `payload` as canonical JSON (object keys sorted at every level, no spaces).
/// A missing `kind` reads as `""`, a missing `payload` as `null`; a body that is not JSON at all
/// hashes as its raw bytes. Two publishes of the same kind and payload get the same id, whatever
/// the key order they were written in.
pub fn envelope_id(body: &[u8], message_id: Option<&str>) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(id) = parsed
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    {
        return id.to_owned();
    }
    if let Some(id) = message_id.filter(|id| !id.is_empty()) {
        return id.to_owned();
    }
    let mut hasher = Sha256::new();
    match parsed {
        Some(envelope) => {
            let kind = envelope.get("kind").and_then(Value::as_str).unwrap_or("");
            let payload = envelope.get("payload").cloned().unwrap_or(Value::Null);
            hasher.update(kind.as_bytes());
            hasher.update([0u8]);
            hasher.update(canonical_json(&payload).as_bytes());
        }
        None => hasher.update(body),
    }
    hex::encode(hasher.finalize())
}

/// JSON with object keys sorted at every level: the crate keeps insertion order (serde_json's
/// `preserve_order`), so the order must be imposed before hashing.
pub fn canonical_json(value: &Value) -> String {
    sorted(value).to_string()
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_in_order() {
        let hash_of_kind_and_payload = {
            let mut h = Sha256::new();
            h.update(b"user.deactivated\0{\"a\":1,\"email\":\"x\"}");
            hex::encode(h.finalize())
        };
        let table: [(&str, Option<&str>, String); 6] = [
            (
                r#"{"id":"job-1","kind":"k","payload":{}}"#,
                Some("mid"),
                "job-1".into(),
            ),
            (
                r#"{"id":"","kind":"k","payload":{}}"#,
                Some("mid"),
                "mid".into(),
            ),
            (
                r#"{"id":7,"kind":"k","payload":{}}"#,
                Some("mid"),
                "mid".into(),
            ),
            (
                r#"{"kind":"k","payload":{}}"#,
                Some(""),
                envelope_id(br#"{"kind":"k","payload":{}}"#, None),
            ),
            (
                r#"{"kind":"user.deactivated","payload":{"email":"x","a":1}}"#,
                None,
                hash_of_kind_and_payload.clone(),
            ),
            (
                r#"{"payload":{"a":1,"email":"x"},"kind":"user.deactivated"}"#,
                None,
                hash_of_kind_and_payload,
            ),
        ];
        for (body, message_id, want) in table {
            assert_eq!(envelope_id(body.as_bytes(), message_id), want, "{body}");
        }
    }

    #[test]
    fn non_json_hashes_the_raw_body() {
        let id = envelope_id(b"not json", None);
        assert_eq!(id.len(), 64);
        assert_eq!(id, hex::encode(Sha256::digest(b"not json")));
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let v: Value = serde_json::from_str(r#"{"b":[{"z":1,"y":2}],"a":null}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":[{"y":2,"z":1}]}"#);
    }
}
