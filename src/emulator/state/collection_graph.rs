//! The collection permissions graph (metabase-api.md §3): sparse, partial PUTs, admins
//! synthesised, one slice per namespace with its own root and one revision for all
//! (`permissions/models/collection/graph.clj`, `graph` and `update-graph!`; test
//! `collection-namespace-test`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::collections::SHARED_TENANT_NAMESPACE;
use super::{ADMIN_GROUP, State};
use crate::emulator::error::{ApiError, ApiResult, text};
use crate::metabase::models::{
    CollectionAccess, CollectionGraph, CollectionGroups, CollectionKey, Id,
};

impl State {
    /// Collections that appear in the graph: not archived, not personal, not inside a personal one.
    pub fn graph_eligible(&self, key: CollectionKey) -> bool {
        match key {
            CollectionKey::Root => true,
            CollectionKey::Id(id) => self
                .collections
                .get(&id)
                .is_some_and(|c| !c.archived && !self.is_personal_tree(id)),
        }
    }

    /// A collection of namespace `ns` (`None`: the default one); every namespace has a root.
    fn in_namespace(&self, key: CollectionKey, ns: Option<&str>) -> bool {
        match key {
            CollectionKey::Root => true,
            CollectionKey::Id(id) => self
                .collections
                .get(&id)
                .is_some_and(|c| c.namespace.as_deref() == ns),
        }
    }

    fn eligible_in(&self, key: CollectionKey, ns: Option<&str>) -> bool {
        self.graph_eligible(key) && self.in_namespace(key, ns)
    }

    fn admin_cells(&self, ns: Option<&str>) -> BTreeMap<CollectionKey, CollectionAccess> {
        std::iter::once(CollectionKey::Root)
            .chain(self.collections.keys().map(|id| CollectionKey::Id(*id)))
            .filter(|k| self.eligible_in(*k, ns))
            .map(|k| (k, CollectionAccess::Write))
            .collect()
    }

