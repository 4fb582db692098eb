//! `users.synced`: reconcile the managed groups' memberships to the product's snapshot.
//!
//! Costs O(snapshot + managed groups' members) requests: each managed group is read once (its
//! members with their membership ids), and only users of the snapshot are looked up. Groups
//! outside `managed_groups`, All Users and Administrators are never touched.

use std::collections::{BTreeMap, BTreeSet};

use crate::metabase::models::GroupMember;

use super::directory::WantedUser;
use super::payloads::UsersSynced;
use super::{Context, JobError};

pub async fn run(ctx: &Context, s: &UsersSynced) -> Result<(), JobError> {
    let dir = ctx.directory();
    // managed group name (lower case) -> id, and id -> current members
    let mut ids: BTreeMap<String, i64> = BTreeMap::new();
    let mut members: BTreeMap<i64, Vec<GroupMember>> = BTreeMap::new();
    for name in &s.managed_groups {
        let g = dir.ensure_group(name).await?;
        if ctx.builtin.all.contains(&g.id) {
            return Err(JobError::Policy(format!("{name:?} is a built-in group")));
        }
        ids.insert(name.to_lowercase(), g.id);
        let list = if g.created {
            Vec::new()
        } else {
            ctx.mb.get_group(g.id).await?.members.unwrap_or_default()
        };
        members.insert(g.id, list);
    }

    let mut listed: BTreeSet<String> = BTreeSet::new();
    // (group, email) pairs the snapshot wants
    let mut wanted: BTreeSet<(i64, String)> = BTreeSet::new();
    for u in &s.users {
        let email = u.email.to_lowercase();
        listed.insert(email.clone());
        let groups: Vec<i64> = u
            .groups
            .iter()
            .filter_map(|g| ids.get(&g.to_lowercase()).copied())
            .collect();
        wanted.extend(groups.iter().map(|g| (*g, email.clone())));
        dir.upsert_user(&WantedUser {
            email: &email,
            first_name: u.first_name.as_deref(),
            last_name: u.last_name.as_deref(),
            attributes: &u.login_attributes,
            groups: &groups,
        })
        .await?;
    }

    let mut absent: BTreeMap<i64, String> = BTreeMap::new();
    for (group, list) in &members {
        for m in list {
            let email = m.email.clone().unwrap_or_default().to_lowercase();
            if wanted.contains(&(*group, email.clone())) {
                continue;
            }
            match ctx.mb.delete_membership(m.membership_id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            if !listed.contains(&email) && !m.is_superuser {
                absent.insert(m.user_id, email);
            }
        }
    }
    if s.deactivate_missing {
        for (user_id, email) in absent {
            tracing::info!(user = user_id, email = %email, "deactivating a member absent from the snapshot");
            ctx.mb.deactivate_user(user_id).await?;
        }
    }
    Ok(())
}
