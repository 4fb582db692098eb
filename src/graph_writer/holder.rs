//! What a writer task does: competes for the graph's lock while a change of its process waits,
//! and, holding it, writes every change queued by any replica, oldest first, in batches (merged,
//! split on a refusal, each attempt within the lock budget), then settles each change's outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use tracing::Instrument;

use crate::error::{Classify, ErrorClass};
use crate::lock::{LockError, LockGuard};

use super::pending::{Entry, FORMAT, Outcome, Settled};
use super::waiters::Delivered;
use super::{
    Attempt, Core, Kind, LOCK_ERROR_PAUSE, MAX_BATCH, MAX_CONFLICTS, Side, TEST_PANIC_ENV,
    WriteError,
};

/// Competes for the graph's lock while a change of this process waits, and, holding it, writes
/// everything queued by every replica. Ends when the last handle to the writer is dropped.
pub(super) async fn run<K: Kind>(core: Core, side: Arc<Side>, panic_once: Arc<AtomicBool>) {
    let kind = K::default();
    let lock = core.store.graph_lock(K::NAME, core.config.lock_ttl);
    loop {
        // The writer handles hold `side`, and this task (supervision holds it weakly): alone
        // here, every handle is gone.
        if Arc::strong_count(&side) == 1 {
            return;
        }
        tokio::select! {
            () = side.waiters.until_waiting() => {}
            // Wakes now and then to notice the handle was dropped.
            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
        }
        if !core.config.batch_linger.is_zero() {
            tokio::time::sleep(core.config.batch_linger).await;
        }
        // Never cancelled half-way: an acquisition dropped after its SET succeeded would leave
        // the lock held by nobody until its ttl. If another replica's holder settles our changes
        // meanwhile, this hold finds little or nothing queued and ends at once.
        let guard = match lock.acquire(core.config.lock_wait).await {
            Ok(guard) => guard,
            Err(LockError::Timeout { .. }) => continue,
            Err(e) => {
                tracing::warn!(graph = K::NAME, error = %e, "cannot take the graph lock; trying again");
                tokio::time::sleep(LOCK_ERROR_PAUSE).await;
                continue;
            }
        };
        let last = drain::<K>(&core, &kind, &side, &guard, &panic_once).await;
        if let Err(e) = guard.release().await {
            tracing::warn!(error = %e, "could not release the graph lock; it frees itself after its ttl");
        }
        // The last batch's jobs hear of it once the lock is free for whatever they do next.
        deliver(&side, last);
        // A batch left queued (the lock was lost) is settled by the next holder: its waiters
        // listen for that again.
        side.waiters.release_taken();
    }
}

/// Under the lock: writes batch after batch of whatever is queued, oldest first, until the
/// queue holds nothing more this process can write, or a write ran past the lock budget (a slow
/// Metabase: the jobs back off rather than the lock being kept). A batch's local jobs hear of a
/// success as soon as it is settled, of a failure once the next batch is read; the last batch's
/// failures are returned, to be delivered after the lock is released.
async fn drain<K: Kind>(
    core: &Core,
    kind: &K,
    side: &Side,
    guard: &LockGuard,
    panic_once: &AtomicBool,
) -> Vec<(String, Delivered)> {
    let mut after: Option<String> = None;
    let mut held_back = Vec::new();
    // Unknown (Redis failed): every entry is treated as replayed, which only costs look-ups.
    let started = match side.log.started().await {
        Ok(mark) => mark.map_or(Some((0, 0)), |m| stream_position(&m)),
        Err(_) => Some((u64::MAX, u64::MAX)),
    };
    loop {
        if guard.ensure_held().is_err() {
            return held_back;
        }
        let (entries, now) = match side.log.read(after.as_deref(), MAX_BATCH).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(graph = K::NAME, error = %e, "cannot read the queued graph changes");
                return held_back;
            }
        };
        let Some(last) = entries.last() else {
            return held_back;
        };
        deliver(side, std::mem::take(&mut held_back));
        after = Some(last.stream_id.clone());
        let (batch, mut settled) = admit::<K>(entries, side.expiry(), now, started);
        if batch.is_empty() {
            settle(side, &settled).await;
            continue;
        }
        side.batches.fetch_add(1, Ordering::SeqCst);
        if panic_once.swap(false, Ordering::SeqCst) {
            panic!("{TEST_PANIC_ENV}: the {} writer panics on purpose", K::NAME);
        }
        for (entry, _) in &batch {
            side.waiters.taken(&entry.id);
        }
        if let Some((entry, _)) = batch.last()
            && let Err(e) = side.log.mark_started(&entry.stream_id).await
        {
            // Unmarked, a holder that takes over could trust a shortcut this write made stale.
            tracing::warn!(graph = K::NAME, error = %e, "cannot mark the batch started; leaving it queued");
            return held_back;
        }
        let (entries, changes): (Vec<Entry>, Vec<K::Change>) = batch.into_iter().unzip();
        // The write's Metabase requests join the jobs' traces (see `trace::batch_span`).
        let span =
            crate::trace::batch_span_of(K::NAME, entries.iter().filter_map(|e| e.trace.as_deref()));
        let results = write_split(core, kind, &changes, guard)
            .instrument(span)
            .await;
        if guard.ensure_held().is_err() {
            // The next holder writes them again; their jobs hear from it.
            tracing::warn!(
                graph = K::NAME,
                "lost the graph lock while writing; leaving the batch queued"
            );
            return held_back;
        }
        let over_budget = results
            .iter()
            .any(|r| matches!(r, Err(WriteError::OverBudget { .. })));
        for (entry, result) in entries.into_iter().zip(results) {
            let result = result.and_then(|output| {
                serde_json::to_value(output).map_err(|e| WriteError::Encoding {
                    graph: K::NAME,
                    detail: e.to_string(),
                })
            });
            settled.push(Settled {
                stream_id: entry.stream_id,
                id: entry.id.clone(),
                outcome: outcome_of(&result),
            });
            held_back.push((entry.id, result));
        }
        settle(side, &settled).await;
        // Successes reach this process's jobs now, at the same moment the announcement reaches
        // the other replicas' (their next changes then queue together); failures wait for the
        // release, so that whatever the job does next finds the lock free.
        let (failed, written): (Vec<_>, Vec<_>) =
            held_back.drain(..).partition(|(_, result)| result.is_err());
        deliver(side, written);
        held_back = failed;
        if over_budget {
            return held_back;
        }
    }
}

