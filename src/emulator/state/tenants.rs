//! Metabase Tenants (Pro/Enterprise feature `tenants`, setting `use-tenants`), kept apart from
//! the rest of the state so that users, groups and collections stay as they are: tenancy is a
//! set of facts about them (which tenant a user is in, which groups are tenant groups, which
//! collections are tenant collections).
//!
//! Behaviour from `enterprise/backend/src/metabase_enterprise/tenants/api.clj` (`create-tenant!`,
//! `update-tenant!`), `tenants/models.clj` (`define-before-insert :model/Tenant`, `Slug`,
//! `Attributes`), `permissions_rest/api.clj` (`update-use-tenants!`), `users_rest/api.clj`
//! (`invite-user!`), the tests of `enterprise/backend/test/metabase_enterprise/tenants/
//! user_api_test.clj`, and ../shared/metabase-api.md corrections 11 and 12.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::groups::GroupRec;
use super::users::{NewUserInput, UserRec};
use super::{ALL_USERS_GROUP, Sequences, State};
use crate::emulator::error::{ApiError, ApiResult};

pub const TENANT_TAKEN: &str = "This tenant name or slug is already taken.";
pub const NAME_TAKEN: &str = "This name is already taken.";
pub const ALL_TENANT_USERS_MEMBERSHIP: &str =
    "You cannot add or remove users to/from the 'All tenant users' group.";
pub const MIXED_MEMBERSHIP: &str = "Cannot add non-tenant user to tenant-group or vice versa";
pub const TENANTS_OFF: &str =
    "Cannot create a Tenant User as Tenants are not enabled for this instance.";
pub const TENANTS_PAID: &str = "Tenants is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/";

/// The 402 of a route or option behind the `tenants` feature (metabase-test-facts.md 8).
pub fn tenants_paid() -> ApiError {
    ApiError::Json(
        StatusCode::PAYMENT_REQUIRED,
        json!({"message": TENANTS_PAID, "status": "error-premium-feature-not-available"}),
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct TenantRec {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub is_active: bool,
    pub attributes: Option<BTreeMap<String, String>>,
    pub tenant_collection_id: i64,
}

/// Everything tenancy adds to the instance.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tenancy {
    /// The setting `use-tenants` (default false).
    pub enabled: bool,
    pub tenants: BTreeMap<i64, TenantRec>,
    pub seq: i64,
    /// User id -> tenant id, for tenant users.
    pub user_tenant: BTreeMap<i64, i64>,
    /// Users deactivated by their tenant's deactivation (`deactivated_with_tenant`).
    pub deactivated_with_tenant: BTreeSet<i64>,
    /// Groups made with `is_tenant_group: true`.
    pub tenant_groups: BTreeSet<i64>,
    /// "All tenant users" (`all-external-users`), made when `use-tenants` is first turned on.
    pub all_tenant_users: Option<i64>,
    pub tenant_collections: BTreeSet<i64>,
}

/// `GET /api/user` and `GET /api/permissions/group` `tenancy=` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenancyFilter {
    Internal,
    External,
    All,
}

impl TenancyFilter {
    pub fn parse(v: Option<&str>) -> ApiResult<Option<TenancyFilter>> {
        match v {
            None => Ok(None),
            Some("internal") => Ok(Some(TenancyFilter::Internal)),
            Some("external") => Ok(Some(TenancyFilter::External)),
            Some("all") => Ok(Some(TenancyFilter::All)),
            Some(_) => Err(ApiError::schema(
                "tenancy",
                "value must be one of: internal, external, all.",
            )),
        }
    }
}