    /// A group's stored cells in namespace `ns`: its collections there, and that namespace's
    /// root (the default root lives with the collections, the others apart).
    fn stored_cells(
        &self,
        group: i64,
        ns: Option<&str>,
    ) -> BTreeMap<CollectionKey, CollectionAccess> {
        let mut cells: BTreeMap<CollectionKey, CollectionAccess> = self
            .collection_perms
            .get(&group)
            .map(|cells| {
                cells
                    .iter()
                    .filter(|(k, _)| **k != CollectionKey::Root || ns.is_none())
                    .filter(|(k, _)| self.eligible_in(**k, ns))
                    .map(|(k, v)| (*k, v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ns) = ns
            && let Some(access) = self.namespace_roots.get(ns).and_then(|r| r.get(&group))
        {
            cells.insert(CollectionKey::Root, access.clone());
        }
        cells
    }

    /// `GET /api/collection/graph` (the default namespace).
    pub fn render_collection_graph(&self) -> CollectionGraph {
        self.render_collection_graph_in(None)
    }

    /// `GET /api/collection/graph?namespace=`: from 0.56.13 only `read`/`write` cells, groups
    /// without any absent (PR metabase#65098); before, every group x every eligible collection
    /// with an explicit `"none"`. Only the collections of `ns`, and its root.
    pub fn render_collection_graph_in(&self, ns: Option<&str>) -> CollectionGraph {
        let mut groups = CollectionGroups::new();
        let full = !self.edition.sparse_collection_graph();
        let eligible: Vec<CollectionKey> = if full {
            std::iter::once(CollectionKey::Root)
                .chain(self.collections.keys().map(|id| CollectionKey::Id(*id)))
                .filter(|k| self.eligible_in(*k, ns))
                .collect()
        } else {
            Vec::new()
        };
        for id in self.groups.keys() {
            let cells: BTreeMap<CollectionKey, CollectionAccess> = if *id == ADMIN_GROUP {
                self.admin_cells(ns)
            } else {
                self.stored_cells(*id, ns)
            };
            let cells = if full {
                eligible
                    .iter()
                    .map(|k| {
                        let v = cells.get(k).cloned().unwrap_or(CollectionAccess::None);
                        (*k, v)
                    })
                    .collect()
            } else {
                cells
            };
            if !cells.is_empty() {
                groups.insert(Id(*id), cells);
            }
        }
        CollectionGraph {
            revision: self.collection_revision,
            groups,
            ..CollectionGraph::default()
        }
    }

    fn stored_cell(
        &self,
        group: i64,
        key: CollectionKey,
        ns: Option<&str>,
    ) -> Option<&CollectionAccess> {
        match (key, ns) {
            (CollectionKey::Root, Some(ns)) => self.namespace_roots.get(ns)?.get(&group),
            _ => self.collection_perms.get(&group)?.get(&key),
        }
    }

    fn current_cell(&self, group: i64, key: CollectionKey, ns: Option<&str>) -> CollectionAccess {
        if group == ADMIN_GROUP {
            return CollectionAccess::Write;
        }
        self.stored_cell(group, key, ns)
            .cloned()
            .unwrap_or(CollectionAccess::None)
    }

    /// `grant-collection-readwrite-permissions!` and `grant-collection-read-permissions!`
    /// (`permissions/models/permissions.clj`): a tenant group may never curate, and may view
    /// only shared tenant collections (and their root). Plain `ex-info`s without a status:
    /// Metabase answers 500, and the transaction keeps nothing.
    fn check_tenant_grant(
        &self,
        group: i64,
        ns: Option<&str>,
        access: &CollectionAccess,
    ) -> ApiResult<()> {
        if !self.is_tenant_group(group) {
            return Ok(());
        }
        match access {
            CollectionAccess::Write => Err(ApiError::server(
                "Tenant groups cannot have write access to any collections.",
            )),
            CollectionAccess::Read if ns != Some(SHARED_TENANT_NAMESPACE) => Err(ApiError::server(
                "Tenant groups cannot receive access to non-tenant collections.",
            )),
            _ => Ok(()),
        }
    }

    /// `PUT /api/collection/graph`: only the cells in the body change; the revision goes up
    /// only when the body differs from the sparse graph. Returns the new revision. The body's
    /// `namespace` picks the slice: cells for collections of another namespace are dropped
    /// without a word (`remove-collections-from-other-namespaces`), `root` is that namespace's.
    pub fn put_collection_graph(&mut self, body: &Value, force: bool) -> ApiResult<i64> {
        let ns: Option<String> = match body.get("namespace") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::schema(
                    "namespace",
                    "nullable value must be a non-blank string.",
                ));
            }
        };
        let ns = ns.as_deref();
        let groups: CollectionGroups = match body.get("groups") {
            None | Some(Value::Null) => CollectionGroups::new(),
            Some(g) => serde_json::from_value(g.clone())
                .map_err(|e| ApiError::schema("groups", &e.to_string()))?,
        };
        for cells in groups.values() {
            for v in cells.values() {
                if !CollectionAccess::KNOWN.contains(v) {
                    return Err(ApiError::schema(
                        "groups",
                        &format!("{v} is not one of \"read\", \"write\", \"none\""),
                    ));
                }
            }
        }
        let revision = body.get("revision").and_then(Value::as_i64);
        if !force && revision != Some(self.collection_revision) {
            return Err(ApiError::stale_revision());
        }
        let mut changes = Vec::new();
        let mut phantom_change = false;
        for (Id(group), cells) in &groups {
            for (key, access) in cells {
                let unknown_collection =
                    matches!(key, CollectionKey::Id(id) if !self.collections.contains_key(id));
                // Unknown ids are not validated (correction 10): `none` is written as a
                // (phantom) change and bumps the revision; a grant hits the foreign key, 500.
                if !self.groups.contains_key(group) || unknown_collection {
                    if *access == CollectionAccess::None {
                        phantom_change = true;
                        continue;
                    }
                    return Err(ApiError::server("Collection does not exist."));
                }
                if let CollectionKey::Id(id) = key
                    && (self.is_personal_tree(*id) || !self.in_namespace(*key, ns))
                {
                    continue;
                }
                // Metabase diffs against the sparse old graph, in which a pair without a
                // permission is absent, so an explicit "none" there is a change too.
                let none_on_missing = self.edition.sparse_collection_graph()
                    && *access == CollectionAccess::None
                    && *group != ADMIN_GROUP
                    && self.stored_cell(*group, *key, ns).is_none();
                if none_on_missing || self.current_cell(*group, *key, ns) != *access {
                    if *group == ADMIN_GROUP {
                        return Err(ApiError::bad_request(text::ADMIN_PERMISSIONS));
                    }
                    changes.push((*group, *key, access.clone()));
                }
            }
        }
        if changes.is_empty() {
            if phantom_change {
                self.collection_revision += 1;
            }
            return Ok(self.collection_revision);
        }
        for (group, _, access) in &changes {
            self.check_tenant_grant(*group, ns, access)?;
        }
        for (group, key, access) in changes {
            let cells = match (key, ns) {
                (CollectionKey::Root, Some(ns)) => {
                    let root = self.namespace_roots.entry(ns.to_string()).or_default();
                    if access == CollectionAccess::None {
                        root.remove(&group);
                    } else {
                        root.insert(group, access);
                    }
                    continue;
                }
                _ => self.collection_perms.entry(group).or_default(),
            };
            if access == CollectionAccess::None {
                cells.remove(&key);
            } else {
                cells.insert(key, access);
            }
        }
        self.collection_revision += 1;
        Ok(self.collection_revision)
    }
}
