//! A tenant's collection, found by the marker Metabase stores for it
//! ([`crate::graph::tenant_marker`]), renamed when the tenant was, or created: the I/O half of
//! the collection writer's unit of work for one tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crate::error::Classify;
use crate::graph::CollectionOp;
use crate::graph::tenant_marker::{Candidate, Pick, is_marked_for, new_description, pick};
use crate::jobs::policy::{self, BuiltinGroups};
use crate::metabase::models::{
    Collection, CollectionAccess, CollectionKey, CollectionNamespace, CollectionUpdate,
    NewCollection,
};
use crate::metabase::{MetabaseClient, MetabaseError};

use super::{Core, WriteError};

/// Redis map kind of the tenant -> collection id cache (`P:map:tenant-collection:<tenant_id>`).
const CACHE_KIND: &str = "tenant-collection";

/// What a `tenant.created` job asks of the collection writer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TenantCollection {
    pub tenant_id: String,
    /// The name the collection must carry (`{tenant_name} Dashboards`).
    pub name: String,
    /// Parent collection; `None`: root.
    pub parent: Option<i64>,
    /// The tenant's group, granted `access`.
    pub group: i64,
    pub access: CollectionAccess,
    /// Revoke every other group's access (but the Administrators').
    pub isolate: bool,
    /// The instance's built-in groups, for the policy check of the final operations.
    pub builtin: BuiltinGroups,
    /// The tenant's group was created by this very job: nothing marked for the tenant can be
    /// live yet (its collection is only ever made after its group, and `tenant.deleted` archives
    /// it before deleting the group), so the look-up is skipped. A new tenant then costs no
    /// listing of the parent's children, which grows with the number of tenants.
    new_tenant: bool,
    /// Set once the collection is found or created, so a merged write that is split and
    /// retried never looks it up or creates it again.
    #[serde(skip)]
    resolved: OnceLock<i64>,
}

impl TenantCollection {
    pub fn new(
        tenant_id: String,
        name: String,
        parent: Option<i64>,
        group: i64,
        access: CollectionAccess,
        isolate: bool,
        builtin: BuiltinGroups,
    ) -> TenantCollection {
        TenantCollection {
            tenant_id,
            name,
            parent,
            group,
            access,
            isolate,
            builtin,
            new_tenant: false,
            resolved: OnceLock::new(),
        }
    }

    /// See [`TenantCollection::new_tenant`]: set when the job just created the tenant's group.
    pub fn new_tenant(mut self, created_group: bool) -> TenantCollection {
        self.new_tenant = created_group;
        self
    }

    /// A holder may have created the collection already: look it up before creating.
    pub(super) fn replayed(&mut self) {
        self.new_tenant = false;
    }

    #[cfg(test)]
    pub(super) fn is_new_tenant(&self) -> bool {
        self.new_tenant
    }

    pub(super) fn resolved(&self) -> Option<i64> {
        self.resolved.get().copied()
    }

    pub(super) fn resolve(&self, id: i64) {
        let _ = self.resolved.set(id);
    }

    pub(super) fn parent_key(&self) -> CollectionKey {
        self.parent.map_or(CollectionKey::Root, CollectionKey::Id)
    }

    /// The graph operations for collection `id`, checked by the policy with `id` as the one
    /// collection proven (by Metabase's own answer) to be marked for this tenant.
    pub(super) fn ops(&self, id: i64) -> Result<Vec<CollectionOp>, WriteError> {
        let mut ops = vec![CollectionOp::Set {
            group: self.group,
            collection: CollectionKey::Id(id),
            access: self.access.clone(),
            namespace: CollectionNamespace::Default,
        }];
        let named = BTreeSet::from([self.group]);
        if self.isolate {
            ops.push(CollectionOp::Isolate {
                collection: id,
                keep: named.clone(),
            });
        }
        policy::check_collection_ops(&ops, &named, &self.builtin, &BTreeSet::from([id]))
            .map_err(WriteError::Policy)?;
        Ok(ops)
    }
}

/// The children of each parent listed so far in this batch: one listing per parent.
#[derive(Default)]
pub(super) struct Listings(BTreeMap<Option<i64>, Vec<Candidate>>);

/// The tenant's live collection under its parent, if any: the cached id when one GET confirms
/// its marker, else the parent's children searched by marker. Renames it when the tenant was
/// renamed (`archived: false` sent with it: from v0.57 a PUT without it un-archives, and the
/// collection found is live anyway).
pub(super) async fn find(
    core: &Core,
    t: &TenantCollection,
    listings: &mut Listings,
) -> Result<Option<i64>, WriteError> {
    if t.new_tenant {
        return Ok(None);
    }
    let found = match cached(core, t).await? {
        Some((id, name)) => Some((id, name != t.name)),
        None => {
            let candidates = match listings.0.entry(t.parent) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(children(&core.mb, t.parent).await?)
                }
            };
            match pick(candidates, &t.tenant_id, &t.name) {
                Pick::Found { id, rename } => Some((id, rename)),
                Pick::Missing => None,
            }
        }
    };
    let Some((id, rename)) = found else {
        return Ok(None);
    };
    if rename {
        let update = CollectionUpdate {
            name: Some(t.name.clone()),
            archived: false,
            ..CollectionUpdate::default()
        };
        core.mb.update_collection(id, &update).await?;
        tracing::info!(collection = id, tenant = %t.tenant_id, name = %t.name, "tenant collection renamed");
    }
    remember(core, t, id).await;
    Ok(Some(id))
}

