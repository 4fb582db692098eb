//! The one way mbprov writes a permission graph: coalesced across the fleet, locked,
//! revision-fenced, verified.
//!
//! A job's change goes into the graph's queue in Redis ([`pending`]), shared by every replica,
//! and the job waits for its outcome ([`waiters`]). Each process has one writer task per graph
//! that competes for the graph's Redis lock while any change of its own waits; whoever holds
//! the lock takes every change waiting, from every replica, in arrival order, merges them (later
//! wins), writes them in one partial PUT under the revision fence, verifies, and settles each
//! change's outcome for its job, wherever it runs. So a write is sent at once when none is in
//! flight, and what arrives while one is goes into the next: group commit across replicas
//! without idle waiting. A waiter learns of the lock's release from its signal (see
//! [`crate::lock`]), and a job whose change was written by another replica hears of it at once.
//! It never sends `force`: the revision is what keeps administrators' changes.
//!
//! On a 409 or 500 (a writer outside mbprov racing on the revision row) the holder re-reads and
//! re-applies, pausing with the lock held: the changes queued behind must not overtake the ones
//! in hand. Each attempt is bounded by [`WriterConfig::lock_budget`]. A merged write Metabase
//! refuses with a 400 (or that the policy refuses) is split in halves and retried, so only the
//! jobs whose change caused it fail; any other failure (401, 403, 404, 5xx, a timeout) is the
//! same for every half, so the batch fails as a whole and its jobs are retried. A holder that
//! dies or loses the lock leaves its changes queued, and the next holder writes them (every
//! change sets absolute values, so writing one twice is harmless). A job that hears nothing
//! withdraws its change and is retried; a change whose job can no longer be waiting is dropped,
//! never written late.
//!
//! The tasks are supervised: a task that panics is restarted (the changes in hand stay queued
//! and are written by the next holder), and [`GraphWriter::healthy`] turns false when one keeps
//! dying, for readiness.
//!
//! Modules: [`data`] writes the data graph; [`collection`] the collection graph, including a
//! tenant's collection as one unit of work ([`tenant`]); [`snapshot_cache`] keeps the collection
//! graph's rows in Redis.

mod collection;
mod data;
mod holder;
mod pending;
mod snapshot_cache;
mod tenant;
mod tenant_rename;
mod waiters;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Classify, ErrorClass};
use crate::graph::data::DataChange;
use crate::graph::snapshot_rules::CreationBumps;
use crate::graph::{CollectionOp, Features};
use crate::lock::{LockError, LockGuard};
use crate::metabase::models::Version;
use crate::metabase::{MetabaseClient, MetabaseError};
use crate::store::{JobStore, StoreError};

use pending::PendingLog;
use waiters::Waiters;

pub use collection::CollectionWork;
pub use tenant::TenantCollection;
pub use tenant_rename::TenantRename;

/// The graphs a writer serves, by the names their Redis keys and locks use.
pub const GRAPHS: [&str; 2] = ["data", "collection"];

/// Changes queued for `graph` by every replica and not yet settled (`mbprov status`).
pub async fn queued_changes(
    conn: &mut redis::aio::ConnectionManager,
    prefix: &str,
    graph: &str,
) -> Result<usize, redis::RedisError> {
    redis::AsyncCommands::xlen(conn, pending::stream_key(prefix, graph)).await
}

/// Finding a tenant's collection by its marker outside the writer (`tenant.deleted`).
pub mod tenant_collection {
    pub use super::tenant::{find_for_deletion, forget};
}

