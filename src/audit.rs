//! Tenant isolation problems visible in one snapshot of Metabase, found by pure functions.
//!
//! `mbprov audit` reads a [`Snapshot`] and prints the [`Finding`]s of [`audit`]. What counts:
//!
//! - A **tenant group** is a group named `Tenant: <id>` (the contract's naming). A group named
//!   `Tenant: <id> <more>` when `Tenant: <id>` also exists (the contract's own `Tenant: 42
//!   Editors`) belongs to the same tenant, so one tenant may have several groups.
//! - A group's **access to a database** is a [`DataLevel`]: `query` when any `create-queries`
//!   value (database, schema or table) is above `no`; else `view-only` when any `view-data`
//!   value is above `blocked` (it sees data through saved questions); else `blocked`. A
//!   **tenant database** is one on which a tenant group has more than the lowest level the
//!   instance can set (`blocked` with advanced permissions; `view-only` without: OSS cannot
//!   block), and All Users is flagged when it has more than that lowest level there.
//! - A **tenant collection** is one some tenant group can read or write. Groups of two tenants
//!   on one collection is a finding (neither can be told to be the owner, and both see each
//!   other's content), and so is All Users on it. Collections named as shared are exempt.
//! - A **tenant user** is an active member of a tenant group; being in groups of two tenants,
//!   or being a superuser, is a finding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::graph::Features;
use crate::metabase::models::{
    CollectionAccess, CollectionGraph, CollectionKey, CreateQueries, DataGraph, DbPerms, Granular,
    Group, GroupMember, Id, LegacyAccess, LegacyNative, LegacyTableAccess, SchemaLevel, User,
    ViewData,
};

/// The prefix of a tenant group's name (CONTRACT.md §4, `tenant.created`).
pub const TENANT_PREFIX: &str = "Tenant: ";

/// Everything the audit looks at, read once.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub features: Features,
    /// The All Users group's id.
    pub all_users: i64,
    /// The Administrators group's id.
    pub admin: i64,
    pub groups: Vec<Group>,
    pub data: DataGraph,
    pub collections: CollectionGraph,
    /// Tenant group id -> its active members (`GET /api/permissions/group/:id`).
    pub members: BTreeMap<i64, Vec<GroupMember>>,
    /// Active users (`GET /api/user`).
    pub users: Vec<User>,
}

/// What the operator tells the audit.
#[derive(Clone, Debug, Default)]
pub struct AuditOptions {
    /// Collections meant for every tenant (templates, shared dashboards): not reported.
    pub shared_collections: BTreeSet<CollectionKey>,
}

/// How much of a database a group can reach, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataLevel {
    Blocked,
    ViewOnly,
    Query,
}

impl fmt::Display for DataLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataLevel::Blocked => "blocked",
            DataLevel::ViewOnly => "view-only",
            DataLevel::Query => "query",
        })
    }
}

/// A tenant group: its id, name and the tenant it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantGroup {
    pub group_id: i64,
    pub group: String,
    pub tenant_id: String,
}

/// One tenant group's access to a collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupAccess {
    pub group_id: i64,
    pub group: String,
    pub tenant_id: String,
    pub access: CollectionAccess,
}

