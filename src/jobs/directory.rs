//! Finding and creating groups, users and collections without duplicates and without listing
//! the whole instance per job.
//!
//! Name -> id mappings live in Redis and are verified with one cheap GET before use. Group names
//! and emails are unique in Metabase, so creating first and treating "already exists" as "find
//! it" is race-free. Collection names are not unique: a tenant's collection is found by the
//! marker Metabase stores for it, inside the collection writer (`graph_writer::tenant`).
//!
//! A creating POST whose answer was lost (`MetabaseError::is_outcome_unknown`) may have been
//! applied. It is never sent again blindly: the group is looked up by name (any case), the user
//! by email; found, it is used (and reconciled, since the lost answer cannot prove what it
//! holds); not found, the job fails with the unknown outcome and its retry starts over, which
//! again finds before it creates.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::metabase::models::{MembershipRef, NewUser, User, UserUpdate};

use super::{Context, JobError};

/// A person as a job wants them in Metabase.
pub struct WantedUser<'a> {
    pub email: &'a str,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    /// Merged into the user's attributes; `None` removes a key.
    pub attributes: &'a BTreeMap<String, Option<Value>>,
    /// Groups the user must be in (besides All Users).
    pub groups: &'a [i64],
}

pub struct Directory<'a> {
    ctx: &'a Context,
}

/// The outcome of a find-or-create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub id: i64,
    /// Created by this call (so nothing can hang off it yet).
    pub created: bool,
}

