//! The changes waiting for a graph write, shared by every replica in Redis: what makes group
//! commit work across the fleet rather than per process.
//!
//! - `P:graph:<graph>:pending` a stream, one entry per submitted change, in arrival order:
//!   `id` (the submission's id), `v` ([`FORMAT`]), `change` (JSON), `trace` (the job's W3C
//!   `traceparent`, when one is recorded).
//! - `P:graph:<graph>:result:<id>` the outcome of a change, kept [`RESULT_TTL`] for a waiter
//!   that missed its announcement.
//! - channel `P:graph:<graph>:results` announces outcomes as they are settled: a JSON array of
//!   `[id, outcome]` pairs.
//! - `P:graph:<graph>:started` the stream id of the last entry a holder started to write: an
//!   entry at or before it may have been applied in part by a holder that died, so its
//!   shortcuts (a new tenant's collection created without a look-up) are off.
//!
//! Only the holder of the graph's lock reads the stream, and it removes an entry only when it
//! settles it (outcome stored, then announced), so a holder that dies half-way leaves its
//! entries to the next holder, in order. Re-writing them is safe: every change sets absolute
//! values, and a tenant's collection is looked up by its marker before it is created.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use serde::{Deserialize, Serialize};

use crate::error::ErrorClass;
use crate::store::{JobStore, StoreError};

/// The version of an entry's `change` encoding. A holder writes only entries of its own
/// format; the others wait for a replica that has it (in a rolling upgrade, the submitter's
/// own process), so replicas of two versions never misread each other.
pub(super) const FORMAT: &str = "1";

/// How long an outcome is kept for a waiter that missed its announcement.
const RESULT_TTL: Duration = Duration::from_secs(600);
/// How long the started mark is kept: longer than any entry may wait before it expires.
const STARTED_TTL: Duration = Duration::from_secs(3600);

/// Moves the started mark forward only: a holder that lost its lock never moves it back.
const MARK_STARTED: &str = r"
local function parse(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local current = redis.call('GET', KEYS[1])
if current then
  local cm, cs = parse(current)
  local nm, ns = parse(ARGV[1])
  if cm and nm and (cm > nm or (cm == nm and cs >= ns)) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// One change waiting in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The stream's id of the entry (arrival order).
    pub stream_id: String,
    /// The submission's id, which names its outcome.
    pub id: String,
    pub format: String,
    pub change: String,
    pub trace: Option<String>,
}

/// What became of a change, as every replica reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Outcome {
    /// Written and verified; the job's output (JSON).
    Ok(serde_json::Value),
    /// Failed; the class decides what the job does next.
    Err { class: WireClass, message: String },
}

/// [`ErrorClass`] on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum WireClass {
    Transient,
    Permanent,
    Authentication,
    OutcomeUnknown,
}

impl From<ErrorClass> for WireClass {
    fn from(c: ErrorClass) -> Self {
        match c {
            ErrorClass::Transient => WireClass::Transient,
            ErrorClass::Permanent => WireClass::Permanent,
            ErrorClass::Authentication => WireClass::Authentication,
            ErrorClass::OutcomeUnknown => WireClass::OutcomeUnknown,
        }
    }
}

impl From<WireClass> for ErrorClass {
    fn from(c: WireClass) -> Self {
        match c {
            WireClass::Transient => ErrorClass::Transient,
            WireClass::Permanent => ErrorClass::Permanent,
            WireClass::Authentication => ErrorClass::Authentication,
            WireClass::OutcomeUnknown => ErrorClass::OutcomeUnknown,
        }
    }
}

/// A settled change: its entry and what became of it.
pub(super) struct Settled {
    pub stream_id: String,
    pub id: String,
    pub outcome: Outcome,
}

/// The Redis side of one graph's pending changes.
#[derive(Clone)]
pub(super) struct PendingLog {
    conn: ConnectionManager,
    client: redis::Client,
    stream: String,
    results: String,
    result_prefix: String,
    started: String,
}

/// The stream of `graph`'s queued changes under `prefix`.
pub fn stream_key(prefix: &str, graph: &str) -> String {
    format!("{prefix}:graph:{graph}:pending")
}

impl PendingLog {
    pub fn new(store: &JobStore, graph: &str) -> PendingLog {
        let base = format!("{}:graph:{graph}", store.prefix());
        PendingLog {
            conn: store.connection(),
            client: store.client(),
            stream: stream_key(store.prefix(), graph),
            results: format!("{base}:results"),
            result_prefix: format!("{base}:result:"),
            started: format!("{base}:started"),
        }
    }

    /// The channel outcomes are announced on.
    pub fn results_channel(&self) -> &str {
        &self.results
    }

