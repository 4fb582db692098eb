//! `tenant.created`, `tenant.updated` and `tenant.deleted` on Metabase Tenants.
//!
//! A tenant is identified by its slug, the `tenant_id` itself ([`super::slug`]); its id is
//! cached in Redis and checked with one GET. A new tenant costs one POST for the tenant (its
//! collection comes with it, `define-before-insert :model/Tenant`) and one POST for its admin
//! user; tenant groups and their access are shared by all tenants and cost reads only.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::metabase::models::{NewTenant, Tenant, TenantUpdate};
use crate::metabase::tenants::TENANT_TAKEN;

use super::super::directory::merge_attributes;
use super::super::payloads::{TenantCreated, TenantDeleted, TenantUpdated};
use super::super::{Context, JobError};
use super::{NativeTenancy, access, groups, slug, users};

/// Redis cache kind of tenant ids (slug -> id).
const CACHE: &str = "tenant";

/// The attributes every tenant carries: `organization_id` (as in group tenancy, where it is a
/// login attribute) and the sandbox attribute, both the `tenant_id`. Tenant users inherit them
/// (`metabase-enterprise.tenants.core/login-attributes`).
pub fn required_attributes(t: &TenantCreated) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::from([(
        "organization_id".to_string(),
        Value::String(t.tenant_id.clone()),
    )]);
    if let Some(s) = &t.sandbox {
        out.insert(s.attribute.clone(), Value::String(t.tenant_id.clone()));
    }
    out
}

/// What to PUT so that an existing tenant is active, named `name` (when given) and holds
/// `attributes` merged into its own (`None` removes a key). `None` when it already is.
pub fn tenant_update(
    current: &Tenant,
    name: Option<&str>,
    attributes: &BTreeMap<String, Option<Value>>,
    activate: bool,
) -> Option<TenantUpdate> {
    let mut update = TenantUpdate::default();
    if activate && !current.is_active {
        update.is_active = Some(true);
    }
    if let Some(n) = name
        && current.name != n
    {
        update.name = Some(n.to_string());
    }
    let have = current.attributes.clone().unwrap_or_default();
    let merged = merge_attributes(&have, attributes);
    if merged != have {
        // PUT replaces the whole map.
        update.attributes = Some(merged);
    }
    (!update.is_empty()).then_some(update)
}

