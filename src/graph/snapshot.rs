//! What the collection writer knows of the collection graph without reading all of it.
//!
//! Metabase serves the collection graph only whole, and it grows with every tenant. A tenant's
//! write needs just a few rows of it: the parent collection a new tenant collection copies its
//! cells from, and the collections the write names. So the writer keeps, in Redis, the graph as
//! of one revision, row by row, and moves it forward by its own events, each of which bumps the
//! revision by exactly one: a collection it created (a copy of the parent's row, metabase#59727)
//! and a graph write that changed something. The next write is sent with the revision that
//! bookkeeping predicts. Metabase accepts it only if no one else bumped the revision in between,
//! and then every row used was exact; any other writer makes it a 409, and the writer reads the
//! whole graph again. A stale row can therefore cost a read, never a wrong write.

use std::collections::{BTreeMap, BTreeSet};

use crate::metabase::models::{
    CollectionAccess, CollectionGraph, CollectionGroups, CollectionKey, Id,
};

use super::CollectionOp;

/// One collection's cells: group -> `read` or `write` (a missing group has `none`).
pub type Row = BTreeMap<Id, CollectionAccess>;

/// Some rows of the collection graph, exact as of `revision`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub rows: BTreeMap<CollectionKey, Row>,
}

impl Snapshot {
    /// All rows of a graph read from Metabase (explicit `none` cells of pre-sparse releases
    /// dropped, so both shapes give the same rows).
    pub fn from_graph(graph: &CollectionGraph) -> Snapshot {
        let mut rows: BTreeMap<CollectionKey, Row> = BTreeMap::new();
        for (group, cells) in &graph.groups {
            for (collection, access) in cells {
                if *access != CollectionAccess::None {
                    rows.entry(*collection)
                        .or_default()
                        .insert(*group, access.clone());
                }
            }
        }
        Snapshot {
            revision: graph.revision,
            rows,
        }
    }

    /// The rows as a (partial) graph, the shape [`super::collection_body`] works on.
    pub fn graph(&self) -> CollectionGraph {
        let mut groups = CollectionGroups::new();
        for (collection, row) in &self.rows {
            for (group, access) in row {
                groups
                    .entry(*group)
                    .or_default()
                    .insert(*collection, access.clone());
            }
        }
        CollectionGraph {
            revision: self.revision,
            groups,
            ..CollectionGraph::default()
        }
    }

    /// Whether `key` has any cell: a collection the graph lists always has one (the
    /// Administrators group's `write`), so an empty row is a collection outside the graph.
    pub fn has_row(&self, key: CollectionKey) -> bool {
        self.rows.get(&key).is_some_and(|row| !row.is_empty())
    }

    /// Metabase created `child` under `parent`: it copied the parent's cells for every group
    /// and bumped the revision.
    pub fn created(&mut self, child: i64, parent: CollectionKey) {
        let row = self.rows.get(&parent).cloned().unwrap_or_default();
        self.rows.insert(CollectionKey::Id(child), row);
        self.revision += 1;
    }

    /// Metabase accepted `body`, computed by [`super::collection_body`] against these rows (so
    /// every cell in it is a change): the cells now hold and the revision went up by one.
    /// Returns the rows that changed.
    pub fn apply(&mut self, body: &CollectionGroups) -> BTreeSet<CollectionKey> {
        let mut touched = BTreeSet::new();
        for (group, cells) in body {
            for (collection, access) in cells {
                let row = self.rows.entry(*collection).or_default();
                if *access == CollectionAccess::None {
                    row.remove(group);
                } else {
                    row.insert(*group, access.clone());
                }
                touched.insert(*collection);
            }
        }
        if !touched.is_empty() {
            self.revision += 1;
        }
        touched
    }
}