/// One isolation problem. JSON: an object with `check` (the variant, kebab-case) and fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum Finding {
    AllUsersCanViewTenantDatabase {
        database_id: i64,
        access: DataLevel,
        tenant_groups: Vec<String>,
    },
    CollectionSharedByTenants {
        collection: CollectionKey,
        groups: Vec<GroupAccess>,
    },
    AllUsersCanReadTenantCollection {
        collection: CollectionKey,
        access: CollectionAccess,
        tenant_groups: Vec<String>,
    },
    UserInSeveralTenants {
        user_id: i64,
        email: Option<String>,
        groups: Vec<String>,
    },
    TenantUserIsAdmin {
        user_id: i64,
        email: Option<String>,
        groups: Vec<String>,
    },
    /// Tenant users hold `write` on a collection users of other tenants can read.
    SharedCollectionCuratedByTenantUsers {
        collection: CollectionKey,
        /// Groups of tenant users with `write` there.
        curators: Vec<String>,
        /// The other groups of tenant users that can read it.
        readers: Vec<String>,
        /// Named shared by the operator (`--shared-collection`).
        named_shared: bool,
    },
    /// All tenant users views unfiltered a table other groups sandbox.
    EveryoneBypassesSandbox {
        database_id: i64,
        table_id: i64,
        group: String,
        sandboxed_groups: Vec<String>,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::AllUsersCanViewTenantDatabase {
                database_id,
                access,
                tenant_groups,
            } => write!(
                f,
                "database {database_id}: All Users has {access} access to a database tenant groups use ({}); block All Users there",
                tenant_groups.join(", ")
            ),
            Finding::CollectionSharedByTenants { collection, groups } => {
                let who: Vec<String> = groups
                    .iter()
                    .map(|g| format!("{} ({})", g.group, g.access))
                    .collect();
                write!(
                    f,
                    "{}: open to groups of several tenants: {}; keep one tenant, or pass --shared-collection {collection} if every tenant may see it",
                    collection_label(*collection),
                    who.join(", ")
                )
            }
            Finding::AllUsersCanReadTenantCollection {
                collection,
                access,
                tenant_groups,
            } => write!(
                f,
                "{}: All Users has {access} on a tenant collection ({}); revoke All Users there",
                collection_label(*collection),
                tenant_groups.join(", ")
            ),
            Finding::UserInSeveralTenants {
                user_id,
                email,
                groups,
            } => write!(
                f,
                "{}: in groups of several tenants: {}",
                user_label(*user_id, email.as_deref()),
                groups.join(", ")
            ),
            Finding::TenantUserIsAdmin {
                user_id,
                email,
                groups,
            } => write!(
                f,
                "{}: an administrator who is also a tenant user ({})",
                user_label(*user_id, email.as_deref()),
                groups.join(", ")
            ),
            Finding::SharedCollectionCuratedByTenantUsers {
                collection,
                curators,
                readers,
                named_shared,
            } => {
                let read_by = match (readers.is_empty(), named_shared) {
                    (false, _) => format!("read by {}", readers.join(", ")),
                    (true, true) => "named shared".to_string(),
                    (true, false) => "their members are of several tenants".to_string(),
                };
                write!(
                    f,
                    "{}: curated by tenant users ({}) while other tenants read it ({read_by}); give tenant users view access only",
                    collection_label(*collection),
                    curators.join(", ")
                )
            }
            Finding::EveryoneBypassesSandbox {
                database_id,
                table_id,
                group,
                sandboxed_groups,
            } => write!(
                f,
                "database {database_id}, table {table_id}: {group} can view every row of a table that a sandbox is meant to filter ({}); permissions add up, so block {group} there",
                sandboxed_groups.join(", ")
            ),
        }
    }
}

fn collection_label(c: CollectionKey) -> String {
    match c {
        CollectionKey::Root => "the root collection".into(),
        CollectionKey::Id(id) => format!("collection {id}"),
    }
}

fn user_label(id: i64, email: Option<&str>) -> String {
    match email {
        Some(e) => format!("user {id} ({e})"),
        None => format!("user {id}"),
    }
}

/// The tenant groups among `groups`, by group id.
pub fn tenant_groups(groups: &[Group]) -> BTreeMap<i64, TenantGroup> {
    let named: Vec<(&Group, &str)> = groups
        .iter()
        .filter(|g| !g.is_magic())
        .filter_map(|g| {
            let rest = g.name.strip_prefix(TENANT_PREFIX)?;
            (!rest.trim().is_empty()).then_some((g, rest))
        })
        .collect();
    let ids: BTreeSet<&str> = named.iter().map(|(_, rest)| *rest).collect();
    named
        .iter()
        .map(|(g, rest)| {
            // The shortest existing tenant id that this name extends owns the group.
            let tenant = ids
                .iter()
                .filter(|id| {
                    rest == *id
                        || rest
                            .strip_prefix(**id)
                            .is_some_and(|tail| tail.starts_with(' '))
                })
                .min_by_key(|id| id.len())
                .copied()
                .unwrap_or(rest);
            (
                g.id,
                TenantGroup {
                    group_id: g.id,
                    group: g.name.clone(),
                    tenant_id: tenant.to_string(),
                },
            )
        })
        .collect()
}

