//! The collection-permissions graph writer.
//!
//! The collection graph is only ever served whole, and it grows with every tenant. So this
//! writer also provisions tenant collections (each new one copies its parent's cells and bumps
//! the revision) and keeps the graph row by row in Redis as of one revision
//! ([`crate::graph::snapshot`], [`super::snapshot_cache`]): once this instance is confirmed to
//! bump on creation, a tenant's write reads a few rows from Redis, and Metabase's revision
//! check tells whether they were exact. Anyone else's change makes it a 409, after which the
//! whole graph is read.
//!
//! A tenant's collection is one unit of work here, under the collection lock: look up by the
//! tenant's marker, create when missing (one POST at a time: concurrent `POST /api/collection`
//! can answer 500, ../shared/metabase-api.md correction 9), grant, isolate, verify.
//!
//! Grants in another namespace (shared tenant collections) are written after the default
//! namespace's, one read and one PUT per namespace, under the same lock and fenced by the same
//! revision, which Metabase keeps one for all namespaces.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::snapshot::Snapshot;
use crate::graph::{CollectionOp, by_namespace, collection_body, foreign_collections};
use crate::lock::LockGuard;
use crate::metabase::models::{CollectionGraph, CollectionKey, CollectionNamespace};
use crate::ops::metrics;

use super::snapshot_cache::SnapshotCache;
use super::tenant::{self, Listings, TenantCollection};
use super::tenant_rename::TenantRename;
use super::{Attempt, CollectionKind, Core, Kind, WriteError, is_conflict};

/// What a job hands the collection writer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum CollectionWork {
    /// A tenant's collection, found or created, granted and isolated in one trip.
    Tenant(TenantCollection),
    /// A tenant's collection renamed (`tenant.updated`); never created, no graph effect.
    Rename(TenantRename),
    /// Grants, each in its own namespace ([`CollectionOp::namespace`]).
    Ops(Vec<CollectionOp>),
}

impl Kind for CollectionKind {
    type Change = CollectionWork;
    type Output = Option<i64>;
    const NAME: &'static str = "collection";

    fn replayed(change: &mut CollectionWork) {
        if let CollectionWork::Tenant(t) = change {
            t.replayed();
        }
    }

    fn output(change: &CollectionWork) -> Option<i64> {
        match change {
            CollectionWork::Tenant(t) => t.resolved(),
            CollectionWork::Rename(r) => r.output(),
            CollectionWork::Ops(_) => None,
        }
    }

    async fn write<'a>(
        &'a self,
        core: &'a Core,
        batch: &'a [&'a CollectionWork],
        guard: &'a LockGuard,
    ) -> Result<Attempt, WriteError> {
        // Renames: no graph effect, nothing created; under the lock so that a creation of
        // the same tenant (which renames a marked collection too) is never interleaved.
        for w in batch {
            if let CollectionWork::Rename(r) = w
                && !r.is_done()
            {
                guard.ensure_held()?;
                r.run(core).await?;
            }
        }
        let tenants: Vec<&TenantCollection> = batch
            .iter()
            .filter_map(|w| match w {
                CollectionWork::Tenant(t) => Some(t),
                CollectionWork::Rename(_) | CollectionWork::Ops(_) => None,
            })
            .collect();

        // Look up every tenant's collection by its marker (no graph effect).
        let mut listings = Listings::default();
        let mut missing = Vec::new();
        for t in &tenants {
            if t.resolved().is_some() {
                continue;
            }
            guard.ensure_held()?;
            match tenant::find(core, t, &mut listings).await? {
                Some(id) => t.resolve(id),
                None => missing.push(*t),
            }
        }

        let mut namespaced = by_namespace(
            batch
                .iter()
                .filter_map(|w| match w {
                    CollectionWork::Ops(ops) => Some(ops.iter().cloned()),
                    CollectionWork::Tenant(_) | CollectionWork::Rename(_) => None,
                })
                .flatten()
                .collect(),
        );
        let mut ops = namespaced
            .remove(&CollectionNamespace::Default)
            .unwrap_or_default();
        for t in &tenants {
            if let Some(id) = t.resolved() {
                ops.extend(t.ops(id)?);
            }
        }
        let parents: Vec<CollectionKey> = missing.iter().map(|t| t.parent_key()).collect();
        let mut cache = SnapshotCache::load(core, &ops, &parents).await;

        // Create the missing ones, one at a time; two jobs of one tenant in this batch (a
        // duplicate delivery, a re-sent message, a change replayed after its holder died) share
        // one, whether it was found or made here.
        let mut made = BTreeSet::new();
        let mut made_for: BTreeMap<(&str, Option<i64>), i64> = tenants
            .iter()
            .filter_map(|t| Some(((t.tenant_id.as_str(), t.parent), t.resolved()?)))
            .collect();
        for t in missing {
            if let Some(id) = made_for.get(&(t.tenant_id.as_str(), t.parent)) {
                t.resolve(*id);
                ops.extend(t.ops(*id)?);
                continue;
            }
            guard.ensure_held()?;
            match tenant::create(core, t).await {
                Ok(id) => {
                    t.resolve(id);
                    made_for.insert((t.tenant_id.as_str(), t.parent), id);
                    cache.created(id, t.parent_key());
                    made.insert(CollectionKey::Id(id));
                    tracing::info!(collection = id, tenant = %t.tenant_id, name = %t.name, "tenant collection created");
                    ops.extend(t.ops(id)?);
                }
                Err(e) => {
                    if tenant::may_have_applied(&e) {
                        // It may exist now (and the revision moved): the job's next attempt
                        // looks it up by marker before creating anything.
                        cache.lost_track();
                    }
                    cache.store_created(core, &made).await;
                    return Err(e.into());
                }
            }
        }
        cache.store_created(core, &made).await;
        if !ops.is_empty()
            && matches!(
                write_ops(core, &ops, guard, &mut cache).await?,
                Attempt::Again
            )
        {
            return Ok(Attempt::Again);
        }
        for (namespace, ops) in &namespaced {
            if matches!(
                write_namespace(core, *namespace, ops, guard).await?,
                Attempt::Again
            ) {
                return Ok(Attempt::Again);
            }
        }
        Ok(Attempt::Done)
    }
}

