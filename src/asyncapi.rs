//! The AsyncAPI 3 document of mbprov's messaging contract (CONTRACT.md sections 2-4 and 8):
//! the work exchange, one message per job kind (routing key = kind), the headers mbprov reads
//! and writes, the retry tiers and the dead-letter queue.
//!
//! It is generated from the code, like the JSON Schemas: the kinds from [`crate::schema`], the
//! names from [`Topology`], the default retry tiers from the worker's own default of
//! `MBPROV_RETRY_DELAYS`, the header names from [`crate::queue::headers`] and
//! [`crate::trace`]. Payloads are `$ref`s to the schema files beside it in `schema/`, never
//! copies. The checked-in `schema/asyncapi.json` is compared with [`document`] by a test, which
//! also fails when the code writes an `x-mbprov-*` header this document does not list.
//!
//! The payload schemas are JSON Schema 2020-12 documents referenced from AsyncAPI Schema
//! Objects; the features they use (`$defs`, `const`, `oneOf`, `additionalProperties`) read the
//! same in AsyncAPI's draft-07 superset.

use clap::{Args, Command};
use serde_json::{Map, Value, json};

use crate::config::{RetryDelays, WorkerArgs, parse_delays};
use crate::queue::headers;
use crate::queue::retry::{JITTER, RetryPolicy};
use crate::queue::settle::DeadClass;
use crate::queue::topology::{DELIVERY_LIMIT, Topology};

/// The file name inside `schema/`.
pub const FILE: &str = "asyncapi.json";

/// AMQP bindings version the document uses (AsyncAPI bindings for AMQP 0-9-1).
const AMQP_BINDING: &str = "0.3.0";

/// On which messages a header appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// Any job message, from the publisher on (optional).
    Publisher,
    /// A job's copies after a failure: in a retry tier, back on `P.jobs`, in `P.dead`.
    AfterFailure,
    /// Dead letters only.
    DeadOnly,
}

/// One header of the contract.
#[derive(Clone, Debug)]
pub struct Header {
    pub name: &'static str,
    pub carried: Carried,
    pub schema: Value,
}

/// Every header mbprov reads or writes, with its schema. A header added to the code must be
/// added here: the schema test fails otherwise.
pub fn headers() -> Vec<Header> {
    let date_time = |description: &str| json!({"type": "string", "format": "date-time", "description": description});
    vec![
        Header {
            name: crate::trace::TRACEPARENT,
            carried: Carried::Publisher,
            schema: json!({
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C Trace Context `traceparent`. Optional; set by `mbprov publish` and \
                    `mbprov dlq replay`; the worker's job span continues it. Without it, the \
                    envelope's `metadata.trace_id` (32 hex digits or a traceparent value) names \
                    the trace instead.",
                "examples": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            }),
        },
        Header {
            name: crate::trace::TRACESTATE,
            carried: Carried::Publisher,
            schema: json!({"type": "string", "description": "W3C Trace Context `tracestate`, carried with `traceparent`."}),
        },
        Header {
            name: headers::ROUTING_KEY,
            carried: Carried::AfterFailure,
            schema: json!({"type": "string", "description": "The routing key the job was first published with (retry tiers return jobs through the default exchange, which replaces it)."}),
        },
        Header {
            name: headers::ATTEMPTS,
            carried: Carried::AfterFailure,
            schema: json!({"type": "integer", "minimum": 0, "description": "Attempts made so far. Absent on a fresh job; removed by `dlq replay`."}),
        },
        Header {
            name: headers::ERROR,
            carried: Carried::AfterFailure,
            schema: json!({"type": "string", "description": "The last error, as text; never holds a secret."}),
        },
        Header {
            name: headers::FIRST_FAILED_AT,
            carried: Carried::AfterFailure,
            schema: date_time("RFC 3339 time of the first failure, kept across retries."),
        },
        Header {
            name: headers::LAST_FAILED_AT,
            carried: Carried::AfterFailure,
            schema: date_time("RFC 3339 time of the latest failure."),
        },
        Header {
            // CONTRACT.md section 8.
            name: headers::EDITED_AT,
            carried: Carried::AfterFailure,
            schema: date_time(
                "RFC 3339 time at which `mbprov dlq replay ID --payload FILE` replaced the job's payload (keeping its id); stays with the job.",
            ),
        },
        Header {
            name: headers::EDITED_BY,
            carried: Carried::AfterFailure,
            schema: json!({
                "type": "string",
                "description": "Who replaced the payload (`mbprov dlq replay ID --payload FILE --by NAME`); absent when no name was given. Stays with the job.",
            }),
        },
        Header {
            name: crate::queue::migration::MIGRATING_EXPIRATION,
            carried: Carried::AfterFailure,
            schema: json!({
                "type": "string",
                "description": "Only while `mbprov migrate-topology` runs, on a waiting retry held in `{prefix}.retry.migrating`: the message's remaining expiration in milliseconds. Removed when the retry is put into its version 2 tier; no consumer ever sees it.",
            }),
        },
        Header {
            name: headers::ERROR_CLASS,
            carried: Carried::DeadOnly,
            schema: json!({
                "type": "string",
                "enum": [DeadClass::Permanent.as_str(), DeadClass::Exhausted.as_str()],
                "description": "Why the job is dead: `permanent` (the same input would fail the same \
                    way) or `exhausted` (transient failures used every attempt). A message \
                    RabbitMQ dead-lettered at the delivery limit has no mbprov headers but \
                    RabbitMQ's `x-death`; `dlq list` shows it as `delivery-limit`.",
            }),
        },
    ]
}