fn values<T>(g: &Granular<T>) -> Vec<&T> {
    match g {
        Granular::All(v) => vec![v],
        Granular::Schemas(schemas) => schemas
            .values()
            .flat_map(|level| match level {
                SchemaLevel::All(v) => vec![v],
                SchemaLevel::Tables(tables) => tables.values().collect(),
            })
            .collect(),
    }
}

/// A group's reach into one database, in either graph format. Missing values are the least
/// permissive ones (Metabase leaves them out); unknown spellings count as access.
pub fn data_level(perms: &DbPerms) -> DataLevel {
    let mut level = DataLevel::Blocked;
    if let Some(v) = &perms.view_data
        && values(v).into_iter().any(|v| *v != ViewData::Blocked)
    {
        level = DataLevel::ViewOnly;
    }
    if let Some(c) = &perms.create_queries
        && values(c).into_iter().any(|c| *c != CreateQueries::No)
    {
        return DataLevel::Query;
    }
    if let Some(legacy) = &perms.data {
        if matches!(legacy.native, Some(LegacyNative::Write)) {
            return DataLevel::Query;
        }
        if matches!(legacy.native, Some(LegacyNative::Read)) {
            level = level.max(DataLevel::ViewOnly);
        }
        for v in legacy.schemas.iter().flat_map(values) {
            match v {
                LegacyTableAccess::Value(LegacyAccess::Block) => {}
                LegacyTableAccess::Value(LegacyAccess::None) => {
                    level = level.max(DataLevel::ViewOnly)
                }
                _ => return DataLevel::Query,
            }
        }
    }
    level
}

/// The lowest level the instance can set: without advanced permissions nothing is `blocked`.
pub fn lowest_level(features: Features) -> DataLevel {
    if features.advanced_permissions {
        DataLevel::Blocked
    } else {
        DataLevel::ViewOnly
    }
}

/// Every finding, in a stable order: by check, then by database, collection or user id.
pub fn audit(snapshot: &Snapshot, options: &AuditOptions) -> Vec<Finding> {
    let tenants = tenant_groups(&snapshot.groups);
    let mut findings = all_users_on_tenant_databases(snapshot, &tenants);
    findings.extend(collection_findings(snapshot, &tenants, options));
    findings.extend(tenant_curated::findings(snapshot, &tenants, options));
    findings.extend(user_findings(snapshot, &tenants));
    findings.extend(sandbox_bypass::findings(snapshot));
    findings
}

fn all_users_on_tenant_databases(
    s: &Snapshot,
    tenants: &BTreeMap<i64, TenantGroup>,
) -> Vec<Finding> {
    let lowest = lowest_level(s.features);
    let level = |group: i64, db: Id| {
        s.data
            .groups
            .get(&Id(group))
            .and_then(|dbs| dbs.get(&db))
            .map_or(DataLevel::Blocked, data_level)
    };
    let mut users_by_db: BTreeMap<Id, Vec<String>> = BTreeMap::new();
    for t in tenants.values() {
        for (db, perms) in s.data.groups.get(&Id(t.group_id)).into_iter().flatten() {
            if data_level(perms) > lowest {
                users_by_db.entry(*db).or_default().push(t.group.clone());
            }
        }
    }
    users_by_db
        .into_iter()
        .filter_map(|(db, tenant_groups)| {
            let access = level(s.all_users, db);
            (access > lowest).then_some(Finding::AllUsersCanViewTenantDatabase {
                database_id: db.0,
                access,
                tenant_groups,
            })
        })
        .collect()
}

