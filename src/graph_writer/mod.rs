//! The one way mbprov writes a permission graph: coalesced, locked, revision-fenced, verified.
//!
//! Each graph has one writer task per process. Jobs hand it their change and wait. The task
//! writes at once when idle, and takes every change that queued while its previous write was in
//! flight as the next batch (group commit without idle waiting), merges them in arrival order (later
//! wins), and under the graph's Redis lock reads the current revision, PUTs a partial body, and
//! on a 409 or 500 (two writers racing on the revision row) re-reads and re-applies. It never
//! sends `force`: the revision is what keeps other replicas' and administrators' changes.
//!
//! Time under the lock is bounded ([`WriterConfig::lock_budget`]), and a pause before another
//! attempt is taken with the lock released. A merged write Metabase refuses with a 400 (or that
//! the policy refuses) is split in halves and retried, so only the jobs whose change caused it
//! fail; any other failure (401, 403, 404, 5xx, a timeout) is the same for every half, so the
//! batch fails as a whole and is retried.
//!
//! The tasks are supervised: a task that panics is restarted (the jobs of the batch in hand
//! fail as transient and are retried), and [`GraphWriter::healthy`] turns false when one keeps
//! dying, for readiness.
//!
//! Modules: [`data`] writes the data graph; [`collection`] the collection graph, including a
//! tenant's collection as one unit of work ([`tenant`]); [`snapshot_cache`] keeps the collection
//! graph's rows in Redis.

mod collection;
mod data;
mod snapshot_cache;
mod tenant;
mod tenant_rename;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use crate::error::{Classify, ErrorClass};
use crate::graph::data::DataChange;
use crate::graph::snapshot_rules::CreationBumps;
use crate::graph::{CollectionOp, Features};
use crate::lock::{LockError, LockGuard};
use crate::metabase::models::Version;
use crate::metabase::{MetabaseClient, MetabaseError};
use crate::store::JobStore;

pub use collection::CollectionWork;
pub use tenant::TenantCollection;
pub use tenant_rename::TenantRename;

/// Finding a tenant's collection by its marker outside the writer (`tenant.deleted`).
pub mod tenant_collection {
    pub use super::tenant::{find_for_deletion, forget};
}

/// Attempts (each under a fresh hold of the lock, after a pause) before the write is given back
/// to the queue as transient.
const MAX_CONFLICTS: u32 = 8;
/// Most changes merged into one write.
const MAX_BATCH: usize = 64;
/// A writer task that panics this many times within [`PANIC_WINDOW`] is left dead and the
/// writer reports itself unhealthy: restarting it would only fail the same jobs again.
const MAX_PANICS: u32 = 5;
const PANIC_WINDOW: Duration = Duration::from_secs(60);

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
    /// The failure of a merged write, shared by each job in it.
    #[error("{message}")]
    Batch { class: ErrorClass, message: String },
}

