//! `tenant.created`: group, user, collection, collection access, data access (CONTRACT.md §4).
//!
//! A brand-new tenant costs three creating requests (group, user with its attributes and
//! memberships, collection) plus its share of two coalesced graph writes. Re-runs read first and
//! write only what is missing. The tenant's collection is the one marked for its `tenant_id` in
//! Metabase (`graph::tenant_marker`), whatever its name: a renamed tenant's collection is
//! renamed, and two tenants of the same name get one collection each.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::graph::access::{db_perms, sandboxed_tables};
use crate::graph::data::still_needed;
use crate::graph::{DataAccess, DataChange};
use crate::graph_writer::TenantCollection;
use crate::metabase::models::{CollectionAccess, Sandbox};

use super::payloads::{CollectionLevel, SandboxSpec, TenantCreated};
use super::{Context, JobError, policy};

/// The group of a tenant: part of the public contract.
pub fn group_name(tenant_id: &str) -> String {
    format!("Tenant: {tenant_id}")
}

/// The collection of a tenant: part of the public contract.
pub fn collection_name(tenant_name: &str) -> String {
    format!("{tenant_name} Dashboards")
}

pub async fn run(ctx: &Context, t: &TenantCreated) -> Result<(), JobError> {
    // Refuse before creating anything, so a refused tenant leaves nothing half-made behind.
    if t.data_access == DataAccess::Sandboxed && !ctx.features.sandboxes {
        return Err(no_sandboxes());
    }
    let dir = ctx.directory();
    let group = dir.ensure_group(&group_name(&t.tenant_id)).await?;
    if ctx.builtin.all.contains(&group.id) {
        return Err(JobError::Policy(format!(
            "group {} is a built-in group",
            group.id
        )));
    }

    let mut attributes = BTreeMap::from([(
        "organization_id".to_string(),
        Value::String(t.tenant_id.clone()),
    )]);
    if let Some(s) = &t.sandbox {
        attributes.insert(s.attribute.clone(), Value::String(t.tenant_id.clone()));
    }
    let person = &t.admin_user;
    let new = dir.new_user(
        &person.email,
        person.first_name.as_deref(),
        person.last_name.as_deref(),
        &[group.id],
        attributes.clone(),
    );
    let (user, created) = dir.create_or_find_user(new).await?;
    if !created {
        if user.is_superuser {
            tracing::info!(
                user = user.id,
                "tenant admin user is a Metabase superuser; memberships and attributes still apply"
            );
        }
        let changes = attributes.into_iter().map(|(k, v)| (k, Some(v))).collect();
        dir.reconcile_user(&user, None, None, &changes, &[group.id])
            .await?;
    }

    let named = BTreeSet::from([group.id]);
    let data = data_change(ctx, t, group.id, group.created).await?;
    policy::check_data_change(&data, &named, &ctx.builtin).map_err(JobError::Policy)?;
    let access = match t.collection_access {
        CollectionLevel::Read => CollectionAccess::Read,
        CollectionLevel::Write => CollectionAccess::Write,
    };
    // The collection is found by the tenant's marker, created, granted and isolated in one
    // trip through the collection writer; the policy check of its operations runs there, once
    // Metabase has shown which collection is marked for this tenant.
    let collection = TenantCollection::new(
        t.tenant_id.clone(),
        collection_name(&t.tenant_name),
        t.shared_collection_id,
        group.id,
        access,
        t.isolate_collection,
        ctx.builtin.clone(),
    )
    .new_tenant(group.created);
    // The collection first, then the data change: under load the jobs of one collection batch
    // are settled together, so their data changes reach the data graph's queue together and
    // go out in one write (in parallel they trickled in, one small data write each). It costs
    // one data write's latency per tenant, not throughput: the collection writer, which creates
    // collections one at a time, is what bounds the fleet.
    ctx.writer.provision_tenant_collection(collection).await?;
    ctx.writer.write_data(data).await?;
    Ok(())
}

/// The tenant group's wanted access to its database. For a group created by this very job the
/// values are written blind (it holds a copy of All Users' access, which must be overwritten
/// anyway); otherwise the group's slice is read and only what differs is written.
async fn data_change(
    ctx: &Context,
    t: &TenantCreated,
    group: i64,
    fresh: bool,
) -> Result<DataChange, JobError> {
    let mut change = DataChange::set(group, t.database_id, db_perms(t.data_access, ctx.features));
    if t.data_access == DataAccess::Sandboxed {
        let spec = t
            .sandbox
            .as_ref()
            .ok_or_else(|| JobError::Impossible("sandboxed access without a sandbox".into()))?;
        let (perms, sandboxes) = sandbox_change(ctx, t.database_id, group, spec, fresh).await?;
        change.put(group, t.database_id, perms);
        change.sandboxes = sandboxes;
    }
    if fresh {
        return Ok(change);
    }
    let current = ctx.mb.data_graph_for_group(group).await?;
    Ok(still_needed(&current.groups, &change))
}

fn no_sandboxes() -> JobError {
    JobError::Impossible(
        "this Metabase has no sandboxes feature (a Pro or Enterprise token is needed for data_access \"sandboxed\")".into(),
    )
}

/// Table-level values and one sandbox per table. Existing sandboxes of the group are updated by
/// id rather than inserted again (a duplicate insert is a 500 in Metabase).
pub async fn sandbox_change(
    ctx: &Context,
    database_id: i64,
    group: i64,
    spec: &SandboxSpec,
    fresh: bool,
) -> Result<(crate::metabase::models::DbPerms, Vec<Sandbox>), JobError> {
    if !ctx.features.sandboxes {
        return Err(no_sandboxes());
    }
    let mut tables = Vec::new();
    for t in &spec.tables {
        let table = ctx.mb.get_table(t.table_id).await?;
        if table.db_id != database_id {
            return Err(JobError::Impossible(format!(
                "table {} is in database {}, not {database_id}",
                t.table_id, table.db_id
            )));
        }
        tables.push((table.graph_schema().to_string(), t.table_id));
    }
    let existing = if fresh {
        Vec::new()
    } else {
        ctx.mb.list_sandboxes(Some(group)).await?
    };
    let sandboxes = spec
        .tables
        .iter()
        .map(|t| {
            let mut s =
                Sandbox::filter_by_attribute(group, t.table_id, &spec.attribute, t.field_id);
            if let Some(old) = existing
                .iter()
                .find(|e| e.group_id == Some(group) && e.table_id == Some(t.table_id))
            {
                s.id = old.id;
            }
            s
        })
        .collect();
    Ok((sandboxed_tables(&tables, ctx.features), sandboxes))
}
