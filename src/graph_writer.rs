//! The one way mbprov writes a permission graph: coalesced, locked, revision-fenced, verified.
//!
//! Each graph has one writer task per process. Jobs hand it their change and wait. The task
//! takes every change waiting at that moment (group commit), merges them in arrival order (later
//! wins), and under the graph's Redis lock reads the current revision, PUTs a partial body, and
//! on a 409 or 500 (two writers racing on the revision row) re-reads and re-applies. It never
//! sends `force`: the revision is what keeps other replicas' and administrators' changes.
//!
//! A merged write that fails permanently is split in halves and retried, so only the jobs whose
//! change caused the failure fail.
//!
//! The collection graph is only ever served whole, and it grows with every tenant. So the
//! collection writer also creates the new collections (each copies its parent's cells and bumps
//! the revision) and keeps the graph row by row in Redis as of one revision
//! ([`crate::graph::snapshot`]): a tenant's write then reads a few rows from Redis, and
//! Metabase's revision check tells whether they were exact. Anyone else's change makes it a 409,
//! after which the whole graph is read as before.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Classify, ErrorClass};
use crate::graph::data::{DataChange, data_body, merge_changes, unsatisfied};
use crate::graph::snapshot::{Snapshot, rows_needed};
use crate::graph::{CollectionOp, Features, collection_body};
use crate::lock::{LockError, LockGuard};
use crate::metabase::models::{CollectionGraph, CollectionKey, NewCollection, Version};
use crate::metabase::{DataGraphPut, MetabaseClient, MetabaseError};
use crate::ops::metrics;
use crate::store::JobStore;

/// Re-reads after a conflict before the write is given back to the queue as transient.
const MAX_CONFLICTS: u32 = 8;
/// Most changes merged into one write.
const MAX_BATCH: usize = 64;
/// How long the collection writer trusts a snapshot started from one whole read. Every use is
/// fenced by the revision; this bounds what Metabase's own non-atomic read (cells, then
/// revision) could get wrong, at the price of one whole read per period.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Metabase(#[from] MetabaseError),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{graph} graph: still conflicting after {MAX_CONFLICTS} re-reads")]
    Contended { graph: &'static str },
    #[error("{graph} graph: Metabase did not keep what was written: {detail}")]
    Unverified { graph: &'static str, detail: String },
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
            WriteError::Contended { .. } | WriteError::Stopped => ErrorClass::Transient,
            // Another writer may have changed the cells between our write and the read-back.
            WriteError::Unverified { .. } => ErrorClass::Transient,
            WriteError::Batch { class, .. } => *class,
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
    /// After the first change of a batch arrives, how long to wait for more before writing.
    pub batch_linger: Duration,
}

struct Pending<C, O> {
    change: C,
    /// The submitting job's span, so the outcome is logged with its job id, kind and tenant.
    span: tracing::Span,
    reply: oneshot::Sender<Result<O, WriteError>>,
}

/// What a job hands the collection writer.
#[derive(Debug)]
pub enum CollectionWork {
    /// Create a collection, under the graph lock so that its copy of the parent's cells and the
    /// revision that copy bumps are accounted for.
    Create(Creation),
    Ops(Vec<CollectionOp>),
}

#[derive(Debug)]
pub struct Creation {
    new: NewCollection,
    /// Set once Metabase created it, so a merged write that is split and retried never creates
    /// it twice.
    created: OnceLock<i64>,
}

impl CollectionWork {
    fn ops(&self) -> &[CollectionOp] {
        match self {
            CollectionWork::Ops(ops) => ops,
            CollectionWork::Create(_) => &[],
        }
    }
}

/// Handle to the per-process writer tasks. Cheap to clone.
#[derive(Clone)]
pub struct GraphWriter {
    data: mpsc::Sender<Pending<DataChange, ()>>,
    collections: mpsc::Sender<Pending<CollectionWork, Option<i64>>>,
    /// Data-graph batches formed so far (each then goes to Metabase as one write).
    data_batches: Arc<AtomicU64>,
    collection_batches: Arc<AtomicU64>,
}

impl GraphWriter {
    pub fn start(mb: MetabaseClient, store: JobStore, config: WriterConfig) -> GraphWriter {
        let (data_tx, data_rx) = mpsc::channel(1024);
        let (coll_tx, coll_rx) = mpsc::channel(1024);
        let snapshots = config
            .version
            .is_some_and(|v| v >= Version::COLLECTION_CREATION_BUMPS);
        let core = Core {
            mb,
            store,
            config,
            snapshots: Arc::new(AtomicBool::new(snapshots)),
        };
        let data_batches = Arc::new(AtomicU64::new(0));
        let collection_batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(core.clone(), data_rx, DataKind, data_batches.clone()));
        tokio::spawn(run(
            core,
            coll_rx,
            CollectionKind,
            collection_batches.clone(),
        ));
        GraphWriter {
            data: data_tx,
            collections: coll_tx,
            data_batches,
            collection_batches,
        }
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

    /// Creates a collection (names are not unique in Metabase: the caller makes sure it does
    /// not exist yet) and returns its id.
    pub async fn create_collection(&self, new: NewCollection) -> Result<i64, WriteError> {
        let work = CollectionWork::Create(Creation {
            new,
            created: OnceLock::new(),
        });
        submit(&self.collections, work)
            .await?
            .ok_or(WriteError::Stopped)
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
    /// Whether the collection writer trusts its Redis snapshot (see the module doc): only where
    /// creating a collection bumps the revision, and never again once Metabase showed it does not.
    snapshots: Arc<AtomicBool>,
}

/// Which graph a writer task serves; the write itself differs, the batching does not.
struct DataKind;
struct CollectionKind;

trait Kind: Send + 'static {
    type Change: Send + Sync + 'static;
    /// What a job learns from a successful write of its change.
    type Output: Send + 'static;
    const NAME: &'static str;
    fn output(change: &Self::Change) -> Self::Output;
    /// The output of a change that took effect even though the write carrying it failed.
    fn settled(_change: &Self::Change) -> Option<Self::Output> {
        None
    }
    fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a Self::Change],
        guard: &'a LockGuard,
    ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send + 'a;
}

