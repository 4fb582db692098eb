use serde::{Deserialize, Serialize};

use super::Extra;

/// `magic_group_type` of the built-in groups. Look groups up by this, never by name or id.
pub const MAGIC_ALL_USERS: &str = "all-internal-users";
pub const MAGIC_ADMIN: &str = "admin";
pub const MAGIC_ALL_EXTERNAL_USERS: &str = "all-external-users";
/// "Data Analysts" (newest releases).
pub const MAGIC_DATA_ANALYST: &str = "data-analyst";

/// A permissions group (`GET /api/permissions/group[/:id]`, `POST /api/permissions/group`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub magic_group_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i64>,
    /// Only on `GET /api/permissions/group/:id`: the active members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<GroupMember>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Group {
    /// All Users, Administrators, All tenant users, Data Analysts: never touched by a message.
    pub fn is_magic(&self) -> bool {
        self.magic_group_type.is_some()
    }
}

/// A member as listed by `GET /api/permissions/group/:id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupMember {
    pub user_id: i64,
    pub membership_id: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub is_superuser: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_group_manager: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/permissions/group`. Only `name`: `is_tenant_group` is declared by tenant-aware
/// releases only, and newest master rejects undeclared keys (correction 11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewGroup {
    pub name: String,
}

/// One membership, as `GET /api/permissions/membership` lists them per user id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub membership_id: i64,
    pub group_id: i64,
    pub user_id: i64,
    /// A row inserted by an EE membership item without the key holds NULL (correction 1).
    #[serde(default, deserialize_with = "null_is_false")]
    pub is_group_manager: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// `POST /api/permissions/membership`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewMembership {
    pub group_id: i64,
    pub user_id: i64,
}
