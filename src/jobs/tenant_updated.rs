//! `tenant.updated` in group tenancy (CONTRACT.md section 8): the tenant's attributes become
//! login attributes of its members (merged; `null` removes a key), as `tenant.created` set
//! `organization_id` on its admin.
//!
//! The group's name, `Tenant: {tenant_id}`, does not contain the tenant's name, so a rename
//! changes no group. A new `tenant_name` renames the tenant's collection `{tenant_name}
//! Dashboards`: the one marked for the tenant (`graph::tenant_marker`), whatever its name and
//! wherever it is, through the collection writer (never created here). While the tenant's
//! group exists but no collection is marked for it yet, the job is retried: its
//! `tenant.created` has made the group and not yet the collection.

use super::payloads::TenantUpdated;
use super::tenant_created::{collection_name, group_name};
use super::{Context, JobError};
use crate::graph_writer::TenantRename;

pub async fn run(ctx: &Context, t: &TenantUpdated) -> Result<(), JobError> {
    let dir = ctx.directory();
    let name = group_name(&t.tenant_id);
    let Some(group) = dir.find_group(&name).await? else {
        return Err(JobError::NotYet(format!(
            "tenant group {name:?} does not exist (yet)"
        )));
    };
    if ctx.builtin.all.contains(&group) {
        return Err(JobError::Policy(format!(
            "group {group} is a built-in group"
        )));
    }
    if let Some(tenant_name) = &t.tenant_name {
        let rename = TenantRename::new(t.tenant_id.clone(), collection_name(tenant_name));
        if ctx.writer.rename_tenant_collection(rename).await?.is_none() {
            return Err(JobError::NotYet(format!(
                "no collection is marked for tenant {:?} yet (its tenant.created may still be running)",
                t.tenant_id
            )));
        }
    }
    if t.attributes.is_empty() {
        return Ok(());
    }
    let members = ctx.mb.get_group(group).await?.members.unwrap_or_default();
    for m in members.iter().filter(|m| !m.is_superuser) {
        let user = ctx.mb.get_user(m.user_id).await?;
        dir.reconcile_user(&user, None, None, &t.attributes, &[])
            .await?;
    }
    Ok(())
}
