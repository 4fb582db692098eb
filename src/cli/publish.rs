//! `mbprov publish`: sends job envelopes from files to the work exchange, with publisher
//! confirms, refusing a file outright when any envelope in it is invalid.

use std::io::Read;
use std::process::ExitCode;

use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::Value;
use tracing::Instrument;

use super::status::RetryTierArgs;
use crate::config::BrokerArgs;
use crate::queue::{Broker, QueueError};

/// Largest body the worker accepts (CONTRACT.md section 3); refusing it here saves a dead letter.
const MAX_BODY: usize = 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// Files holding one envelope, a JSON array of envelopes, or one envelope per line; `-` is stdin.
    #[arg(value_name = "FILE", default_value = "-")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub tiers: RetryTierArgs,
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("{file}: cannot read it: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

pub async fn run(args: PublishArgs) -> ExitCode {
    super::report(publish(args).await)
}

async fn publish(args: PublishArgs) -> Result<(), PublishError> {
    // Every file is read and validated before anything is sent, so a bad file publishes nothing.
    let mut batches = Vec::new();
    for file in &args.files {
        let text = read(file)?;
        let envelopes = parse_envelopes(&text).map_err(|reason| PublishError::Invalid {
            file: file.clone(),
            reason,
        })?;
        for (index, envelope) in envelopes.iter().enumerate() {
            validate_for_publish(envelope).map_err(|reason| PublishError::Invalid {
                file: file.clone(),
                reason: format!("envelope at index {index}: {reason}"),
            })?;
        }
        batches.push(envelopes);
    }

    let broker = Broker::connect(&args.broker.amqp_url, args.tiers.topology(&args.broker)).await?;
    let sent = send_all(&broker, &batches).await;
    broker.close().await;
    sent
}

async fn send_all(broker: &Broker, batches: &[Vec<Value>]) -> Result<(), PublishError> {
    let exchange = broker.topology().work_exchange();
    for envelope in batches.iter().flatten() {
        let kind = envelope
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = envelope.get("id").and_then(Value::as_str);
        let body = serde_json::to_vec(envelope).unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        // One producer span per message; the worker's job span becomes its child.
        let span = crate::trace::producer_span("publish", kind, id);
        let mut headers = FieldTable::default();
        crate::trace::inject(&span, &mut headers);
        if !headers.inner().is_empty() {
            properties = properties.with_headers(headers);
        }
        broker
            .publish(&exchange, kind, &body, properties)
            .instrument(span)
            .await?;
        println!("{} {kind}", id.unwrap_or("-"));
    }
    Ok(())
}

fn read(file: &str) -> Result<Vec<u8>, PublishError> {
    let mut text = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut text).map(drop)
    } else {
        std::fs::read(file).map(|t| text = t)
    };
    read.map_err(|source| PublishError::Read {
        file: file.to_owned(),
        source,
    })?;
    Ok(text)
}

/// The envelopes of a file: one JSON value, a JSON array of them, or one per line (any
/// whitespace-separated sequence of JSON values, in fact).
pub fn parse_envelopes(text: &[u8]) -> Result<Vec<Value>, String> {
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(v)) => values.push(v),
            Some(Err(e)) => {
                let line = 1 + text[..start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                return Err(format!("not JSON (entry starting on line {line}): {e}"));
            }
        }
    }
    match values.as_slice() {
        [] => Err("holds no envelope".into()),
        [Value::Array(items)] if items.is_empty() => Err("holds no envelope".into()),
        [Value::Array(items)] => Ok(items.clone()),
        many if many.iter().any(Value::is_array) => {
            Err("a JSON array must be the whole file, not one line of several".into())
        }
        _ => Ok(values),
    }
}