    /// A client for the dedicated connection the announcements are subscribed on.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Appends a change; returns its stream id.
    pub async fn push(
        &self,
        id: &str,
        change: &str,
        trace: Option<&str>,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let mut fields = vec![("id", id), ("v", FORMAT), ("change", change)];
        if let Some(trace) = trace {
            fields.push(("trace", trace));
        }
        conn.xadd(&self.stream, "*", &fields)
            .await
            .map_err(command("queue a graph change"))
    }

    /// Up to `count` entries after `after` (a stream id, exclusive; `None`: from the start),
    /// and Redis's clock in Unix milliseconds, read in the same round trip: the clock that
    /// stamped the entries' stream ids, so their age does not depend on the holder's clock.
    pub async fn read(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<(Vec<Entry>, u64), StoreError> {
        let mut conn = self.conn.clone();
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let (reply, (secs, micros)): (StreamRangeReply, (u64, u64)) = redis::pipe()
            .xrange_count(&self.stream, start, "+", count)
            .cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(command("read the pending graph changes"))?;
        let entries = reply
            .ids
            .into_iter()
            .map(|e| Entry {
                id: e.get("id").unwrap_or_default(),
                format: e.get("v").unwrap_or_default(),
                change: e.get("change").unwrap_or_default(),
                trace: e.get("trace"),
                stream_id: e.id,
            })
            .collect();
        Ok((entries, secs * 1000 + micros / 1000))
    }

    /// Records that a holder starts writing the entries up to `stream_id`.
    pub async fn mark_started(&self, stream_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::Script::new(MARK_STARTED)
            .key(&self.started)
            .arg(stream_id)
            .arg(STARTED_TTL.as_secs())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(command("mark graph changes started"))
    }

    /// The stream id of the last entry a holder started to write.
    pub async fn started(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(&self.started)
            .await
            .map_err(command("read the started mark"))
    }

    /// Stores each outcome, removes the entries, then announces the outcomes: a waiter that
    /// hears of its outcome can always read it, and an entry never disappears unsettled.
    pub async fn settle(&self, settled: &[Settled]) -> Result<(), StoreError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut announced = Vec::with_capacity(settled.len());
        for s in settled {
            let outcome = serde_json::to_string(&s.outcome).unwrap_or_default();
            pipe.set_ex(
                format!("{}{}", self.result_prefix, s.id),
                &outcome,
                RESULT_TTL.as_secs(),
            )
            .ignore();
            announced.push((s.id.as_str(), &s.outcome));
        }
        let ids: Vec<&str> = settled.iter().map(|s| s.stream_id.as_str()).collect();
        pipe.xdel(&self.stream, &ids).ignore();
        let message = serde_json::to_string(&announced).unwrap_or_default();
        pipe.publish(&self.results, message).ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(command("settle graph changes"))
    }

    /// The stored outcome of a change, if it was settled.
    pub async fn outcome(&self, id: &str) -> Result<Option<Outcome>, StoreError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn
            .get(format!("{}{id}", self.result_prefix))
            .await
            .map_err(command("read a graph change's outcome"))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Removes an entry nobody will wait for any more (its job gave up); a holder already
    /// writing it still may, which is harmless (absolute values).
    pub async fn withdraw(&self, stream_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.xdel::<_, _, ()>(&self.stream, &[stream_id])
            .await
            .map_err(command("withdraw a graph change"))
    }
}

/// Parses an announcement: the `[id, outcome]` pairs it carries (nothing when malformed).
pub(super) fn parse_announcement(text: &str) -> Vec<(String, Outcome)> {
    serde_json::from_str(text).unwrap_or_default()
}

fn command(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Command { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_written() {
        let cases = [
            Outcome::Ok(serde_json::json!(null)),
            Outcome::Ok(serde_json::json!(42)),
            Outcome::Err {
                class: WireClass::Permanent,
                message: "HTTP 400: no".into(),
            },
            Outcome::Err {
                class: WireClass::OutcomeUnknown,
                message: "timed out".into(),
            },
        ];
        for outcome in cases {
            let text = serde_json::to_string(&[("a", &outcome)]).unwrap();
            assert_eq!(parse_announcement(&text), vec![("a".to_owned(), outcome)]);
        }
    }

    #[test]
    fn a_malformed_announcement_carries_nothing() {
        for text in ["", "{}", "[[1, 2]]", "not json"] {
            assert!(parse_announcement(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn every_class_crosses_the_wire_unchanged() {
        for class in [
            ErrorClass::Transient,
            ErrorClass::Permanent,
            ErrorClass::Authentication,
            ErrorClass::OutcomeUnknown,
        ] {
            assert_eq!(ErrorClass::from(WireClass::from(class)), class);
        }
    }
}
