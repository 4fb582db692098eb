//! Native tenancy (`MBPROV_TENANCY=native`): the same jobs, made with Metabase's own Tenants.
//!
//! What Metabase does itself here (Pro/Enterprise v0.58+, feature `tenants`, setting
//! `use-tenants`): a tenant object with a slug and attributes, its collection (namespace
//! `tenant-specific`, isolated by Metabase), tenant users who live only in "All tenant users"
//! and tenant groups, the system attribute `@tenant.slug`. What is left to mbprov: creating
//! tenants from the product's records, keeping their attributes, offboarding, and the
//! permissions of tenant groups and All tenant users, which are the ordinary graphs.
//!
//! Sources: `enterprise/backend/src/metabase_enterprise/tenants/{api,models,core}.clj`,
//! `enterprise/backend/test/metabase_enterprise/tenants/user_api_test.clj`, Metabase's docs
//! page `docs/embedding/tenants.md`, and ../shared/metabase-api.md corrections 11 and 12.

mod access;
mod groups;
mod synced;
mod tenant;
mod users;

use serde_json::Value;

use crate::metabase::models::{Group, MAGIC_ALL_EXTERNAL_USERS, SessionProperties};
use crate::metabase::{MetabaseClient, MetabaseError};

use super::envelope::{InvalidJob, Job};
use super::{Context, JobError};

/// What native tenancy needs to know about the instance, read once at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeTenancy {
    /// "All tenant users" (`magic_group_type` `all-external-users`).
    pub all_tenant_users: i64,
}

/// Why a worker in native tenancy refuses to start; the text says what to do.
pub fn check_ready(props: &SessionProperties, groups: &[Group]) -> Result<NativeTenancy, String> {
    // `token-features` carries `tenants` since v0.58 (`premium_features/settings.clj`,
    // `enable-tenants?`).
    if !props.has_feature("tenants") {
        return Err(
            "MBPROV_TENANCY=native needs Metabase's `tenants` feature, and this \
                    instance's token does not have it (token-features.tenants is not true). \
                    Tenants need a Pro or Enterprise token on Metabase v0.58 or later; use \
                    MBPROV_TENANCY=groups otherwise"
                .into(),
        );
    }
    // `use-tenants` is readable by any authenticated caller (`:visibility :authenticated`, or
    // `:admin` in older sources; the workers' key is an administrator's), so it is in
    // `/api/session/properties`.
    if props.extra.get("use-tenants") != Some(&Value::Bool(true)) {
        return Err(
            "MBPROV_TENANCY=native needs the Metabase setting `use-tenants` on, and it \
                    is off: turn on Admin settings > People > Multi-tenant strategy (or PUT \
                    /api/setting/use-tenants {\"value\": true}), then start the worker again"
                .into(),
        );
    }
    let all_tenant_users = groups
        .iter()
        .find(|g| g.magic_group_type.as_deref() == Some(MAGIC_ALL_EXTERNAL_USERS))
        .map(|g| g.id)
        .ok_or(
            "use-tenants is on but Metabase lists no \"All tenant users\" group \
             (magic_group_type all-external-users); check the Metabase version (v0.58+)",
        )?;
    Ok(NativeTenancy { all_tenant_users })
}

/// Reads what [`check_ready`] needs. `Err(Ok(text))` is a refusal, `Err(Err(e))` a failed call.
pub async fn connect(mb: &MetabaseClient) -> Result<Result<NativeTenancy, String>, MetabaseError> {
    let props = mb.session_properties().await?;
    let groups = mb.list_groups().await?;
    Ok(check_ready(&props, &groups))
}

/// The tenant slug for a `tenant_id`: the id itself, which must already be a valid slug
/// (`^[-_a-z0-9]{1,255}$`, `metabase-enterprise.tenants.models/Slug`). Slugs never change and
/// `@tenant.slug` is what row-level security compares with the data, so no transformation
/// (case folding, replacing characters) is applied: two ids would otherwise share one slug, and
/// `@tenant.slug` would stop matching the id in the product's tables.
pub fn slug(tenant_id: &str) -> Result<String, InvalidJob> {
    let valid = !tenant_id.is_empty()
        && tenant_id.len() <= 255
        && tenant_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(tenant_id.to_string())
    } else {
        Err(InvalidJob::new(
            "payload.tenant_id",
            format!(
                "{tenant_id:?} cannot be a Metabase tenant slug in native tenancy: only lower-case \
                 letters, digits, - and _ are allowed (the slug is the tenant_id unchanged)"
            ),
        ))
    }
}

/// Runs a job in native tenancy; `None` when the kind is the same in both backends.
pub async fn run(ctx: &Context, native: NativeTenancy, job: &Job) -> Option<Result<(), JobError>> {
    Some(match job {
        Job::TenantCreated(t) => tenant::created(ctx, native, t).await,
        Job::TenantUpdated(t) => tenant::updated(ctx, t).await,
        Job::TenantDeleted(t) => tenant::deleted(ctx, t).await,
        Job::UserUpserted(u) if u.tenant_id.is_some() => users::upserted(ctx, native, u).await,
        Job::UserDeactivated(u) if u.tenant_id.is_some() => users::deactivated(ctx, u).await,
        Job::UsersSynced(s) => match synced::snapshot_tenant(s) {
            Err(e) => Err(e.into()),
            Ok(Some(tenant)) => synced::run(ctx, native, s, tenant).await,
            Ok(None) => return None,
        },
        _ => return None,
    })
}

/// In group tenancy, `tenant_groups` of `tenant.created` are ordinary groups the admin joins.
pub use groups::join_extra_groups;

#[cfg(test)]
mod tests;
