//! One collection write's view of the Redis snapshot (the I/O around
//! [`crate::graph::snapshot_rules`]). Redis failures here only cost a whole-graph read: the
//! snapshot is an optimisation, the revision check is the guarantee.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::graph::CollectionOp;
use crate::graph::snapshot::{Snapshot, rows_needed};
use crate::graph::snapshot_rules::{
    AfterWrite, CreationBumps, Plan, Verdict, after_write, judge, next_bumps, plan,
};
use crate::metabase::models::CollectionKey;

use super::Core;

/// How long the collection writer trusts a snapshot started from one whole read. Every use is
/// fenced by the revision; this bounds what Metabase's own non-atomic read (cells, then
/// revision) could get wrong, at the price of one whole read per period.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

pub(super) struct SnapshotCache {
    /// Whether the snapshot is kept at all (not on an instance refuted to bump on creation).
    enabled: bool,
    /// The rows this write needs, moved forward by its own events; `None` when the write has
    /// to read the whole graph instead.
    pub known: Option<Snapshot>,
    /// The revision Redis holds, as far as this write knows.
    stored: Option<i64>,
    /// While creations are not confirmed to bump: the whole snapshot from before this batch's
    /// creations, moved forward by them as predicted, for the whole read after them to judge.
    pub expected_whole: Option<Snapshot>,
}

impl SnapshotCache {
    /// `parents`: the parents of the collections this batch may create.
    pub async fn load(
        core: &Core,
        ops: &[CollectionOp],
        parents: &[CollectionKey],
    ) -> SnapshotCache {
        let bumps = shared_bumps(core).await;
        let mut cache = SnapshotCache {
            enabled: bumps != CreationBumps::Refuted,
            known: None,
            stored: None,
            expected_whole: None,
        };
        if !cache.enabled {
            return cache;
        }
        let confirming = bumps == CreationBumps::Unknown && !parents.is_empty();
        let keys = if confirming {
            None
        } else {
            rows_needed(ops, parents.iter().copied())
        };
        match core
            .store
            .load_snapshot(keys.as_ref(), SNAPSHOT_MAX_AGE)
            .await
        {
            Ok(loaded) => {
                cache.stored = loaded.as_ref().map(|k| k.revision);
                match plan(bumps, loaded.as_ref(), parents) {
                    Plan::Predict => cache.known = loaded,
                    Plan::Confirm => cache.expected_whole = loaded,
                    Plan::Read => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read the collection-graph snapshot"),
        }
        cache
    }

    /// Metabase created `id` under `parent`.
    pub fn created(&mut self, id: i64, parent: CollectionKey) {
        if let Some(known) = self.known.as_mut() {
            known.created(id, parent);
        }
        if let Some(expected) = self.expected_whole.as_mut() {
            expected.created(id, parent);
        }
    }

    /// A creation may or may not have happened: nothing can be predicted or judged any more.
    pub fn lost_track(&mut self) {
        self.known = None;
        self.expected_whole = None;
    }

    /// Records the collections created by this batch in the stored snapshot (predicted mode).
    pub async fn store_created(&mut self, core: &Core, made: &BTreeSet<CollectionKey>) {
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

    /// A whole read was taken: judge the pending confirmation, if any.
    pub async fn judge_read(&mut self, core: &Core, read: &Snapshot) {
        if let Some(expected) = self.expected_whole.take() {
            settle(core, judge(&expected, read, true), &expected, read).await;
        }
    }

    /// A predicted write was refused and the graph read back: a revision below the prediction
    /// means this Metabase does not bump it as predicted.
    pub async fn judge_miss(&mut self, core: &Core, expected: &Snapshot, read: &Snapshot) {
        let verdict = judge(expected, read, false);
        if verdict == Verdict::Refuted {
            self.enabled = false;
        }
        settle(core, verdict, expected, read).await;
    }

    /// After a whole-graph read that needed no write: it is the best snapshot there is.
    pub async fn store_read(&self, core: &Core, read: &Snapshot) {
        if self.enabled
            && let Err(e) = core.store.replace_snapshot(read).await
        {
            tracing::debug!(error = %e, "could not store the collection-graph snapshot");
        }
    }

    pub async fn store_write(
        &self,
        core: &Core,
        before: &Snapshot,
        after: &Snapshot,
        changed: &BTreeSet<CollectionKey>,
        answered: i64,
        whole: bool,
    ) {
        if !self.enabled {
            return;
        }
        let result = match after_write(
            before.revision,
            after.revision,
            answered,
            self.stored,
            whole,
        ) {
            AfterWrite::Forget => core.store.forget_snapshot().await,
            AfterWrite::Replace => core.store.replace_snapshot(after).await.map(|_| ()),
            AfterWrite::Advance { base } => core
                .store
                .advance_snapshot(base, after, changed)
                .await
                .map(|_| ()),
            AfterWrite::Keep => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not store the collection-graph snapshot");
        }
    }
}

/// This process's knowledge, merged with what the replicas recorded in Redis: a refutation
/// anywhere wins, a confirmation anywhere is shared.
async fn shared_bumps(core: &Core) -> CreationBumps {
    let local = core.bumps();
    if local == CreationBumps::Refuted {
        return local;
    }
    match core.store.creation_bumps().await {
        Ok(Some(s)) => match CreationBumps::parse(&s) {
            Some(CreationBumps::Refuted) => {
                core.set_bumps(CreationBumps::Refuted);
                CreationBumps::Refuted
            }
            Some(CreationBumps::Confirmed) => {
                core.set_bumps(CreationBumps::Confirmed);
                CreationBumps::Confirmed
            }
            _ => local,
        },
        Ok(None) => local,
        Err(e) => {
            tracing::debug!(error = %e, "could not read whether creations bump the revision");
            local
        }
    }
}

async fn settle(core: &Core, verdict: Verdict, expected: &Snapshot, read: &Snapshot) {
    let now = core.bumps();
    let next = next_bumps(now, verdict);
    if next == now {
        if verdict == Verdict::Inconclusive && now == CreationBumps::Unknown {
            tracing::info!(
                expected = expected.revision,
                read = read.revision,
                "the graph changed besides this writer's creations; not yet confirmed that \
                 creating a collection bumps the collection-graph revision, still reading"
            );
        }
        return;
    }
    core.set_bumps(next);
    match next {
        CreationBumps::Refuted => {
            tracing::warn!(
                expected = expected.revision,
                read = read.revision,
                "creating a collection did not bump the collection-graph revision here; \
                 reading the whole collection graph for every write from now on"
            );
            if let Err(e) = core.store.forget_snapshot().await {
                tracing::debug!(error = %e, "could not drop the collection-graph snapshot");
            }
        }
        CreationBumps::Confirmed => tracing::info!(
            revision = read.revision,
            "confirmed on this instance: creating a collection bumps the collection-graph \
             revision by one; predicting from the snapshot from now on"
        ),
        CreationBumps::Unknown => {}
    }
    if let Err(e) = core.store.set_creation_bumps(next.as_str()).await {
        tracing::debug!(error = %e, "could not record whether creations bump the revision");
    }
}