/// Creates the tenant's collection, marked for it. On an answer that does not prove the POST
/// was refused, the caller must treat the collection as possibly made: the next attempt looks
/// it up by marker before creating (never twice).
pub(super) async fn create(core: &Core, t: &TenantCollection) -> Result<i64, MetabaseError> {
    let new = NewCollection {
        name: t.name.clone(),
        description: Some(new_description(&t.tenant_id)),
        parent_id: t.parent,
        namespace: None,
    };
    let made = core.mb.create_collection(&new).await?;
    let CollectionKey::Id(id) = made.id else {
        return Err(MetabaseError::Decode {
            method: reqwest::Method::POST,
            route: "/api/collection".into(),
            detail: "a new collection answered with id root".into(),
        });
    };
    remember(core, t, id).await;
    Ok(id)
}

/// Whether a failed creating POST may still have created the collection: anything but a 4xx
/// refusal or a request that provably never left (a 5xx may come after the insert; a timeout
/// or a connection broken after sending tells nothing).
pub(super) fn may_have_applied(e: &MetabaseError) -> bool {
    match e {
        MetabaseError::NotSent { .. } => false,
        MetabaseError::Status { status, .. } => !(400..500).contains(status),
        _ => true,
    }
}

/// The cached collection, if one GET shows it is still live, under the parent, and marked for
/// this tenant; a stale entry is dropped. Redis failures only cost the listing.
async fn cached(core: &Core, t: &TenantCollection) -> Result<Option<(i64, String)>, WriteError> {
    let id = match core.store.get_id(CACHE_KIND, &t.tenant_id).await {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the tenant collection cache");
            return Ok(None);
        }
    };
    match core.mb.get_collection(id).await {
        Ok(c)
            if is_live_child(&c, t.parent)
                && is_marked_for(c.description.as_deref(), &t.tenant_id) =>
        {
            return Ok(Some((id, c.name)));
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = core.store.forget_id(CACHE_KIND, &t.tenant_id).await {
        tracing::debug!(error = %e, "could not drop a stale tenant collection id");
    }
    Ok(None)
}

async fn remember(core: &Core, t: &TenantCollection, id: i64) {
    if let Err(e) = core.store.set_id(CACHE_KIND, &t.tenant_id, id).await {
        tracing::debug!(error = %e, "could not cache the tenant collection id");
    }
}

/// The live children of `parent` (`GET /api/collection/:id/items?models=collection`, which
/// selects `description`; for root, the flat `GET /api/collection` filtered by location).
async fn children(
    mb: &MetabaseClient,
    parent: Option<i64>,
) -> Result<Vec<Candidate>, MetabaseError> {
    let listed = match parent {
        Some(p) => mb.child_collections(p).await?,
        None => mb
            .list_collections(false)
            .await?
            .into_iter()
            .filter(|c| c.id != CollectionKey::Root && c.parent_id().is_none())
            .collect(),
    };
    Ok(listed.iter().filter_map(candidate).collect())
}

fn candidate(c: &Collection) -> Option<Candidate> {
    let CollectionKey::Id(id) = c.id else {
        return None;
    };
    Some(Candidate {
        id,
        name: c.name.clone(),
        description: c.description.clone(),
        archived: c.archived,
        personal: c.personal_owner_id.is_some(),
    })
}

fn is_live_child(c: &Collection, parent: Option<i64>) -> bool {
    !c.archived && c.personal_owner_id.is_none() && c.parent_id() == parent
}

/// The tenant's collection for `tenant.deleted`: the cached id when confirmed, else the
/// parent's children by marker. Never a collection that is not marked for the tenant.
pub async fn find_for_deletion(
    mb: &MetabaseClient,
    store: &crate::store::JobStore,
    tenant_id: &str,
    parent: Option<i64>,
) -> Result<Option<i64>, WriteError> {
    if let Ok(Some(id)) = store.get_id(CACHE_KIND, tenant_id).await {
        match mb.get_collection(id).await {
            Ok(c) if !c.archived && is_marked_for(c.description.as_deref(), tenant_id) => {
                return Ok(Some(id));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let candidates = children(mb, parent).await?;
    // The name plays no part: any live collection marked for the tenant.
    Ok(candidates
        .iter()
        .filter(|c| {
            !c.archived && !c.personal && is_marked_for(c.description.as_deref(), tenant_id)
        })
        .map(|c| c.id)
        .min())
}

/// Drops the cached id of a tenant's collection (after it was archived).
pub async fn forget(store: &crate::store::JobStore, tenant_id: &str) -> Result<(), WriteError> {
    store
        .forget_id(CACHE_KIND, tenant_id)
        .await
        .map_err(|e| WriteError::Batch {
            class: e.class(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    #[test]
    fn only_a_4xx_proves_a_creation_did_not_happen() {
        let status = |status| MetabaseError::Status {
            method: Method::POST,
            route: "/api/collection".into(),
            status,
            message: String::new(),
        };
        let cases = [
            (status(400), false),
            (status(403), false),
            (status(404), false),
            (status(500), true),
            (status(503), true),
            (
                MetabaseError::Timeout {
                    method: Method::POST,
                    route: "/api/collection".into(),
                },
                true,
            ),
            (
                MetabaseError::OutcomeUnknown {
                    method: Method::POST,
                    route: "/api/collection".into(),
                    detail: "connection reset".into(),
                },
                true,
            ),
            (
                MetabaseError::NotSent {
                    method: Method::POST,
                    route: "/api/collection".into(),
                    detail: "connection refused".into(),
                },
                false,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(may_have_applied(&e), want, "{e}");
        }
    }
}