/// The header names, for the drift test.
pub fn header_names() -> Vec<&'static str> {
    headers().iter().map(|h| h.name).collect()
}

/// The worker's default retry delays, as its command line declares them.
fn default_delays() -> RetryDelays {
    let command = WorkerArgs::augment_args(Command::new("worker"));
    command
        .get_arguments()
        .find(|a| a.get_id() == "retry_delays")
        .and_then(|a| a.get_default_values().first())
        .and_then(|v| v.to_str())
        .and_then(|v| parse_delays(v).ok())
        .unwrap_or_else(|| RetryDelays(vec![]))
}

fn headers_schema(title: &str, include: &[Carried]) -> Value {
    let properties: Map<String, Value> = headers()
        .into_iter()
        .filter(|h| include.contains(&h.carried))
        .map(|h| (h.name.to_owned(), h.schema))
        .collect();
    json!({"type": "object", "title": title, "properties": properties})
}

fn exchange_binding(name: &str, kind: &str) -> Value {
    json!({"amqp": {"is": "routingKey", "exchange": {"name": name, "type": kind, "durable": true,
        "autoDelete": false, "vhost": "/"}, "bindingVersion": AMQP_BINDING}})
}

fn queue_binding(name: &str) -> Value {
    json!({"amqp": {"is": "queue", "queue": {"name": name, "durable": true, "exclusive": false,
        "autoDelete": false, "vhost": "/"}, "bindingVersion": AMQP_BINDING}})
}

fn prefix_parameter() -> Value {
    json!({"prefix": {"$ref": "#/components/parameters/prefix"}})
}

/// One message per kind, `#/components/messages/<kind>`.
fn kind_messages(kinds: &[&str]) -> Map<String, Value> {
    kinds
        .iter()
        .map(|kind| {
            let message = json!({
                "name": kind,
                "title": format!("{kind} job"),
                "summary": format!("An envelope of kind `{kind}`, published with routing key `{kind}`."),
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/jobHeaders"},
                "payload": {"allOf": [
                    {"$ref": "envelope.schema.json"},
                    {"type": "object", "properties": {
                        "kind": {"const": kind},
                        "payload": {"$ref": format!("{kind}.schema.json")},
                    }},
                ]},
                "correlationId": {
                    "description": "The envelope id, the job's idempotency key (else the AMQP message_id, else a hash of kind and payload).",
                    "location": "$message.payload#/id",
                },
                "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": kind,
                    "bindingVersion": AMQP_BINDING}},
            });
            ((*kind).to_owned(), message)
        })
        .collect()
}

/// Refs from a channel's message map, for an operation.
fn channel_message_refs(channel: &str, names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"$ref": format!("#/channels/{channel}/messages/{n}")}))
        .collect()
}