impl<'a> Directory<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        Directory { ctx }
    }

    /// The group with this name (any case), if it exists.
    pub async fn find_group(&self, name: &str) -> Result<Option<i64>, JobError> {
        let key = name.to_lowercase();
        if let Some(id) = self.cached_group(&key).await? {
            return Ok(Some(id));
        }
        let found = self
            .ctx
            .mb
            .list_groups()
            .await?
            .into_iter()
            .find(|g| g.name.to_lowercase() == key);
        if let Some(g) = &found {
            self.ctx.store.set_id("group", &key, g.id).await?;
        }
        Ok(found.map(|g| g.id))
    }

    /// The group with this name, created when missing. A new tenant costs one POST.
    pub async fn ensure_group(&self, name: &str) -> Result<Found, JobError> {
        let key = name.to_lowercase();
        if let Some(id) = self.cached_group(&key).await? {
            return Ok(Found { id, created: false });
        }
        match self.ctx.mb.create_group(name).await {
            Ok(g) => {
                self.ctx.store.set_id("group", &key, g.id).await?;
                Ok(Found {
                    id: g.id,
                    created: true,
                })
            }
            Err(e) if e.is_duplicate() => match self.find_group(name).await? {
                Some(id) => Ok(Found { id, created: false }),
                None => Err(JobError::NotYet(format!(
                    "group {name:?} reported as existing but not found; it may be being deleted"
                ))),
            },
            Err(e) if e.is_outcome_unknown() => {
                tracing::warn!(error = %e, group = name, "group creation outcome unknown; looking it up");
                match self.find_group(name).await? {
                    // Perhaps made by the lost request: not `created`, so nobody skips a look-up
                    // on the strength of it being new.
                    Some(id) => Ok(Found { id, created: false }),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The cached id of the group named `key` (lower-cased), checked with one GET; a stale
    /// entry (renamed or deleted group) is dropped.
    async fn cached_group(&self, key: &str) -> Result<Option<i64>, JobError> {
        let Some(id) = self.ctx.store.get_id("group", key).await? else {
            return Ok(None);
        };
        match self.ctx.mb.get_group(id).await {
            Ok(g) if g.name.to_lowercase() == key => return Ok(Some(id)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.ctx.store.forget_id("group", key).await?;
        Ok(None)
    }

    /// Creates the user in one POST (with attributes and memberships) or finds it when the
    /// email is taken or the POST's outcome is unknown. Returns the user and whether this call
    /// created it; a found user is reconciled by the caller.
    pub async fn create_or_find_user(&self, new: NewUser) -> Result<(User, bool), JobError> {
        match self.ctx.mb.create_user(&new).await {
            Ok(u) => Ok((u, true)),
            Err(e) if e.is_duplicate() => match self.ctx.mb.find_user_by_email(&new.email).await? {
                Some(u) => Ok((u, false)),
                None => Err(JobError::NotYet(format!(
                    "user {} reported as existing but not found",
                    new.email
                ))),
            },
            // The same look-up as for an existing email (`find_user_by_email`, which is where
            // tenant users must be listed too, `tenancy=all` from v0.57).
            Err(e) if e.is_outcome_unknown() => {
                tracing::warn!(error = %e, "user creation outcome unknown; looking it up by email");
                match self.ctx.mb.find_user_by_email(&new.email).await? {
                    Some(u) => Ok((u, false)),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `NewUser` with All Users always in the memberships (Metabase refuses the list otherwise).
    pub fn new_user(
        &self,
        email: &str,
        first_name: Option<&str>,
        last_name: Option<&str>,
        groups: &[i64],
        attributes: BTreeMap<String, Value>,
    ) -> NewUser {
        let mut memberships = vec![MembershipRef::group(self.ctx.builtin.all_users)];
        memberships.extend(
            groups
                .iter()
                .filter(|g| **g != self.ctx.builtin.all_users)
                .map(|g| MembershipRef::group(*g)),
        );
        NewUser {
            email: email.trim().to_lowercase(),
            first_name: first_name.map(str::to_string),
            last_name: last_name.map(str::to_string),
            user_group_memberships: Some(memberships),
            login_attributes: (!attributes.is_empty()).then_some(attributes),
        }
    }

    /// Brings an existing user to: active, these names (when given), these attributes merged
    /// (`None` removes a key), and a member of `groups`. Only what differs is sent.
    pub async fn reconcile_user(
        &self,
        user: &User,
        first_name: Option<&str>,
        last_name: Option<&str>,
        attributes: &BTreeMap<String, Option<Value>>,
        groups: &[i64],
    ) -> Result<User, JobError> {
        let mut user = user.clone();
        if !user.is_active {
            user = self.ctx.mb.reactivate_user(user.id).await?;
        }
        let mut update = UserUpdate::default();
        if first_name.is_some() && user.first_name.as_deref() != first_name {
            update.first_name = first_name.map(str::to_string);
        }
        if last_name.is_some() && user.last_name.as_deref() != last_name {
            update.last_name = last_name.map(str::to_string);
        }
        let current = user.login_attributes.clone().unwrap_or_default();
        let merged = merge_attributes(&current, attributes);
        if merged != current {
            // PUT replaces the whole map, so the merged map is sent.
            update.login_attributes = Some(merged);
        }
        if update != UserUpdate::default() {
            user = self.ctx.mb.update_user(user.id, &update).await?;
        }
        let have = self.group_ids(&user).await?;
        for g in groups {
            if !have.contains(g) {
                self.ctx.mb.add_membership(*g, user.id).await?;
            }
        }
        Ok(user)
    }

    /// The user with this email, brought to the wanted state: created in one POST when missing,
    /// else reconciled (see [`Directory::reconcile_user`]).
    pub async fn upsert_user(&self, want: &WantedUser<'_>) -> Result<User, JobError> {
        let existing = match self.ctx.mb.find_user_by_email(want.email).await? {
            Some(user) => user,
            None => {
                let attributes = merge_attributes(&BTreeMap::new(), want.attributes);
                let new = self.new_user(
                    want.email,
                    want.first_name,
                    want.last_name,
                    want.groups,
                    attributes,
                );
                let (user, created) = self.create_or_find_user(new).await?;
                if created {
                    return Ok(user);
                }
                user
            }
        };
        self.reconcile_user(
            &existing,
            want.first_name,
            want.last_name,
            want.attributes,
            want.groups,
        )
        .await
    }

    /// A user's group ids, from whichever field the answer carried.
    pub async fn group_ids(&self, user: &User) -> Result<Vec<i64>, JobError> {
        if let Some(ids) = &user.group_ids {
            return Ok(ids.clone());
        }
        if let Some(m) = &user.user_group_memberships {
            return Ok(m.iter().map(|m| m.id).collect());
        }
        let full = self.ctx.mb.get_user(user.id).await?;
        Ok(full
            .user_group_memberships
            .unwrap_or_default()
            .iter()
            .map(|m| m.id)
            .collect())
    }
}

/// `current` with `changes` applied: a value sets the key (as a string, the way Metabase stores
/// it), `None` removes it.
pub fn merge_attributes(
    current: &BTreeMap<String, Value>,
    changes: &BTreeMap<String, Option<Value>>,
) -> BTreeMap<String, Value> {
    let mut out = current.clone();
    for (k, v) in changes {
        match v {
            None | Some(Value::Null) => {
                out.remove(k);
            }
            Some(Value::String(s)) => {
                out.insert(k.clone(), Value::String(s.clone()));
            }
            Some(other) => {
                out.insert(k.clone(), Value::String(other.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_merge_stringify_and_remove() {
        let current: BTreeMap<String, Value> =
            serde_json::from_value(json!({"organization_id": "41", "region": "eu", "keep": "x"}))
                .unwrap();
        let changes: BTreeMap<String, Option<Value>> =
            serde_json::from_value(json!({"organization_id": 42, "region": null, "plan": "pro"}))
                .unwrap();
        assert_eq!(
            serde_json::to_value(merge_attributes(&current, &changes)).unwrap(),
            json!({"organization_id": "42", "keep": "x", "plan": "pro"})
        );
    }
}
