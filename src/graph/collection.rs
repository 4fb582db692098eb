//! Partial bodies for the collection permissions graph.

use std::collections::BTreeSet;

use crate::metabase::models::{
    CollectionAccess, CollectionGraph, CollectionGroups, CollectionKey, Id,
};

/// One wish about the collection graph.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CollectionOp {
    /// One group's access to one collection.
    Set {
        group: i64,
        collection: CollectionKey,
        access: CollectionAccess,
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
}

/// The cells to PUT so that `ops` (in order; later ones win) hold over `current`: only cells
/// that differ, never the Administrators group's (Metabase refuses changes to it).
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

    #[test]
    fn isolation_revokes_inherited_cells_but_the_tenants_and_admins() {
        // Tenant collection 9 was born with its parent's cells: All Users write, group 5 read.
        let current = graph(json!({"revision": 4, "groups": {
            "1": {"root": "write", "2": "write", "9": "write"},
            "2": {"root": "write", "2": "write", "9": "write"},
            "5": {"2": "read", "9": "read"},
            "7": {"2": "read"}}}));
        let ops = [
            CollectionOp::Set {
                group: 7,
                collection: CollectionKey::Id(9),
                access: CollectionAccess::Read,
            },
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
            CollectionOp::Set {
                group: 7,
                collection: CollectionKey::Id(9),
                access: CollectionAccess::Read,
            },
            CollectionOp::Isolate {
                collection: 9,
                keep: BTreeSet::from([7]),
            },
            CollectionOp::Set {
                group: 8,
                collection: CollectionKey::Id(9),
                access: CollectionAccess::None,
            },
        ];
        assert_eq!(body(&current, &ops), json!({}));
    }

    #[test]
    fn revoke_group_sends_explicit_none_and_later_ops_win() {
        let current =
            graph(json!({"revision": 4, "groups": {"7": {"root": "read", "9": "write"}}}));
        let ops = [
            CollectionOp::Set {
                group: 7,
                collection: CollectionKey::Id(3),
                access: CollectionAccess::Write,
            },
            CollectionOp::RevokeGroup { group: 7 },
            CollectionOp::Set {
                group: 7,
                collection: CollectionKey::Id(9),
                access: CollectionAccess::Read,
            },
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