/// The structural check `publish` makes before sending: a JSON object with a non-empty string
/// `kind`, an object `payload`, an `id` of 1 to 200 characters when present, at most 1 MiB.
/// Then the job layer's full validation (known kinds, typed payloads).
pub fn validate_for_publish(envelope: &Value) -> Result<(), String> {
    let Some(object) = envelope.as_object() else {
        return Err("an envelope must be a JSON object".into());
    };
    match object.get("kind") {
        Some(Value::String(kind)) if !kind.is_empty() => {}
        Some(Value::String(_)) => return Err("`kind` is empty".into()),
        Some(_) => return Err("`kind` must be a string".into()),
        None => return Err("`kind` is missing".into()),
    }
    match object.get("payload") {
        Some(Value::Object(_)) => {}
        Some(_) => return Err("`payload` must be an object".into()),
        None => return Err("`payload` is missing".into()),
    }
    match object.get("id") {
        None => {}
        Some(Value::String(id)) if (1..=200).contains(&id.chars().count()) => {}
        Some(Value::String(_)) => return Err("`id` must be 1 to 200 characters".into()),
        Some(_) => return Err("`id` must be a string".into()),
    }
    let body = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
    if body.len() > MAX_BODY {
        return Err(format!(
            "the envelope is {} bytes, more than the 1 MiB limit",
            body.len()
        ));
    }
    // The worker's own validation, so nothing is published that it would dead-letter.
    crate::jobs::envelope::parse(&body, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn file_formats() {
        let one = br#"{"kind":"a","payload":{}}"#;
        let array = br#"[{"kind":"a","payload":{}}, {"kind":"b","payload":{}}]"#;
        let ndjson = b"{\"kind\":\"a\",\"payload\":{}}\n\n{\"kind\":\"b\",\"payload\":{}}\n";
        let pretty = b"{\n  \"kind\": \"a\",\n  \"payload\": {}\n}\n";
        let table: [(&[u8], Result<usize, &str>); 7] = [
            (one, Ok(1)),
            (array, Ok(2)),
            (ndjson, Ok(2)),
            (pretty, Ok(1)),
            (b"  \n", Err("holds no envelope")),
            (b"{\"kind\":\"a\"}\n{oops}\n", Err("line 2")),
            (b"[]\n{\"kind\":\"a\"}", Err("whole file")),
        ];
        for (text, want) in table {
            let got = parse_envelopes(text);
            match want {
                Ok(n) => assert_eq!(
                    got.map(|v| v.len()),
                    Ok(n),
                    "{}",
                    String::from_utf8_lossy(text)
                ),
                Err(part) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(part), "{e:?} should mention {part:?}");
                }
            }
        }
    }

    #[test]
    fn validation_table() {
        let long = "x".repeat(201);
        let table = [
            (
                json!({"kind": "user.deactivated", "payload": {"email": "a@b.test"}}),
                None,
            ),
            (json!({"kind": "a", "payload": {}}), Some("unknown kind")),
            (
                json!({"kind": "user.deactivated", "payload": {"email": "nope"}}),
                Some("payload.email"),
            ),
            (
                json!({"id": "j", "kind": "user.deactivated", "payload": {"email": "a@b.test"}, "metadata": {}}),
                None,
            ),
            (json!([]), Some("JSON object")),
            (json!({"payload": {}}), Some("`kind` is missing")),
            (json!({"kind": "", "payload": {}}), Some("`kind` is empty")),
            (
                json!({"kind": 1, "payload": {}}),
                Some("`kind` must be a string"),
            ),
            (json!({"kind": "a"}), Some("`payload` is missing")),
            (
                json!({"kind": "a", "payload": []}),
                Some("`payload` must be an object"),
            ),
            (
                json!({"id": "", "kind": "a", "payload": {}}),
                Some("1 to 200"),
            ),
            (
                json!({"id": long, "kind": "a", "payload": {}}),
                Some("1 to 200"),
            ),
            (
                json!({"id": 5, "kind": "a", "payload": {}}),
                Some("`id` must be a string"),
            ),
            (
                json!({"kind": "user.upserted", "payload": {"email": "a@b.test",
                       "groups": ["\u{0410}dministrators"]}}),
                Some("payload.groups[0]: \"Аdministrators\" looks like the built-in group"),
            ),
        ];
        for (envelope, want) in table {
            let got = validate_for_publish(&envelope).err();
            match want {
                None => assert_eq!(got, None, "{envelope}"),
                Some(part) => assert!(
                    got.as_deref().unwrap_or("").contains(part),
                    "{envelope}: {got:?}"
                ),
            }
        }
    }
}
