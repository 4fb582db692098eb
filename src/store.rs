//! The worker's shared memory in Redis: which jobs already completed, which Metabase id a name
//! resolved to, and the locks that serialise writes across replicas.
//!
//! Every key lives under the prefix P (`MBPROV_PREFIX`), so environments and parallel tests can
//! share one Redis:
//! - `P:done:<job id>`       a completed job (CONTRACT.md section 3), kept for 7 days
//! - `P:map:<kind>:<name>`   a cached Metabase id for a name (groups pass case-folded names)
//! - `P:lock:entity:<name>`  a short lock around one entity (a group, a user)
//! - `P:lock:graph:<graph>`  the lock around writes of a permission graph (CONTRACT.md section 6)
//! - `P:graph:data:revision` the data-graph revision the last mbprov write left
//! - `P:graph:collection:rows` the collection graph as of one revision, a hash: `revision`,
//!   `taken_at` (Unix seconds of the whole read it started from), and one field per collection
//!   (`root` or its id) holding that collection's cells as JSON. It only moves forward: a
//!   replacement at a lower revision than the stored one is ignored.
//! - `P:graph:collection:creation_bumps` whether creating a collection was seen to bump the
//!   revision on this instance (`confirmed` or `refuted`), kept for a day
//! - `P:map:tenant-collection:<tenant id>` the cached id of a tenant's collection (the marker
//!   in Metabase is the truth; see `graph::tenant_marker`)
//! - `P:graph:<graph>:pending`, `P:graph:<graph>:result:<id>` and the channel
//!   `P:graph:<graph>:results`: the changes waiting for a graph write and their outcomes,
//!   shared by every replica (see `graph_writer::pending`)

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Classify, ErrorClass};
use crate::graph::snapshot::{Row, Snapshot};
use crate::lock::{RedisLock, SIGNALLED_POLL};
use crate::metabase::models::CollectionKey;

/// Moves the stored snapshot from one revision to the next, only if it is still at the first:
/// a writer that lost its lock can never mix its rows into a newer snapshot.
const ADVANCE_SNAPSHOT: &str = r"
if redis.call('HGET', KEYS[1], 'revision') ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], 'revision', ARGV[2])
return 1
";

/// Replaces the snapshot, unless the stored one is at a higher revision: a slow writer's older
/// whole read never moves it back. ARGV: revision, taken_at, then field/value pairs.
const REPLACE_SNAPSHOT: &str = r"
local current = redis.call('HGET', KEYS[1], 'revision')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'revision', ARGV[1], 'taken_at', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
";

/// How long a finding about creations and the revision is trusted (an upgrade may change it).
const CREATION_BUMPS_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a completed job id is remembered (CONTRACT.md section 3).
pub const DONE_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A reply slower than this is treated as an outage: jobs retry later rather than hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis failure. Messages never include the URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    #[error("redis failed to {op}: {source}")]
    Command {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// The job store. Cheap to clone: clones share one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct JobStore {
    conn: ConnectionManager,
    /// Opens the dedicated connections lock waiters subscribe on (release signal).
    client: redis::Client,
    prefix: String,
    done_ttl: Duration,
}

impl JobStore {
    /// Connects to `redis_url` (`redis://` or `rediss://`) and checks the connection.
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<JobStore, StoreError> {
        let client = redis::Client::open(redis_url).map_err(StoreError::Connect)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(StoreError::Connect)?;
        Ok(JobStore {
            conn,
            client,
            prefix: prefix.to_owned(),
            done_ttl: DONE_TTL,
        })
    }

    /// Remember completed jobs for `ttl` instead of [`DONE_TTL`] (tests).
    pub fn with_done_ttl(mut self, ttl: Duration) -> JobStore {
        self.done_ttl = ttl;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared connection, for callers that need Redis beyond this API.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A client for dedicated connections (subscriptions), which a multiplexed one cannot carry.
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// Whether Redis answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(command("ping"))?;
        Ok(())
    }

    /// Whether a job with this id completed within the last [`DONE_TTL`].
    pub async fn is_done(&self, job_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        conn.exists(self.done_key(job_id))
            .await
            .map_err(command("check a completed job"))
    }

    /// Records that a job's effect is complete; a redelivery of it is then acknowledged unrun.
    pub async fn mark_done(&self, job_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let millis = u64::try_from(self.done_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        conn.pset_ex::<_, _, ()>(self.done_key(job_id), 1, millis)
            .await
            .map_err(command("record a completed job"))
    }

    /// The cached Metabase id of `name` among `kind` (e.g. `group`, `user`, `collection`).
    pub async fn get_id(&self, kind: &str, name: &str) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(self.map_key(kind, name))
            .await
            .map_err(command("read a cached id"))
    }

    pub async fn set_id(&self, kind: &str, name: &str, id: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set::<_, _, ()>(self.map_key(kind, name), id)
            .await
            .map_err(command("cache an id"))
    }

    /// Drops a cached id, e.g. after Metabase answered 404 for it.
    pub async fn forget_id(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(self.map_key(kind, name))
            .await
            .map_err(command("forget a cached id"))
    }

