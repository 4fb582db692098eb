//! Partial bodies for the collection permissions graph.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::metabase::models::{
    CollectionAccess, CollectionGraph, CollectionGroups, CollectionKey, CollectionNamespace, Id,
};

/// One wish about the collection graph. Only `Set` can address another namespace than the
/// default: isolation and revocation are about group tenancy's own collections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectionOp {
    /// One group's access to one collection of `namespace` (`root`: that namespace's root).
    Set {
        group: i64,
        collection: CollectionKey,
        access: CollectionAccess,
        #[serde(default)]
        namespace: CollectionNamespace,
    },
    /// Revoke every group's access to `collection` except `keep`'s: a new collection copies
    /// its parent's cells for every group, so a tenant collection starts readable by all.
    Isolate {
        collection: i64,
        keep: BTreeSet<i64>,
    },
    /// Revoke all of a group's collection access.
    RevokeGroup { group: i64 },
}

impl CollectionOp {
    pub fn groups_named(&self) -> BTreeSet<i64> {
        match self {
            CollectionOp::Set { group, .. } | CollectionOp::RevokeGroup { group } => {
                BTreeSet::from([*group])
            }
            CollectionOp::Isolate { keep, .. } => keep.clone(),
        }
    }

    /// The namespace whose slice of the graph this op is written in.
    pub fn namespace(&self) -> CollectionNamespace {
        match self {
            CollectionOp::Set { namespace, .. } => *namespace,
            CollectionOp::Isolate { .. } | CollectionOp::RevokeGroup { .. } => {
                CollectionNamespace::Default
            }
        }
    }
}

/// `ops` split by namespace, each keeping its order. Metabase drops a PUT's cells for
/// collections of another namespace than the body's without a word
/// (`permissions/models/collection/graph.clj`, `remove-collections-from-other-namespaces`), so
/// each namespace is read and written apart.
pub fn by_namespace(ops: Vec<CollectionOp>) -> BTreeMap<CollectionNamespace, Vec<CollectionOp>> {
    let mut out: BTreeMap<CollectionNamespace, Vec<CollectionOp>> = BTreeMap::new();
    for op in ops {
        out.entry(op.namespace()).or_default().push(op);
    }
    out
}

/// The collections `ops` name that `graph` (one namespace's) does not hold: not live
/// collections of that namespace (another namespace's, archived, personal or missing), whose
/// cells Metabase would drop or refuse. The Administrators' row lists every eligible collection
/// of the namespace (`graph`, query 3: admins have write on all of them).
pub fn foreign_collections(
    graph: &CollectionGraph,
    ops: &[CollectionOp],
    admin_group: i64,
) -> BTreeSet<i64> {
    let live = graph.groups.get(&Id(admin_group));
    ops.iter()
        .filter_map(|op| match op {
            CollectionOp::Set {
                collection: CollectionKey::Id(id),
                ..
            } => Some(*id),
            _ => None,
        })
        .filter(|id| !live.is_some_and(|cells| cells.contains_key(&CollectionKey::Id(*id))))
        .collect()
}

