//! The typed payload of each job kind (CONTRACT.md §4). Unknown fields are refused.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::envelope::{InvalidJob, Validate, tenant_id};
use crate::graph::DataAccess;

const MAX_NAME: usize = 100;
const MAX_EMAIL: usize = 254;
const MAX_GROUP: usize = 255;

fn default_true() -> bool {
    true
}

/// A tenant group's access to its collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CollectionLevel {
    #[default]
    Read,
    Write,
}

/// A person, as the product knows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

impl Validate for Person {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_email("email", &self.email)?;
        check_opt_name("first_name", self.first_name.as_deref())?;
        check_opt_name("last_name", self.last_name.as_deref())
    }
}

/// Row-level security for `data_access: sandboxed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// The login attribute the rows are filtered by.
    #[serde(default = "default_attribute")]
    pub attribute: String,
    pub tables: Vec<SandboxTable>,
}

fn default_attribute() -> String {
    "organization_id".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxTable {
    pub table_id: i64,
    /// The column compared with the attribute.
    pub field_id: i64,
}

/// `tenant.created`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreated {
    #[serde(deserialize_with = "tenant_id")]
    #[schemars(with = "TenantIdSchema")]
    pub tenant_id: String,
    pub tenant_name: String,
    pub database_id: i64,
    /// Parent of the tenant collection; absent: the root collection.
    #[serde(default)]
    pub shared_collection_id: Option<i64>,
    pub admin_user: Person,
    /// Remove every other group's inherited access to the tenant collection.
    #[serde(default = "default_true")]
    pub isolate_collection: bool,
    #[serde(default)]
    pub data_access: DataAccess,
    #[serde(default)]
    pub collection_access: CollectionLevel,
    /// Required exactly when `data_access` is `sandboxed`.
    #[serde(default)]
    pub sandbox: Option<SandboxSpec>,
    /// Groups the admin user belongs to besides the tenant's own, created when missing. In
    /// native tenancy they are tenant groups shared by every tenant and receive `data_access`
    /// (All tenant users does when none is listed); in group tenancy they are ordinary groups
    /// the admin joins, and the data access stays the tenant group's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenant_groups: Vec<String>,
}

/// A string of 1 to 100 characters, or an integer.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "TenantId")]
#[allow(dead_code)]
enum TenantIdSchema {
    Text(#[schemars(length(min = 1, max = 100))] String),
    Number(i64),
}

impl Validate for TenantCreated {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_tenant_id(&self.tenant_id)?;
        check_name("tenant_name", &self.tenant_name)?;
        check_positive("database_id", self.database_id)?;
        if let Some(id) = self.shared_collection_id {
            check_positive("shared_collection_id", id)?;
        }
        self.admin_user
            .validate()
            .map_err(|e| nest("admin_user", e))?;
        check_groups("tenant_groups", &self.tenant_groups)?;
        match (&self.data_access, &self.sandbox) {
            (DataAccess::Sandboxed, None) => Err(InvalidJob::new(
                "sandbox",
                "required when data_access is \"sandboxed\"",
            )),
            (DataAccess::Sandboxed, Some(s)) => {
                check_name("sandbox.attribute", &s.attribute)?;
                if s.attribute.starts_with('@') {
                    return Err(InvalidJob::new(
                        "sandbox.attribute",
                        "must not start with @ (reserved by Metabase)",
                    ));
                }
                if s.tables.is_empty() {
                    return Err(InvalidJob::new(
                        "sandbox.tables",
                        "must list at least one table",
                    ));
                }
                for (i, t) in s.tables.iter().enumerate() {
                    check_positive(&format!("sandbox.tables[{i}].table_id"), t.table_id)?;
                    check_positive(&format!("sandbox.tables[{i}].field_id"), t.field_id)?;
                }
                Ok(())
            }
            (_, Some(_)) => Err(InvalidJob::new(
                "sandbox",
                "only allowed when data_access is \"sandboxed\"",
            )),
            (_, None) => Ok(()),
        }
    }
}

/// `tenant.deleted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantDeleted {
    #[serde(deserialize_with = "tenant_id")]
    #[schemars(with = "TenantIdSchema")]
    pub tenant_id: String,
    /// Accepted for compatibility; not needed: the collection archived is the one marked for the
    /// tenant in Metabase (its description), whatever its name.
    #[serde(default)]
    pub tenant_name: Option<String>,
    #[serde(default)]
    pub shared_collection_id: Option<i64>,
}