/// `^[-_a-z0-9]{1,255}$` (`metabase-enterprise.tenants.models/Slug`).
pub fn is_valid_slug(slug: &str) -> bool {
    (1..=255).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Tenant attributes: keys must not start with `@` (`tenants.models/Attributes`); values are
/// answered as strings (the `Tenant` response schema, `[:map-of :string :string]`).
pub fn tenant_attributes(
    v: Option<&serde_json::Value>,
) -> ApiResult<Option<Option<BTreeMap<String, String>>>> {
    match v {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::Object(m)) => {
            if m.keys().any(|k| k.starts_with('@')) {
                return Err(ApiError::schema(
                    "attributes",
                    "attribute keys must be a keyword or string and must not start with `@`",
                ));
            }
            Ok(Some(Some(
                m.iter()
                    .map(|(k, v)| {
                        let s = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), s)
                    })
                    .collect(),
            )))
        }
        Some(_) => Err(ApiError::schema("attributes", "value must be a map.")),
    }
}

/// `PUT /api/ee/tenant/:id`, decoded: outer `None` = key absent.
#[derive(Clone, Debug, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub attributes: Option<Option<BTreeMap<String, String>>>,
    pub is_active: Option<bool>,
}

impl State {
    /// The setting `use-tenants`. Turning it on makes "All tenant users" the first time; turning
    /// it off deactivates every tenant and tenant user (`update-use-tenants!`, the newer of the
    /// two setters in the sources; metabase-api.md section 7).
    pub fn set_use_tenants(&mut self, on: bool) {
        if on && self.tenancy.all_tenant_users.is_none() {
            let id = Sequences::take(&mut self.seq.group);
            self.groups.insert(
                id,
                GroupRec::magic(id, "All tenant users", "all-external-users"),
            );
            // Like any new group (`new-group-permissions`), it starts from All Users' access;
            // what `create-all-external-users!` grants exactly is UNCONFIRMED, and this is the
            // reading under which Metabase's advice to revoke All tenant users matters.
            self.data.copy_group(ALL_USERS_GROUP, id);
            self.tenancy.all_tenant_users = Some(id);
        }
        if !on {
            for t in self.tenancy.tenants.values_mut() {
                t.is_active = false;
            }
            let tenant_users: Vec<i64> = self.tenancy.user_tenant.keys().copied().collect();
            for u in tenant_users {
                if let Some(user) = self.users.get_mut(&u)
                    && user.is_active
                {
                    user.is_active = false;
                    self.tenancy.deactivated_with_tenant.insert(u);
                }
            }
        }
        self.tenancy.enabled = on;
    }

    pub fn tenant_of(&self, user_id: i64) -> Option<i64> {
        self.tenancy.user_tenant.get(&user_id).copied()
    }

    pub fn is_tenant_group(&self, group_id: i64) -> bool {
        self.tenancy.tenant_groups.contains(&group_id)
            || self.tenancy.all_tenant_users == Some(group_id)
    }

    /// A group is shown unless it is a tenant group while `use-tenants` is off (404 on the
    /// group routes, left out of lists: metabase-test-facts.md 13 and 30).
    pub fn group_visible(&self, group_id: i64) -> bool {
        self.tenancy.enabled || !self.is_tenant_group(group_id)
    }

    /// Internal users only in internal groups, tenant users only in tenant groups
    /// (`create-user-tenant-group-restrictions-test`, `update-user-tenant-group-restrictions-test`).
    pub fn check_membership_tenancy(&self, user_id: Option<i64>, group_id: i64) -> ApiResult<()> {
        let tenant_user = user_id.is_some_and(|u| self.tenant_of(u).is_some());
        if self.is_tenant_group(group_id) != tenant_user {
            return Err(ApiError::Json(
                StatusCode::BAD_REQUEST,
                json!({"message": MIXED_MEMBERSHIP}),
            ));
        }
        Ok(())
    }

    /// `POST /api/permissions/group {"is_tenant_group": true}`.
    pub fn create_tenant_group(&mut self, name: &str) -> ApiResult<i64> {
        let id = self.create_group(name)?;
        self.tenancy.tenant_groups.insert(id);
        Ok(id)
    }