/// The tenant with this slug, if any (cache checked with one GET, else the list).
pub async fn find(ctx: &Context, slug: &str) -> Result<Option<Tenant>, JobError> {
    if let Some(id) = ctx.store.get_id(CACHE, slug).await? {
        match ctx.mb.get_tenant(id).await {
            Ok(t) if t.slug == slug => return Ok(Some(t)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        ctx.store.forget_id(CACHE, slug).await?;
    }
    let found = ctx.mb.find_tenant_by_slug(slug).await?;
    if let Some(t) = &found {
        ctx.store.set_id(CACHE, slug, t.id).await?;
    }
    Ok(found)
}

/// Finds or creates the tenant and brings it to: active, this name, these attributes.
async fn ensure(
    ctx: &Context,
    slug: &str,
    name: &str,
    attributes: BTreeMap<String, Value>,
) -> Result<Tenant, JobError> {
    let changes: BTreeMap<String, Option<Value>> = attributes
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let existing = match find_cached_only(ctx, slug).await? {
        Some(t) => Some(t),
        None => {
            let new = NewTenant {
                name: name.to_string(),
                slug: slug.to_string(),
                attributes: Some(attributes),
            };
            match ctx.mb.create_tenant(&new).await {
                Ok(t) => {
                    ctx.store.set_id(CACHE, slug, t.id).await?;
                    return Ok(t);
                }
                // Name or slug taken: this tenant from an earlier run (or a racing replica),
                // or another tenant with the same name.
                Err(e) if e.status() == Some(400) && e.message() == Some(TENANT_TAKEN) => {
                    find(ctx, slug).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let Some(tenant) = existing else {
        return Err(JobError::Impossible(format!(
            "tenant_name {name:?} is already the name of another Metabase tenant (tenant names \
             are unique); rename one of them"
        )));
    };
    match tenant_update(&tenant, Some(name), &changes, true) {
        Some(update) => Ok(ctx.mb.update_tenant(tenant.id, &update).await?),
        None => Ok(tenant),
    }
}

/// The cached tenant, verified; no listing (a new tenant then costs its POST only).
async fn find_cached_only(ctx: &Context, slug: &str) -> Result<Option<Tenant>, JobError> {
    let Some(id) = ctx.store.get_id(CACHE, slug).await? else {
        return Ok(None);
    };
    match ctx.mb.get_tenant(id).await {
        Ok(t) if t.slug == slug => Ok(Some(t)),
        Ok(_) => {
            ctx.store.forget_id(CACHE, slug).await?;
            Ok(None)
        }
        Err(e) if e.is_not_found() => {
            ctx.store.forget_id(CACHE, slug).await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn created(
    ctx: &Context,
    native: NativeTenancy,
    t: &TenantCreated,
) -> Result<(), JobError> {
    let slug = slug(&t.tenant_id)?;
    // Shared groups first: a name that clashes with an internal group fails before anything
    // of the tenant is made.
    let mut group_ids = Vec::with_capacity(t.tenant_groups.len());
    for name in &t.tenant_groups {
        group_ids.push(groups::ensure_tenant_group(ctx, name).await?);
    }
    let tenant = ensure(ctx, &slug, &t.tenant_name, required_attributes(t)).await?;
    users::ensure_member(
        ctx,
        native,
        &tenant,
        &users::Member {
            email: &t.admin_user.email,
            first_name: t.admin_user.first_name.as_deref(),
            last_name: t.admin_user.last_name.as_deref(),
            attributes: &BTreeMap::new(),
            groups: &group_ids,
        },
    )
    .await?;
    let grantees = if group_ids.is_empty() {
        vec![native.all_tenant_users]
    } else {
        group_ids
    };
    access::grant(ctx, native, t, &grantees).await
}

pub async fn updated(ctx: &Context, t: &TenantUpdated) -> Result<(), JobError> {
    let slug = slug(&t.tenant_id)?;
    let Some(tenant) = find(ctx, &slug).await? else {
        // tenant.created may still be on its way (or retrying): try again later.
        return Err(JobError::NotYet(format!(
            "tenant {slug:?} does not exist (yet) in Metabase"
        )));
    };
    if let Some(update) = tenant_update(&tenant, t.tenant_name.as_deref(), &t.attributes, false) {
        if update.name.is_some() && !tenant.is_active {
            tracing::info!(tenant = tenant.id, "renaming a deactivated tenant");
        }
        ctx.mb.update_tenant(tenant.id, &update).await?;
    }
    Ok(())
}

/// Deactivates the tenant: Metabase deactivates its users (`deactivated_with_tenant`) and
/// archives its collection. There is no DELETE; a later `tenant.created` re-activates both.
pub async fn deleted(ctx: &Context, t: &TenantDeleted) -> Result<(), JobError> {
    let slug = slug(&t.tenant_id)?;
    match find(ctx, &slug).await? {
        Some(tenant) if tenant.is_active => {
            let update = TenantUpdate {
                is_active: Some(false),
                ..TenantUpdate::default()
            };
            ctx.mb.update_tenant(tenant.id, &update).await?;
            Ok(())
        }
        Some(_) => Ok(()),
        None => {
            tracing::info!(slug, "tenant not found: nothing to deactivate");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant(v: Value) -> Tenant {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn updates_send_only_what_differs() {
        let base = json!({"id": 1, "name": "Acme", "slug": "42", "is_active": true,
                          "attributes": {"organization_id": "42", "region": "eu"}});
        let attrs =
            |v: Value| -> BTreeMap<String, Option<Value>> { serde_json::from_value(v).unwrap() };
        let cases = [
            (
                base.clone(),
                Some("Acme"),
                attrs(json!({"organization_id": "42"})),
                true,
                json!(null),
            ),
            (
                base.clone(),
                Some("Acme 2"),
                attrs(json!({})),
                true,
                json!({"name": "Acme 2"}),
            ),
            (
                base.clone(),
                None,
                attrs(json!({"region": null, "plan": "pro"})),
                false,
                json!({"attributes": {"organization_id": "42", "plan": "pro"}}),
            ),
            (
                {
                    let mut b = base.clone();
                    b["is_active"] = json!(false);
                    b
                },
                None,
                attrs(json!({})),
                true,
                json!({"is_active": true}),
            ),
            (
                {
                    let mut b = base.clone();
                    b["is_active"] = json!(false);
                    b
                },
                None,
                attrs(json!({})),
                false,
                json!(null),
            ),
            (
                {
                    let mut b = base.clone();
                    b["attributes"] = json!(null);
                    b
                },
                None,
                attrs(json!({"organization_id": 42})),
                true,
                json!({"attributes": {"organization_id": "42"}}),
            ),
        ];
        for (current, name, changes, activate, want) in cases {
            let got = tenant_update(&tenant(current.clone()), name, &changes, activate);
            assert_eq!(
                serde_json::to_value(got).unwrap(),
                want,
                "{current} {name:?} {changes:?}"
            );
        }
    }
}
