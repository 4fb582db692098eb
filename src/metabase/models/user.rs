use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;

/// A user as `GET /api/user/:id`, `POST /api/user` and `PUT /api/user/:id` return it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub is_superuser: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub login_attributes: Option<BTreeMap<String, Value>>,
    /// Present on single-user responses (not on list items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_group_memberships: Option<Vec<MembershipRef>>,
    /// Present on list items for superusers (not on single-user responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_ids: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_collection_id: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn yes() -> bool {
    true
}

/// One entry of `user_group_memberships`: the group id, not a membership id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRef {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_group_manager: Option<bool>,
}

impl MembershipRef {
    /// A plain membership, as every request must spell it: `{"id": G, "is_group_manager":
    /// false}`. On Pro/Enterprise, Metabase applies `user_group_memberships` as a diff of
    /// `{group {:is_group_manager x}}` maps (`group-manager/set-user-group-memberships!`), so
    /// an item without the key differs from the user's All Users row and Metabase tries to
    /// remove All Users: 400 and no user (../shared/metabase-api.md, correction 1). The free
    /// edition ignores the key.
    pub fn group(id: i64) -> Self {
        MembershipRef {
            id,
            is_group_manager: Some(false),
        }
    }
}

/// `GET /api/user`: a page of users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserList {
    pub data: Vec<User>,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// Body of `POST /api/user`. `password` is not part of the current schema, so it is not here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Must include the All Users group when given, every item built with
    /// [`MembershipRef::group`]: Metabase makes memberships equal to this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_group_memberships: Option<Vec<MembershipRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_attributes: Option<BTreeMap<String, Value>>,
}

/// Body of `PUT /api/user/:id`. Only present keys change; `login_attributes` replaces the map.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_attributes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_group_memberships: Option<Vec<MembershipRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_superuser: Option<bool>,
}

/// Which users `GET /api/user` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Deactivated,
    All,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
            UserStatus::All => "all",
        }
    }
}