impl Classify for WriteError {
    fn class(&self) -> ErrorClass {
        match self {
            WriteError::Metabase(e) => e.class(),
            WriteError::Lock(e) => e.class(),
            WriteError::Contended { .. } | WriteError::Stopped | WriteError::OverBudget { .. } => {
                ErrorClass::Transient
            }
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
    /// Upper bound on an extra wait for more changes after the first of a batch
    /// (`MBPROV_BATCH_LINGER`). Zero writes at once: batching then comes only from the changes
    /// that queued while the previous write was in flight.
    pub batch_linger: Duration,
    /// Longest one write may hold a graph lock (`MBPROV_GRAPH_LOCK_BUDGET`); past it the
    /// write is abandoned, the lock released, and the jobs retried later.
    pub lock_budget: Duration,
}

struct Pending<C, O> {
    change: C,
    /// The submitting job's span, so the outcome is logged with its job id, kind and tenant,
    /// and the write's span joins the job's trace (`trace::batch_span`).
    span: tracing::Span,
    reply: oneshot::Sender<Result<O, WriteError>>,
}

type Queue<C, O> = Arc<Mutex<mpsc::Receiver<Pending<C, O>>>>;

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
    data: mpsc::Sender<Pending<DataChange, ()>>,
    collections: mpsc::Sender<Pending<CollectionWork, Option<i64>>>,
    /// Data-graph batches formed so far (each then goes to Metabase as one write).
    data_batches: Arc<AtomicU64>,
    collection_batches: Arc<AtomicU64>,
    health: Arc<Health>,
}

impl GraphWriter {
    pub fn start(mb: MetabaseClient, store: JobStore, config: WriterConfig) -> GraphWriter {
        let (data_tx, data_rx) = mpsc::channel(1024);
        let (coll_tx, coll_rx) = mpsc::channel(1024);
        let bumps = if config
            .version
            .is_some_and(|v| v >= Version::COLLECTION_CREATION_BUMPS)
        {
            CreationBumps::Unknown
        } else {
            CreationBumps::Refuted
        };
        let core = Core {
            mb,
            store,
            config,
            bumps: Arc::new(std::sync::Mutex::new(bumps)),
            panic_on: std::env::var(TEST_PANIC_ENV).ok(),
        };
        let data_batches = Arc::new(AtomicU64::new(0));
        let collection_batches = Arc::new(AtomicU64::new(0));
        let health = Arc::new(Health::default());
        tokio::spawn(supervise::<DataKind>(
            core.clone(),
            Arc::new(Mutex::new(data_rx)),
            data_batches.clone(),
            health.clone(),
        ));
        tokio::spawn(supervise::<CollectionKind>(
            core,
            Arc::new(Mutex::new(coll_rx)),
            collection_batches.clone(),
            health.clone(),
        ));
        GraphWriter {
            data: data_tx,
            collections: coll_tx,
            data_batches,
            collection_batches,
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
        submit(&self.data, change).await
    }

    /// Data-graph changes handed over but not yet taken into a batch (a gauge for operators,
    /// and what tests wait on instead of sleeping).
    pub fn data_backlog(&self) -> usize {
        self.data.max_capacity() - self.data.capacity()
    }

    /// Data-graph batches formed so far; with [`GraphWriter::data_backlog`], what tests wait on
    /// instead of sleeping.
    pub fn data_batches(&self) -> u64 {
        self.data_batches.load(Ordering::SeqCst)
    }

    /// Collection-graph work handed over but not yet taken into a batch.
    pub fn collection_backlog(&self) -> usize {
        self.collections.max_capacity() - self.collections.capacity()
    }

    /// Collection-graph batches formed so far.
    pub fn collection_batches(&self) -> u64 {
        self.collection_batches.load(Ordering::SeqCst)
    }

    /// Applies collection-graph operations; returns once Metabase holds them.
    pub async fn write_collections(&self, ops: Vec<CollectionOp>) -> Result<(), WriteError> {
        if ops.is_empty() {
            return Ok(());
        }
        submit(&self.collections, CollectionWork::Ops(ops))
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
        submit(&self.collections, CollectionWork::Tenant(tenant))
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
        submit(&self.collections, CollectionWork::Rename(rename)).await
    }
}

async fn submit<C, O>(tx: &mpsc::Sender<Pending<C, O>>, change: C) -> Result<O, WriteError> {
    let (reply, rx) = oneshot::channel();
    let span = tracing::Span::current();
    tx.send(Pending {
        change,
        span,
        reply,
    })
    .await
    .map_err(|_| WriteError::Stopped)?;
    rx.await.map_err(|_| WriteError::Stopped)?
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
    type Change: Send + Sync + 'static;
    /// What a job learns from a successful write of its change.
    type Output: Send + 'static;
    const NAME: &'static str;
    fn output(change: &Self::Change) -> Self::Output;
    fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a Self::Change],
        guard: &'a LockGuard,
    ) -> impl std::future::Future<Output = Result<Attempt, WriteError>> + Send + 'a;
}

/// Runs the writer task of `K`, restarting it when it panics.
async fn supervise<K: Kind>(
    core: Core,
    queue: Queue<K::Change, K::Output>,
    batches: Arc<AtomicU64>,
    health: Arc<Health>,
) {
    let panic_once = Arc::new(AtomicBool::new(core.panic_on.as_deref() == Some(K::NAME)));
    let mut recent: Vec<tokio::time::Instant> = Vec::new();
    loop {
        let task = tokio::spawn(run::<K>(
            core.clone(),
            queue.clone(),
            batches.clone(),
            panic_once.clone(),
        ));
        match task.await {
            Ok(()) => return, // every handle dropped: the process is stopping
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
                health.restarts.fetch_add(1, Ordering::SeqCst);
                tracing::error!(graph = K::NAME, "graph writer task panicked; restarting it");
            }
            Err(_) => return,
        }
    }
}

