//! `tenant.updated` with a new `tenant_name` in group tenancy: the tenant's collection, found by
//! its marker ([`crate::graph::tenant_marker`]), renamed `{tenant_name} Dashboards`. A unit of
//! work of the collection writer, so it runs under the collection lock like the creation it
//! may race with (`tenant.created` of the same tenant renames a marked collection too); it
//! never creates anything and never touches the collection graph.
//!
//! The payload carries no parent (`shared_collection_id` is `tenant.created`'s), so the
//! collection is looked up wherever it is: the cached id when one GET confirms its marker,
//! else every collection listed (`GET /api/collection`, live ones, then `?archived=true`:
//! Metabase's docs/api/collection.md "By default, this returns non-archived Collections, but
//! instead you can show archived ones by passing `?archived=true`"). A live marked collection
//! wins over an archived one (a re-created tenant has a new live collection next to its old
//! archived one); among several, the oldest (lowest id), as [`crate::graph::tenant_marker::pick`]
//! does.

use std::sync::OnceLock;

use crate::graph::tenant_marker::is_marked_for;
use crate::metabase::models::{Collection, CollectionKey, CollectionUpdate};

use super::{Core, WriteError};

/// Redis map kind shared with [`super::tenant`] (`P:map:tenant-collection:<tenant_id>`).
const CACHE_KIND: &str = "tenant-collection";

/// What a `tenant.updated` job asks of the collection writer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TenantRename {
    pub tenant_id: String,
    /// The name the collection must carry (`{tenant_name} Dashboards`).
    pub name: String,
    /// Set once done: the collection's id, or `None` when no collection is marked for the
    /// tenant. A merged write that is split and retried does not look again.
    #[serde(skip)]
    done: OnceLock<Option<i64>>,
}

impl TenantRename {
    pub fn new(tenant_id: String, name: String) -> TenantRename {
        TenantRename {
            tenant_id,
            name,
            done: OnceLock::new(),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.get().is_some()
    }

    /// The renamed (or already well-named) collection; `None` also before it ran.
    pub(super) fn output(&self) -> Option<i64> {
        self.done.get().copied().flatten()
    }

    /// Finds the tenant's collection and renames it when its name differs, keeping its
    /// `archived` state: from v0.57 a `PUT /api/collection/:id` without `archived` un-archives
    /// (../shared/metabase-api.md, verified corrections), so it is always sent.
    pub(super) async fn run(&self, core: &Core) -> Result<(), WriteError> {
        let found = match cached(core, &self.tenant_id).await? {
            Some(c) => Some(c),
            None => listed(core, &self.tenant_id).await?,
        };
        let Some(c) = found else {
            let _ = self.done.set(None);
            return Ok(());
        };
        let CollectionKey::Id(id) = c.id else {
            let _ = self.done.set(None);
            return Ok(());
        };
        if c.name != self.name {
            let update = CollectionUpdate::rename(self.name.clone(), c.archived);
            core.mb.update_collection(id, &update).await?;
            tracing::info!(collection = id, tenant = %self.tenant_id, name = %self.name, archived = c.archived, "tenant collection renamed");
        }
        if let Err(e) = core.store.set_id(CACHE_KIND, &self.tenant_id, id).await {
            tracing::debug!(error = %e, "could not cache the tenant collection id");
        }
        let _ = self.done.set(Some(id));
        Ok(())
    }
}

/// The cached collection when one GET shows it is still marked for the tenant (live or
/// archived, never personal). Redis failures only cost the listing.
async fn cached(core: &Core, tenant_id: &str) -> Result<Option<Collection>, WriteError> {
    let id = match core.store.get_id(CACHE_KIND, tenant_id).await {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the tenant collection cache");
            return Ok(None);
        }
    };
    match core.mb.get_collection(id).await {
        // A cached archived one may hide a live one made since: only a live one is trusted.
        Ok(c) if eligible(&c, tenant_id) && !c.archived => Ok(Some(c)),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The oldest live collection marked for the tenant, else the oldest archived one.
async fn listed(core: &Core, tenant_id: &str) -> Result<Option<Collection>, WriteError> {
    for archived in [false, true] {
        let all = core.mb.list_collections(archived).await?;
        if let Some(c) = choose(all, tenant_id) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The tenant's collection among a listing: marked for it alone, not personal, lowest id.
fn choose(listed: Vec<Collection>, tenant_id: &str) -> Option<Collection> {
    listed
        .into_iter()
        .filter(|c| eligible(c, tenant_id))
        .filter_map(|c| match c.id {
            CollectionKey::Id(id) => Some((id, c)),
            CollectionKey::Root => None,
        })
        .min_by_key(|(id, _)| *id)
        .map(|(_, c)| c)
}

fn eligible(c: &Collection, tenant_id: &str) -> bool {
    c.id != CollectionKey::Root
        && c.personal_owner_id.is_none()
        && is_marked_for(c.description.as_deref(), tenant_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tenant_marker::new_description;

    fn coll(id: i64, name: &str, description: Option<String>, personal: bool) -> Collection {
        let mut v = serde_json::json!({
            "id": id,
            "name": name,
            "description": description,
            "archived": false,
            "location": "/",
        });
        if personal {
            v["personal_owner_id"] = serde_json::json!(1);
        }
        serde_json::from_value(v).expect("a collection")
    }

    #[test]
    fn only_a_collection_marked_for_the_tenant_alone_is_chosen() {
        let marked = |t: &str| Some(new_description(t));
        let both = Some(format!(
            "{}\n{}",
            new_description("a"),
            new_description("b")
        ));
        let cases: Vec<(&str, Vec<Collection>, Option<i64>)> = vec![
            ("nothing listed", vec![], None),
            (
                "an unmarked namesake is never taken",
                vec![coll(3, "Acme Dashboards", None, false)],
                None,
            ),
            (
                "marked for another tenant",
                vec![coll(3, "Acme Dashboards", marked("b"), false)],
                None,
            ),
            (
                "claimed by two tenants: neither's",
                vec![coll(3, "x", both, false)],
                None,
            ),
            (
                "a personal collection never",
                vec![coll(3, "x", marked("a"), true)],
                None,
            ),
            (
                "whatever its name, the oldest marked one",
                vec![
                    coll(9, "Old name Dashboards", marked("a"), false),
                    coll(4, "Other", marked("a"), false),
                    coll(2, "Acme Dashboards", None, false),
                ],
                Some(4),
            ),
        ];
        for (what, listed, want) in cases {
            let got = choose(listed, "a").map(|c| c.id);
            assert_eq!(got, want.map(CollectionKey::Id), "{what}");
        }
    }
}
