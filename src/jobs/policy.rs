//! What no message may do, checked before any Metabase call and again on every graph body.
//!
//! Messages never add anyone to Administrators, never make a superuser, and never change the
//! permissions of All Users or Administrators (CONTRACT.md §4). Revoking All Users' inherited
//! access to a new tenant collection is the one exception: it takes access away, never grants.

use std::collections::BTreeSet;

use crate::graph::{CollectionOp, DataChange};
use crate::metabase::models::CollectionAccess;

/// Names of Metabase's built-in groups (and the names they are shown with when tenants are on).
const BUILTIN_NAMES: &[&str] = &[
    "all users",
    "administrators",
    "all internal users",
    "all tenant users",
    "data analysts",
];

pub fn is_builtin_group_name(name: &str) -> bool {
    BUILTIN_NAMES.contains(&name.trim().to_lowercase().as_str())
}

/// The built-in groups of one instance, found by `magic_group_type`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuiltinGroups {
    pub all_users: i64,
    pub admin: i64,
    /// Every group with a `magic_group_type`.
    pub all: BTreeSet<i64>,
}

/// Refuses a data change that touches a group the job does not name, or a built-in group.
pub fn check_data_change(
    change: &DataChange,
    named: &BTreeSet<i64>,
    builtin: &BuiltinGroups,
) -> Result<(), String> {
    for group in change.groups_touched() {
        if builtin.all.contains(&group) {
            return Err(format!(
                "group {group} is a built-in group: messages never change its data permissions"
            ));
        }
        if !named.contains(&group) {
            return Err(format!("group {group} is not named by this job"));
        }
    }
    Ok(())
}

/// Refuses collection operations that grant to a built-in group or touch a group the job does
/// not name. Isolation revokes every other group's access, so it may only ever target a
/// collection in `marked`: those Metabase itself showed to be marked for the job's tenant
/// (`graph::tenant_marker`), never one found by name.
pub fn check_collection_ops(
    ops: &[CollectionOp],
    named: &BTreeSet<i64>,
    builtin: &BuiltinGroups,
    marked: &BTreeSet<i64>,
) -> Result<(), String> {
    for op in ops {
        match op {
            CollectionOp::Set { group, access, .. } => {
                if builtin.all.contains(group) && *access != CollectionAccess::None {
                    return Err(format!(
                        "group {group} is a built-in group: messages never grant it access"
                    ));
                }
                if !named.contains(group) {
                    return Err(format!("group {group} is not named by this job"));
                }
            }
            CollectionOp::RevokeGroup { group } => {
                if builtin.all.contains(group) || !named.contains(group) {
                    return Err(format!("group {group} may not be revoked by this job"));
                }
            }
            CollectionOp::Isolate { collection, keep } => {
                if !marked.contains(collection) {
                    return Err(format!(
                        "collection {collection} is not marked for this job's tenant: it may not be isolated"
                    ));
                }
                if let Some(g) = keep.iter().find(|g| !named.contains(g)) {
                    return Err(format!("group {g} is not named by this job"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{DataAccess, Features, access::db_perms};
    use crate::metabase::models::{CollectionKey, CollectionNamespace};

    fn none() -> BTreeSet<i64> {
        BTreeSet::new()
    }

    fn builtin() -> BuiltinGroups {
        BuiltinGroups {
            all_users: 1,
            admin: 2,
            all: BTreeSet::from([1, 2]),
        }
    }

    #[test]
    fn builtin_names_in_any_case() {
        for n in [
            "All Users",
            "administrators",
            " ADMINISTRATORS ",
            "All tenant users",
        ] {
            assert!(is_builtin_group_name(n), "{n}");
        }
        assert!(!is_builtin_group_name("Tenant: 42"));
    }

    #[test]
    fn data_changes_touch_only_named_non_builtin_groups() {
        let perms = db_perms(DataAccess::QueryBuilder, Features::default());
        let named = BTreeSet::from([5]);
        assert_eq!(
            check_data_change(&DataChange::set(5, 1, perms.clone()), &named, &builtin()),
            Ok(())
        );
        assert!(
            check_data_change(&DataChange::set(6, 1, perms.clone()), &named, &builtin()).is_err()
        );
        assert!(
            check_data_change(
                &DataChange::set(1, 1, perms),
                &BTreeSet::from([1]),
                &builtin()
            )
            .is_err()
        );
    }

    #[test]
    fn collection_ops_never_grant_builtin_groups() {
        let named = BTreeSet::from([5]);
        let set = |group, access| CollectionOp::Set {
            group,
            collection: CollectionKey::Id(9),
            access,
            namespace: CollectionNamespace::Default,
        };
        assert_eq!(
            check_collection_ops(
                &[set(5, CollectionAccess::Read)],
                &named,
                &builtin(),
                &none()
            ),
            Ok(())
        );
        assert!(
            check_collection_ops(
                &[set(1, CollectionAccess::Read)],
                &BTreeSet::from([1]),
                &builtin(),
                &none()
            )
            .is_err()
        );
        assert!(
            check_collection_ops(
                &[set(6, CollectionAccess::Read)],
                &named,
                &builtin(),
                &none()
            )
            .is_err()
        );
        let isolate = CollectionOp::Isolate {
            collection: 9,
            keep: BTreeSet::from([5]),
        };
        assert_eq!(
            check_collection_ops(
                std::slice::from_ref(&isolate),
                &named,
                &builtin(),
                &BTreeSet::from([9])
            ),
            Ok(())
        );
        // Isolating a collection not shown to be the tenant's (an administrator's, or another
        // tenant's of the same name) is refused whoever asks.
        for marked in [none(), BTreeSet::from([8])] {
            assert!(
                check_collection_ops(std::slice::from_ref(&isolate), &named, &builtin(), &marked)
                    .is_err()
            );
        }
        assert!(
            check_collection_ops(
                &[CollectionOp::RevokeGroup { group: 2 }],
                &BTreeSet::from([2]),
                &builtin(),
                &none()
            )
            .is_err()
        );
    }
}
