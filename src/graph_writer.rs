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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Classify, ErrorClass};
use crate::graph::data::{DataChange, data_body, merge_changes, unsatisfied};
use crate::graph::{CollectionOp, Features, collection_body};
use crate::lock::{LockError, LockGuard};
use crate::metabase::models::{CollectionGraph, Version};
use crate::metabase::{DataGraphPut, MetabaseClient, MetabaseError};
use crate::ops::metrics;
use crate::store::JobStore;

/// Re-reads after a conflict before the write is given back to the queue as transient.
const MAX_CONFLICTS: u32 = 8;
/// Most changes merged into one write.
const MAX_BATCH: usize = 64;

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

struct Pending<C> {
    change: C,
    /// The submitting job's span, so the outcome is logged with its job id, kind and tenant.
    span: tracing::Span,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

/// Handle to the per-process writer tasks. Cheap to clone.
#[derive(Clone)]
pub struct GraphWriter {
    data: mpsc::Sender<Pending<DataChange>>,
    collections: mpsc::Sender<Pending<Vec<CollectionOp>>>,
    /// Data-graph batches formed so far (each then goes to Metabase as one write).
    data_batches: Arc<AtomicU64>,
}

impl GraphWriter {
    pub fn start(mb: MetabaseClient, store: JobStore, config: WriterConfig) -> GraphWriter {
        let (data_tx, data_rx) = mpsc::channel(1024);
        let (coll_tx, coll_rx) = mpsc::channel(1024);
        let core = Core { mb, store, config };
        let data_batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(core.clone(), data_rx, DataKind, data_batches.clone()));
        tokio::spawn(run(core, coll_rx, CollectionKind, Arc::default()));
        GraphWriter {
            data: data_tx,
            collections: coll_tx,
            data_batches,
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

    /// Applies collection-graph operations; returns once Metabase holds them.
    pub async fn write_collections(&self, ops: Vec<CollectionOp>) -> Result<(), WriteError> {
        if ops.is_empty() {
            return Ok(());
        }
        submit(&self.collections, ops).await
    }
}

async fn submit<C>(tx: &mpsc::Sender<Pending<C>>, change: C) -> Result<(), WriteError> {
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
}

/// Which graph a writer task serves; the write itself differs, the batching does not.
struct DataKind;
struct CollectionKind;

trait Kind: Send + 'static {
    type Change: Send + Sync + 'static;
    const NAME: &'static str;
    fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a Self::Change],
        guard: &'a LockGuard,
    ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send + 'a;
}

async fn run<K: Kind>(
    core: Core,
    mut rx: mpsc::Receiver<Pending<K::Change>>,
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
                Ok(()) => tracing::debug!(graph = K::NAME, batch = size, "graph change written"),
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
) -> Vec<Result<(), WriteError>> {
    let mut results: Vec<Option<Result<(), WriteError>>> =
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
            Ok(()) => results[lo..hi]
                .iter_mut()
                .for_each(|slot| *slot = Some(Ok(()))),
            Err(e) if hi - lo == 1 => results[lo] = Some(Err(e)),
            Err(e) => {
                // Every job of a merged write that failed as a whole gets the same error.
                let (class, message) = (e.class(), e.to_string());
                for slot in &mut results[lo..hi] {
                    *slot = Some(Err(WriteError::Batch {
                        class,
                        message: message.clone(),
                    }));
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
    const NAME: &'static str = "data";

    async fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a DataChange],
        guard: &'a LockGuard,
    ) -> Result<(), WriteError> {
        let merged = merge_changes(batch.iter().copied());
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
    type Change = Vec<CollectionOp>;
    const NAME: &'static str = "collection";

    async fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a Vec<CollectionOp>],
        guard: &'a LockGuard,
    ) -> Result<(), WriteError> {
        let ops: Vec<CollectionOp> = batch.iter().flat_map(|ops| ops.iter().cloned()).collect();
        for attempt in 0..MAX_CONFLICTS {
            guard.ensure_held()?;
            // Metabase has no per-group read of this graph; the whole (sparse) graph it is.
            let current = core.mb.collection_graph().await?;
            let groups = collection_body(&current, &ops, core.config.admin_group);
            if groups.is_empty() {
                return Ok(());
            }
            let body = CollectionGraph {
                revision: current.revision,
                groups,
                ..CollectionGraph::default()
            };
            match core.mb.put_collection_graph(&body).await {
                Ok(after) => {
                    metrics::graph_write("collection");
                    tracing::info!(
                        target: "mbprov::audit",
                        graph = "collection",
                        revision_before = current.revision,
                        revision_after = after.revision,
                        changes = %audit_collection(&current, &body),
                        "collection graph written"
                    );
                    return Ok(());
                }
                Err(e) if e.is_conflict() || e.status().is_some_and(|s| s >= 500) => {
                    metrics::graph_conflict("collection");
                    tracing::debug!(attempt, error = %e, "collection graph write conflicted; re-reading");
                    tokio::time::sleep(conflict_pause(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Contended {
            graph: "collection",
        })
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