    /// The revision of `graph` after the last write any mbprov writer made (`P:graph:<graph>:revision`).
    /// Writers hold the graph lock, so this is the current revision unless someone outside
    /// mbprov wrote since; a stale one costs a 409 and a re-read, never a lost update.
    pub async fn last_revision(&self, graph: &str) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(format!("{}:graph:{graph}:revision", self.prefix))
            .await
            .map_err(command("read the last graph revision"))
    }

    pub async fn set_last_revision(&self, graph: &str, revision: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set::<_, _, ()>(format!("{}:graph:{graph}:revision", self.prefix), revision)
            .await
            .map_err(command("record the last graph revision"))
    }

    /// The stored collection-graph snapshot, with only the rows in `keys` (`None`: all rows);
    /// `None` when there is none, when its whole read is older than `max_age`, or when it
    /// cannot be read back (all the same to a writer: it reads the whole graph).
    pub async fn load_snapshot(
        &self,
        keys: Option<&std::collections::BTreeSet<CollectionKey>>,
        max_age: Duration,
    ) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.snapshot_key();
        let fields: Vec<(String, String)> = match keys {
            None => conn
                .hgetall(&key)
                .await
                .map_err(command("read the graph snapshot"))?,
            Some(keys) => {
                let mut names = vec!["revision".to_string(), "taken_at".to_string()];
                names.extend(keys.iter().map(ToString::to_string));
                let values: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&names)
                    .query_async(&mut conn)
                    .await
                    .map_err(command("read the graph snapshot"))?;
                names
                    .into_iter()
                    .zip(values)
                    .filter_map(|(n, v)| v.map(|v| (n, v)))
                    .collect()
            }
        };
        Ok(parse_snapshot(
            fields,
            unix_now().saturating_sub(max_age.as_secs()),
        ))
    }

    /// Stores `next` in place of the snapshot at revision `base` (only the `changed` rows are
    /// sent). False when the stored snapshot is no longer at `base`: another writer moved it.
    pub async fn advance_snapshot(
        &self,
        base: i64,
        next: &Snapshot,
        changed: &std::collections::BTreeSet<CollectionKey>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(ADVANCE_SNAPSHOT);
        let mut call = script.key(self.snapshot_key());
        call.arg(base).arg(next.revision);
        for key in changed {
            call.arg(key.to_string()).arg(row_value(next.rows.get(key)));
        }
        let moved: i64 = call
            .invoke_async(&mut conn)
            .await
            .map_err(command("advance the graph snapshot"))?;
        Ok(moved == 1)
    }

    /// Replaces the stored snapshot with `snapshot`, which holds every row of the graph, unless
    /// the stored one is newer. True when replaced.
    pub async fn replace_snapshot(&self, snapshot: &Snapshot) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(REPLACE_SNAPSHOT);
        let mut call = script.key(self.snapshot_key());
        call.arg(snapshot.revision).arg(unix_now());
        for (collection, row) in &snapshot.rows {
            if !row.is_empty() {
                call.arg(collection.to_string()).arg(row_value(Some(row)));
            }
        }
        let replaced: i64 = call
            .invoke_async(&mut conn)
            .await
            .map_err(command("store the graph snapshot"))?;
        Ok(replaced == 1)
    }

    /// Whether creating a collection was seen to bump the collection-graph revision
    /// (`confirmed`, `refuted`), as recorded by any replica.
    pub async fn creation_bumps(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.get(self.creation_bumps_key())
            .await
            .map_err(command("read the creation finding"))
    }

    pub async fn set_creation_bumps(&self, finding: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(
            self.creation_bumps_key(),
            finding,
            CREATION_BUMPS_TTL.as_secs(),
        )
        .await
        .map_err(command("record the creation finding"))
    }

    /// Drops the snapshot: the next write reads the whole graph.
    pub async fn forget_snapshot(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(self.snapshot_key())
            .await
            .map_err(command("drop the graph snapshot"))
    }

    /// A short lock around one entity: `P:lock:entity:<name>`.
    pub fn lock(&self, name: &str, ttl: Duration) -> RedisLock {
        RedisLock::new(
            self.conn.clone(),
            format!("{}:lock:entity:{name}", self.prefix),
            ttl,
        )
        .with_release_signal(self.client.clone(), SIGNALLED_POLL)
    }

    /// The lock around writes of a permission graph (`data` or `collection`):
    /// `P:lock:graph:data`, `P:lock:graph:collection`.
    pub fn graph_lock(&self, graph: &str, ttl: Duration) -> RedisLock {
        RedisLock::new(
            self.conn.clone(),
            format!("{}:lock:graph:{graph}", self.prefix),
            ttl,
        )
        .with_release_signal(self.client.clone(), SIGNALLED_POLL)
    }

    fn creation_bumps_key(&self) -> String {
        format!("{}:graph:collection:creation_bumps", self.prefix)
    }

    fn snapshot_key(&self) -> String {
        format!("{}:graph:collection:rows", self.prefix)
    }

    fn done_key(&self, job_id: &str) -> String {
        format!("{}:done:{job_id}", self.prefix)
    }

    fn map_key(&self, kind: &str, name: &str) -> String {
        format!("{}:map:{kind}:{name}", self.prefix)
    }
}

/// A row as stored; an empty row is deleted rather than stored.
fn row_value(row: Option<&Row>) -> String {
    match row {
        Some(row) if !row.is_empty() => serde_json::to_string(row).unwrap_or_default(),
        _ => String::new(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The snapshot in `fields`, if it is whole and its read was taken at or after `not_before`.
fn parse_snapshot(fields: Vec<(String, String)>, not_before: u64) -> Option<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut revision = None;
    let mut taken_at: Option<u64> = None;
    for (name, value) in fields {
        if name == "revision" {
            revision = Some(value.parse().ok()?);
        } else if name == "taken_at" {
            taken_at = Some(value.parse().ok()?);
        } else {
            let key: CollectionKey = name.parse().ok()?;
            let row: Row = serde_json::from_str(&value).ok()?;
            snapshot.rows.insert(key, row);
        }
    }
    if taken_at? < not_before {
        return None;
    }
    snapshot.revision = revision?;
    Some(snapshot)
}

fn command(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Command { op, source }
}
