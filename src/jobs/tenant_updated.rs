//! `tenant.updated` in group tenancy (CONTRACT.md section 8): the tenant's attributes become
//! login attributes of its members (merged; `null` removes a key), as `tenant.created` set
//! `organization_id` on its admin.
//!
//! The group's name, `Tenant: {tenant_id}`, does not contain the tenant's name, so a rename
//! changes no group. The collection `{tenant_name} Dashboards` is found by name today; renaming
//! it needs the tenant's collection identified by a marker instead (issue 12, writer side), so
//! `tenant_name` is not applied in group tenancy yet (see the README).

use super::payloads::TenantUpdated;
use super::tenant_created::group_name;
use super::{Context, JobError};

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
    if t.tenant_name.is_some() {
        tracing::info!(group = %name, "tenant_name is not applied in group tenancy yet (collection identity by marker pending)");
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
