//! The collection permissions graph (metabase-api.md §3): sparse, partial PUTs, admins synthesised.

use std::collections::BTreeMap;

use serde_json::Value;

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

    fn admin_cells(&self) -> BTreeMap<CollectionKey, CollectionAccess> {
        std::iter::once(CollectionKey::Root)
            .chain(self.collections.keys().map(|id| CollectionKey::Id(*id)))
            .filter(|k| self.graph_eligible(*k))
            .map(|k| (k, CollectionAccess::Write))
            .collect()
    }

    /// `GET /api/collection/graph`: from 0.56.13 only `read`/`write` cells, groups without any
    /// absent (PR metabase#65098); before, every group x every eligible collection with an
    /// explicit `"none"`.
    pub fn render_collection_graph(&self) -> CollectionGraph {
        let mut groups = CollectionGroups::new();
        let full = !self.edition.sparse_collection_graph();
        let eligible: Vec<CollectionKey> = if full {
            std::iter::once(CollectionKey::Root)
                .chain(self.collections.keys().map(|id| CollectionKey::Id(*id)))
                .filter(|k| self.graph_eligible(*k))
                .collect()
        } else {
            Vec::new()
        };
        for id in self.groups.keys() {
            let cells: BTreeMap<CollectionKey, CollectionAccess> = if *id == ADMIN_GROUP {
                self.admin_cells()
            } else {
                self.collection_perms
                    .get(id)
                    .map(|cells| {
                        cells
                            .iter()
                            .filter(|(k, _)| self.graph_eligible(**k))
                            .map(|(k, v)| (*k, v.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
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

    fn current_cell(&self, group: i64, key: CollectionKey) -> CollectionAccess {
        if group == ADMIN_GROUP {
            return CollectionAccess::Write;
        }
        self.collection_perms
            .get(&group)
            .and_then(|c| c.get(&key))
            .cloned()
            .unwrap_or(CollectionAccess::None)
    }

    /// `PUT /api/collection/graph`: only the cells in the body change; the revision goes up
    /// only when the body differs from the sparse graph. Returns the new revision.
    pub fn put_collection_graph(&mut self, body: &Value, force: bool) -> ApiResult<i64> {
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
                    && self.is_personal_tree(*id)
                {
                    continue;
                }
                // Metabase diffs against the sparse old graph, in which a pair without a
                // permission is absent, so an explicit "none" there is a change too.
                let none_on_missing = self.edition.sparse_collection_graph()
                    && *access == CollectionAccess::None
                    && *group != ADMIN_GROUP
                    && !self
                        .collection_perms
                        .get(group)
                        .is_some_and(|c| c.contains_key(key));
                if none_on_missing || self.current_cell(*group, *key) != *access {
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
        for (group, key, access) in changes {
            let cells = self.collection_perms.entry(group).or_default();
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
