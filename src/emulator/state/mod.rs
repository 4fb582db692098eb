//! Everything the emulated Metabase knows, and the pure operations on it.
//!
//! Handlers lock one [`State`], call one operation, and render the result; every rule of
//! metabase-api.md lives here so it can be unit-tested without HTTP.
//!
//! # Initial state
//!
//! - Groups: 1 "All Users" (`magic_group_type` `all-internal-users`), 2 "Administrators" (`admin`).
//! - User 1 `admin@example.com` "Ada Admin", password [`ADMIN_PASSWORD`], superuser, in groups 1
//!   (membership 1) and 2 (membership 2). With `fresh`, there is no user at all: `POST /api/setup`
//!   creates the first one.
//! - Databases: 1 "Sample Database", schema `PUBLIC`: tables 10 `ORDERS` (fields 100 `ID`, 101
//!   `ORGANIZATION_ID`, 102 `TOTAL`) and 11 `PEOPLE` (110 `ID`, 111 `ORGANIZATION_ID`, 112 `EMAIL`);
//!   2 "Warehouse", schema `analytics`: tables 20 `events` (200 `id`, 201 `organization_id`) and
//!   21 `accounts` (210 `id`, 211 `organization_id`).
//! - Data graph, revision 1: All Users has `{"view-data":"unrestricted","create-queries":
//!   "query-builder-and-native","download":{"schemas":"full"}}` on both databases (Metabase's
//!   default for a new database). Administrators are synthesised, never stored.
//! - Collections: Root; 1 "Ada Admin's Personal Collection" (owner 1); 2 "Shared" at top level.
//!   Collection graph, revision 1: All Users has `root: write` and `2: write`; Administrators
//!   synthesised (`write` on every eligible collection).

mod catalog;
mod collection_graph;
mod collections;
mod data_graph;
mod data_put;
mod edition;
mod groups;
mod memberships;
mod sandboxes;
mod seed;
mod tenants;
mod users;

use std::collections::{BTreeMap, BTreeSet};

pub use catalog::{Catalog, DatabaseRec, FieldRec, TableRec};
pub use collections::{CollectionPatch, CollectionRec, NewCollectionInput};
pub use data_graph::{DataPerms, DbFlags, TablePerms, admin_db_perms};
pub use data_put::DataPutOutcome;
pub use edition::{Edition, EditionName, NEWEST_RELEASE};
pub use groups::GroupRec;
pub use memberships::{GroupPlan, MembershipItem, diff_plan, replace_plan};
pub use sandboxes::SandboxRec;
pub use seed::SeededTenant;
pub use tenants::{
    Tenancy, TenancyFilter, TenantPatch, TenantRec, tenant_attributes, tenants_paid,
};
pub use users::{NewUserInput, StatusFilter, UserListQuery, UserPatch, UserRec};

use crate::metabase::models::{CollectionAccess, CollectionKey};

/// The password of the initial admin (not in `--fresh` mode), for `POST /api/session`.
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const ALL_USERS_GROUP: i64 = 1;
pub const ADMIN_GROUP: i64 = 2;
pub const SHARED_COLLECTION: i64 = 2;

/// A group membership row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MembershipRec {
    pub id: i64,
    pub user_id: i64,
    pub group_id: i64,
    /// EE group managers; `None` is the NULL an EE membership item without the key inserts
    /// (correction 1).
    pub is_group_manager: Option<bool>,
}

/// An API key made with `POST /api/api-key`. The key itself is kept only to authenticate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ApiKeyRec {
    pub id: i64,
    pub name: String,
    pub group_id: i64,
    #[serde(skip)]
    pub key: String,
    pub masked_key: String,
    pub created_at: String,
}

/// Monotonic id counters, one per table, like the app database's sequences.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sequences {
    pub user: i64,
    pub group: i64,
    pub membership: i64,
    pub collection: i64,
    pub sandbox: i64,
    pub api_key: i64,
}

impl Sequences {
    pub fn take(counter: &mut i64) -> i64 {
        *counter += 1;
        *counter
    }
}