/// Attempts (each after a pause) before the write is given back to the queue as transient.
const MAX_CONFLICTS: u32 = 8;
/// Most changes merged into one write.
const MAX_BATCH: usize = 64;
/// A writer task that panics this many times within [`PANIC_WINDOW`] is left dead and the
/// writer reports itself unhealthy: restarting it would only fail the same jobs again.
const MAX_PANICS: u32 = 5;
const PANIC_WINDOW: Duration = Duration::from_secs(60);
/// How often a waiting job reads its stored outcome, in case it missed the announcement.
const OUTCOME_POLL: Duration = Duration::from_secs(1);
/// Pause of a writer task that could not ask for the lock (Redis unreachable).
const LOCK_ERROR_PAUSE: Duration = Duration::from_millis(500);
/// Margin past a job's longest wait after which its queued change is dropped unwritten: its
/// job has given up (and withdrawn it, unless it died), and a late write could undo newer
/// changes. Ages are read on Redis's clock, which stamped the entries.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Test hook (documented in the README as test-only): `data` or `collection` makes that writer
/// task panic on its first batch, to prove supervision.
const TEST_PANIC_ENV: &str = "MBPROV_TEST_PANIC_WRITER";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Metabase(#[from] MetabaseError),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{graph} graph: still conflicting after {MAX_CONFLICTS} attempts")]
    Contended { graph: &'static str },
    #[error("{graph} graph: Metabase did not keep what was written: {detail}")]
    Unverified { graph: &'static str, detail: String },
    #[error(
        "{graph} graph: the write took longer than the lock budget ({budget:?}); retried later"
    )]
    OverBudget {
        graph: &'static str,
        budget: Duration,
    },
    #[error("refused by policy: {0}")]
    Policy(String),
    #[error("the graph writer has stopped")]
    Stopped,
    #[error("{0}")]
    Store(#[from] StoreError),
    /// No replica settled the change in time; it was withdrawn and the job is retried.
    #[error("{graph} graph: no outcome within {waited:?}; the change was withdrawn")]
    Unconfirmed {
        graph: &'static str,
        waited: Duration,
    },
    /// A change or an output that does not cross Redis (a bug, not the job's input).
    #[error("{graph} graph: cannot encode the change: {detail}")]
    Encoding { graph: &'static str, detail: String },
    /// The failure of a merged write, shared by each job in it.
    #[error("{message}")]
    Batch { class: ErrorClass, message: String },
}

impl Classify for WriteError {
    fn class(&self) -> ErrorClass {
        match self {
            WriteError::Metabase(e) => e.class(),
            WriteError::Lock(e) => e.class(),
            WriteError::Store(e) => e.class(),
            WriteError::Contended { .. }
            | WriteError::Stopped
            | WriteError::OverBudget { .. }
            | WriteError::Unconfirmed { .. } => ErrorClass::Transient,
            WriteError::Encoding { .. } => ErrorClass::Permanent,
            // Another writer may have changed the cells between our write and the read-back.
            WriteError::Unverified { .. } => ErrorClass::Transient,
            WriteError::Policy(_) => ErrorClass::Permanent,
            WriteError::Batch { class, .. } => *class,
        }
    }
}

impl WriteError {
    /// A refusal that depends on the content of the write, so a half of it may pass: Metabase's
    /// 400, or the policy. A 401/403/404/5xx or a timeout would fail every half the same way.
    fn is_refusal(&self) -> bool {
        match self {
            WriteError::Metabase(e) => e.status() == Some(400),
            WriteError::Policy(_) => true,
            _ => false,
        }
    }
}

/// What the writer needs to know about the instance and the locks.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub features: Features,
    pub version: Option<Version>,
    /// The Administrators group: its cells are never written.
    pub admin_group: i64,
    pub lock_ttl: Duration,
    pub lock_wait: Duration,
    /// Wait of a writer, once a change of its process is queued, before it asks for the lock
    /// (`MBPROV_BATCH_LINGER`). Zero asks at once: batching then comes only from the changes
    /// every replica queued while the previous write was in flight.
    pub batch_linger: Duration,
    /// Longest one write attempt may take under a graph lock (`MBPROV_GRAPH_LOCK_BUDGET`);
    /// past it the attempt is abandoned and the batch's jobs retried later.
    pub lock_budget: Duration,
}

/// One graph's side of this process: its queue in Redis and the jobs waiting on it.
struct Side {
    graph: &'static str,
    log: PendingLog,
    waiters: Arc<Waiters>,
    /// Longest a job waits for its change's outcome before withdrawing it.
    result_wait: Duration,
    /// Batches this process's writer formed so far (each then goes to Metabase as one write).
    batches: AtomicU64,
}

impl Side {
    fn new(store: &JobStore, graph: &'static str, config: &WriterConfig) -> Arc<Side> {
        let side = Arc::new(Side {
            graph,
            log: PendingLog::new(store, graph),
            waiters: Arc::new(Waiters::default()),
            result_wait: result_wait(config),
            batches: AtomicU64::new(0),
        });
        tokio::spawn(waiters::listen(
            side.log.clone(),
            Arc::downgrade(&side.waiters),
        ));
        side
    }

    /// A change dropped unwritten once this much older than now: its job has stopped waiting.
    fn expiry(&self) -> Duration {
        self.result_wait + EXPIRY_MARGIN
    }
}

/// Longest a job waits for its outcome: a wait for the lock, then a write and another in front
/// of it, each within the lock budget.
fn result_wait(config: &WriterConfig) -> Duration {
    config.lock_wait + config.lock_budget * 2
}

/// Whether the writer tasks are alive, for readiness.
#[derive(Default)]
struct Health {
    /// Set once a task died too often to be restarted.
    dead: AtomicBool,
    restarts: AtomicU64,
}

/// Handle to the per-process writer tasks. Cheap to clone.
#[derive(Clone)]
pub struct GraphWriter {
    data: Arc<Side>,
    collections: Arc<Side>,
    health: Arc<Health>,
}

impl GraphWriter {
    pub fn start(mb: MetabaseClient, store: JobStore, config: WriterConfig) -> GraphWriter {
        let bumps = if config
            .version
            .is_some_and(|v| v >= Version::COLLECTION_CREATION_BUMPS)
        {
            CreationBumps::Unknown
        } else {
            CreationBumps::Refuted
        };
        let data = Side::new(&store, DataKind::NAME, &config);
        let collections = Side::new(&store, CollectionKind::NAME, &config);
        let core = Core {
            mb,
            store,
            config,
            bumps: Arc::new(std::sync::Mutex::new(bumps)),
            panic_on: std::env::var(TEST_PANIC_ENV).ok(),
        };
        let health = Arc::new(Health::default());
        tokio::spawn(supervise::<DataKind>(
            core.clone(),
            Arc::downgrade(&data),
            health.clone(),
        ));
        tokio::spawn(supervise::<CollectionKind>(
            core,
            Arc::downgrade(&collections),
            health.clone(),
        ));
        GraphWriter {
            data,
            collections,
            health,
        }
    }

    /// False once a writer task died and could not be kept alive: readiness should fail, so
    /// the orchestrator restarts the process (accessor for the ops server).
    pub fn healthy(&self) -> bool {
        !self.health.dead.load(Ordering::SeqCst)
    }

    /// Writer tasks restarted after a panic so far.
    pub fn restarts(&self) -> u64 {
        self.health.restarts.load(Ordering::SeqCst)
    }

    /// Writes a data-graph change; returns once Metabase holds it (or it failed).
    pub async fn write_data(&self, change: DataChange) -> Result<(), WriteError> {
        if change.is_empty() {
            return Ok(());
        }
        submit::<DataKind>(&self.data, &change).await
    }

    /// Data-graph changes of this process queued but not yet taken into a batch here (a gauge
    /// for operators, and what tests wait on instead of sleeping).
    pub fn data_backlog(&self) -> usize {
        self.data.waiters.backlog()
    }

    /// Data-graph batches this process formed so far; with [`GraphWriter::data_backlog`], what
    /// tests wait on instead of sleeping.
    pub fn data_batches(&self) -> u64 {
        self.data.batches.load(Ordering::SeqCst)
    }

    /// Collection-graph work of this process queued but not yet taken into a batch here.
    pub fn collection_backlog(&self) -> usize {
        self.collections.waiters.backlog()
    }

    /// Collection-graph batches this process formed so far.
    pub fn collection_batches(&self) -> u64 {
        self.collections.batches.load(Ordering::SeqCst)
    }

    /// Applies collection-graph operations; returns once Metabase holds them.
    pub async fn write_collections(&self, ops: Vec<CollectionOp>) -> Result<(), WriteError> {
        if ops.is_empty() {
            return Ok(());
        }
        submit::<CollectionKind>(&self.collections, &CollectionWork::Ops(ops))
            .await
            .map(|_| ())
    }

    /// A tenant's collection in one trip under the collection lock: found by its tenant marker
    /// (renamed when the tenant was), else created, then granted to the tenant's group and
    /// isolated. Returns its id.
    pub async fn provision_tenant_collection(
        &self,
        tenant: TenantCollection,
    ) -> Result<i64, WriteError> {
        submit::<CollectionKind>(&self.collections, &CollectionWork::Tenant(tenant))
            .await?
            .ok_or(WriteError::Stopped)
    }

    /// Renames a tenant's collection, found by its tenant marker wherever it is, under the
    /// collection lock; never creates one. Returns its id, or `None` when no collection is
    /// marked for the tenant.
    pub async fn rename_tenant_collection(
        &self,
        rename: TenantRename,
    ) -> Result<Option<i64>, WriteError> {
        submit::<CollectionKind>(&self.collections, &CollectionWork::Rename(rename)).await
    }
}

/// Queues `change` for whichever replica holds the graph's lock, and waits for its outcome:
/// delivered by the local holder, announced by another, or read back on a poll. Past
/// [`Side::result_wait`] the change is withdrawn and the job fails as transient.
async fn submit<K: Kind>(side: &Side, change: &K::Change) -> Result<K::Output, WriteError> {
    let encoding = |e: serde_json::Error| WriteError::Encoding {
        graph: K::NAME,
        detail: e.to_string(),
    };
    let text = serde_json::to_string(change).map_err(encoding)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let trace = crate::trace::Carrier::current().traceparent;
    let (mut rx, _registration) = side.waiters.register(&id);
    let stream_id = side.log.push(&id, &text, trace.as_deref()).await?;
    side.waiters.queued(&id);
    let deadline = tokio::time::Instant::now() + side.result_wait;
    let value = loop {
        let poll =
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + OUTCOME_POLL));
        tokio::select! {
            delivered = &mut rx => break delivered.unwrap_or(Err(WriteError::Stopped))?,
            () = poll => {}
        }
        // While this process's holder writes it, its outcome comes from there.
        if !side.waiters.is_taken(&id)
            && let Ok(Some(outcome)) = side.log.outcome(&id).await
        {
            break waiters::delivered(outcome)?;
        }
        if tokio::time::Instant::now() >= deadline {
            if let Err(e) = side.log.withdraw(&stream_id).await {
                tracing::debug!(error = %e, "could not withdraw a graph change; it expires unwritten");
            }
            // Settled between the last read and the withdrawal?
            if let Ok(Some(outcome)) = side.log.outcome(&id).await {
                break waiters::delivered(outcome)?;
            }
            return Err(WriteError::Unconfirmed {
                graph: side.graph,
                waited: side.result_wait,
            });
        }
    };
    serde_json::from_value(value).map_err(encoding)
}

