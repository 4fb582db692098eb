//! The messages `dlq` sends: a replay (the job again, on the work exchange, with a fresh attempt
//! count, optionally with an operator's new payload) and the copy of a letter put back at the
//! tail of `P.dead` when the queue is too long to read in place.

use std::time::SystemTime;

use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::{Map, Value};

use super::DeadLetter;
use crate::queue::broker::same_properties;
use crate::queue::headers::{self, long_string};
use crate::queue::settle::copy_properties;

/// One message to publish (with a confirm) before the dead letter it comes from is removed.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// An operator's replacement payload for one job.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    pub payload: Value,
    pub at: SystemTime,
    pub by: Option<String>,
}

/// The job again, to `work_exchange` with its original routing key, its id, its own headers
/// (trace context, an earlier edit record) and none of its failure history.
pub fn replay(letter: &DeadLetter, work_exchange: &str) -> Outgoing {
    let mut fresh = headers::carried_over(Some(&letter.headers), false);
    // A replay is a new send: the job's span becomes a child of this replay (an operator's
    // action), which is what a trace should show; without a tracer this writes nothing.
    let span = crate::trace::producer_span("replay", &letter.kind, Some(&letter.id));
    crate::trace::inject(&span, &mut fresh);
    Outgoing {
        exchange: work_exchange.to_owned(),
        routing_key: letter.kind.clone(),
        body: letter.body.clone(),
        properties: copy_properties(&letter.properties, fresh),
    }
}

/// The envelope with `edit.payload` in place of the old payload. The job id is written into the
/// envelope: when it was a hash of kind and payload, the new payload would otherwise give the
/// job a new id. A body that was not a JSON object is rebuilt from the letter's id and kind.
pub fn edited_envelope(letter: &DeadLetter, payload: Value) -> Value {
    let mut envelope = match serde_json::from_slice::<Value>(&letter.body) {
        Ok(Value::Object(map)) => map,
        _ => {
            let mut map = Map::new();
            map.insert("kind".into(), Value::String(letter.kind.clone()));
            map
        }
    };
    envelope.insert("id".into(), Value::String(letter.id.clone()));
    envelope.insert("payload".into(), payload);
    Value::Object(envelope)
}

/// [`replay`] with the body replaced by `envelope` (already validated by the caller) and the
/// edit recorded in `x-mbprov-edited-at` / `x-mbprov-edited-by`.
pub fn replay_edited(
    letter: &DeadLetter,
    work_exchange: &str,
    envelope: &Value,
    edit: &Edit,
) -> Outgoing {
    let mut out = replay(letter, work_exchange);
    let mut h: FieldTable = out.properties.headers().clone().unwrap_or_default();
    h.insert(
        headers::EDITED_AT.into(),
        long_string(&headers::rfc3339(edit.at)),
    );
    match &edit.by {
        Some(by) => {
            h.insert(headers::EDITED_BY.into(), long_string(by));
        }
        // An earlier editor's name must not stay on someone else's edit.
        None => {
            let mut without = FieldTable::default();
            for (k, v) in h
                .inner()
                .iter()
                .filter(|(k, _)| k.as_str() != headers::EDITED_BY)
            {
                without.insert(k.clone(), v.clone());
            }
            h = without;
        }
    }
    out.body = serde_json::to_vec(envelope).unwrap_or_default();
    out.properties = out.properties.with_headers(h);
    out
}