/// The whole document.
pub fn document() -> Value {
    let kinds = crate::schema::kinds();
    let delays = default_delays();
    let topology = Topology::new("{prefix}", RetryPolicy::new(&delays));
    let exchange = topology.work_exchange();
    let jobs = topology.jobs_queue();
    let dead = topology.dead();
    let jitter = (JITTER * 100.0).round();

    let kind_refs: Map<String, Value> = kinds
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                json!({"$ref": format!("#/components/messages/{k}")}),
            )
        })
        .collect();

    let mut channels = Map::new();
    channels.insert("jobs".into(), json!({
        "address": exchange,
        "title": "Work exchange",
        "description": "Topic exchange, durable. Publishers send one envelope per message with routing key = its `kind`, persistent (delivery mode 2), with publisher confirms; the body is at most 1 MiB of JSON.",
        "parameters": prefix_parameter(),
        "messages": kind_refs,
        "bindings": exchange_binding(&exchange, "topic"),
    }));
    channels.insert("jobsQueue".into(), json!({
        "address": jobs,
        "title": "Work queue",
        "description": format!("Quorum queue, durable, bound to `{exchange}` with `#`. Workers consume it with manual acknowledgements and a prefetch of MBPROV_CONCURRENCY. `x-delivery-limit` {DELIVERY_LIMIT}: a message delivered that often without being settled (a job that kills the worker) is dead-lettered by RabbitMQ to `{dead}`. Topology version 2: `x-dead-letter-strategy: at-least-once` and `x-overflow: reject-publish`, so a dead letter is never dropped on the broker's side."),
        "parameters": prefix_parameter(),
        "messages": kind_refs,
        "bindings": queue_binding(&jobs),
    }));
    let mut retry_channels = Vec::new();
    for tier in topology.policy().tiers() {
        let name = topology.retry_queue(tier);
        let key = format!("retry.{}", name.rsplit('.').next().unwrap_or_default());
        channels.insert(key.clone(), json!({
            "address": name,
            "title": format!("Retry tier {}", tier.index + 1),
            "description": format!(
                "Quorum queue (topology version 2, at-least-once dead-lettering, `x-overflow: reject-publish`), durable, no consumer: holds a transiently failed job for {:?} ±{jitter}% (per-message expiration; queue TTL {:?}), then dead-letters it back to `{jobs}` through the default exchange. The tiers follow MBPROV_RETRY_DELAYS (default shown); a job's n-th failure waits in the n-th tier, later ones in the last.",
                tier.base, tier.queue_ttl()),
            "parameters": prefix_parameter(),
            "messages": {"retryingJob": {"$ref": "#/components/messages/retryingJob"}},
            "bindings": queue_binding(&name),
        }));
        retry_channels.push(key);
    }
    channels.insert("deadLetters".into(), json!({
        "address": dead,
        "title": "Dead letters",
        "description": format!("Fanout exchange and classic queue of the same name, durable: jobs that failed permanently or used MBPROV_MAX_ATTEMPTS attempts, each with its original body and routing key. Read with `mbprov dlq list|show`, sent back to `{exchange}` by `mbprov dlq replay` (failure headers removed, fresh trace context)."),
        "parameters": prefix_parameter(),
        "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        "bindings": queue_binding(&dead),
    }));

    let mut operations = Map::new();
    operations.insert("publishJob".into(), json!({
        "action": "send",
        "channel": {"$ref": "#/channels/jobs"},
        "title": "Publish a job",
        "summary": "What product services (and `mbprov publish`, `mbprov dlq replay`) do.",
        "messages": channel_message_refs("jobs", &kinds),
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": false, "bindingVersion": AMQP_BINDING}},
    }));
    operations.insert("consumeJob".into(), json!({
        "action": "receive",
        "channel": {"$ref": "#/channels/jobsQueue"},
        "title": "Run a job",
        "summary": "What `mbprov worker` does: runs the job against Metabase, then acknowledges it, moves it to a retry tier (transient failure), or to the dead letters (permanent failure, or out of attempts).",
        "messages": channel_message_refs("jobsQueue", &kinds),
        "bindings": {"amqp": {"ack": true, "bindingVersion": AMQP_BINDING}},
    }));
    for key in &retry_channels {
        operations.insert(
            format!("{}Job", key.replace('.', "_")),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{key}")},
                "title": "Delay a transiently failed job",
                "messages": channel_message_refs(key, &["retryingJob"]),
            }),
        );
    }
    operations.insert(
        "deadLetterJob".into(),
        json!({
            "action": "send",
            "channel": {"$ref": "#/channels/deadLetters"},
            "title": "Dead-letter a job",
            "messages": channel_message_refs("deadLetters", &["deadLetter"]),
        }),
    );

    let mut messages = kind_messages(&kinds);
    messages.insert(
        "retryingJob".into(),
        json!({
            "name": "retryingJob",
            "title": "A job waiting for its next attempt",
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/failureHeaders"},
            "payload": {"$ref": "envelope.schema.json"},
        }),
    );
    messages.insert("deadLetter".into(), json!({
        "name": "deadLetter",
        "title": "A dead-lettered job",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/deadLetterHeaders"},
        "payload": {"description": "The original body, byte for byte: an envelope (envelope.schema.json), or whatever was published when the job was refused as malformed."},
    }));

    json!({
        "asyncapi": "3.0.0",
        "id": "urn:mbprov:jobs",
        "info": {
            "title": "mbprov jobs",
            "version": "1",
            "description": "Jobs that provision Metabase users, groups, collections and permissions, sent over RabbitMQ (AMQP 0-9-1). Every name is under the prefix P (MBPROV_PREFIX). Generated from mbprov's code; the payloads are the JSON Schemas beside this file.",
            "license": {"name": "Apache-2.0"},
        },
        "servers": {
            "rabbitmq": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker of AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).",
            }
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "parameters": {
                "prefix": {"default": "mbprov", "description": "MBPROV_PREFIX: the prefix of every exchange and queue, so several environments share one broker."},
            },
            "schemas": {
                "jobHeaders": headers_schema("Headers of a job", &[Carried::Publisher, Carried::AfterFailure]),
                "failureHeaders": headers_schema("Headers of a job after a failure", &[Carried::Publisher, Carried::AfterFailure]),
                "deadLetterHeaders": headers_schema("Headers of a dead letter", &[Carried::Publisher, Carried::AfterFailure, Carried::DeadOnly]),
            },
            "messages": messages,
        },
    })
}

