//! Users and the rules that tie them to groups (metabase-api.md §1).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::memberships::{GroupPlan, MembershipItem, diff_plan, replace_plan};
use super::{ADMIN_GROUP, ALL_USERS_GROUP, MembershipRec, Sequences, State, now};
use crate::emulator::error::{ApiError, ApiResult, text};

#[derive(Clone, Debug, Serialize)]
pub struct UserRec {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_superuser: bool,
    pub is_active: bool,
    pub login_attributes: Option<BTreeMap<String, String>>,
    pub locale: Option<String>,
    pub date_joined: String,
    pub updated_at: String,
    pub last_login: Option<String>,
    pub personal_collection_id: Option<i64>,
    /// Only users made by `/api/setup` (or the initial admin) can log in; never serialised.
    #[serde(skip)]
    pub password: Option<String>,
}

impl UserRec {
    pub fn common_name(&self) -> Option<String> {
        match (&self.first_name, &self.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.clone()),
            (None, Some(l)) => Some(l.clone()),
            (None, None) => None,
        }
    }
}

/// `POST /api/user`, already decoded.
#[derive(Clone, Debug, Default)]
pub struct NewUserInput {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `user_group_memberships`; when given, applied with the edition's semantics.
    pub memberships: Option<Vec<MembershipItem>>,
    pub login_attributes: Option<BTreeMap<String, String>>,
}

/// `PUT /api/user/:id`, already decoded: outer `None` = key absent.
#[derive(Clone, Debug, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub locale: Option<Option<String>>,
    pub is_superuser: Option<bool>,
    pub login_attributes: Option<Option<BTreeMap<String, String>>>,
    pub memberships: Option<Vec<MembershipItem>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    Active,
    Deactivated,
    All,
}

/// `GET /api/user` filters; paging only applies when `limit` or `offset` was given.
#[derive(Clone, Debug, Default)]
pub struct UserListQuery {
    pub status: StatusFilter,
    pub query: Option<String>,
    pub group_id: Option<i64>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// A deliberately simple check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|p| !p.is_empty())
}

const INVALID_EMAIL: &str = "value must be a valid email address.";

impl State {
    fn email_taken(&self, email: &str, except: Option<i64>) -> bool {
        self.users
            .values()
            .any(|u| Some(u.id) != except && u.email.eq_ignore_ascii_case(email))
    }

    /// Inserts a user with All Users membership and a personal collection, skipping every check.
    pub(super) fn insert_user_record(
        &mut self,
        email: &str,
        first_name: Option<&str>,
        last_name: Option<&str>,
        password: Option<String>,
    ) -> i64 {
        let id = Sequences::take(&mut self.seq.user);
        let at = now();
        let user = UserRec {
            id,
            email: email.to_lowercase(),
            first_name: first_name.map(str::to_string),
            last_name: last_name.map(str::to_string),
            is_superuser: false,
            is_active: true,
            login_attributes: None,
            locale: None,
            date_joined: at.clone(),
            updated_at: at,
            last_login: None,
            personal_collection_id: None,
            password,
        };
        let name = format!(
            "{}'s Personal Collection",
            user.common_name().unwrap_or(user.email.clone())
        );
        self.users.insert(id, user);
        let coll = if id == 1 && !self.collections.contains_key(&1) {
            // The first user's personal collection is always 1 (see the initial state).
            self.insert_collection_with_id(1, &name, None, Some(id))
        } else {
            self.insert_collection_record(&name, None, None, Some(id))
        };
        if let Some(u) = self.users.get_mut(&id) {
            u.personal_collection_id = Some(coll);
        }
        self.add_membership_unchecked(id, ALL_USERS_GROUP);
        id
    }

    /// A user's membership rows as (group id, `is_group_manager`).
    fn membership_rows(&self, user_id: i64) -> Vec<(i64, Option<bool>)> {
        self.memberships
            .values()
            .filter(|m| m.user_id == user_id)
            .map(|m| (m.group_id, m.is_group_manager))
            .collect()
    }

    /// Adds a membership row and keeps `is_superuser` in step with the admin group.
    pub(super) fn add_membership_unchecked(&mut self, user_id: i64, group_id: i64) -> i64 {
        self.insert_membership(user_id, group_id, Some(false))
    }

    pub(super) fn insert_membership(
        &mut self,
        user_id: i64,
        group_id: i64,
        is_group_manager: Option<bool>,
    ) -> i64 {
        let id = Sequences::take(&mut self.seq.membership);
        self.memberships.insert(
            id,
            MembershipRec {
                id,
                user_id,
                group_id,
                is_group_manager,
            },
        );
        if group_id == ADMIN_GROUP
            && let Some(u) = self.users.get_mut(&user_id)
        {
            u.is_superuser = true;
        }
        id
    }

    pub(super) fn remove_membership_unchecked(&mut self, membership_id: i64) {
        if let Some(m) = self.memberships.remove(&membership_id)
            && m.group_id == ADMIN_GROUP
            && let Some(u) = self.users.get_mut(&m.user_id)
        {
            u.is_superuser = false;
        }
    }