/// The cells to PUT so that `ops` (in order; later ones win) hold over `current`: only cells
/// that differ, never the Administrators group's (Metabase refuses changes to it). `ops` and
/// `current` are of one namespace ([`by_namespace`]).
pub fn collection_body(
    current: &CollectionGraph,
    ops: &[CollectionOp],
    admin_group: i64,
) -> CollectionGroups {
    let mut wanted = CollectionGroups::new();
    let mut set = |group: i64, collection: CollectionKey, access: CollectionAccess| {
        if group != admin_group {
            wanted
                .entry(Id(group))
                .or_default()
                .insert(collection, access);
        }
    };
    for op in ops {
        match op {
            CollectionOp::Set {
                group,
                collection,
                access,
                ..
            } => set(*group, *collection, access.clone()),
            CollectionOp::Isolate { collection, keep } => {
                let key = CollectionKey::Id(*collection);
                for (group, cells) in &current.groups {
                    if !keep.contains(&group.0) && cells.contains_key(&key) {
                        set(group.0, key, CollectionAccess::None);
                    }
                }
            }
            CollectionOp::RevokeGroup { group } => {
                if let Some(cells) = current.groups.get(&Id(*group)) {
                    for collection in cells.keys() {
                        set(*group, *collection, CollectionAccess::None);
                    }
                }
            }
        }
    }
    wanted
        .into_iter()
        .filter_map(|(group, cells)| {
            let changed: std::collections::BTreeMap<_, _> = cells
                .into_iter()
                .filter(|(c, a)| current.access(group.0, *c) != *a)
                .collect();
            (!changed.is_empty()).then_some((group, changed))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(v: serde_json::Value) -> CollectionGraph {
        serde_json::from_value(v).unwrap()
    }

    fn body(current: &CollectionGraph, ops: &[CollectionOp]) -> serde_json::Value {
        serde_json::to_value(collection_body(current, ops, 2)).unwrap()
    }

    fn set(group: i64, collection: CollectionKey, access: CollectionAccess) -> CollectionOp {
        CollectionOp::Set {
            group,
            collection,
            access,
            namespace: CollectionNamespace::Default,
        }
    }

    fn shared(group: i64, collection: CollectionKey, access: CollectionAccess) -> CollectionOp {
        CollectionOp::Set {
            group,
            collection,
            access,
            namespace: CollectionNamespace::SharedTenant,
        }
    }

    #[test]
    fn ops_are_split_by_namespace_in_order() {
        use CollectionAccess::{None as N, Read as R};
        use CollectionNamespace::{Default as D, SharedTenant as S};
        let ops = vec![
            shared(7, CollectionKey::Root, R),
            set(7, CollectionKey::Id(3), R),
            CollectionOp::RevokeGroup { group: 8 },
            shared(7, CollectionKey::Root, N),
            CollectionOp::Isolate {
                collection: 9,
                keep: BTreeSet::new(),
            },
        ];
        let split = by_namespace(ops);
        let names: Vec<_> = split.keys().copied().collect();
        assert_eq!(names, vec![D, S]);
        assert_eq!(split[&D].len(), 3);
        assert_eq!(
            split[&S],
            vec![
                shared(7, CollectionKey::Root, R),
                shared(7, CollectionKey::Root, N)
            ]
        );
    }

    #[test]
    fn foreign_collections_are_those_the_admins_row_lacks() {
        // A shared-namespace graph: Administrators write on its root and on 40, 41.
        let current = graph(json!({"revision": 9, "groups": {
            "2": {"root": "write", "40": "write", "41": "write"},
            "7": {"40": "read"}}}));
        let cases: [(Vec<CollectionOp>, Vec<i64>); 4] = [
            (
                vec![shared(7, CollectionKey::Id(41), CollectionAccess::Read)],
                vec![],
            ),
            // root is always there; 2 is a default-namespace collection, 99 nothing at all.
            (
                vec![
                    shared(7, CollectionKey::Root, CollectionAccess::Read),
                    shared(7, CollectionKey::Id(2), CollectionAccess::Read),
                    shared(8, CollectionKey::Id(99), CollectionAccess::None),
                ],
                vec![2, 99],
            ),
            (vec![CollectionOp::RevokeGroup { group: 7 }], vec![]),
            (vec![], vec![]),
        ];
        for (ops, want) in cases {
            let got: Vec<i64> = foreign_collections(&current, &ops, 2).into_iter().collect();
            assert_eq!(got, want, "{ops:?}");
        }
        // Without an Administrators row (never in practice) nothing counts as live.
        let empty = graph(json!({"revision": 1, "groups": {}}));
        let ops = [shared(7, CollectionKey::Id(40), CollectionAccess::Read)];
        assert_eq!(foreign_collections(&empty, &ops, 2), BTreeSet::from([40]));
    }

    #[test]
    fn ops_round_trip_through_json_and_default_to_the_default_namespace() {
        let ops = vec![
            shared(7, CollectionKey::Root, CollectionAccess::Read),
            set(7, CollectionKey::Id(3), CollectionAccess::Write),
        ];
        let text = serde_json::to_string(&ops).unwrap();
        let back: Vec<CollectionOp> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ops);
        let old: CollectionOp = serde_json::from_value(
            json!({"Set": {"group": 7, "collection": "root", "access": "read"}}),
        )
        .unwrap();
        assert_eq!(old.namespace(), CollectionNamespace::Default);
    }

    #[test]
    fn isolation_revokes_inherited_cells_but_the_tenants_and_admins() {
        // Tenant collection 9 was born with its parent's cells: All Users write, group 5 read.
        let current = graph(json!({"revision": 4, "groups": {
            "1": {"root": "write", "2": "write", "9": "write"},
            "2": {"root": "write", "2": "write", "9": "write"},
            "5": {"2": "read", "9": "read"},
            "7": {"2": "read"}}}));
        let ops = [
            set(7, CollectionKey::Id(9), CollectionAccess::Read),
            CollectionOp::Isolate {
                collection: 9,
                keep: BTreeSet::from([7]),
            },
        ];
        assert_eq!(
            body(&current, &ops),
            json!({"1": {"9": "none"}, "5": {"9": "none"}, "7": {"9": "read"}})
        );
    }

    #[test]
    fn nothing_to_send_when_already_true() {
        let current = graph(json!({"revision": 4, "groups": {"7": {"9": "read"}}}));
        let ops = [
            set(7, CollectionKey::Id(9), CollectionAccess::Read),
            CollectionOp::Isolate {
                collection: 9,
                keep: BTreeSet::from([7]),
            },
            set(8, CollectionKey::Id(9), CollectionAccess::None),
        ];
        assert_eq!(body(&current, &ops), json!({}));
    }

    #[test]
    fn revoke_group_sends_explicit_none_and_later_ops_win() {
        let current =
            graph(json!({"revision": 4, "groups": {"7": {"root": "read", "9": "write"}}}));
        let ops = [
            set(7, CollectionKey::Id(3), CollectionAccess::Write),
            CollectionOp::RevokeGroup { group: 7 },
            set(7, CollectionKey::Id(9), CollectionAccess::Read),
        ];
        assert_eq!(
            body(&current, &ops),
            json!({"7": {"root": "none", "3": "write", "9": "read"}})
        );
    }

    #[test]
    fn the_admin_group_is_never_written() {
        let current = graph(json!({"revision": 4, "groups": {"2": {"9": "write"}}}));
        let ops = [CollectionOp::RevokeGroup { group: 2 }];
        assert_eq!(body(&current, &ops), json!({}));
    }
}
