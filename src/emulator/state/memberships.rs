//! How `user_group_memberships` becomes membership rows, per edition (correction 1 of
//! `../shared/metabase-api.md`): pure plans, applied by `users`.

use std::collections::{BTreeMap, BTreeSet};

/// One item of `user_group_memberships`: `{"id": G, "is_group_manager"?: bool|null}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipItem {
    pub group_id: i64,
    /// Outer `None`: the key is absent; `Some(None)`: `null`.
    pub is_group_manager: Option<Option<bool>>,
}

impl MembershipItem {
    /// An item as mbprov sends it (`"is_group_manager": false`).
    pub fn plain(group_id: i64) -> Self {
        MembershipItem {
            group_id,
            is_group_manager: Some(Some(false)),
        }
    }
}

/// What a membership change does: rows to delete (group ids), then rows to insert.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPlan {
    pub remove: Vec<i64>,
    /// (group id, stored `is_group_manager`).
    pub add: Vec<(i64, Option<bool>)>,
}

/// The free edition's `set-permissions-groups!`: the groups become exactly the listed ones;
/// `is_group_manager` is ignored (correction 1).
pub fn replace_plan(current: &[(i64, Option<bool>)], wanted: &[MembershipItem]) -> GroupPlan {
    let have: BTreeSet<i64> = current.iter().map(|(g, _)| *g).collect();
    let want: BTreeSet<i64> = wanted.iter().map(|i| i.group_id).collect();
    GroupPlan {
        remove: have.difference(&want).copied().collect(),
        add: want.difference(&have).map(|g| (*g, Some(false))).collect(),
    }
}

/// EE `group-manager/set-user-group-memberships!` (advanced permissions on): a
/// `clojure.data/diff` of `{group {:is_group_manager x}}` maps (correction 1). A stored row
/// always has the key; an item without it differs from every row, so the row is removed and
/// re-inserted, with `is_group_manager` taken from the item (absent -> NULL).
pub fn diff_plan(current: &[(i64, Option<bool>)], wanted: &[MembershipItem]) -> GroupPlan {
    let old: BTreeMap<i64, Option<bool>> = current.iter().copied().collect();
    let new: BTreeMap<i64, Option<Option<bool>>> = wanted
        .iter()
        .map(|i| (i.group_id, i.is_group_manager))
        .collect();
    GroupPlan {
        remove: old
            .iter()
            .filter(|(g, stored)| new.get(g) != Some(&Some(**stored)))
            .map(|(g, _)| *g)
            .collect(),
        add: new
            .iter()
            .filter(|(g, item)| old.get(g).map(|s| Some(*s)) != Some(**item))
            .map(|(g, item)| (*g, item.flatten()))
            .collect(),
    }
}