/// The file's exact text, as `schema/` keeps it.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_and_one_operation_message_per_kind() {
        let d = document();
        for kind in crate::schema::kinds() {
            let m = &d["components"]["messages"][kind];
            assert_eq!(
                m["payload"]["allOf"][1]["properties"]["payload"]["$ref"],
                format!("{kind}.schema.json")
            );
            assert_eq!(
                d["channels"]["jobs"]["messages"][kind]["$ref"],
                format!("#/components/messages/{kind}")
            );
        }
        let publish = d["operations"]["publishJob"]["messages"]
            .as_array()
            .unwrap();
        assert_eq!(publish.len(), crate::schema::kinds().len());
    }

    #[test]
    fn names_come_from_the_topology_and_default_tiers() {
        let d = document();
        assert_eq!(d["channels"]["jobs"]["address"], "{prefix}");
        assert_eq!(d["channels"]["jobsQueue"]["address"], "{prefix}.jobs");
        assert_eq!(d["channels"]["deadLetters"]["address"], "{prefix}.dead");
        let tiers: Vec<&str> = d["channels"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|c| c["address"].as_str())
            .filter(|a| a.contains(".retry."))
            .collect();
        assert_eq!(
            tiers,
            [
                "{prefix}.retry.v2.5s",
                "{prefix}.retry.v2.30s",
                "{prefix}.retry.v2.2m",
                "{prefix}.retry.v2.10m",
                "{prefix}.retry.v2.1h"
            ]
        );
    }

    #[test]
    fn dead_letters_carry_every_header() {
        let d = document();
        let dead = d["components"]["schemas"]["deadLetterHeaders"]["properties"]
            .as_object()
            .unwrap();
        assert_eq!(dead.len(), headers().len());
        let jobs = d["components"]["schemas"]["jobHeaders"]["properties"]
            .as_object()
            .unwrap();
        assert!(!jobs.contains_key(headers::ERROR_CLASS));
        assert!(jobs.contains_key("traceparent"));
    }
}