#[derive(Clone)]
struct Core {
    mb: MetabaseClient,
    store: JobStore,
    config: WriterConfig,
    /// What this process knows about creations bumping the revision (mirrored in Redis, so
    /// replicas share a confirmation or a refutation).
    bumps: Arc<std::sync::Mutex<CreationBumps>>,
    /// [`TEST_PANIC_ENV`].
    panic_on: Option<String>,
}

impl Core {
    fn bumps(&self) -> CreationBumps {
        self.bumps.lock().map_or(CreationBumps::Refuted, |b| *b)
    }

    fn set_bumps(&self, next: CreationBumps) {
        if let Ok(mut b) = self.bumps.lock() {
            *b = next;
        }
    }
}

/// Which graph a writer task serves; the write itself differs, the batching does not.
#[derive(Default)]
struct DataKind;
#[derive(Default)]
struct CollectionKind;

/// What one attempt under the lock ended with.
enum Attempt {
    Done,
    /// Conflicted in a way that needs a pause: release the lock, wait, try again.
    Again,
}

trait Kind: Default + Send + Sync + 'static {
    /// A job's change; it crosses Redis to whichever replica holds the lock.
    type Change: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a job learns from a successful write of its change.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    const NAME: &'static str;
    fn output(change: &Self::Change) -> Self::Output;
    /// A holder may already have started this change and died: drop any shortcut that is only
    /// right the first time.
    fn replayed(_change: &mut Self::Change) {}
    fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a Self::Change],
        guard: &'a LockGuard,
    ) -> impl std::future::Future<Output = Result<Attempt, WriteError>> + Send + 'a;
}