fn collection_findings(
    s: &Snapshot,
    tenants: &BTreeMap<i64, TenantGroup>,
    options: &AuditOptions,
) -> Vec<Finding> {
    let mut by_collection: BTreeMap<CollectionKey, Vec<GroupAccess>> = BTreeMap::new();
    for t in tenants.values() {
        for (coll, access) in s
            .collections
            .groups
            .get(&Id(t.group_id))
            .into_iter()
            .flatten()
        {
            if *access != CollectionAccess::None && !options.shared_collections.contains(coll) {
                by_collection.entry(*coll).or_default().push(GroupAccess {
                    group_id: t.group_id,
                    group: t.group.clone(),
                    tenant_id: t.tenant_id.clone(),
                    access: access.clone(),
                });
            }
        }
    }
    let mut shared = Vec::new();
    let mut all_users = Vec::new();
    for (collection, groups) in by_collection {
        let owners: BTreeSet<&str> = groups.iter().map(|g| g.tenant_id.as_str()).collect();
        let access = s.collections.access(s.all_users, collection);
        if access != CollectionAccess::None {
            all_users.push(Finding::AllUsersCanReadTenantCollection {
                collection,
                access,
                tenant_groups: groups.iter().map(|g| g.group.clone()).collect(),
            });
        }
        if owners.len() > 1 {
            shared.push(Finding::CollectionSharedByTenants { collection, groups });
        }
    }
    shared.extend(all_users);
    shared
}

fn user_findings(s: &Snapshot, tenants: &BTreeMap<i64, TenantGroup>) -> Vec<Finding> {
    struct Seen<'a> {
        email: Option<String>,
        superuser: bool,
        groups: BTreeSet<&'a TenantGroupRef<'a>>,
    }
    // Borrowed, ordered by name for stable output.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct TenantGroupRef<'a> {
        group: &'a str,
        tenant: &'a str,
    }
    let refs: BTreeMap<i64, TenantGroupRef> = tenants
        .iter()
        .map(|(id, t)| {
            (
                *id,
                TenantGroupRef {
                    group: &t.group,
                    tenant: &t.tenant_id,
                },
            )
        })
        .collect();
    let mut users: BTreeMap<i64, Seen> = BTreeMap::new();
    for (group, members) in &s.members {
        let Some(r) = refs.get(group) else { continue };
        for m in members {
            let seen = users.entry(m.user_id).or_insert_with(|| Seen {
                email: m.email.clone(),
                superuser: false,
                groups: BTreeSet::new(),
            });
            seen.superuser |= m.is_superuser;
            seen.groups.insert(r);
        }
    }
    for u in s.users.iter().filter(|u| u.is_active) {
        let ids = u.group_ids.as_deref().unwrap_or_default();
        let in_tenant: Vec<&TenantGroupRef> = ids.iter().filter_map(|g| refs.get(g)).collect();
        if in_tenant.is_empty() && !users.contains_key(&u.id) {
            continue;
        }
        let seen = users.entry(u.id).or_insert_with(|| Seen {
            email: None,
            superuser: false,
            groups: BTreeSet::new(),
        });
        seen.email = Some(u.email.clone());
        seen.superuser |= u.is_superuser || ids.contains(&s.admin);
        seen.groups.extend(in_tenant);
    }
    let names = |seen: &Seen| seen.groups.iter().map(|g| g.group.to_string()).collect();
    let mut several = Vec::new();
    let mut admins = Vec::new();
    for (user_id, seen) in &users {
        let tenants: BTreeSet<&str> = seen.groups.iter().map(|g| g.tenant).collect();
        if tenants.len() > 1 {
            several.push(Finding::UserInSeveralTenants {
                user_id: *user_id,
                email: seen.email.clone(),
                groups: names(seen),
            });
        }
        if seen.superuser {
            admins.push(Finding::TenantUserIsAdmin {
                user_id: *user_id,
                email: seen.email.clone(),
                groups: names(seen),
            });
        }
    }
    several.extend(admins);
    several
}

mod sandbox_bypass;
mod tenant_curated;

#[cfg(test)]
mod tests;