/// The rows a write of `ops`, creating collections under `parents`, has to know; `None` when it
/// needs every row (revoking all of a group's access has to find the group everywhere).
pub fn rows_needed(
    ops: &[CollectionOp],
    parents: impl IntoIterator<Item = CollectionKey>,
) -> Option<BTreeSet<CollectionKey>> {
    let mut keys: BTreeSet<CollectionKey> = parents.into_iter().collect();
    for op in ops {
        match op {
            CollectionOp::Set { collection, .. } => {
                keys.insert(*collection);
            }
            CollectionOp::Isolate { collection, .. } => {
                keys.insert(CollectionKey::Id(*collection));
            }
            CollectionOp::RevokeGroup { .. } => return None,
        }
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::collection_body;
    use crate::metabase::models::CollectionNamespace;
    use serde_json::json;

    fn graph(v: serde_json::Value) -> CollectionGraph {
        serde_json::from_value(v).unwrap()
    }

    fn shared() -> Snapshot {
        // Collection 2 is shared: All Users (1) reads it, admins (2) write everywhere.
        Snapshot::from_graph(&graph(json!({"revision": 7, "groups": {
            "1": {"root": "write", "2": "read"},
            "2": {"root": "write", "2": "write", "9": "write"},
            "7": {"9": "read"}}})))
    }

    #[test]
    fn rows_are_per_collection_and_drop_explicit_none() {
        let dense = graph(json!({"revision": 3, "groups": {
            "1": {"root": "none", "2": "read"}, "5": {"2": "none"}}}));
        let s = Snapshot::from_graph(&dense);
        assert_eq!(s.revision, 3);
        assert_eq!(
            s.rows,
            BTreeMap::from([(
                CollectionKey::Id(2),
                Row::from([(Id(1), CollectionAccess::Read)])
            )])
        );
        assert_eq!(
            serde_json::to_value(s.graph().groups).unwrap(),
            json!({"1": {"2": "read"}})
        );
    }

    #[test]
    fn a_created_collection_starts_with_its_parents_row_one_revision_later() {
        let mut s = shared();
        s.created(12, CollectionKey::Id(2));
        assert_eq!(s.revision, 8);
        assert_eq!(
            s.rows[&CollectionKey::Id(12)],
            s.rows[&CollectionKey::Id(2)]
        );
        // A parent with no cells (or an unknown row) gives an empty row.
        s.created(13, CollectionKey::Id(40));
        assert_eq!(s.revision, 9);
        assert!(s.rows[&CollectionKey::Id(13)].is_empty());
    }

    #[test]
    fn a_new_tenant_collection_is_isolated_from_the_copied_row() {
        let mut s = shared();
        s.created(12, CollectionKey::Id(2));
        let ops = [
            CollectionOp::Set {
                group: 7,
                collection: CollectionKey::Id(12),
                access: CollectionAccess::Read,
                namespace: CollectionNamespace::Default,
            },
            CollectionOp::Isolate {
                collection: 12,
                keep: BTreeSet::from([7]),
            },
        ];
        let body = collection_body(&s.graph(), &ops, 2);
        // All Users loses the read it copied; admins are never written.
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"1": {"12": "none"}, "7": {"12": "read"}})
        );
        let touched = s.apply(&body);
        assert_eq!(touched, BTreeSet::from([CollectionKey::Id(12)]));
        assert_eq!(s.revision, 9);
        assert_eq!(
            s.rows[&CollectionKey::Id(12)],
            Row::from([
                (Id(2), CollectionAccess::Write),
                (Id(7), CollectionAccess::Read)
            ])
        );
    }

    #[test]
    fn an_empty_body_changes_nothing_and_keeps_the_revision() {
        let mut s = shared();
        assert!(s.apply(&CollectionGroups::new()).is_empty());
        assert_eq!(s, shared());
    }

    #[test]
    fn rows_needed_names_parents_and_targets_or_everything() {
        let ops = [
            CollectionOp::Set {
                group: 7,
                collection: CollectionKey::Root,
                access: CollectionAccess::Read,
                namespace: CollectionNamespace::Default,
            },
            CollectionOp::Isolate {
                collection: 12,
                keep: BTreeSet::from([7]),
            },
        ];
        assert_eq!(
            rows_needed(&ops, [CollectionKey::Id(2)]),
            Some(BTreeSet::from([
                CollectionKey::Root,
                CollectionKey::Id(2),
                CollectionKey::Id(12)
            ]))
        );
        let revoke = [CollectionOp::RevokeGroup { group: 7 }];
        assert_eq!(rows_needed(&revoke, []), None);
    }
}