/// Runs the writer task of `K`, restarting it when it panics.
/// Holds `side` weakly: once every [`GraphWriter`] handle is dropped, the task alone holds it,
/// notices, and ends, and so does this.
async fn supervise<K: Kind>(core: Core, side: std::sync::Weak<Side>, health: Arc<Health>) {
    let panic_once = Arc::new(AtomicBool::new(core.panic_on.as_deref() == Some(K::NAME)));
    let mut recent: Vec<tokio::time::Instant> = Vec::new();
    loop {
        let Some(strong) = side.upgrade() else {
            return;
        };
        let task = tokio::spawn(holder::run::<K>(core.clone(), strong, panic_once.clone()));
        match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let now = tokio::time::Instant::now();
                recent.retain(|t| now.duration_since(*t) < PANIC_WINDOW);
                recent.push(now);
                if recent.len() >= MAX_PANICS as usize {
                    tracing::error!(
                        graph = K::NAME,
                        panics = recent.len(),
                        "graph writer task keeps panicking; leaving it stopped and reporting unready"
                    );
                    health.dead.store(true, Ordering::SeqCst);
                    return;
                }
                if let Some(side) = side.upgrade() {
                    side.waiters.release_taken();
                }
                health.restarts.fetch_add(1, Ordering::SeqCst);
                tracing::error!(graph = K::NAME, "graph writer task panicked; restarting it");
            }
            Err(_) => return,
        }
    }
}

