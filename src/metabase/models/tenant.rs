//! Metabase Tenants (Pro/Enterprise feature `tenants`, v0.58+).
//!
//! Shapes from `enterprise/backend/src/metabase_enterprise/tenants/api.clj` (the `Tenant`,
//! `CreateTenantArguments` and `UpdateTenantArguments` schemas) and ../shared/metabase-api.md,
//! "Verified corrections" 12.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;

/// `GET /api/ee/tenant/:id`, and each item of `GET /api/ee/tenant`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub slug: String,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub member_count: Option<i64>,
    /// Metabase answers `null` for a tenant without attributes.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub tenant_collection_id: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn yes() -> bool {
    true
}

/// `GET /api/ee/tenant`: `{"data": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantList {
    pub data: Vec<Tenant>,
}

/// `POST /api/ee/tenant`; the schema is closed, so only these keys are sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewTenant {
    pub name: String,
    /// `^[-_a-z0-9]{1,255}$` (`metabase-enterprise.tenants.model/Slug`).
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, Value>>,
}

/// `PUT /api/ee/tenant/:id`; closed schema, absent keys are left alone, `attributes` replaces
/// the whole map.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
}

impl TenantUpdate {
    pub fn is_empty(&self) -> bool {
        self == &TenantUpdate::default()
    }
}

/// Which tenants `GET /api/ee/tenant?status=` lists (default `all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantStatus {
    All,
    Active,
    Deactivated,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::All => "all",
            TenantStatus::Active => "active",
            TenantStatus::Deactivated => "deactivated",
        }
    }
}
