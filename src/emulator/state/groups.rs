//! Groups and memberships (metabase-api.md §2).

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::{ADMIN_GROUP, ALL_USERS_GROUP, Sequences, State};
use crate::emulator::error::{ApiError, ApiResult, text};
use crate::metabase::models::ViewData;

#[derive(Clone, Debug, Serialize)]
pub struct GroupRec {
    pub id: i64,
    pub name: String,
    pub magic_group_type: Option<String>,
    pub entity_id: String,
}

impl GroupRec {
    pub fn magic(id: i64, name: &str, magic: &str) -> Self {
        GroupRec {
            id,
            name: name.to_string(),
            magic_group_type: Some(magic.to_string()),
            entity_id: entity_id(),
        }
    }
}

/// Metabase's 21-character NanoID-like `entity_id`.
pub fn entity_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..21].to_string()
}

impl State {
    fn check_name_free(&self, name: &str, except: Option<i64>) -> ApiResult<()> {
        let taken = self
            .groups
            .values()
            .any(|g| Some(g.id) != except && g.name.to_lowercase() == name.to_lowercase());
        if taken {
            return Err(ApiError::bad_request(text::GROUP_NAME_TAKEN));
        }
        Ok(())
    }

    fn check_not_magic(&self, group: &GroupRec) -> ApiResult<()> {
        if group.magic_group_type.is_some() {
            return Err(ApiError::bad_request(format!(
                "You cannot edit or delete the '{}' permissions group!",
                group.name
            )));
        }
        Ok(())
    }

    /// `POST /api/permissions/group`: the new group gets data permissions derived from All
    /// Users' (correction 3); the data revision does not move (correction 5).
    pub fn create_group(&mut self, name: &str) -> ApiResult<i64> {
        if name.trim().is_empty() {
            return Err(ApiError::schema(
                "name",
                "value must be a non-blank string.",
            ));
        }
        self.check_name_free(name, None)?;
        let id = Sequences::take(&mut self.seq.group);
        self.groups.insert(
            id,
            GroupRec {
                id,
                name: name.to_string(),
                magic_group_type: None,
                entity_id: entity_id(),
            },
        );
        let blocked_dbs: Vec<i64> = if self.edition.advanced_permissions() {
            self.catalog
                .databases
                .iter()
                .filter(|db| {
                    db.tables.iter().any(|t| {
                        self.data.table(ALL_USERS_GROUP, t.id).view_data == ViewData::Blocked
                            || self
                                .sandboxes
                                .values()
                                .any(|s| s.group_id == ALL_USERS_GROUP && s.table_id == t.id)
                    })
                })
                .map(|db| db.id)
                .collect()
        } else {
            Vec::new()
        };
        for db in self.catalog.databases.clone() {
            let blocked = blocked_dbs.contains(&db.id);
            self.data.grant_new_group(id, ALL_USERS_GROUP, &db, blocked);
        }
        Ok(id)
    }

    /// `PUT /api/permissions/group/:id`.
    pub fn rename_group(&mut self, id: i64, name: &str) -> ApiResult<()> {
        if name.trim().is_empty() {
            return Err(ApiError::schema(
                "name",
                "value must be a non-blank string.",
            ));
        }
        let group = self.groups.get(&id).ok_or_else(ApiError::not_found)?;
        self.check_not_magic(group)?;
        self.check_name_free(name, Some(id))?;
        if let Some(g) = self.groups.get_mut(&id) {
            g.name = name.to_string();
        }
        Ok(())
    }

    /// `DELETE /api/permissions/group/:id`: a missing id is not an error; members, graph
    /// entries and sandboxes go with the group.
    pub fn delete_group(&mut self, id: i64) -> ApiResult<()> {
        let Some(group) = self.groups.get(&id) else {
            return Ok(());
        };
        self.check_not_magic(group)?;
        self.groups.remove(&id);
        self.memberships.retain(|_, m| m.group_id != id);
        self.data.remove_group(id);
        self.collection_perms.remove(&id);
        for cells in self.namespace_roots.values_mut() {
            cells.remove(&id);
        }
        self.sandboxes.retain(|_, s| s.group_id != id);
        Ok(())
    }