/// A Metabase answer that means "another writer got there first": re-read and try again.
fn is_conflict(e: &MetabaseError) -> bool {
    e.is_conflict() || e.status().is_some_and(|s| s >= 500)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::graph::access::{DataAccess, db_perms};
    use crate::jobs::policy::BuiltinGroups;
    use crate::metabase::models::{CollectionAccess, CollectionKey, CollectionNamespace, Sandbox};

    /// What another replica reads back must be the very change that was queued.
    #[test]
    fn changes_cross_redis_unchanged() {
        let features = Features::default();
        let mut data = DataChange::set(5, 1, db_perms(DataAccess::QueryBuilder, features));
        data.put(6, 2, db_perms(DataAccess::ViewOnly, features));
        data.sandboxes.push(
            serde_json::from_value::<Sandbox>(serde_json::json!({
                "group_id": 6, "table_id": 9, "card_id": null,
                "attribute_remappings": {"organization_id": ["dimension", ["field", 3, null]]}
            }))
            .unwrap(),
        );
        let text = serde_json::to_string(&data).unwrap();
        assert_eq!(serde_json::from_str::<DataChange>(&text).unwrap(), data);

        let builtin = BuiltinGroups {
            all_users: 1,
            admin: 2,
            all: BTreeSet::from([1, 2]),
        };
        let works = [
            CollectionWork::Ops(vec![
                CollectionOp::Set {
                    group: 5,
                    collection: CollectionKey::Root,
                    access: CollectionAccess::Write,
                    namespace: CollectionNamespace::SharedTenant,
                },
                CollectionOp::Isolate {
                    collection: 7,
                    keep: BTreeSet::from([5]),
                },
                CollectionOp::RevokeGroup { group: 6 },
            ]),
            CollectionWork::Tenant(
                TenantCollection::new(
                    "acme".into(),
                    "Acme Dashboards".into(),
                    Some(3),
                    5,
                    CollectionAccess::Read,
                    true,
                    builtin,
                )
                .new_tenant(true),
            ),
            CollectionWork::Rename(TenantRename::new("acme".into(), "Acme Dashboards".into())),
        ];
        for work in works {
            let text = serde_json::to_string(&work).unwrap();
            let back: CollectionWork = serde_json::from_str(&text).unwrap();
            assert_eq!(format!("{back:?}"), format!("{work:?}"));
        }
    }
}