async fn run<K: Kind>(
    core: Core,
    queue: Queue<K::Change, K::Output>,
    batches: Arc<AtomicU64>,
    panic_once: Arc<AtomicBool>,
) {
    // Held for the task's life; a panic drops it, and the restarted task takes it again.
    let mut rx = queue.lock().await;
    let kind = K::default();
    while let Some(first) = rx.recv().await {
        // Group commit without idle waiting: this task writes one batch at a time, so whatever
        // queued while the previous write was in flight is taken now, and a change arriving at
        // an idle writer is written at once. The optional linger only adds a bounded wait.
        let mut batch = vec![first];
        drain_ready(&mut rx, &mut batch);
        if !core.config.batch_linger.is_zero() {
            let deadline = tokio::time::Instant::now() + core.config.batch_linger;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => {
                        batch.push(p);
                        drain_ready(&mut rx, &mut batch);
                    }
                    _ => break,
                }
            }
        }
        batches.fetch_add(1, Ordering::SeqCst);
        if panic_once.swap(false, Ordering::SeqCst) {
            panic!("{TEST_PANIC_ENV}: the {} writer panics on purpose", K::NAME);
        }
        let size = batch.len();
        let mut changes = Vec::with_capacity(size);
        let mut waiting = Vec::with_capacity(size);
        for p in batch {
            changes.push(p.change);
            waiting.push((p.span, p.reply));
        }
        // The write's Metabase requests join the jobs' traces (see `trace::batch_span`).
        let span = crate::trace::batch_span(K::NAME, waiting.iter().map(|(span, _)| span));
        let results = write_split(&core, &kind, &changes).instrument(span).await;
        for ((span, reply), result) in waiting.into_iter().zip(results) {
            span.in_scope(|| match &result {
                Ok(_) => tracing::debug!(graph = K::NAME, batch = size, "graph change written"),
                Err(e) => tracing::debug!(graph = K::NAME, batch = size, error = %e, "graph change failed"),
            });
            let _ = reply.send(result);
        }
    }
}

/// Moves every change already waiting into `batch`, up to [`MAX_BATCH`], without waiting.
fn drain_ready<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
}

/// Writes `changes` as one merged write; if it is refused for its content (a 400 or the
/// policy), halves and retries, so a bad change fails alone. One result per change, in order.
async fn write_split<K: Kind>(
    core: &Core,
    kind: &K,
    changes: &[K::Change],
) -> Vec<Result<K::Output, WriteError>> {
    let mut results: Vec<Option<Result<K::Output, WriteError>>> =
        (0..changes.len()).map(|_| None).collect();
    let mut ranges = vec![(0, changes.len())];
    while let Some((lo, hi)) = ranges.pop() {
        let refs: Vec<&K::Change> = changes[lo..hi].iter().collect();
        match write_locked(core, kind, &refs).await {
            Err(e) if e.is_refusal() && hi - lo > 1 => {
                tracing::info!(graph = K::NAME, size = hi - lo, error = %e, "merged write refused; splitting it");
                let mid = lo + (hi - lo) / 2;
                ranges.push((mid, hi));
                ranges.push((lo, mid));
            }
            Ok(()) => {
                for (slot, change) in results[lo..hi].iter_mut().zip(&changes[lo..hi]) {
                    *slot = Some(Ok(K::output(change)));
                }
            }
            Err(e) => {
                // Every job of a merged write that failed as a whole gets the same error.
                let (class, message) = (e.class(), e.to_string());
                let mut error = Some(e);
                let single = hi - lo == 1;
                for slot in &mut results[lo..hi] {
                    *slot = Some(if single {
                        Err(error.take().unwrap_or(WriteError::Stopped))
                    } else {
                        Err(WriteError::Batch {
                            class,
                            message: message.clone(),
                        })
                    });
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(WriteError::Stopped)))
        .collect()
}

/// Attempts the write, each attempt under its own hold of the graph lock and within the lock
/// budget; the pause between attempts is taken with the lock released.
async fn write_locked<K: Kind>(
    core: &Core,
    kind: &K,
    batch: &[&K::Change],
) -> Result<(), WriteError> {
    let lock = core.store.graph_lock(K::NAME, core.config.lock_ttl);
    let budget = core.config.lock_budget;
    for attempt in 0..MAX_CONFLICTS {
        let guard = lock.acquire(core.config.lock_wait).await?;
        let result = tokio::select! {
            r = tokio::time::timeout(budget, kind.write(core, batch, &guard)) => {
                r.unwrap_or(Err(WriteError::OverBudget { graph: K::NAME, budget }))
            }
            _ = guard.lost() => Err(WriteError::Lock(LockError::Lost { key: guard.key().to_string() })),
        };
        if let Err(e) = guard.release().await {
            tracing::warn!(error = %e, "could not release the graph lock; it frees itself after its ttl");
        }
        match result? {
            Attempt::Done => return Ok(()),
            Attempt::Again => tokio::time::sleep(conflict_pause(attempt)).await,
        }
    }
    Err(WriteError::Contended { graph: K::NAME })
}

/// Pause before another attempt after a conflict: 20-40 ms, doubling, capped near 1 s.
fn conflict_pause(attempt: u32) -> Duration {
    let base = 20u64.saturating_mul(1 << attempt.min(5));
    let jitter = rand::rng().random_range(0..=base);
    Duration::from_millis((base + jitter).min(1000))
}

/// A Metabase answer that means "another writer got there first": re-read and try again.
fn is_conflict(e: &MetabaseError) -> bool {
    e.is_conflict() || e.status().is_some_and(|s| s >= 500)
}
