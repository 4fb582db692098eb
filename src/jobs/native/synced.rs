//! `users.synced` for one tenant's users: the snapshot's users carry the same `tenant_id`, the
//! managed groups are tenant groups, and reconciliation reads that tenant's members only
//! (`GET /api/user?tenant_id=`), so no internal user and no other tenant's user is touched.

use std::collections::{BTreeMap, BTreeSet};

use super::super::payloads::UsersSynced;
use super::super::{Context, JobError};
use super::users::{Member, ensure_member, tenant_of};
use super::{NativeTenancy, groups};
use crate::jobs::envelope::InvalidJob;

/// The one tenant a snapshot is about: every user names it (users without one would be
/// internal users, which a tenant snapshot never manages).
pub fn snapshot_tenant(s: &UsersSynced) -> Result<Option<&str>, InvalidJob> {
    let mut ids = s.users.iter().map(|u| u.tenant_id.as_deref());
    let Some(first) = ids.next() else {
        return Ok(None);
    };
    for (i, id) in s.users.iter().map(|u| u.tenant_id.as_deref()).enumerate() {
        if id != first {
            return Err(InvalidJob::new(
                format!("payload.users[{i}].tenant_id"),
                "a users.synced snapshot is about one tenant: every user names the same tenant_id (or none does)",
            ));
        }
    }
    Ok(first)
}

pub async fn run(
    ctx: &Context,
    native: NativeTenancy,
    s: &UsersSynced,
    tenant_id: &str,
) -> Result<(), JobError> {
    let tenant = tenant_of(ctx, tenant_id).await?;
    let mut ids: BTreeMap<String, i64> = BTreeMap::new();
    for name in &s.managed_groups {
        ids.insert(
            name.to_lowercase(),
            groups::ensure_tenant_group(ctx, name).await?,
        );
    }
    let mut listed = BTreeSet::new();
    let mut wanted: BTreeSet<(i64, i64)> = BTreeSet::new();
    for u in &s.users {
        let groups: Vec<i64> = u
            .groups
            .iter()
            .filter_map(|g| ids.get(&g.to_lowercase()).copied())
            .collect();
        let user = ensure_member(
            ctx,
            native,
            &tenant,
            &Member {
                email: &u.email,
                first_name: u.first_name.as_deref(),
                last_name: u.last_name.as_deref(),
                attributes: &u.login_attributes,
                groups: &groups,
            },
        )
        .await?;
        listed.insert(user.id);
        wanted.extend(groups.iter().map(|g| (*g, user.id)));
    }
    let members: BTreeMap<i64, bool> = ctx
        .mb
        .list_tenant_users(tenant.id)
        .await?
        .into_iter()
        .map(|u| (u.id, u.is_active))
        .collect();
    for group in ids.values() {
        for m in ctx.mb.get_group(*group).await?.members.unwrap_or_default() {
            if members.contains_key(&m.user_id) && !wanted.contains(&(*group, m.user_id)) {
                match ctx.mb.delete_membership(m.membership_id).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if s.deactivate_missing {
        for (user, active) in members {
            if active && !listed.contains(&user) {
                tracing::info!(user, tenant = %tenant.slug, "deactivating a tenant user absent from the snapshot");
                ctx.mb.deactivate_user(user).await?;
            }
        }
    }
    Ok(())
}