    /// `POST /api/ee/tenant`: the tenant and its collection (`Tenant Collection: <name>`,
    /// namespace `tenant-specific`, not under any parent, no permissions copied and no graph
    /// revision bump: metabase-api.md correction 4).
    pub fn create_tenant(
        &mut self,
        name: &str,
        slug: &str,
        attributes: Option<BTreeMap<String, String>>,
    ) -> ApiResult<i64> {
        if name.trim().is_empty() {
            return Err(ApiError::schema(
                "name",
                "value must be a non-blank string.",
            ));
        }
        if !is_valid_slug(slug) {
            return Err(ApiError::schema("slug", "invalid slug"));
        }
        if self
            .tenancy
            .tenants
            .values()
            .any(|t| t.slug == slug || t.name == name)
        {
            return Err(ApiError::bad_request(TENANT_TAKEN));
        }
        let collection =
            self.insert_collection_record(&format!("Tenant Collection: {name}"), None, None, None);
        if let Some(c) = self.collections.get_mut(&collection) {
            c.namespace = Some("tenant-specific".into());
        }
        self.tenancy.tenant_collections.insert(collection);
        let id = Sequences::take(&mut self.tenancy.seq);
        self.tenancy.tenants.insert(
            id,
            TenantRec {
                id,
                name: name.to_string(),
                slug: slug.to_string(),
                is_active: true,
                attributes,
                tenant_collection_id: collection,
            },
        );
        Ok(id)
    }