    /// Plans a `user_group_memberships` change with the edition's semantics (`replace` forces
    /// the free edition's, as `is_superuser` alone does) and checks it.
    fn plan_groups(
        &self,
        user_id: Option<i64>,
        wanted: &[MembershipItem],
        replace: bool,
    ) -> ApiResult<GroupPlan> {
        let current = match user_id {
            Some(id) => self.membership_rows(id),
            // A new user is in All Users (`is_group_manager` false) before the list is applied.
            None => vec![(ALL_USERS_GROUP, Some(false))],
        };
        let plan = if replace || !self.edition.advanced_permissions() {
            replace_plan(&current, wanted)
        } else {
            diff_plan(&current, wanted)
        };
        let touches = |g: i64| plan.remove.contains(&g) || plan.add.iter().any(|(a, _)| *a == g);
        if touches(ALL_USERS_GROUP) {
            return Err(ApiError::bad_request(text::ALL_USERS_MEMBERSHIP));
        }
        if plan.add.iter().any(|(g, _)| !self.groups.contains_key(g)) {
            return Err(ApiError::not_found());
        }
        for (g, _) in &plan.add {
            self.check_membership_tenancy(user_id, *g)?;
        }
        let keeps_admin = plan.add.iter().any(|(g, _)| *g == ADMIN_GROUP);
        if plan.remove.contains(&ADMIN_GROUP)
            && !keeps_admin
            && user_id.is_some_and(|id| self.is_active_admin(id))
            && self.active_admin_count() <= 1
        {
            return Err(ApiError::bad_request(text::LAST_ADMIN));
        }
        Ok(plan)
    }

    fn apply_groups(&mut self, user_id: i64, plan: GroupPlan) {
        for g in plan.remove {
            if let Some(m) = self.membership_of(user_id, g).map(|m| m.id) {
                self.remove_membership_unchecked(m);
            }
        }
        for (g, manager) in plan.add {
            self.insert_membership(user_id, g, manager);
        }
    }

    /// `POST /api/user`: nothing is created unless every check passes.
    pub fn create_user(&mut self, input: NewUserInput) -> ApiResult<i64> {
        let email = input.email.to_lowercase();
        if !is_valid_email(&email) {
            return Err(ApiError::schema("email", INVALID_EMAIL));
        }
        if self.email_taken(&email, None) {
            return Err(ApiError::field("email", "Email address already in use."));
        }
        let plan = match &input.memberships {
            Some(items) => Some(self.plan_groups(None, items, false)?),
            None => None,
        };
        let id = self.insert_user_record(
            &email,
            input.first_name.as_deref(),
            input.last_name.as_deref(),
            None,
        );
        if let Some(u) = self.users.get_mut(&id) {
            u.login_attributes = input.login_attributes;
        }
        if let Some(plan) = plan {
            self.apply_groups(id, plan);
        }
        Ok(id)
    }

    /// `PUT /api/user/:id`: only active users; present keys replace.
    pub fn update_user(&mut self, id: i64, patch: UserPatch) -> ApiResult<()> {
        if !self.users.get(&id).is_some_and(|u| u.is_active) {
            return Err(ApiError::not_found());
        }
        let email = patch.email.as_ref().map(|e| e.to_lowercase());
        if let Some(e) = &email {
            if !is_valid_email(e) {
                return Err(ApiError::schema("email", INVALID_EMAIL));
            }
            if self.email_taken(e, Some(id)) {
                return Err(ApiError::field(
                    "email",
                    "Email address already associated to another user.",
                ));
            }
        }
        let wanted_groups: Option<(Vec<MembershipItem>, bool)> = match (
            &patch.memberships,
            patch.is_superuser,
        ) {
            (Some(items), Some(sup)) => {
                if items.iter().any(|i| i.group_id == ADMIN_GROUP) != sup {
                    return Err(ApiError::field(
                        "is_superuser",
                        "Value of is_superuser must correspond to presence of Admin group ID in group_ids.",
                    ));
                }
                Some((items.clone(), false))
            }
            (Some(items), None) => Some((items.clone(), false)),
            // `is_superuser` alone: the user row's hooks add or remove the admin membership.
            (None, Some(sup)) => {
                let mut ids = self.group_ids_of(id);
                ids.retain(|g| *g != ADMIN_GROUP);
                if sup {
                    ids.push(ADMIN_GROUP);
                }
                Some((ids.into_iter().map(MembershipItem::plain).collect(), true))
            }
            (None, None) => None,
        };
        let plan = match &wanted_groups {
            Some((items, replace)) => Some(self.plan_groups(Some(id), items, *replace)?),
            None => None,
        };
        if let Some(u) = self.users.get_mut(&id) {
            if let Some(e) = email {
                u.email = e;
            }
            if let Some(v) = patch.first_name {
                u.first_name = v;
            }
            if let Some(v) = patch.last_name {
                u.last_name = v;
            }
            if let Some(v) = patch.locale {
                u.locale = v;
            }
            if let Some(v) = patch.login_attributes {
                u.login_attributes = v;
            }
            u.updated_at = now();
        }
        if let Some(plan) = plan {
            self.apply_groups(id, plan);
        }
        Ok(())
    }

