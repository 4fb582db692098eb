//! The data-permissions graph writer: one partial PUT per batch, fenced by the revision.

use std::collections::BTreeSet;

use crate::graph::data::{DataChange, data_body, merge_changes, unsatisfied};
use crate::lock::LockGuard;
use crate::metabase::DataGraphPut;
use crate::metabase::models::{DataGroups, Version};
use crate::ops::metrics;

use super::{Attempt, Core, DataKind, Kind, WriteError, is_conflict};

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
    ) -> Result<Attempt, WriteError> {
        let mut merged = merge_changes(batch.iter().copied());
        let Some(probe) = merged.groups_touched().into_iter().next() else {
            return Ok(Attempt::Done);
        };
        // v0.51+ answers a PUT with only the submitted groups: a read-back at no extra request.
        let mode = match core.config.version {
            Some(v) if v >= Version::PARTIAL_GRAPH_ANSWER => DataGraphPut::ReturnGroups,
            _ => DataGraphPut::SkipGraph,
        };
        // The revision the last mbprov write left saves a read; only a write from outside
        // mbprov (an administrator) makes it stale, which costs a 409 and a fresh read at once.
        let mut known = core.store.last_revision("data").await.ok().flatten();
        loop {
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
                        Ok(Attempt::Done)
                    } else {
                        Err(WriteError::Unverified {
                            graph: "data",
                            detail: problems.join("; "),
                        })
                    };
                }
                Err(e) if is_conflict(&e) => {
                    metrics::graph_conflict("data");
                    tracing::debug!(cached = cached.is_some(), error = %e, "data graph write conflicted");
                    // A conflict may follow our own write whose answer was lost (its replay
                    // meets the revision it bumped, or the sandboxes it inserted answer 500 on
                    // their unique constraint): the next PUT must update those, not insert
                    // them again (metabase#64460).
                    let unknown = |m: &crate::graph::data::DataChange| {
                        m.sandboxes.iter().filter(|s| s.id.is_none()).count()
                    };
                    let before = unknown(&merged);
                    if let Err(e) = core
                        .mb
                        .adopt_existing_sandboxes(&mut merged.sandboxes)
                        .await
                    {
                        tracing::debug!(error = %e, "could not look up existing sandboxes");
                    }
                    let adopted = unknown(&merged) < before;
                    // A stale cached revision is re-read at once, and so is a write that just
                    // adopted sandboxes; a conflict on a fresh read is a race with another
                    // writer, worth a pause without the lock.
                    if cached.is_none() && !adopted {
                        return Ok(Attempt::Again);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

async fn read_back(core: &Core, groups: &BTreeSet<i64>) -> Result<DataGroups, WriteError> {
    let mut out = DataGroups::new();
    for g in groups {
        out.extend(core.mb.data_graph_for_group(*g).await?.groups);
    }
    Ok(out)
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