    /// Active members of a group, the way `members` hydrates them.
    pub fn group_members(&self, group_id: i64) -> Vec<serde_json::Value> {
        let mut rows: Vec<_> = self
            .memberships
            .values()
            .filter(|m| m.group_id == group_id)
            .filter_map(|m| {
                let u = self.users.get(&m.user_id).filter(|u| u.is_active)?;
                Some((u, m.id, m.is_group_manager))
            })
            .collect();
        rows.sort_by_key(|(u, _, _)| {
            (
                u.first_name.as_deref().unwrap_or("").to_lowercase(),
                u.last_name.as_deref().unwrap_or("").to_lowercase(),
                u.id,
            )
        });
        rows.into_iter()
            .map(|(u, membership_id, manager)| {
                json!({
                    "user_id": u.id,
                    "id": u.id,
                    "membership_id": membership_id,
                    "email": u.email,
                    "first_name": u.first_name,
                    "last_name": u.last_name,
                    "common_name": u.common_name(),
                    "is_superuser": u.is_superuser,
                    "is_group_manager": manager,
                })
            })
            .collect()
    }

    /// Group id -> number of active members, in one scan.
    pub fn member_counts(&self) -> std::collections::BTreeMap<i64, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for m in self.memberships.values() {
            if self.users.get(&m.user_id).is_some_and(|u| u.is_active) {
                *counts.entry(m.group_id).or_default() += 1;
            }
        }
        counts
    }

    /// `POST /api/permissions/membership`. Unknown ids and duplicates fail in the insert
    /// itself, as 500s (correction 6).
    pub fn add_member(
        &mut self,
        group_id: i64,
        user_id: i64,
        is_group_manager: Option<bool>,
    ) -> ApiResult<i64> {
        if !self.groups.contains_key(&group_id) || !self.users.contains_key(&user_id) {
            return Err(ApiError::server(text::MEMBERSHIP_INSERT_FAILED));
        }
        if group_id == ALL_USERS_GROUP {
            return Err(ApiError::bad_request(text::ALL_USERS_MEMBERSHIP));
        }
        self.check_membership_tenancy(Some(user_id), group_id)?;
        if self.membership_of(user_id, group_id).is_some() {
            // The unique constraint on (user_id, group_id) surfaces as a 500 in Metabase.
            return Err(ApiError::Json(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": "ERROR: duplicate key value violates unique constraint \"unique_permissions_group_membership_user_id_group_id\""}),
            ));
        }
        let manager = if self.edition.advanced_permissions() {
            is_group_manager.or(Some(false))
        } else {
            Some(false)
        };
        Ok(self.insert_membership(user_id, group_id, manager))
    }

    /// `PUT /api/permissions/membership/:id`: EE group managers only (test
    /// `update-group-membership-test`).
    pub fn set_group_manager(&mut self, membership_id: i64, manager: bool) -> ApiResult<()> {
        if !self.edition.advanced_permissions() {
            return Err(ApiError::plain(
                StatusCode::PAYMENT_REQUIRED,
                text::GROUP_MANAGER_NEEDS_TOKEN,
            ));
        }
        let m = self
            .memberships
            .get_mut(&membership_id)
            .ok_or_else(ApiError::not_found)?;
        m.is_group_manager = Some(manager);
        Ok(())
    }

    /// `DELETE /api/permissions/membership/:id`.
    pub fn remove_member(&mut self, membership_id: i64) -> ApiResult<()> {
        let m = self
            .memberships
            .get(&membership_id)
            .ok_or_else(ApiError::not_found)?;
        if m.group_id == ALL_USERS_GROUP {
            return Err(ApiError::bad_request(text::ALL_USERS_MEMBERSHIP));
        }
        if m.group_id == ADMIN_GROUP
            && self.is_active_admin(m.user_id)
            && self.active_admin_count() <= 1
        {
            return Err(ApiError::bad_request(text::LAST_ADMIN));
        }
        self.remove_membership_unchecked(membership_id);
        Ok(())
    }

    /// `PUT /api/permissions/membership/:group-id/clear`.
    pub fn clear_group(&mut self, group_id: i64) -> ApiResult<()> {
        if !self.groups.contains_key(&group_id) {
            return Err(ApiError::not_found());
        }
        if group_id == ADMIN_GROUP {
            return Err(ApiError::bad_request(text::INVALID_REQUEST));
        }
        if group_id == ALL_USERS_GROUP {
            return Err(ApiError::bad_request(text::ALL_USERS_MEMBERSHIP));
        }
        self.memberships.retain(|_, m| m.group_id != group_id);
        Ok(())
    }
}