    /// `PUT /api/ee/tenant/:id`: `is_active: false` deactivates the tenant's active users
    /// (marked `deactivated_with_tenant`) and archives its collection; `true` reactivates
    /// exactly those users and unarchives it (`update-tenant!`).
    pub fn update_tenant(&mut self, id: i64, patch: TenantPatch) -> ApiResult<()> {
        if !self.tenancy.tenants.contains_key(&id) {
            return Err(ApiError::not_found());
        }
        if let Some(name) = &patch.name {
            if name.trim().is_empty() {
                return Err(ApiError::schema(
                    "name",
                    "value must be a non-blank string.",
                ));
            }
            if self
                .tenancy
                .tenants
                .values()
                .any(|t| t.id != id && t.name == *name)
            {
                return Err(ApiError::bad_request(NAME_TAKEN));
            }
        }
        let members: Vec<i64> = self
            .tenancy
            .user_tenant
            .iter()
            .filter(|(_, t)| **t == id)
            .map(|(u, _)| *u)
            .collect();
        let Some(tenant) = self.tenancy.tenants.get_mut(&id) else {
            return Err(ApiError::not_found());
        };
        if let Some(n) = patch.name {
            tenant.name = n;
        }
        if let Some(a) = patch.attributes {
            tenant.attributes = a;
        }
        if let Some(active) = patch.is_active {
            tenant.is_active = active;
        }
        let collection = tenant.tenant_collection_id;
        match patch.is_active {
            Some(false) => {
                for u in members {
                    if let Some(user) = self.users.get_mut(&u)
                        && user.is_active
                    {
                        user.is_active = false;
                        self.tenancy.deactivated_with_tenant.insert(u);
                    }
                }
                if let Some(c) = self.collections.get_mut(&collection) {
                    c.archived = true;
                }
            }
            Some(true) => {
                for u in members {
                    if self.tenancy.deactivated_with_tenant.remove(&u)
                        && let Some(user) = self.users.get_mut(&u)
                    {
                        user.is_active = true;
                    }
                }
                if let Some(c) = self.collections.get_mut(&collection) {
                    c.archived = false;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// `member_count`: active tenant users of the tenant (`batched-hydrate :member_count`).
    pub fn tenant_member_count(&self, id: i64) -> usize {
        self.tenancy
            .user_tenant
            .iter()
            .filter(|(u, t)| **t == id && self.users.get(u).is_some_and(|u| u.is_active))
            .count()
    }

    /// The answer of the tenant routes: tenant `id` as Metabase renders it, or 404.
    pub fn tenant_answer(&self, id: i64) -> ApiResult<serde_json::Value> {
        let t = self
            .tenancy
            .tenants
            .get(&id)
            .ok_or_else(ApiError::not_found)?;
        Ok(self.tenant_json(t))
    }

    pub fn tenant_json(&self, t: &TenantRec) -> serde_json::Value {
        json!({
            "id": t.id,
            "name": t.name,
            "slug": t.slug,
            "is_active": t.is_active,
            "member_count": self.tenant_member_count(t.id),
            "attributes": t.attributes,
            "tenant_collection_id": t.tenant_collection_id,
        })
    }

    /// `POST /api/user` with `tenant_id`: needs `use-tenants` (400 on `tenant_id` otherwise,
    /// `invite-user!`), an existing tenant, memberships that keep "All tenant users"
    /// (`create-tenant-user-must-assign-to-external-users-group-test`) and only tenant groups.
    /// The user is put in "All tenant users" instead of All Users.
    pub fn create_tenant_user(&mut self, input: NewUserInput, tenant_id: i64) -> ApiResult<i64> {
        if !self.tenancy.enabled {
            return Err(ApiError::field("tenant_id", TENANTS_OFF));
        }
        if !self.tenancy.tenants.contains_key(&tenant_id) {
            return Err(ApiError::not_found());
        }
        let all_tenant = self
            .tenancy
            .all_tenant_users
            .ok_or_else(ApiError::not_found)?;
        let extra: Vec<i64> = match &input.memberships {
            None => Vec::new(),
            Some(items) => {
                // Tenant users are never group managers (correction 12): only the ids count.
                let ids: Vec<i64> = items.iter().map(|m| m.group_id).collect();
                if !ids.contains(&all_tenant) {
                    return Err(ApiError::bad_request(ALL_TENANT_USERS_MEMBERSHIP));
                }
                let extra: Vec<i64> = ids
                    .iter()
                    .copied()
                    .filter(|g| *g != all_tenant)
                    .collect::<BTreeSet<i64>>()
                    .into_iter()
                    .collect();
                for g in &extra {
                    if !self.groups.contains_key(g) {
                        return Err(ApiError::not_found());
                    }
                    if !self.tenancy.tenant_groups.contains(g) {
                        return Err(ApiError::Json(
                            StatusCode::BAD_REQUEST,
                            json!({"message": MIXED_MEMBERSHIP}),
                        ));
                    }
                }
                extra
            }
        };
        // Email and the rest are checked by the ordinary path; the memberships are ours.
        let id = self.create_user(NewUserInput {
            memberships: None,
            ..input
        })?;
        if let Some(m) = self.membership_of(id, ALL_USERS_GROUP).map(|m| m.id) {
            self.remove_membership_unchecked(m);
        }
        self.tenancy.user_tenant.insert(id, tenant_id);
        self.add_membership_unchecked(id, all_tenant);
        for g in extra {
            self.add_membership_unchecked(id, g);
        }
        Ok(id)
    }

    /// Whether a user passes `GET /api/user`'s tenancy filters: since v0.57 only internal users
    /// unless `tenancy=all|external` or `tenant_id` is given (metabase-api.md correction 11).
    pub fn user_matches_tenancy(
        &self,
        u: &UserRec,
        filter: Option<TenancyFilter>,
        tenant_id: Option<i64>,
    ) -> bool {
        let tenant = self.tenant_of(u.id);
        if let Some(t) = tenant_id {
            return tenant == Some(t);
        }
        match filter.unwrap_or(TenancyFilter::Internal) {
            TenancyFilter::Internal => tenant.is_none(),
            TenancyFilter::External => tenant.is_some(),
            TenancyFilter::All => true,
        }
    }

    /// `GET /api/permissions/group?tenancy=`: internal = non-tenant groups, external = tenant
    /// groups and All tenant users; with `use-tenants` off, external is empty
    /// (`fetch-groups-tenancy-filter-test`).
    pub fn group_matches_tenancy(&self, group_id: i64, filter: Option<TenancyFilter>) -> bool {
        if !self.group_visible(group_id) {
            return false;
        }
        match filter {
            None | Some(TenancyFilter::All) => true,
            Some(TenancyFilter::Internal) => !self.is_tenant_group(group_id),
            Some(TenancyFilter::External) => self.is_tenant_group(group_id),
        }
    }
}

#[cfg(test)]
mod tests;