async fn run<K: Kind>(
    core: Core,
    mut rx: mpsc::Receiver<Pending<K::Change, K::Output>>,
    kind: K,
    batches: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Jobs of one wave reach the writer a few milliseconds apart; a short wait lets one
        // locked read-modify-write carry all of them.
        let deadline = tokio::time::Instant::now() + core.config.batch_linger;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    _ => break,
                },
            }
        }
        batches.fetch_add(1, Ordering::SeqCst);
        let size = batch.len();
        let mut changes = Vec::with_capacity(size);
        let mut waiting = Vec::with_capacity(size);
        for p in batch {
            changes.push(p.change);
            waiting.push((p.span, p.reply));
        }
        let results = write_split(&core, &kind, &changes).await;
        for ((span, reply), result) in waiting.into_iter().zip(results) {
            span.in_scope(|| match &result {
                Ok(_) => tracing::debug!(graph = K::NAME, batch = size, "graph change written"),
                Err(e) => tracing::debug!(graph = K::NAME, batch = size, error = %e, "graph change failed"),
            });
            let _ = reply.send(result);
        }
    }
}

/// Writes `changes` as one merged write; if that fails permanently, halves and retries, so a
/// bad change fails alone. Returns one result per change, in order.
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
            Err(e) if e.class() == ErrorClass::Permanent && hi - lo > 1 => {
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
                // Every job of a merged write that failed as a whole gets the same error, but
                // for changes that took effect before the failure (a collection created).
                let (class, message) = (e.class(), e.to_string());
                let mut error = Some(e);
                let single = hi - lo == 1;
                for (slot, change) in results[lo..hi].iter_mut().zip(&changes[lo..hi]) {
                    *slot = Some(match K::settled(change) {
                        Some(output) => Ok(output),
                        None if single => Err(error.take().unwrap_or(WriteError::Stopped)),
                        None => Err(WriteError::Batch {
                            class,
                            message: message.clone(),
                        }),
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

async fn write_locked<K: Kind>(
    core: &Core,
    kind: &K,
    batch: &[&K::Change],
) -> Result<(), WriteError> {
    let lock = core.store.graph_lock(K::NAME, core.config.lock_ttl);
    let guard = lock.acquire(core.config.lock_wait).await?;
    let result = tokio::select! {
        r = kind.write(core, batch, &guard) => r,
        _ = guard.lost() => Err(WriteError::Lock(LockError::Lost { key: guard.key().to_string() })),
    };
    if let Err(e) = guard.release().await {
        tracing::warn!(error = %e, "could not release the graph lock; it frees itself after its ttl");
    }
    result
}

/// Pause before re-reading after a conflict: 20-40 ms, doubling, capped near 1 s.
fn conflict_pause(attempt: u32) -> Duration {
    let base = 20u64.saturating_mul(1 << attempt.min(5));
    let jitter = rand::rng().random_range(0..=base);
    Duration::from_millis((base + jitter).min(1000))
}

impl Kind for DataKind {
    type Change = DataChange;
    type Output = ();
    const NAME: &'static str = "data";

    fn output(_: &DataChange) {}

    async fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a DataChange],
        guard: &'a LockGuard,
    ) -> Result<(), WriteError> {
        let mut merged = merge_changes(batch.iter().copied());
        let Some(probe) = merged.groups_touched().into_iter().next() else {
            return Ok(());
        };
        // v0.51+ answers a PUT with only the submitted groups: a read-back at no extra request.
        let mode = match core.config.version {
            Some(v) if v >= Version::PARTIAL_GRAPH_ANSWER => DataGraphPut::ReturnGroups,
            _ => DataGraphPut::SkipGraph,
        };
        // The revision the last mbprov write left saves a read; only a write from outside
        // mbprov (an administrator) makes it stale, which costs a 409 and a fresh read.
        let mut known = core.store.last_revision("data").await.ok().flatten();
        for attempt in 0..MAX_CONFLICTS {
            guard.ensure_held()?;
            let cached = known.take();
            let revision = match cached {
                Some(r) => r,
                // Any group's slice carries the global revision; one keeps the cost flat.
                None => core.mb.data_graph_for_group(probe).await?.revision,
            };
            let body = data_body(&merged, revision, core.config.features);
            match core.mb.put_data_graph(&body, mode).await {
                Ok(after) => {
                    metrics::graph_write("data");
                    if let Err(e) = core.store.set_last_revision("data", after.revision).await {
                        tracing::debug!(error = %e, "could not record the data-graph revision");
                    }
                    let groups = if after.groups.is_empty() {
                        read_back(core, &merged.groups_touched()).await?
                    } else {
                        after.groups
                    };
                    audit_data(revision, after.revision, &merged);
                    let problems = unsatisfied(&groups, &merged);
                    return if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(WriteError::Unverified {
                            graph: "data",
                            detail: problems.join("; "),
                        })
                    };
                }
                Err(e) if e.is_conflict() || e.status().is_some_and(|s| s >= 500) => {
                    metrics::graph_conflict("data");
                    tracing::debug!(attempt, error = %e, "data graph write conflicted; re-reading");
                    // A conflict may follow our own write whose answer was lost (its replay
                    // meets the revision it bumped): its new sandboxes may exist already.
                    if let Err(e) = core
                        .mb
                        .adopt_existing_sandboxes(&mut merged.sandboxes)
                        .await
                    {
                        tracing::debug!(error = %e, "could not look up existing sandboxes");
                    }
                    if cached.is_none() {
                        tokio::time::sleep(conflict_pause(attempt)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Contended { graph: "data" })
    }
}

async fn read_back(
    core: &Core,
    groups: &BTreeSet<i64>,
) -> Result<crate::metabase::models::DataGroups, WriteError> {
    let mut out = crate::metabase::models::DataGroups::new();
    for g in groups {
        out.extend(core.mb.data_graph_for_group(*g).await?.groups);
    }
    Ok(out)
}

impl Kind for CollectionKind {
    type Change = CollectionWork;
    type Output = Option<i64>;
    const NAME: &'static str = "collection";

    fn output(change: &CollectionWork) -> Option<i64> {
        match change {
            CollectionWork::Create(c) => c.created.get().copied(),
            CollectionWork::Ops(_) => None,
        }
    }

    /// A collection Metabase created is there whatever became of the rest of the write.
    fn settled(change: &CollectionWork) -> Option<Option<i64>> {
        match change {
            CollectionWork::Create(c) => c.created.get().map(|id| Some(*id)),
            CollectionWork::Ops(_) => None,
        }
    }

    async fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a CollectionWork],
        guard: &'a LockGuard,
    ) -> Result<(), WriteError> {
        let ops: Vec<CollectionOp> = batch.iter().flat_map(|w| w.ops()).cloned().collect();
        let creations: Vec<&Creation> = batch
            .iter()
            .filter_map(|w| match w {
                CollectionWork::Create(c) if c.created.get().is_none() => Some(c),
                _ => None,
            })
            .collect();
        if ops.is_empty() && creations.is_empty() {
            // Collections created by an earlier attempt of this (split) batch.
            return Ok(());
        }
        let mut cache = SnapshotCache::load(core, &ops, &creations).await;
        if !creations.is_empty() {
            guard.ensure_held()?;
            create_all(core, &creations, &mut cache).await?;
        }
        if ops.is_empty() {
            return Ok(());
        }
        let mut missed: Option<i64> = None;
        for attempt in 0..MAX_CONFLICTS {
            guard.ensure_held()?;
            let (current, predicted) = match cache.known.take() {
                Some(known) => (known, true),
                None => {
                    let read = Snapshot::from_graph(&core.mb.collection_graph().await?);
                    if let Some(expected) = missed.take() {
                        cache.check_prediction(core, expected, read.revision).await;
                    }
                    (read, false)
                }
            };
            let view = current.graph();
            let groups = collection_body(&view, &ops, core.config.admin_group);
            if groups.is_empty() && !predicted {
                // The graph just read already holds every wish.
                cache.store_read(core, &current).await;
                return Ok(());
            }
            // From the snapshot even an empty body is sent: Metabase's revision check is what
            // proves the rows were current.
            let body = CollectionGraph {
                revision: current.revision,
                groups,
                ..CollectionGraph::default()
            };
            match core.mb.put_collection_graph(&body).await {
                Ok(after) => {
                    let mut next = current.clone();
                    let changed = next.apply(&body.groups);
                    if !changed.is_empty() {
                        metrics::graph_write("collection");
                        tracing::info!(
                            target: "mbprov::audit",
                            graph = "collection",
                            revision_before = current.revision,
                            revision_after = after.revision,
                            changes = %audit_collection(&view, &body),
                            "collection graph written"
                        );
                    }
                    cache
                        .store_write(core, &current, &next, &changed, after.revision, predicted)
                        .await;
                    return Ok(());
                }
                // A 404 from rows out of date (a group someone deleted) is a stale read too.
                Err(e)
                    if e.is_conflict()
                        || e.status().is_some_and(|s| s >= 500)
                        || (predicted && e.is_not_found()) =>
                {
                    metrics::graph_conflict("collection");
                    tracing::debug!(attempt, predicted, error = %e, "collection graph write conflicted; re-reading");
                    if predicted {
                        missed = Some(current.revision);
                    } else {
                        tokio::time::sleep(conflict_pause(attempt)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Contended {
            graph: "collection",
        })
    }
}

/// Creates the batch's collections side by side (the lock is held, so their revision bumps are
/// the only ones the snapshot expects) and records them in it.
async fn create_all(
    core: &Core,
    creations: &[&Creation],
    cache: &mut SnapshotCache,
) -> Result<(), WriteError> {
    let answers =
        futures_util::future::join_all(creations.iter().map(|c| core.mb.create_collection(&c.new)))
            .await;
    let mut failure = None;
    let mut made = BTreeSet::new();
    for (creation, answer) in creations.iter().zip(answers) {
        match answer {
            Ok(collection) => {
                let CollectionKey::Id(id) = collection.id else {
                    failure.get_or_insert(WriteError::Unverified {
                        graph: "collection",
                        detail: "Metabase answered a new collection with id root".into(),
                    });
                    continue;
                };
                let _ = creation.created.set(id);
                if let Some(known) = cache.known.as_mut() {
                    known.created(id, parent_key(&creation.new));
                    made.insert(CollectionKey::Id(id));
                }
            }
            Err(e) => {
                // Refused outright, nothing happened; otherwise it may have, and the revision
                // with it, so the snapshot can no longer predict it.
                if !e.status().is_some_and(|s| (400..500).contains(&s)) {
                    cache.known = None;
                }
                failure.get_or_insert(e.into());
            }
        }
    }
    cache.store_created(core, &made).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn parent_key(new: &NewCollection) -> CollectionKey {
    new.parent_id.map_or(CollectionKey::Root, CollectionKey::Id)
}

/// One write's view of the Redis snapshot. Redis failures here only cost a whole-graph read:
/// the snapshot is an optimisation, the revision check is the guarantee.
struct SnapshotCache {
    enabled: bool,
    /// The rows this write needs, moved forward by its own events; `None` once they cannot be
    /// predicted.
    known: Option<Snapshot>,
    /// The revision Redis holds, as far as this write knows.
    stored: Option<i64>,
}

impl SnapshotCache {
    async fn load(core: &Core, ops: &[CollectionOp], creations: &[&Creation]) -> SnapshotCache {
        let enabled = core.snapshots.load(Ordering::Relaxed);
        let mut cache = SnapshotCache {
            enabled,
            known: None,
            stored: None,
        };
        if !enabled {
            return cache;
        }
        let keys = rows_needed(ops, creations.iter().map(|c| parent_key(&c.new)));
        match core
            .store
            .load_snapshot(keys.as_ref(), SNAPSHOT_MAX_AGE)
            .await
        {
            Ok(known) => {
                cache.stored = known.as_ref().map(|k| k.revision);
                cache.known = known;
            }
            Err(e) => tracing::debug!(error = %e, "could not read the collection-graph snapshot"),
        }
        cache
    }

    async fn store_created(&mut self, core: &Core, made: &BTreeSet<CollectionKey>) {
        if made.is_empty() {
            return;
        }
        let (Some(known), Some(base)) = (&self.known, self.stored) else {
            return;
        };
        match core.store.advance_snapshot(base, known, made).await {
            Ok(true) => self.stored = Some(known.revision),
            Ok(false) => self.known = None,
            Err(e) => {
                tracing::debug!(error = %e, "could not record new collections in the snapshot");
                self.known = None;
            }
        }
    }

    /// After a whole-graph read that needed no write: it is the best snapshot there is.
    async fn store_read(&self, core: &Core, read: &Snapshot) {
        if self.enabled
            && let Err(e) = core.store.replace_snapshot(read).await
        {
            tracing::debug!(error = %e, "could not store the collection-graph snapshot");
        }
    }

    async fn store_write(
        &self,
        core: &Core,
        before: &Snapshot,
        after: &Snapshot,
        changed: &BTreeSet<CollectionKey>,
        answered: i64,
        predicted: bool,
    ) {
        if !self.enabled {
            return;
        }
        // Metabase answers with the revision after the write; a larger one means someone else
        // wrote in the meantime, and these rows cannot vouch for that.
        let result = if answered != after.revision {
            core.store.forget_snapshot().await
        } else if !predicted {
            core.store.replace_snapshot(after).await
        } else if changed.is_empty() || self.stored != Some(before.revision) {
            Ok(())
        } else {
            core.store
                .advance_snapshot(before.revision, after, changed)
                .await
                .map(|_| ())
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not store the collection-graph snapshot");
        }
    }

    /// A predicted write was refused and the graph read back is at `read`. Other writers only
    /// ever push the revision up, so a revision below the prediction means this Metabase does
    /// not bump it when it creates a collection: stop predicting.
    async fn check_prediction(&mut self, core: &Core, expected: i64, read: i64) {
        if read < expected {
            tracing::warn!(
                expected,
                read,
                "creating a collection did not bump the collection-graph revision here; \
                 reading the whole collection graph for every write from now on"
            );
            core.snapshots.store(false, Ordering::Relaxed);
            self.enabled = false;
            if let Err(e) = core.store.forget_snapshot().await {
                tracing::debug!(error = %e, "could not drop the collection-graph snapshot");
            }
        }
    }
}

fn audit_data(before: i64, after: i64, change: &DataChange) {
    for (group, dbs) in &change.groups {
        for (db, perms) in dbs {
            tracing::info!(
                target: "mbprov::audit",
                graph = "data",
                revision_before = before,
                revision_after = after,
                group = group.0,
                database = db.0,
                set = %serde_json::to_string(perms).unwrap_or_default(),
                "data graph written"
            );
        }
    }
    for s in &change.sandboxes {
        tracing::info!(target: "mbprov::audit", graph = "data", revision_after = after,
            group = ?s.group_id, table = ?s.table_id, "sandbox written");
    }
}

/// `group 7: 9 read -> none, root none -> read` for the audit log: enough to roll back by hand.
fn audit_collection(current: &CollectionGraph, body: &CollectionGraph) -> String {
    let mut parts = Vec::new();
    for (group, cells) in &body.groups {
        for (collection, access) in cells {
            parts.push(format!(
                "group {group}: {collection} {} -> {access}",
                current.access(group.0, *collection)
            ));
        }
    }
    parts.join(", ")
}