impl Validate for TenantDeleted {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_tenant_id(&self.tenant_id)?;
        if let Some(n) = &self.tenant_name {
            check_name("tenant_name", n)?;
        }
        if let Some(id) = self.shared_collection_id {
            check_positive("shared_collection_id", id)?;
        }
        Ok(())
    }
}

/// `tenant.updated`: a tenant's new name and attributes (CONTRACT.md section 8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdated {
    #[serde(deserialize_with = "tenant_id")]
    #[schemars(with = "TenantIdSchema")]
    pub tenant_id: String,
    /// The tenant's new display name: native tenancy renames the tenant, group tenancy renames
    /// the collection marked for the tenant to `{tenant_name} Dashboards`.
    #[serde(default)]
    pub tenant_name: Option<String>,
    /// Merged into the tenant's attributes; a `null` value removes that key.
    #[serde(default)]
    pub attributes: BTreeMap<String, Option<Value>>,
}

impl Validate for TenantUpdated {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_tenant_id(&self.tenant_id)?;
        if let Some(n) = &self.tenant_name {
            check_name("tenant_name", n)?;
        }
        check_attributes("attributes", &self.attributes)
    }
}

/// `user.upserted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpserted {
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    /// Groups to be in (created when missing).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Merged into the user's attributes; a `null` value removes that key.
    #[serde(default)]
    pub login_attributes: BTreeMap<String, Option<Value>>,
    /// Also leave every other group (All Users and Administrators excepted).
    #[serde(default)]
    pub exclusive: bool,
    /// The tenant this user belongs to. In native tenancy it makes the user a tenant user of
    /// that tenant (required there for tenant users); in group tenancy it is checked and
    /// otherwise ignored (the groups say where the user belongs).
    #[serde(
        default,
        deserialize_with = "opt_tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<TenantIdSchema>")]
    pub tenant_id: Option<String>,
}

impl Validate for UserUpserted {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_opt_tenant_id(self.tenant_id.as_deref())?;
        check_user(
            &self.email,
            self.first_name.as_deref(),
            self.last_name.as_deref(),
            &self.groups,
            &self.login_attributes,
        )
    }
}

/// The checks a person of `user.upserted` and of a `users.synced` snapshot share.
fn check_user(
    email: &str,
    first_name: Option<&str>,
    last_name: Option<&str>,
    groups: &[String],
    attributes: &BTreeMap<String, Option<Value>>,
) -> Result<(), InvalidJob> {
    check_email("email", email)?;
    check_opt_name("first_name", first_name)?;
    check_opt_name("last_name", last_name)?;
    check_groups("groups", groups)?;
    check_attributes("login_attributes", attributes)
}

/// `user.deactivated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserDeactivated {
    pub email: String,
    /// In native tenancy, the tenant the user must belong to: a user of another tenant, or an
    /// internal user, is left alone.
    #[serde(
        default,
        deserialize_with = "opt_tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<TenantIdSchema>")]
    pub tenant_id: Option<String>,
}

impl Validate for UserDeactivated {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_opt_tenant_id(self.tenant_id.as_deref())?;
        check_email("email", &self.email)
    }
}

/// One user of a `users.synced` snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncedUser {
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub login_attributes: BTreeMap<String, Option<Value>>,
    /// As on `user.upserted`.
    #[serde(
        default,
        deserialize_with = "opt_tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<TenantIdSchema>")]
    pub tenant_id: Option<String>,
}

/// `users.synced`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsersSynced {
    /// The groups this snapshot is the whole truth for.
    pub managed_groups: Vec<String>,
    #[serde(default)]
    pub deactivate_missing: bool,
    pub users: Vec<SyncedUser>,
}