#[derive(Clone, Debug)]
pub struct State {
    pub edition: Edition,
    pub users: BTreeMap<i64, UserRec>,
    pub groups: BTreeMap<i64, GroupRec>,
    pub memberships: BTreeMap<i64, MembershipRec>,
    pub collections: BTreeMap<i64, CollectionRec>,
    pub catalog: Catalog,
    pub data: DataPerms,
    pub data_revision: i64,
    /// Group -> collection -> `read`/`write` (a `none` cell is simply absent).
    pub collection_perms: BTreeMap<i64, BTreeMap<CollectionKey, CollectionAccess>>,
    /// The roots of the other namespaces: namespace -> group -> `read`/`write`. Metabase keeps
    /// each namespace's root apart (`/collection/namespace/<ns>/root/`, `graph` in
    /// `permissions/models/collection/graph.clj`).
    pub namespace_roots: BTreeMap<String, BTreeMap<i64, CollectionAccess>>,
    /// One revision for every namespace (`collection_permission_graph_revision`).
    pub collection_revision: i64,
    pub sandboxes: BTreeMap<i64, SandboxRec>,
    pub api_keys: BTreeMap<i64, ApiKeyRec>,
    /// Session id -> user id.
    pub sessions: BTreeMap<String, i64>,
    /// Until the first user exists (`--fresh`), the token `POST /api/setup` wants.
    pub setup_token: Option<String>,
    pub seq: Sequences,
    pub seeded_tenants: i64,
    /// Metabase Tenants (see `tenants.rs`).
    pub tenancy: Tenancy,
}

impl State {
    /// The documented initial state (see the module doc); `fresh` leaves out every user.
    pub fn new(edition: Edition, fresh: bool) -> Self {
        let mut state = State {
            edition,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            memberships: BTreeMap::new(),
            collections: BTreeMap::new(),
            catalog: Catalog::sample(),
            data: DataPerms::default(),
            data_revision: 1,
            collection_perms: BTreeMap::new(),
            namespace_roots: BTreeMap::new(),
            collection_revision: 1,
            sandboxes: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            sessions: BTreeMap::new(),
            setup_token: None,
            seq: Sequences {
                user: 0,
                group: 2,
                membership: 0,
                collection: 0,
                sandbox: 0,
                api_key: 0,
            },
            seeded_tenants: 0,
            tenancy: Tenancy::default(),
        };
        state.groups.insert(
            ALL_USERS_GROUP,
            GroupRec::magic(ALL_USERS_GROUP, "All Users", "all-internal-users"),
        );
        state.groups.insert(
            ADMIN_GROUP,
            GroupRec::magic(ADMIN_GROUP, "Administrators", "admin"),
        );
        for db in state.catalog.databases.clone() {
            state.data.grant_default(ALL_USERS_GROUP, &db);
        }
        if fresh {
            state.setup_token = Some(uuid::Uuid::new_v4().to_string());
            // The personal collection id 1 is reserved for the first user in both modes, so
            // "Shared" is always collection 2.
            state.seq.collection = 1;
        } else {
            state.insert_user_record(
                "admin@example.com",
                Some("Ada"),
                Some("Admin"),
                Some(ADMIN_PASSWORD.to_string()),
            );
            state.add_membership_unchecked(1, ADMIN_GROUP);
        }
        let shared = state.insert_collection_record("Shared", None, None, None);
        debug_assert_eq!(shared, SHARED_COLLECTION);
        let all = state.collection_perms.entry(ALL_USERS_GROUP).or_default();
        all.insert(CollectionKey::Root, CollectionAccess::Write);
        all.insert(CollectionKey::Id(shared), CollectionAccess::Write);
        state
    }

    /// Whether the user is an active member of Administrators.
    pub fn is_active_admin(&self, user_id: i64) -> bool {
        self.users
            .get(&user_id)
            .is_some_and(|u| u.is_active && u.is_superuser)
    }

    pub fn active_admin_count(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.is_active && u.is_superuser)
            .count()
    }

    /// Group ids of a user, sorted.
    pub fn group_ids_of(&self, user_id: i64) -> Vec<i64> {
        let set: BTreeSet<i64> = self
            .memberships
            .values()
            .filter(|m| m.user_id == user_id)
            .map(|m| m.group_id)
            .collect();
        set.into_iter().collect()
    }

    /// A user's memberships as (group id, `is_group_manager`), sorted by group.
    pub fn membership_pairs(&self, user_id: i64) -> Vec<(i64, Option<bool>)> {
        let mut rows: Vec<(i64, Option<bool>)> = self
            .memberships
            .values()
            .filter(|m| m.user_id == user_id)
            .map(|m| (m.group_id, m.is_group_manager))
            .collect();
        rows.sort_by_key(|(g, _)| *g);
        rows.dedup_by_key(|(g, _)| *g);
        rows
    }

    /// User id -> sorted group ids, built once for list endpoints (one scan, not one per user).
    pub fn group_index(&self) -> BTreeMap<i64, Vec<i64>> {
        let mut index: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for m in self.memberships.values() {
            index.entry(m.user_id).or_default().insert(m.group_id);
        }
        index
            .into_iter()
            .map(|(u, g)| (u, g.into_iter().collect()))
            .collect()
    }

    pub fn membership_of(&self, user_id: i64, group_id: i64) -> Option<&MembershipRec> {
        self.memberships
            .values()
            .find(|m| m.user_id == user_id && m.group_id == group_id)
    }
}

/// An RFC 3339 timestamp for `date_joined`, `created_at` and the like.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
