//! `user.upserted` and `user.deactivated` (CONTRACT.md §4).

use super::directory::WantedUser;
use super::payloads::{UserDeactivated, UserUpserted};
use super::{Context, JobError};

pub async fn upsert(ctx: &Context, u: &UserUpserted) -> Result<(), JobError> {
    let dir = ctx.directory();
    let mut groups = Vec::with_capacity(u.groups.len());
    for name in &u.groups {
        let g = dir.ensure_group(name).await?;
        if ctx.builtin.all.contains(&g.id) {
            return Err(JobError::Policy(format!("{name:?} is a built-in group")));
        }
        groups.push(g.id);
    }
    let user = dir
        .upsert_user(&WantedUser {
            email: &u.email,
            first_name: u.first_name.as_deref(),
            last_name: u.last_name.as_deref(),
            attributes: &u.login_attributes,
            groups: &groups,
        })
        .await?;
    if u.exclusive {
        leave_other_groups(ctx, user.id, &dir.group_ids(&user).await?, &groups).await?;
    }
    Ok(())
}

/// Removes the user from every group outside `keep`, by membership id. Built-in groups (All
/// Users, Administrators) are never left.
async fn leave_other_groups(
    ctx: &Context,
    user_id: i64,
    current: &[i64],
    keep: &[i64],
) -> Result<(), JobError> {
    for group in current {
        if keep.contains(group) || ctx.builtin.all.contains(group) {
            continue;
        }
        let members = ctx.mb.get_group(*group).await?.members.unwrap_or_default();
        for m in members.iter().filter(|m| m.user_id == user_id) {
            match ctx.mb.delete_membership(m.membership_id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

pub async fn deactivate(ctx: &Context, u: &UserDeactivated) -> Result<(), JobError> {
    match ctx.mb.find_user_by_email(&u.email).await? {
        Some(user) if user.is_active => {
            ctx.mb.deactivate_user(user.id).await?;
            Ok(())
        }
        // Unknown or already inactive: the wanted state holds.
        _ => Ok(()),
    }
}
