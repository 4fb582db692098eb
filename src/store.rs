//! The worker's shared memory in Redis: which jobs already completed, which Metabase id a name
//! resolved to, and the locks that serialise writes across replicas.
//!
//! Every key lives under the prefix P (`MBPROV_PREFIX`), so environments and parallel tests can
//! share one Redis:
//! - `P:done:<job id>`       a completed job (CONTRACT.md section 3), kept for 7 days
//! - `P:map:<kind>:<name>`   a cached Metabase id for a name (groups pass case-folded names)
//! - `P:lock:entity:<name>`  a short lock around one entity (a group, a user)
//! - `P:lock:graph:<graph>`  the lock around writes of a permission graph (CONTRACT.md section 6)

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Classify, ErrorClass};
use crate::lock::RedisLock;

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
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::Connect)?;
        Ok(JobStore {
            conn,
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

    /// A short lock around one entity: `P:lock:entity:<name>`.
    pub fn lock(&self, name: &str, ttl: Duration) -> RedisLock {
        RedisLock::new(
            self.conn.clone(),
            format!("{}:lock:entity:{name}", self.prefix),
            ttl,
        )
    }

    /// The lock around writes of a permission graph (`data` or `collection`):
    /// `P:lock:graph:data`, `P:lock:graph:collection`.
    pub fn graph_lock(&self, graph: &str, ttl: Duration) -> RedisLock {
        RedisLock::new(
            self.conn.clone(),
            format!("{}:lock:graph:{graph}", self.prefix),
            ttl,
        )
    }

    fn done_key(&self, job_id: &str) -> String {
        format!("{}:done:{job_id}", self.prefix)
    }

    fn map_key(&self, kind: &str, name: &str) -> String {
        format!("{}:map:{kind}:{name}", self.prefix)
    }
}

fn command(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Command { op, source }
}