    /// Puts a user in Administrators (the user row's hook makes them a superuser).
    pub fn make_superuser(&mut self, id: i64) {
        if self.membership_of(id, ADMIN_GROUP).is_none() {
            self.add_membership_unchecked(id, ADMIN_GROUP);
        }
    }

    /// `DELETE /api/user/:id`: idempotent deactivation.
    pub fn deactivate_user(&mut self, id: i64) -> ApiResult<()> {
        let Some(user) = self.users.get(&id) else {
            return Err(ApiError::not_found());
        };
        if user.is_active && user.is_superuser && self.active_admin_count() <= 1 {
            return Err(ApiError::bad_request(text::LAST_ADMIN));
        }
        if let Some(u) = self.users.get_mut(&id) {
            u.is_active = false;
            u.updated_at = now();
        }
        Ok(())
    }

    /// `PUT /api/user/:id/reactivate`: back to active, no longer a superuser.
    pub fn reactivate_user(&mut self, id: i64) -> ApiResult<()> {
        let Some(user) = self.users.get(&id) else {
            return Err(ApiError::not_found());
        };
        if user.is_active {
            return Err(ApiError::Json(
                StatusCode::BAD_REQUEST,
                json!({"message": "Not able to reactivate an active user"}),
            ));
        }
        if let Some(m) = self.membership_of(id, ADMIN_GROUP).map(|m| m.id) {
            self.remove_membership_unchecked(m);
        }
        if let Some(u) = self.users.get_mut(&id) {
            u.is_active = true;
            u.is_superuser = false;
            u.updated_at = now();
        }
        Ok(())
    }

    /// `GET /api/user`: the page and the total under the same filters.
    pub fn list_users(&self, q: &UserListQuery) -> (Vec<&UserRec>, usize) {
        let needle = q.query.as_ref().map(|s| s.to_lowercase());
        let members: Option<BTreeSet<i64>> = q.group_id.map(|g| {
            self.memberships
                .values()
                .filter(|m| m.group_id == g)
                .map(|m| m.user_id)
                .collect()
        });
        let mut users: Vec<&UserRec> = self
            .users
            .values()
            .filter(|u| match q.status {
                StatusFilter::Active => u.is_active,
                StatusFilter::Deactivated => !u.is_active,
                StatusFilter::All => true,
            })
            .filter(|u| {
                needle.as_ref().is_none_or(|n| {
                    [&u.first_name, &u.last_name]
                        .iter()
                        .any(|f| f.as_ref().is_some_and(|f| f.to_lowercase().contains(n)))
                        || u.email.contains(n)
                })
            })
            .filter(|u| members.as_ref().is_none_or(|m| m.contains(&u.id)))
            .collect();
        let key = |u: &&UserRec| {
            (
                u.first_name.as_deref().unwrap_or("").to_lowercase(),
                u.last_name.as_deref().unwrap_or("").to_lowercase(),
                u.id,
            )
        };
        users.sort_by_cached_key(key);
        let total = users.len();
        if q.limit.is_some() || q.offset.is_some() {
            let offset = q.offset.unwrap_or(0);
            let limit = q.limit.unwrap_or(50);
            users = users.into_iter().skip(offset).take(limit).collect();
        }
        (users, total)
    }

    /// `POST /api/session`: the user id when the credentials match an active user.
    pub fn login(&self, username: &str, password: &str) -> Option<i64> {
        self.users
            .values()
            .find(|u| {
                u.is_active
                    && u.email.eq_ignore_ascii_case(username)
                    && u.password.as_deref() == Some(password)
            })
            .map(|u| u.id)
    }

    /// `POST /api/setup`: the first superuser, only while no user exists.
    pub fn setup_first_user(
        &mut self,
        token: &str,
        email: &str,
        first_name: &str,
        last_name: &str,
        password: &str,
    ) -> ApiResult<i64> {
        if !self.users.is_empty() {
            return Err(ApiError::plain(StatusCode::FORBIDDEN, text::SETUP_DONE));
        }
        if self.setup_token.as_deref() != Some(token) {
            return Err(ApiError::field(
                "token",
                "Token does not match the setup token.",
            ));
        }
        if !is_valid_email(&email.to_lowercase()) {
            return Err(ApiError::schema("email", INVALID_EMAIL));
        }
        if password.len() < 6 {
            return Err(ApiError::field("password", "password is too common."));
        }
        let id = self.insert_user_record(
            email,
            Some(first_name),
            Some(last_name),
            Some(password.to_string()),
        );
        self.add_membership_unchecked(id, ADMIN_GROUP);
        self.setup_token = None;
        Ok(id)
    }
}
