//! `tenant.deleted`: revoke, deactivate the members who only belonged to the tenant, archive
//! the tenant's collection (the one marked for its `tenant_id`), delete the group (CONTRACT.md §4). The group goes last, so a run cut short
//! is finished by the next one; a tenant whose group is gone is done.

use std::collections::BTreeSet;

use crate::graph::access::revoked;
use crate::graph::data::still_needed;
use crate::graph::{CollectionOp, DataChange};

use super::payloads::TenantDeleted;
use crate::graph_writer::tenant_collection;

use super::tenant_created::group_name;
use super::{Context, JobError, policy};

pub async fn run(ctx: &Context, t: &TenantDeleted) -> Result<(), JobError> {
    let dir = ctx.directory();
    let name = group_name(&t.tenant_id);
    let Some(group) = dir.find_group(&name).await? else {
        tracing::info!(group = %name, "tenant group not found: nothing to delete");
        return Ok(());
    };
    if ctx.builtin.all.contains(&group) {
        return Err(JobError::Policy(format!(
            "group {group} is a built-in group"
        )));
    }
    let named = BTreeSet::from([group]);

    // Sandboxes first: a sandboxed table reads as `sandboxed` until its sandbox is gone, so
    // the revocation below could never be verified while one is left.
    if ctx.features.sandboxes {
        for s in ctx.mb.list_sandboxes(Some(group)).await? {
            if let (Some(id), Some(g)) = (s.id, s.group_id)
                && g == group
            {
                ctx.mb.delete_sandbox(id).await?;
            }
        }
    }

    // Explicit lowest values on every database the group has a cell for: omission revokes nothing.
    let slice = ctx.mb.data_graph_for_group(group).await?;
    let mut change = DataChange::default();
    for db in slice.groups.values().flat_map(|dbs| dbs.keys()) {
        change.put(group, db.0, revoked(ctx.features));
    }
    let change = still_needed(&slice.groups, &change);
    policy::check_data_change(&change, &named, &ctx.builtin).map_err(JobError::Policy)?;
    let ops = vec![CollectionOp::RevokeGroup { group }];
    policy::check_collection_ops(&ops, &named, &ctx.builtin, &BTreeSet::new())
        .map_err(JobError::Policy)?;
    let (d, c) = tokio::join!(
        ctx.writer.write_data(change),
        ctx.writer.write_collections(ops)
    );
    d?;
    c?;
    let members = ctx.mb.get_group(group).await?.members.unwrap_or_default();
    for m in members {
        if m.is_superuser {
            continue;
        }
        let user = ctx.mb.get_user(m.user_id).await?;
        let groups = dir.group_ids(&user).await?;
        let only_tenant = groups
            .iter()
            .all(|g| *g == group || *g == ctx.builtin.all_users);
        if only_tenant && user.is_active {
            ctx.mb.deactivate_user(user.id).await?;
        }
    }

    // Only the collection marked for this tenant, found whatever its name (`tenant_name` is
    // no longer needed); an unmarked collection of the same name is never touched.
    if let Some(id) = tenant_collection::find_for_deletion(
        &ctx.mb,
        &ctx.store,
        &t.tenant_id,
        t.shared_collection_id,
    )
    .await?
    {
        ctx.mb.archive_collection(id).await?;
        tracing::info!(collection = id, "tenant collection archived");
    }
    tenant_collection::forget(&ctx.store, &t.tenant_id).await?;

    match ctx.mb.delete_group(group).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    ctx.store.forget_id("group", &name.to_lowercase()).await?;
    Ok(())
}