/// The letter unchanged, back to the tail of `P.dead` through its fanout exchange, with the
/// routing key it had, every property but `user_id` (RabbitMQ refuses a `user_id` that is not
/// the publishing connection's user) and every header, RabbitMQ's `x-death` included.
pub fn rotated(letter: &DeadLetter, dead_exchange: &str) -> Outgoing {
    Outgoing {
        exchange: dead_exchange.to_owned(),
        routing_key: letter.routing_key.clone(),
        body: letter.body.clone(),
        properties: same_properties(&letter.properties, letter.headers.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lapin::types::AMQPValue;
    use serde_json::json;

    use super::*;

    fn dead(body: &str, extra: &[(&str, &str)]) -> DeadLetter {
        let mut h = FieldTable::default();
        h.insert(headers::ERROR_CLASS.into(), long_string("permanent"));
        h.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(3));
        h.insert(headers::ROUTING_KEY.into(), long_string("user.upserted"));
        h.insert("traceparent".into(), long_string("00-t"));
        for (k, v) in extra {
            h.insert((*k).into(), long_string(v));
        }
        DeadLetter::new(
            body.as_bytes().to_vec(),
            "P.jobs",
            BasicProperties::default()
                .with_headers(h)
                .with_message_id("mid".into())
                .with_priority(3),
        )
    }

    fn keys(out: &Outgoing) -> Vec<String> {
        out.properties
            .headers()
            .as_ref()
            .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_replay_keeps_the_job_and_drops_its_history() {
        let l = dead(r#"{"id":"j","kind":"user.upserted","payload":{}}"#, &[]);
        let out = replay(&l, "P");
        assert_eq!(
            (out.exchange.as_str(), out.routing_key.as_str()),
            ("P", "user.upserted")
        );
        assert_eq!(out.body, l.body);
        assert_eq!(keys(&out), vec!["traceparent"]);
        assert_eq!(
            out.properties.message_id().as_ref().map(|m| m.as_str()),
            Some("mid")
        );
    }

    #[test]
    fn an_edit_replaces_the_payload_keeps_the_id_and_is_recorded() {
        let hashed = dead(r#"{"kind":"user.upserted","payload":{"email":"bad"}}"#, &[]);
        let edit = Edit {
            payload: json!({"email": "good@acme.test"}),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            by: Some("ada".into()),
        };
        let envelope = edited_envelope(&hashed, edit.payload.clone());
        assert_eq!(
            envelope,
            json!({"kind": "user.upserted", "payload": {"email": "good@acme.test"}, "id": hashed.id})
        );
        let out = replay_edited(&hashed, "P", &envelope, &edit);
        let body: Value = serde_json::from_slice(&out.body).unwrap_or_default();
        assert_eq!(
            body["id"],
            json!(hashed.id),
            "the hash id is kept, not recomputed"
        );
        assert_eq!(
            keys(&out),
            vec!["traceparent", headers::EDITED_AT, headers::EDITED_BY]
        );
        let h = out.properties.headers().clone().unwrap_or_default();
        assert_eq!(
            headers::get_str(&h, headers::EDITED_AT).as_deref(),
            Some("1970-01-01T00:01:00.000Z")
        );

        let anonymous = Edit { by: None, ..edit };
        let twice = dead(
            r#"{"id":"j","kind":"user.upserted","payload":{}}"#,
            &[(headers::EDITED_BY, "ada")],
        );
        let out = replay_edited(&twice, "P", &envelope, &anonymous);
        assert_eq!(keys(&out), vec!["traceparent", headers::EDITED_AT]);
    }

    #[test]
    fn a_body_that_was_not_an_envelope_is_rebuilt() {
        let l = dead("not json", &[]);
        let envelope = edited_envelope(&l, json!({"email": "a@b.test"}));
        assert_eq!(
            envelope,
            json!({"kind": "user.upserted", "id": l.id, "payload": {"email": "a@b.test"}})
        );
    }

    #[test]
    fn a_rotated_copy_is_the_same_message() {
        let l = dead(r#"{"id":"j"}"#, &[("x-death", "kept")]);
        let out = rotated(&l, "P.dead");
        assert_eq!(
            (out.exchange.as_str(), out.routing_key.as_str()),
            ("P.dead", "P.jobs")
        );
        assert_eq!(out.properties.headers(), l.properties.headers());
        assert_eq!(out.properties.priority(), &Some(3));
        assert_eq!(out.body, l.body);
    }
}
