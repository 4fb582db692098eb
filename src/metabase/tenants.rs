//! `/api/ee/tenant` and the tenant-aware user and group calls (Pro/Enterprise, v0.58+).
//!
//! Routes from `enterprise/backend/src/metabase_enterprise/tenants/api.clj` (mounted at
//! `/api/ee/tenant` by `metabase-enterprise.api.routes`, behind the `tenants` feature: 402
//! without it). There is no DELETE: a tenant is deactivated with `PUT {"is_active": false}`.

use reqwest::Method;
use serde::Serialize;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{
    Group, NewTenant, Tenant, TenantList, TenantStatus, TenantUpdate, User, UserList,
};

/// The 400 text of a create whose name or slug is taken (`create-tenant!`).
pub const TENANT_TAKEN: &str = "This tenant name or slug is already taken.";

/// `POST /api/permissions/group` for a tenant group.
#[derive(Serialize)]
struct NewTenantGroup<'a> {
    name: &'a str,
    is_tenant_group: bool,
}

impl MetabaseClient {
    pub async fn list_tenants(&self, status: TenantStatus) -> Result<Vec<Tenant>, MetabaseError> {
        let list: TenantList = self
            .get("/api/ee/tenant", &[("status", status.as_str().to_string())])
            .await?;
        Ok(list.data)
    }

    /// The tenant with this slug, active or not. Slugs are unique and never change (docs,
    /// "Special tenant slug attribute"), so a slug is a stable identity.
    pub async fn find_tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, MetabaseError> {
        Ok(self
            .list_tenants(TenantStatus::All)
            .await?
            .into_iter()
            .find(|t| t.slug == slug))
    }

    pub async fn get_tenant(&self, id: i64) -> Result<Tenant, MetabaseError> {
        self.get(&format!("/api/ee/tenant/{id}"), &[]).await
    }

    /// 400 [`TENANT_TAKEN`] when the name or the slug exists (a replayed POST cannot
    /// duplicate, so it may be replayed).
    pub async fn create_tenant(&self, tenant: &NewTenant) -> Result<Tenant, MetabaseError> {
        self.call(
            Method::POST,
            "/api/ee/tenant",
            &[],
            Some(tenant),
            Replay::Safe,
        )
        .await
    }

    /// `is_active: false` deactivates the tenant's users and archives its collection; `true`
    /// reverses both (`update-tenant!`).
    pub async fn update_tenant(
        &self,
        id: i64,
        update: &TenantUpdate,
    ) -> Result<Tenant, MetabaseError> {
        self.call(
            Method::PUT,
            &format!("/api/ee/tenant/{id}"),
            &[],
            Some(update),
            Replay::Safe,
        )
        .await
    }

    /// Every user of one tenant, active or not (`GET /api/user?tenant_id=`).
    pub async fn list_tenant_users(&self, tenant_id: i64) -> Result<Vec<User>, MetabaseError> {
        let list: UserList = self
            .get(
                "/api/user",
                &[
                    ("tenant_id", tenant_id.to_string()),
                    ("status", "all".to_string()),
                ],
            )
            .await?;
        Ok(list.data)
    }

    /// The user with this email whether internal or a tenant user: since v0.57 `GET /api/user`
    /// lists only internal users unless `tenancy=all` is given (metabase-api.md, correction 11).
    pub async fn find_any_user_by_email(&self, email: &str) -> Result<Option<User>, MetabaseError> {
        let wanted = email.trim().to_lowercase();
        let list: UserList = self
            .get(
                "/api/user",
                &[
                    ("status", "all".to_string()),
                    ("tenancy", "all".to_string()),
                    ("query", wanted.clone()),
                ],
            )
            .await?;
        Ok(list
            .data
            .into_iter()
            .find(|u| u.email.to_lowercase() == wanted))
    }

    /// A tenant group (`is_tenant_group: true`); 400 when the name is taken in any case.
    pub async fn create_tenant_group(&self, name: &str) -> Result<Group, MetabaseError> {
        self.call(
            Method::POST,
            "/api/permissions/group",
            &[],
            Some(&NewTenantGroup {
                name,
                is_tenant_group: true,
            }),
            Replay::Safe,
        )
        .await
    }
}

/// The tenant a user belongs to (`tenant_id` on user objects since v0.57), `None` for an
/// internal user.
pub fn user_tenant(user: &User) -> Option<i64> {
    user.extra
        .get("tenant_id")
        .and_then(serde_json::Value::as_i64)
}

/// Whether a group is a tenant group (`is_tenant_group`, newest releases).
pub fn is_tenant_group(group: &Group) -> bool {
    group
        .extra
        .get("is_tenant_group")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// `POST /api/user` for a tenant user: `tenant_id` makes it one, and its memberships must
/// include "All tenant users" instead of All Users (`user_api_test.clj`,
/// `create-tenant-user-must-assign-to-external-users-group-test`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewTenantUser {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    pub tenant_id: i64,
    pub user_group_memberships: Vec<super::models::MembershipRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_attributes: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

impl MetabaseClient {
    /// No invite email is sent for a tenant user (`invite-user!`:
    /// `with-skip-sending-notification (boolean tenant-id)`).
    pub async fn create_tenant_user(&self, user: &NewTenantUser) -> Result<User, MetabaseError> {
        self.call(
            Method::POST,
            "/api/user",
            &[],
            Some(user),
            Replay::OnlyIfUnsent,
        )
        .await
    }
}
