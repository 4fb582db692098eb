//! Tenant groups: shared by every tenant, found or created by name with
//! `is_tenant_group: true`. Tenant users may only be in tenant groups, internal users only in
//! internal ones (`user_api_test.clj`, `create-user-tenant-group-restrictions-test`), so a
//! same-named internal group is a conflict, never used instead.

use crate::metabase::tenants::is_tenant_group;

use super::super::payloads::TenantCreated;
use super::super::{Context, JobError};

/// Redis cache kind of tenant group ids (lower-case name -> id).
const CACHE: &str = "tenant-group";

/// The tenant group with this name, created when missing.
pub async fn ensure_tenant_group(ctx: &Context, name: &str) -> Result<i64, JobError> {
    let key = name.to_lowercase();
    if let Some(id) = ctx.store.get_id(CACHE, &key).await? {
        match ctx.mb.get_group(id).await {
            Ok(g) if g.name.to_lowercase() == key && is_tenant_group(&g) => return Ok(id),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        ctx.store.forget_id(CACHE, &key).await?;
    }
    let id = match ctx.mb.create_tenant_group(name).await {
        Ok(g) => g.id,
        Err(e) if e.is_duplicate() => {
            let found = ctx
                .mb
                .list_groups()
                .await?
                .into_iter()
                .find(|g| g.name.to_lowercase() == key)
                .ok_or_else(|| {
                    JobError::NotYet(format!("group {name:?} reported as existing but not found"))
                })?;
            if found.is_magic() || !is_tenant_group(&found) {
                return Err(JobError::Impossible(format!(
                    "tenant group {name:?}: a group with that name exists and is not a tenant \
                     group (id {}); tenant users can only join tenant groups, so rename one of them",
                    found.id
                )));
            }
            found.id
        }
        Err(e) => return Err(e.into()),
    };
    ctx.store.set_id(CACHE, &key, id).await?;
    Ok(id)
}

/// Group tenancy: the admin of `tenant.created` also joins each of `tenant_groups` (ordinary
/// groups, created when missing). Their data access is not changed: that stays the tenant
/// group's.
pub async fn join_extra_groups(ctx: &Context, t: &TenantCreated) -> Result<(), JobError> {
    if t.tenant_groups.is_empty() {
        return Ok(());
    }
    let dir = ctx.directory();
    let mut ids = Vec::with_capacity(t.tenant_groups.len());
    for name in &t.tenant_groups {
        let g = dir.ensure_group(name).await?;
        if ctx.builtin.all.contains(&g.id) {
            return Err(JobError::Policy(format!("{name:?} is a built-in group")));
        }
        ids.push(g.id);
    }
    let user = ctx
        .mb
        .find_user_by_email(&t.admin_user.email)
        .await?
        .ok_or_else(|| JobError::NotYet(format!("user {} not found", t.admin_user.email)))?;
    dir.reconcile_user(&user, None, None, &Default::default(), &ids)
        .await?;
    Ok(())
}