fn outcome_of(result: &Delivered) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(value.clone()),
        Err(e) => Outcome::Err {
            class: e.class().into(),
            message: e.to_string(),
        },
    }
}

fn deliver(side: &Side, outcomes: Vec<(String, Delivered)>) {
    for (id, result) in outcomes {
        side.waiters.deliver(&id, result);
    }
}

async fn settle(side: &Side, settled: &[Settled]) {
    if let Err(e) = side.log.settle(settled).await {
        // Left queued: the next holder writes them again, harmlessly.
        tracing::warn!(graph = side.graph, error = %e, "could not settle graph changes");
    }
}

/// Sorts what was read into the changes to write, in order, and those settled at once: expired
/// ones of any format (their jobs stopped waiting; a late write could undo newer changes) and
/// unreadable ones. Other entries of another format are left queued for a replica of their
/// version. Entries at or
/// before `started` (a holder began writing them, and may have died half-way) are replayed:
/// their shortcuts are off (see [`Kind::replayed`]).
fn admit<K: Kind>(
    entries: Vec<Entry>,
    expiry: Duration,
    now_ms: u64,
    started: Option<(u64, u64)>,
) -> (Vec<(Entry, K::Change)>, Vec<Settled>) {
    let mut batch = Vec::new();
    let mut settled = Vec::new();
    for entry in entries {
        let refuse = |class: ErrorClass, message: String| Settled {
            stream_id: entry.stream_id.clone(),
            id: entry.id.clone(),
            outcome: Outcome::Err {
                class: class.into(),
                message,
            },
        };
        // Whatever its format: an expired entry has no job waiting, and one of a version no
        // longer running would otherwise stay queued forever.
        let queued_at = entry_millis(&entry.stream_id);
        if queued_at.is_some_and(|at| now_ms.saturating_sub(at) > expiry.as_millis() as u64) {
            settled.push(refuse(
                ErrorClass::Transient,
                format!("{} graph: the change expired unwritten", K::NAME),
            ));
            continue;
        }
        if entry.format != FORMAT {
            continue;
        }
        match serde_json::from_str::<K::Change>(&entry.change) {
            Ok(mut change) => {
                if started.is_some_and(|s| stream_position(&entry.stream_id).is_none_or(|p| p <= s))
                {
                    K::replayed(&mut change);
                }
                batch.push((entry, change));
            }
            Err(e) => settled.push(refuse(
                ErrorClass::Permanent,
                format!("{} graph: cannot read the queued change: {e}", K::NAME),
            )),
        }
    }
    (batch, settled)
}

/// The Redis time (milliseconds) in a stream id `<ms>-<seq>`.
fn entry_millis(stream_id: &str) -> Option<u64> {
    stream_position(stream_id).map(|(ms, _)| ms)
}

