//! Data access and sandboxes for tenant groups, or for All tenant users when a tenant names no
//! group. The same for every tenant (there is no per-tenant group), so after the first tenant
//! the group's slice already grants it and nothing is written.
//!
//! The same grant is not read again for every tenant: once verified (or written), it is
//! remembered in Redis with the data-graph revision of mbprov's last write, for at most
//! [`GRANT_TRUST`]. Any data-graph write by an mbprov writer, or the time running out, makes the
//! next tenant read the group's slice again; an edit made in the Metabase UI in between is
//! re-asserted at the latest then (see the README).
//!
//! Metabase's advice (docs `embedding/tenants.md`, "Data permissions for tenants"): permissions
//! are additive, so with tenant groups, revoke All tenant users and grant per group.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::AsyncCommands;

use crate::graph::DataAccess;
use crate::graph::DataChange;
use crate::graph::access::db_perms;
use crate::graph::data::still_needed;

use super::super::payloads::TenantCreated;
use super::super::policy::{self, BuiltinGroups};
use super::super::tenant_created::sandbox_change;
use super::super::{Context, JobError};
use super::NativeTenancy;
use crate::store::StoreError;

/// How long a verified shared grant is trusted without reading the graph.
pub const GRANT_TRUST: Duration = Duration::from_secs(600);

/// Grants `t.data_access` (and its sandboxes) on `t.database_id` to `groups`.
pub async fn grant(
    ctx: &Context,
    native: NativeTenancy,
    t: &TenantCreated,
    groups: &[i64],
) -> Result<(), JobError> {
    if t.data_access == DataAccess::Sandboxed && !ctx.features.sandboxes {
        return Err(JobError::Impossible(
            "this Metabase has no sandboxes feature (data_access \"sandboxed\")".into(),
        ));
    }
    let key = grant_key(ctx, t, groups);
    if grant_known(ctx, &key).await? {
        return Ok(());
    }
    let mut change = DataChange::default();
    for g in groups {
        let mut wanted = DataChange::set(*g, t.database_id, db_perms(t.data_access, ctx.features));
        if let Some(spec) = t
            .sandbox
            .as_ref()
            .filter(|_| t.data_access == DataAccess::Sandboxed)
        {
            let existing = ctx.mb.list_sandboxes(Some(*g)).await?;
            let (perms, sandboxes) = sandbox_change(ctx, t.database_id, *g, spec, true).await?;
            wanted.put(*g, t.database_id, perms);
            // A sandbox that exists with the same filter needs no write; one that differs is
            // updated by id (a second insert is a 500 in Metabase).
            wanted.sandboxes = sandboxes
                .into_iter()
                .filter_map(
                    |mut s| match existing.iter().find(|e| e.table_id == s.table_id) {
                        Some(e)
                            if e.attribute_remappings == s.attribute_remappings
                                && e.card_id.is_none() =>
                        {
                            None
                        }
                        Some(e) => {
                            s.id = e.id;
                            Some(s)
                        }
                        None => Some(s),
                    },
                )
                .collect();
        }
        let current = ctx.mb.data_graph_for_group(*g).await?;
        let needed = still_needed(&current.groups, &wanted);
        for (group, dbs) in needed.groups {
            for (db, perms) in dbs {
                change.put(group.0, db.0, perms);
            }
        }
        change.sandboxes.extend(needed.sandboxes);
    }
    if !change.is_empty() {
        let named: BTreeSet<i64> = groups.iter().copied().collect();
        policy::check_data_change(&change, &named, &tenant_builtin(ctx, native))
            .map_err(JobError::Policy)?;
        ctx.writer.write_data(change).await?;
    }
    remember_grant(ctx, &key).await
}

/// The Redis key of one shared grant: who gets what on which database.
fn grant_key(ctx: &Context, t: &TenantCreated, groups: &[i64]) -> String {
    let what = serde_json::json!([groups, t.database_id, t.data_access, t.sandbox]);
    format!("{}:native:grant:{what}", ctx.store.prefix())
}

/// The data revision of mbprov's last write, or -1 before any.
async fn last_data_revision(ctx: &Context) -> Result<i64, JobError> {
    Ok(ctx.store.last_revision("data").await?.unwrap_or(-1))
}

async fn grant_known(ctx: &Context, key: &str) -> Result<bool, JobError> {
    let mut conn = ctx.store.connection();
    let seen: Option<i64> = conn.get(key).await.map_err(|source| StoreError::Command {
        op: "read a verified grant",
        source,
    })?;
    Ok(seen.is_some() && seen == Some(last_data_revision(ctx).await?))
}

async fn remember_grant(ctx: &Context, key: &str) -> Result<(), JobError> {
    let revision = last_data_revision(ctx).await?;
    let mut conn = ctx.store.connection();
    conn.set_ex::<_, _, ()>(key, revision, GRANT_TRUST.as_secs())
        .await
        .map_err(|source| StoreError::Command {
            op: "remember a verified grant",
            source,
        })?;
    Ok(())
}

/// The built-in groups a native job may not touch: every magic group but All tenant users,
/// which is how Metabase means tenant-wide access to be granted.
pub fn tenant_builtin(ctx: &Context, native: NativeTenancy) -> BuiltinGroups {
    let mut b = ctx.builtin.clone();
    b.all.remove(&native.all_tenant_users);
    b
}
