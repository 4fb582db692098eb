//! The collection writer's decisions about its snapshot, as pure functions: predict or read,
//! what a whole read says about the prediction, and what to do with the stored snapshot after
//! a write.
//!
//! A prediction rests on one fact about the instance: creating a collection bumps the
//! collection-graph revision by exactly one (metabase#59727, v0.56.0+; `copy-collection-
//! permissions!` calls `increment-implicit-perms-revision!`), except under personal, tenant and
//! trash parents (../shared/metabase-api.md, verified correction 4). mbprov does not assume it:
//! it confirms it on the instance, by comparing a whole read taken after its own creations with
//! the whole snapshot from before them, and keeps reading until then. An administrator's edit in
//! that window could supply exactly a missing bump (the masked-snapshot ordering), so a
//! confirmation needs the rows too: the read must equal the snapshot plus the new collections'
//! copied rows, nothing else.

use super::snapshot::Snapshot;
use crate::metabase::models::CollectionKey;

/// What the writers know about creations and the revision on this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreationBumps {
    /// Not yet shown either way: every batch that creates reads the whole graph after it.
    Unknown,
    /// A whole read showed exactly one bump per creation and nothing else changed.
    Confirmed,
    /// A read showed fewer bumps than creations (or more with no change to explain them):
    /// never predict again.
    Refuted,
}

impl CreationBumps {
    pub fn as_str(self) -> &'static str {
        match self {
            CreationBumps::Unknown => "unknown",
            CreationBumps::Confirmed => "confirmed",
            CreationBumps::Refuted => "refuted",
        }
    }

    pub fn parse(s: &str) -> Option<CreationBumps> {
        match s {
            "unknown" => Some(CreationBumps::Unknown),
            "confirmed" => Some(CreationBumps::Confirmed),
            "refuted" => Some(CreationBumps::Refuted),
            _ => None,
        }
    }
}

/// How a collection batch works with the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// From the snapshot, predicting the revision (Metabase's revision check vouches for it).
    Predict,
    /// Read the whole graph after creating, and judge it against the whole snapshot moved
    /// forward by the creations: the way creations get confirmed to bump.
    Confirm,
    /// Read the whole graph.
    Read,
}

/// The plan of a batch with `snapshot` loaded that creates collections under `parents`.
pub fn plan(bumps: CreationBumps, snapshot: Option<&Snapshot>, parents: &[CollectionKey]) -> Plan {
    let Some(snapshot) = snapshot else {
        return Plan::Read;
    };
    if bumps == CreationBumps::Refuted {
        return Plan::Read;
    }
    if parents.is_empty() {
        // Without creations the prediction is only "our write bumps by one", which Metabase's
        // answer to that very write confirms.
        return Plan::Predict;
    }
    // A parent with no row is not in the graph at all: personal, trash, tenant namespaces or
    // archived (the Administrators group has `write` on every collection the graph lists), and
    // creations under those neither copy nor bump: never predicted, never used to confirm.
    if !parents.iter().all(|p| snapshot.has_row(*p)) {
        return Plan::Read;
    }
    match bumps {
        CreationBumps::Confirmed => Plan::Predict,
        _ => Plan::Confirm,
    }
}

/// What a whole read says about a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The read is exactly what was predicted, revision and rows.
    Confirmed,
    /// The instance does not bump as predicted.
    Refuted,
    /// Someone else changed the graph meanwhile: this read proves nothing either way.
    Inconclusive,
}

/// Judges `expected` (the snapshot moved forward by the writer's own events) against `read`.
/// With `whole`, `expected` holds every row of the graph and the rows are compared too; else
/// only a revision below the prediction can be told (other writers only push it up).
///
/// A revision above the prediction never confirms, even with the rows as predicted: a change
/// and its undoing by an administrator, or a creation that bumps twice, look the same, so it
/// proves nothing and the writer keeps reading. Neither does the predicted revision with other
/// rows (an administrator's edit supplying exactly a missing bump).
pub fn judge(expected: &Snapshot, read: &Snapshot, whole: bool) -> Verdict {
    if read.revision < expected.revision {
        Verdict::Refuted
    } else if whole && read.revision == expected.revision && read.rows == expected.rows {
        Verdict::Confirmed
    } else {
        Verdict::Inconclusive
    }
}

/// The new state after a verdict: a refutation is final, a confirmation holds until refuted.
pub fn next_bumps(now: CreationBumps, verdict: Verdict) -> CreationBumps {
    match (now, verdict) {
        (_, Verdict::Refuted) | (CreationBumps::Refuted, _) => CreationBumps::Refuted,
        (_, Verdict::Confirmed) => CreationBumps::Confirmed,
        (now, Verdict::Inconclusive) => now,
    }
}

/// What to do with the stored snapshot after a graph write was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterWrite {
    /// Drop it: the answer does not match what the rows predict.
    Forget,
    /// Store the rows written over (a whole read's rows moved forward by the write).
    Replace,
    /// Move the stored snapshot from `base` to the new revision (compare-and-set).
    Advance { base: i64 },
    /// Leave it as it is.
    Keep,
}