/// One namespace besides the default: read whole (it holds the shared collections, a handful,
/// not one per tenant, so no snapshot is kept), checked, and PUT with the namespace in the body
/// and the revision just read. Cells for a collection the namespace's graph does not hold would
/// be dropped by Metabase without a word (`remove-collections-from-other-namespaces`) or fail
/// (a missing id), so they are refused before anything is sent: with that, Metabase's answer
/// (the cells are written in one transaction, or not at all) is the verification.
///
/// The write moves the revision every namespace shares, so a default-namespace snapshot in
/// Redis is behind it afterwards: the next predicted write there meets a 409 and reads whole.
async fn write_namespace(
    core: &Core,
    namespace: CollectionNamespace,
    ops: &[CollectionOp],
    guard: &LockGuard,
) -> Result<Attempt, WriteError> {
    guard.ensure_held()?;
    let current = core.mb.collection_graph_in(namespace).await?;
    let foreign = foreign_collections(&current, ops, core.config.admin_group);
    if !foreign.is_empty() {
        let ids: Vec<String> = foreign.iter().map(ToString::to_string).collect();
        return Err(WriteError::Policy(format!(
            "collection {} is not a live collection of the {namespace} namespace (another \
             namespace's, archived or missing): Metabase would drop or refuse the grant",
            ids.join(", ")
        )));
    }
    let groups = collection_body(&current, ops, core.config.admin_group);
    if groups.is_empty() {
        return Ok(Attempt::Done);
    }
    let body = CollectionGraph {
        revision: current.revision,
        groups,
        namespace: namespace.api_name().map(str::to_string),
        ..CollectionGraph::default()
    };
    guard.ensure_held()?;
    match core.mb.put_collection_graph(&body).await {
        Ok(after) => {
            metrics::graph_write("collection");
            tracing::info!(
                target: "mbprov::audit",
                graph = "collection",
                namespace = %namespace,
                revision_before = current.revision,
                revision_after = after.revision,
                changes = %audit_collection(&current, &body),
                "collection graph written"
            );
            Ok(Attempt::Done)
        }
        Err(e) if is_conflict(&e) => {
            metrics::graph_conflict("collection");
            tracing::debug!(%namespace, error = %e, "collection graph write conflicted");
            Ok(Attempt::Again)
        }
        Err(e) => Err(e.into()),
    }
}

/// The graph write proper: from the snapshot when it can predict, else from a whole read.
async fn write_ops(
    core: &Core,
    ops: &[CollectionOp],
    guard: &LockGuard,
    cache: &mut SnapshotCache,
) -> Result<Attempt, WriteError> {
    // After a refused predicted write: what the rows predicted, for the read to judge.
    let mut missed: Option<Snapshot> = None;
    loop {
        guard.ensure_held()?;
        let (current, predicted) = match cache.known.take() {
            Some(known) => (known, true),
            None => {
                let read = Snapshot::from_graph(&core.mb.collection_graph().await?);
                cache.judge_read(core, &read).await;
                if let Some(expected) = missed.take() {
                    cache.judge_miss(core, &expected, &read).await;
                }
                (read, false)
            }
        };
        let view = current.graph();
        let groups = collection_body(&view, ops, core.config.admin_group);
        if groups.is_empty() && !predicted {
            // The graph just read already holds every wish.
            cache.store_read(core, &current).await;
            return Ok(Attempt::Done);
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
                    .store_write(core, &current, &next, &changed, after.revision, !predicted)
                    .await;
                return Ok(Attempt::Done);
            }
            // A 404 from rows out of date (a group someone deleted) is a stale read too.
            Err(e) if is_conflict(&e) || (predicted && e.is_not_found()) => {
                metrics::graph_conflict("collection");
                tracing::debug!(predicted, error = %e, "collection graph write conflicted");
                if predicted {
                    // Re-read at once, under the lock: the snapshot was stale.
                    missed = Some(current);
                } else {
                    // A race with another writer on a fresh read: pause without the lock.
                    return Ok(Attempt::Again);
                }
            }
            Err(e) => return Err(e.into()),
        }
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