impl Validate for UsersSynced {
    fn validate(&self) -> Result<(), InvalidJob> {
        check_groups("managed_groups", &self.managed_groups)?;
        let managed: std::collections::BTreeSet<String> = self
            .managed_groups
            .iter()
            .map(|g| g.to_lowercase())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for (i, u) in self.users.iter().enumerate() {
            check_user(
                &u.email,
                u.first_name.as_deref(),
                u.last_name.as_deref(),
                &u.groups,
                &u.login_attributes,
            )
            .map_err(|e| nest(&format!("users[{i}]"), e))?;
            check_opt_tenant_id(u.tenant_id.as_deref())
                .map_err(|e| nest(&format!("users[{i}]"), e))?;
            if !seen.insert(u.email.to_lowercase()) {
                return Err(InvalidJob::new(format!("users[{i}].email"), "listed twice"));
            }
            for (j, g) in u.groups.iter().enumerate() {
                if !managed.contains(&g.to_lowercase()) {
                    return Err(InvalidJob::new(
                        format!("users[{i}].groups[{j}]"),
                        format!("{g:?} is not in managed_groups"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `permissions.applied`: a desired-state document (CONTRACT.md §5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionsApplied {
    pub document: crate::pac::Document,
}

impl Validate for PermissionsApplied {
    fn validate(&self) -> Result<(), InvalidJob> {
        self.document
            .validate()
            .map_err(|e| InvalidJob::new(format!("document.{}", e.path), e.reason))
    }
}

fn nest(parent: &str, e: InvalidJob) -> InvalidJob {
    InvalidJob::new(format!("{parent}.{}", e.field), e.reason)
}

fn check_tenant_id(id: &str) -> Result<(), InvalidJob> {
    let n = id.chars().count();
    if n == 0 || n > 100 || id.trim() != id {
        return Err(InvalidJob::new(
            "tenant_id",
            "must be 1 to 100 characters without surrounding spaces",
        ));
    }
    // It names the tenant's group (`Tenant: {tenant_id}`).
    super::group_names::check(&format!("Tenant: {id}")).map_err(|reason| {
        InvalidJob::new(
            "tenant_id",
            format!("names the tenant's group, which {reason}"),
        )
    })
}

fn check_opt_tenant_id(id: Option<&str>) -> Result<(), InvalidJob> {
    id.map_or(Ok(()), check_tenant_id)
}

/// An optional `tenant_id`, read like [`tenant_id`]; `null` is the same as absent.
fn opt_tenant_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => tenant_id(v).map(Some).map_err(serde::de::Error::custom),
    }
}

fn check_name(field: &str, name: &str) -> Result<(), InvalidJob> {
    if name.trim().is_empty() {
        return Err(InvalidJob::new(field, "must not be blank"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(InvalidJob::new(
            field,
            format!("longer than {MAX_NAME} characters"),
        ));
    }
    Ok(())
}

fn check_opt_name(field: &str, name: Option<&str>) -> Result<(), InvalidJob> {
    name.map_or(Ok(()), |n| check_name(field, n))
}

fn check_positive(field: &str, id: i64) -> Result<(), InvalidJob> {
    if id <= 0 {
        return Err(InvalidJob::new(
            field,
            format!("must be a positive id, got {id}"),
        ));
    }
    Ok(())
}

fn check_groups(field: &str, groups: &[String]) -> Result<(), InvalidJob> {
    for (i, g) in groups.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if g.trim().is_empty() || g.chars().count() > MAX_GROUP {
            return Err(InvalidJob::new(
                at,
                format!("group names are 1 to {MAX_GROUP} characters"),
            ));
        }
        if super::policy::is_builtin_group_name(g) {
            return Err(InvalidJob::new(
                at,
                format!("{g:?} is a built-in group: messages never grant or remove its membership"),
            ));
        }
        super::group_names::check(g).map_err(|reason| InvalidJob::new(&at, reason))?;
    }
    Ok(())
}

fn check_attributes(
    field: &str,
    attrs: &BTreeMap<String, Option<Value>>,
) -> Result<(), InvalidJob> {
    for (k, v) in attrs {
        if k.trim().is_empty() || k.starts_with('@') {
            return Err(InvalidJob::new(
                format!("{field}.{k}"),
                "attribute names must be non-blank and not start with @",
            ));
        }
        if matches!(v, Some(Value::Object(_)) | Some(Value::Array(_))) {
            return Err(InvalidJob::new(
                format!("{field}.{k}"),
                "attribute values are strings, numbers, booleans or null",
            ));
        }
    }
    Ok(())
}

/// A deliberately small check: what Metabase itself would refuse as "not a valid email".
pub fn check_email(field: &str, email: &str) -> Result<(), InvalidJob> {
    let bad = |why: &str| {
        Err(InvalidJob::new(
            field,
            format!("{email:?} is not a valid email address: {why}"),
        ))
    };
    if email.len() > MAX_EMAIL {
        return bad("too long");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return bad("no @");
    };
    if local.is_empty() || local.contains('@') {
        return bad("bad local part");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains spaces");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || !l.chars().all(|c| c.is_alphanumeric() || c == '-'))
    {
        return bad("bad domain");
    }
    Ok(())
}