/// `before`: the revision the write was sent with; `next`: what the rows predict after it;
/// `answered`: the revision Metabase answered; `stored`: the revision Redis holds, as far as
/// this write knows; `whole`: the rows came from a whole read (not the snapshot).
pub fn after_write(
    before: i64,
    next: i64,
    answered: i64,
    stored: Option<i64>,
    whole: bool,
) -> AfterWrite {
    if answered != next {
        // Metabase kept a different revision than the rows predict (a cell it did not change
        // after all, or a bump we do not understand): the rows cannot vouch for it.
        AfterWrite::Forget
    } else if whole {
        AfterWrite::Replace
    } else if next == before || stored != Some(before) {
        AfterWrite::Keep
    } else {
        AfterWrite::Advance { base: before }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::snapshot::Row;
    use crate::metabase::models::{CollectionAccess, Id};
    use std::collections::BTreeMap;

    fn snap(revision: i64, rows: &[(i64, &[(i64, CollectionAccess)])]) -> Snapshot {
        Snapshot {
            revision,
            rows: rows
                .iter()
                .map(|(c, cells)| {
                    (
                        CollectionKey::Id(*c),
                        cells
                            .iter()
                            .map(|(g, a)| (Id(*g), a.clone()))
                            .collect::<Row>(),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    use CollectionAccess::{Read, Write};

    #[test]
    fn predict_only_from_a_snapshot_and_only_creations_known_to_bump() {
        use CreationBumps::*;
        let s = snap(7, &[(2, &[(2, Write), (1, Read)])]);
        let shared = [CollectionKey::Id(2)];
        let personal = [CollectionKey::Id(40)];
        let both = [shared[0], personal[0]];
        let cases = [
            (Confirmed, None, &shared[..], Plan::Read),
            (Unknown, None, &[][..], Plan::Read),
            (Unknown, Some(&s), &[][..], Plan::Predict),
            (Confirmed, Some(&s), &[][..], Plan::Predict),
            (Refuted, Some(&s), &[][..], Plan::Read),
            (Unknown, Some(&s), &shared[..], Plan::Confirm),
            (Confirmed, Some(&s), &shared[..], Plan::Predict),
            (Refuted, Some(&s), &shared[..], Plan::Read),
            // A parent outside the graph (personal, trash, tenant): its creations do not bump.
            (Confirmed, Some(&s), &personal[..], Plan::Read),
            (Unknown, Some(&s), &personal[..], Plan::Read),
            (Confirmed, Some(&s), &both[..], Plan::Read),
        ];
        for (bumps, snapshot, parents, want) in cases {
            assert_eq!(
                plan(bumps, snapshot, parents),
                want,
                "{bumps:?} {parents:?} {}",
                snapshot.is_some()
            );
        }
    }

    #[test]
    fn a_read_confirms_only_the_exact_revision_and_rows() {
        let before = snap(7, &[(2, &[(2, Write), (1, Read)])]);
        let mut expected = before.clone();
        expected.created(12, CollectionKey::Id(2));
        // The masked-snapshot ordering: the creation did not bump, an administrator's grant did,
        // so the revision is the predicted one but a row is not.
        let masked = snap(
            8,
            &[
                (2, &[(2, Write), (1, Read), (9, Read)]),
                (12, &[(2, Write), (1, Read), (9, Read)]),
            ],
        );
        let silent = snap(
            7,
            &[
                (2, &[(2, Write), (1, Read)]),
                (12, &[(2, Write), (1, Read)]),
            ],
        );
        let double = Snapshot {
            revision: 9,
            ..expected.clone()
        };
        let busy = Snapshot {
            revision: 9,
            ..masked.clone()
        };
        let cases = [
            (&expected, true, Verdict::Confirmed),
            (&expected, false, Verdict::Inconclusive),
            (&masked, true, Verdict::Inconclusive),
            (&masked, false, Verdict::Inconclusive),
            (&silent, true, Verdict::Refuted),
            (&silent, false, Verdict::Refuted),
            // Above the prediction with nothing else changed: two bumps for one creation, or
            // an edit and its undoing; never a confirmation.
            (&double, true, Verdict::Inconclusive),
            (&double, false, Verdict::Inconclusive),
            (&busy, true, Verdict::Inconclusive),
        ];
        for (read, whole, want) in cases {
            assert_eq!(
                judge(&expected, read, whole),
                want,
                "read {read:?} whole {whole}"
            );
        }
    }

    #[test]
    fn refutation_is_final_and_inconclusive_changes_nothing() {
        use CreationBumps::*;
        let cases = [
            (Unknown, Verdict::Confirmed, Confirmed),
            (Unknown, Verdict::Inconclusive, Unknown),
            (Unknown, Verdict::Refuted, Refuted),
            (Confirmed, Verdict::Inconclusive, Confirmed),
            (Confirmed, Verdict::Refuted, Refuted),
            (Refuted, Verdict::Confirmed, Refuted),
        ];
        for (now, verdict, want) in cases {
            assert_eq!(next_bumps(now, verdict), want, "{now:?} {verdict:?}");
        }
        for b in [Unknown, Confirmed, Refuted] {
            assert_eq!(CreationBumps::parse(b.as_str()), Some(b));
        }
    }

    #[test]
    fn after_a_write_the_snapshot_is_forgotten_replaced_advanced_or_kept() {
        let cases = [
            // (before, next, answered, stored, whole) -> decision
            ((7, 8, 8, Some(7), false), AfterWrite::Advance { base: 7 }),
            ((7, 8, 8, Some(6), false), AfterWrite::Keep),
            ((7, 8, 8, None, false), AfterWrite::Keep),
            ((7, 7, 7, Some(7), false), AfterWrite::Keep),
            ((7, 8, 8, Some(7), true), AfterWrite::Replace),
            ((7, 8, 8, None, true), AfterWrite::Replace),
            ((7, 8, 7, Some(7), false), AfterWrite::Forget),
            ((7, 8, 9, Some(7), true), AfterWrite::Forget),
        ];
        for ((before, next, answered, stored, whole), want) in cases {
            assert_eq!(
                after_write(before, next, answered, stored, whole),
                want,
                "{before} {next} {answered} {stored:?} {whole}"
            );
        }
    }
}