/// A stream id `<ms>-<seq>` as a pair that orders like the stream.
fn stream_position(stream_id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = stream_id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Writes `changes` as one merged write; if it is refused for its content (a 400 or the
/// policy), halves and retries, so a bad change fails alone. One result per change, in order.
async fn write_split<K: Kind>(
    core: &Core,
    kind: &K,
    changes: &[K::Change],
    guard: &LockGuard,
) -> Vec<Result<K::Output, WriteError>> {
    let mut results: Vec<Option<Result<K::Output, WriteError>>> =
        (0..changes.len()).map(|_| None).collect();
    let mut ranges = vec![(0, changes.len())];
    while let Some((lo, hi)) = ranges.pop() {
        let refs: Vec<&K::Change> = changes[lo..hi].iter().collect();
        match write_held(core, kind, &refs, guard).await {
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

/// Attempts the write under the lock the caller holds, each attempt within the lock budget.
/// The pause after a conflict keeps the lock: changes queued behind these must not overtake
/// them.
async fn write_held<K: Kind>(
    core: &Core,
    kind: &K,
    batch: &[&K::Change],
    guard: &LockGuard,
) -> Result<(), WriteError> {
    let budget = core.config.lock_budget;
    for attempt in 0..MAX_CONFLICTS {
        let result = tokio::select! {
            r = tokio::time::timeout(budget, kind.write(core, batch, guard)) => {
                r.unwrap_or(Err(WriteError::OverBudget { graph: K::NAME, budget }))
            }
            _ = guard.lost() => Err(WriteError::Lock(LockError::Lost { key: guard.key().to_string() })),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::data::DataChange;
    use crate::graph_writer::DataKind;
    use crate::graph_writer::pending::WireClass;

    const NOW: u64 = 1_000_000;
    const EXPIRY: Duration = Duration::from_secs(100);

    fn entry(at_ms: u64, format: &str, change: &str) -> Entry {
        Entry {
            stream_id: format!("{at_ms}-0"),
            id: format!("job-{at_ms}"),
            format: format.into(),
            change: change.into(),
            trace: None,
        }
    }

    fn class_of(s: &Settled) -> Option<WireClass> {
        match &s.outcome {
            Outcome::Err { class, .. } => Some(*class),
            Outcome::Ok(_) => None,
        }
    }

    #[test]
    fn admission_writes_fresh_readable_changes_of_its_format_in_order() {
        let change = serde_json::to_string(&DataChange::default()).unwrap();
        let fresh = NOW - 1_000;
        let stale = NOW - EXPIRY.as_millis() as u64 - 1;
        // (entry, written, settled with this class, left queued)
        let cases = [
            (entry(fresh, FORMAT, &change), true, None, false),
            (entry(fresh + 1, "2", &change), false, None, true),
            (
                entry(stale, "2", &change),
                false,
                Some(WireClass::Transient),
                false,
            ),
            (
                entry(stale, FORMAT, &change),
                false,
                Some(WireClass::Transient),
                false,
            ),
            (
                entry(fresh + 2, FORMAT, "{\"groups\": 7}"),
                false,
                Some(WireClass::Permanent),
                false,
            ),
            // Exactly at the expiry is still written.
            (
                entry(NOW - EXPIRY.as_millis() as u64, FORMAT, &change),
                true,
                None,
                false,
            ),
        ];
        for (e, written, settled_as, left) in cases {
            let (batch, settled) = admit::<DataKind>(vec![e.clone()], EXPIRY, NOW, None);
            assert_eq!(batch.len() == 1, written, "{e:?}");
            assert_eq!(settled.first().and_then(class_of), settled_as, "{e:?}");
            assert_eq!(batch.is_empty() && settled.is_empty(), left, "{e:?}");
        }
        let many = (0..3).map(|i| entry(fresh + i, FORMAT, &change)).collect();
        let (batch, _) = admit::<DataKind>(many, EXPIRY, NOW, None);
        let order: Vec<_> = batch.iter().map(|(e, _)| e.stream_id.clone()).collect();
        assert_eq!(order, ["999000-0", "999001-0", "999002-0"], "arrival order");
    }

    #[test]
    fn a_stream_id_carries_its_milliseconds() {
        for (id, ms) in [
            ("1700000000000-0", Some(1_700_000_000_000)),
            ("5-12", Some(5)),
            ("5", None),
            ("x-1", None),
            ("", None),
        ] {
            assert_eq!(entry_millis(id), ms, "{id}");
        }
    }

    /// A tenant's collection queued as new is looked up anyway once a holder may have started
    /// it: a holder that died after creating it must not make a second one.
    #[test]
    fn entries_a_holder_started_lose_their_shortcuts() {
        use crate::graph_writer::{CollectionKind, CollectionWork, TenantCollection};
        use crate::jobs::policy::BuiltinGroups;
        use crate::metabase::models::CollectionAccess;
        let work = CollectionWork::Tenant(
            TenantCollection::new(
                "acme".into(),
                "Acme Dashboards".into(),
                None,
                5,
                CollectionAccess::Read,
                true,
                BuiltinGroups {
                    all_users: 1,
                    admin: 2,
                    all: [1, 2].into(),
                },
            )
            .new_tenant(true),
        );
        let text = serde_json::to_string(&work).unwrap();
        // (started mark, still a new tenant)
        for (started, shortcut) in [
            (None, true),
            (Some((NOW - 1_001, 0)), true),
            (Some((NOW - 1_000, 0)), false),
            (Some((NOW, 0)), false),
        ] {
            let (batch, _) = admit::<CollectionKind>(
                vec![entry(NOW - 1_000, FORMAT, &text)],
                EXPIRY,
                NOW,
                started,
            );
            let CollectionWork::Tenant(t) = &batch[0].1 else {
                panic!("{batch:?}");
            };
            assert_eq!(t.is_new_tenant(), shortcut, "{started:?}");
        }
    }
}
