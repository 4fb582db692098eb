//! Tenant users: created with `tenant_id` in one POST, in "All tenant users" and tenant groups
//! only. A job for a tenant never touches an internal user or another tenant's user: an email
//! that belongs to one is a permanent error naming the conflict (never a silent move).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::metabase::models::{MembershipRef, Tenant, User};
use crate::metabase::tenants::{NewTenantUser, user_tenant};

use super::super::directory::merge_attributes;
use super::super::payloads::{UserDeactivated, UserUpserted};
use super::super::{Context, JobError};
use super::{NativeTenancy, groups, slug, tenant};

/// A tenant user as a job wants them.
pub struct Member<'a> {
    pub email: &'a str,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    /// The user's own attributes, merged (`None` removes); tenant attributes are inherited.
    pub attributes: &'a BTreeMap<String, Option<Value>>,
    /// Tenant groups to be in (besides All tenant users).
    pub groups: &'a [i64],
}

/// Whose user an email is, as far as a job for `tenant` may act on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    ThisTenant,
    Internal,
    OtherTenant(i64),
}

pub fn owner(user: &User, tenant: i64) -> Owner {
    match user_tenant(user) {
        Some(t) if t == tenant => Owner::ThisTenant,
        Some(t) => Owner::OtherTenant(t),
        None => Owner::Internal,
    }
}

fn conflict(email: &str, owner: &Owner, tenant: &Tenant) -> JobError {
    let whose = match owner {
        Owner::Internal => "an internal Metabase user (not a tenant user)".to_string(),
        Owner::OtherTenant(id) => format!("a user of another tenant (Metabase tenant id {id})"),
        Owner::ThisTenant => "this tenant's user".to_string(),
    };
    JobError::Impossible(format!(
        "email {email} belongs to {whose}; mbprov never moves a user into tenant {:?}",
        tenant.slug
    ))
}

/// The user, a tenant user of `tenant`, active, with these names, attributes and groups.
pub async fn ensure_member(
    ctx: &Context,
    native: NativeTenancy,
    tenant: &Tenant,
    m: &Member<'_>,
) -> Result<User, JobError> {
    // Every item carries `is_group_manager: false` (metabase-api.md, correction 1); All tenant
    // users must be listed, or Metabase answers 400.
    let memberships = std::iter::once(native.all_tenant_users)
        .chain(
            m.groups
                .iter()
                .copied()
                .filter(|g| *g != native.all_tenant_users),
        )
        .map(|id| MembershipRef {
            id,
            is_group_manager: Some(false),
        })
        .collect();
    let attributes = merge_attributes(&BTreeMap::new(), m.attributes);
    let new = NewTenantUser {
        email: m.email.trim().to_lowercase(),
        first_name: m.first_name.map(str::to_string),
        last_name: m.last_name.map(str::to_string),
        tenant_id: tenant.id,
        user_group_memberships: memberships,
        login_attributes: (!attributes.is_empty()).then_some(attributes),
    };
    let user = match ctx.mb.create_tenant_user(&new).await {
        Ok(u) => return Ok(u),
        Err(e) if e.is_duplicate() => ctx
            .mb
            .find_any_user_by_email(&new.email)
            .await?
            .ok_or_else(|| {
                JobError::NotYet(format!(
                    "user {} reported as existing but not found",
                    new.email
                ))
            })?,
        Err(e) => return Err(e.into()),
    };
    let who = owner(&user, tenant.id);
    if who != Owner::ThisTenant {
        return Err(conflict(&new.email, &who, tenant));
    }
    ctx.directory()
        .reconcile_user(&user, m.first_name, m.last_name, m.attributes, m.groups)
        .await
}

/// The tenant of a user job; not there yet is transient (its `tenant.created` may be behind).
pub async fn tenant_of(ctx: &Context, tenant_id: &str) -> Result<Tenant, JobError> {
    let slug = slug(tenant_id)?;
    match tenant::find(ctx, &slug).await? {
        Some(t) if t.is_active => Ok(t),
        Some(_) => Err(JobError::Impossible(format!(
            "tenant {slug:?} is deactivated (tenant.deleted); a tenant.created re-activates it"
        ))),
        None => Err(JobError::NotYet(format!(
            "tenant {slug:?} does not exist (yet) in Metabase"
        ))),
    }
}

pub async fn upserted(
    ctx: &Context,
    native: NativeTenancy,
    u: &UserUpserted,
) -> Result<(), JobError> {
    let tenant_id = u.tenant_id.as_deref().unwrap_or_default();
    let tenant = tenant_of(ctx, tenant_id).await?;
    let mut ids = Vec::with_capacity(u.groups.len());
    for name in &u.groups {
        ids.push(groups::ensure_tenant_group(ctx, name).await?);
    }
    let user = ensure_member(
        ctx,
        native,
        &tenant,
        &Member {
            email: &u.email,
            first_name: u.first_name.as_deref(),
            last_name: u.last_name.as_deref(),
            attributes: &u.login_attributes,
            groups: &ids,
        },
    )
    .await?;
    if u.exclusive {
        leave_other_tenant_groups(ctx, native, &user, &ids).await?;
    }
    Ok(())
}

/// Removes a tenant user from every tenant group outside `keep` (never All tenant users).
async fn leave_other_tenant_groups(
    ctx: &Context,
    native: NativeTenancy,
    user: &User,
    keep: &[i64],
) -> Result<(), JobError> {
    for group in ctx.directory().group_ids(user).await? {
        if keep.contains(&group)
            || group == native.all_tenant_users
            || ctx.builtin.all.contains(&group)
        {
            continue;
        }
        let members = ctx.mb.get_group(group).await?.members.unwrap_or_default();
        for m in members.iter().filter(|m| m.user_id == user.id) {
            match ctx.mb.delete_membership(m.membership_id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Deactivates the tenant's user with this email; an unknown email, or one that is not this
/// tenant's user, is left alone (the wanted state, "this tenant has no such active user", holds).
pub async fn deactivated(ctx: &Context, u: &UserDeactivated) -> Result<(), JobError> {
    let slug = slug(u.tenant_id.as_deref().unwrap_or_default())?;
    let Some(tenant) = tenant::find(ctx, &slug).await? else {
        return Ok(());
    };
    match ctx.mb.find_any_user_by_email(&u.email).await? {
        Some(user) if user.is_active && owner(&user, tenant.id) == Owner::ThisTenant => {
            ctx.mb.deactivate_user(user.id).await?;
            Ok(())
        }
        Some(user) if owner(&user, tenant.id) != Owner::ThisTenant => {
            tracing::warn!(user = user.id, tenant = %slug, "user.deactivated names a user outside this tenant; left alone");
            Ok(())
        }
        _ => Ok(()),
    }
}
