//! Collections (metabase-api.md §4): a tree kept as `location` paths, like Metabase's table.

use serde::Serialize;
use serde_json::json;

use super::groups::entity_id;
use super::{Sequences, State, now};
use crate::emulator::error::{ApiError, ApiResult};
use crate::metabase::models::{Collection, CollectionKey, Extra};

#[derive(Clone, Debug, Serialize)]
pub struct CollectionRec {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    /// `"/"` at top level, else `"/<ancestor ids>/"`.
    pub location: String,
    pub archived: bool,
    pub personal_owner_id: Option<i64>,
    /// `None` is Metabase's default (`nil`) namespace; tenant collections are
    /// `tenant-specific`, shared tenant collections `shared-tenant-collection`.
    pub namespace: Option<String>,
    pub entity_id: String,
    pub created_at: String,
}

impl CollectionRec {
    pub fn parent_id(&self) -> Option<i64> {
        self.ancestors().last().copied()
    }

    pub fn ancestors(&self) -> Vec<i64> {
        self.location
            .split('/')
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Where this collection's children live.
    pub fn children_location(&self) -> String {
        format!("{}{}/", self.location, self.id)
    }
}

/// `POST /api/collection`, decoded.
#[derive(Clone, Debug, Default)]
pub struct NewCollectionInput {
    pub name: String,
    pub description: Option<String>,
    pub parent_id: Option<i64>,
    /// `None`: the parent's namespace (the default one at top level).
    pub namespace: Option<String>,
}

/// The namespace of Metabase Tenants' shared collections (`collection/shared-tenant-ns`).
pub const SHARED_TENANT_NAMESPACE: &str = "shared-tenant-collection";

/// `assert-valid-namespace` (`collections/models/collection.clj`).
const NOT_PARENTS_NAMESPACE: &str = "Collection must be in the same namespace as its parent";

/// `api/check-400` without a message (`api/common.clj`, `generic-400`).
const INVALID_REQUEST: &str = "Invalid Request.";

/// The OSS `validate-new-tenant-collection!` (`collections/create.clj`).
const TENANT_COLLECTION_ON_OSS: &str = "Cannot create tenant collection on OSS.";

/// `PUT /api/collection/:id`, decoded: outer `None` = key absent; `parent_id: Some(None)` = root.
#[derive(Clone, Debug, Default)]
pub struct CollectionPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub archived: Option<bool>,
    pub parent_id: Option<Option<i64>>,
}

impl State {
    pub(super) fn insert_collection_with_id(
        &mut self,
        id: i64,
        name: &str,
        parent: Option<i64>,
        owner: Option<i64>,
    ) -> i64 {
        let location = parent
            .and_then(|p| self.collections.get(&p))
            .map(CollectionRec::children_location)
            .unwrap_or_else(|| "/".to_string());
        self.collections.insert(
            id,
            CollectionRec {
                id,
                name: name.to_string(),
                description: None,
                location,
                archived: false,
                personal_owner_id: owner,
                namespace: None,
                entity_id: entity_id(),
                created_at: now(),
            },
        );
        self.seq.collection = self.seq.collection.max(id);
        id
    }

    /// Inserts a collection row without touching permissions.
    pub(super) fn insert_collection_record(
        &mut self,
        name: &str,
        description: Option<String>,
        parent: Option<i64>,
        owner: Option<i64>,
    ) -> i64 {
        let id = Sequences::take(&mut self.seq.collection);
        self.insert_collection_with_id(id, name, parent, owner);
        if let Some(c) = self.collections.get_mut(&id) {
            c.description = description;
        }
        id
    }

    /// A personal collection or one inside a personal collection.
    pub fn is_personal_tree(&self, id: i64) -> bool {
        let Some(c) = self.collections.get(&id) else {
            return false;
        };
        c.personal_owner_id.is_some()
            || c.ancestors().iter().any(|a| {
                self.collections
                    .get(a)
                    .is_some_and(|p| p.personal_owner_id.is_some())
            })
    }

    /// `POST /api/collection`: the new collection copies its parent's (or root's) cells for
    /// every group, which is a permissions change and, since metabase#59727, bumps the
    /// collection-graph revision.
    pub fn create_collection(&mut self, input: NewCollectionInput) -> ApiResult<i64> {
        if input.name.trim().is_empty() {
            return Err(ApiError::schema(
                "name",
                "value must be a non-blank string.",
            ));
        }
        let parent_namespace = match input.parent_id {
            None => None,
            Some(p) => match self.collections.get(&p) {
                Some(parent) => parent.namespace.clone(),
                None => return Err(ApiError::not_found()),
            },
        };
        // Without `namespace` a child takes its parent's; with one it must be the parent's
        // (`assert-valid-namespace`; tests `create-child-collection-namespace-inheritance-test`,
        // `create-child-collection-explicit-namespace-fails-test`).
        let namespace = match (&input.namespace, input.parent_id) {
            (None, _) => parent_namespace,
            (Some(ns), Some(_)) if Some(ns) != parent_namespace.as_ref() => {
                return Err(ApiError::field("location", NOT_PARENTS_NAMESPACE));
            }
            (Some(ns), _) => Some(ns.clone()),
        };
        // `validate-new-tenant-collection!`: the OSS version refuses every shared tenant
        // collection, the EE one unless `use-tenants` is on (`tenants/core.clj`).
        if namespace.as_deref() == Some(SHARED_TENANT_NAMESPACE) {
            if !self.edition.tenants() {
                return Err(ApiError::bad_request(TENANT_COLLECTION_ON_OSS));
            }
            if !self.tenancy.enabled {
                return Err(ApiError::bad_request(INVALID_REQUEST));
            }
        }
        let id =
            self.insert_collection_record(&input.name, input.description, input.parent_id, None);
        if let Some(c) = self.collections.get_mut(&id) {
            c.namespace = namespace.clone();
        }
        // Personal (and tenant and trash) parents are neither copied nor bumped (correction 4).
        if input.parent_id.is_some_and(|p| self.is_personal_tree(p)) {
            return Ok(id);
        }
        // A top-level collection copies its namespace's root (`copy-parent-permissions!`:
        // `(assoc root-collection :namespace collection-namespace)`).
        match (input.parent_id, namespace) {
            (None, Some(ns)) => {
                let root = self.namespace_roots.get(&ns).cloned().unwrap_or_default();
                for (group, access) in root {
                    self.collection_perms
                        .entry(group)
                        .or_default()
                        .insert(CollectionKey::Id(id), access);
                }
            }
            (parent, _) => {
                let source = parent.map_or(CollectionKey::Root, CollectionKey::Id);
                for cells in self.collection_perms.values_mut() {
                    if let Some(access) = cells.get(&source).cloned() {
                        cells.insert(CollectionKey::Id(id), access);
                    }
                }
            }
        }
        if self.edition.creation_bumps_collection_revision {
            self.collection_revision += 1;
        }
        Ok(id)
    }

    /// `PUT /api/collection/:id`: rename, describe, archive/unarchive, move.
    pub fn update_collection(&mut self, id: i64, patch: CollectionPatch) -> ApiResult<()> {
        let Some(current) = self.collections.get(&id) else {
            return Err(ApiError::not_found());
        };
        if let Some(name) = &patch.name
            && name.trim().is_empty()
        {
            return Err(ApiError::schema(
                "name",
                "value must be a non-blank string.",
            ));
        }
        let old_children = current.children_location();
        let new_location = match patch.parent_id {
            None => None,
            Some(None) => Some("/".to_string()),
            Some(Some(p)) => {
                let parent = self.collections.get(&p).ok_or_else(ApiError::not_found)?;
                if p == id || parent.ancestors().contains(&id) {
                    return Err(ApiError::field(
                        "parent_id",
                        "You can't move a Collection into itself or into one of its descendants.",
                    ));
                }
                Some(parent.children_location())
            }
        };
        if let Some(loc) = &new_location {
            let new_children = format!("{loc}{id}/");
            for c in self.collections.values_mut() {
                if let Some(rest) = c.location.strip_prefix(&old_children) {
                    c.location = format!("{new_children}{rest}");
                }
            }
        }
        if let Some(c) = self.collections.get_mut(&id) {
            if let Some(loc) = new_location {
                c.location = loc;
            }
            if let Some(name) = patch.name {
                c.name = name;
            }
            if let Some(d) = patch.description {
                c.description = d;
            }
            if let Some(a) = patch.archived {
                c.archived = a;
            }
        }
        Ok(())
    }

    /// `DELETE /api/collection/:id`: only a trashed collection (test
    /// `collection-deletion-prohibitions`); descendants trashed on their own are moved up to
    /// its place, the others go with it (test `collections-can-be-deleted`).
    pub fn delete_collection(&mut self, id: i64) -> ApiResult<()> {
        let Some(c) = self.collections.get(&id) else {
            return Err(ApiError::not_found());
        };
        if !c.archived {
            return Err(ApiError::bad_request(
                "Collection must be trashed before deletion.",
            ));
        }
        if c.personal_owner_id.is_some() {
            return Err(ApiError::forbidden());
        }
        let (inside, place) = (c.children_location(), c.location.clone());
        let mut doomed = vec![id];
        let mut moved: Vec<(i64, String)> = Vec::new();
        let mut kept_roots: Vec<String> = Vec::new();
        let mut rows: Vec<&CollectionRec> = self
            .collections
            .values()
            .filter(|d| d.location.starts_with(&inside))
            .collect();
        rows.sort_by_key(|d| d.location.len());
        for d in rows {
            let under_kept = kept_roots.iter().any(|k| d.location.starts_with(k));
            if under_kept {
                continue;
            }
            if d.archived {
                moved.push((d.id, d.children_location()));
                kept_roots.push(d.children_location());
            } else {
                doomed.push(d.id);
            }
        }
        for (mid, old_inside) in moved {
            let new_inside = format!("{place}{mid}/");
            for x in self.collections.values_mut() {
                if x.id == mid {
                    x.location = place.clone();
                } else if let Some(rest) = x.location.strip_prefix(&old_inside) {
                    x.location = format!("{new_inside}{rest}");
                }
            }
        }
        for d in doomed {
            self.collections.remove(&d);
            for cells in self.collection_perms.values_mut() {
                cells.remove(&CollectionKey::Id(d));
            }
        }
        Ok(())
    }

    pub fn collection_model(&self, c: &CollectionRec) -> Collection {
        let mut extra = Extra::new();
        extra.insert("parent_id".into(), json!(c.parent_id()));
        extra.insert("is_personal".into(), json!(self.is_personal_tree(c.id)));
        extra.insert("can_write".into(), json!(true));
        extra.insert("entity_id".into(), json!(c.entity_id));
        extra.insert("authority_level".into(), json!(null));
        extra.insert("type".into(), json!(null));
        extra.insert("created_at".into(), json!(c.created_at));
        if self.edition.v057_fields() {
            // New columns from v0.57 on (correction 11).
            extra.insert("is_remote_synced".into(), json!(false));
            extra.insert(
                "archived_directly".into(),
                json!(c.archived.then_some(true)),
            );
            extra.insert("effective_location".into(), json!(c.location));
        }
        Collection {
            id: CollectionKey::Id(c.id),
            name: c.name.clone(),
            description: c.description.clone(),
            location: Some(c.location.clone()),
            archived: c.archived,
            personal_owner_id: c.personal_owner_id,
            namespace: c.namespace.clone(),
            extra,
        }
    }

    /// The Root pseudo-collection ("Our analytics").
    pub fn root_collection_model() -> Collection {
        let mut extra = Extra::new();
        extra.insert("parent_id".into(), json!(null));
        extra.insert("is_personal".into(), json!(false));
        extra.insert("can_write".into(), json!(true));
        Collection {
            id: CollectionKey::Root,
            name: "Our analytics".into(),
            description: None,
            location: None,
            archived: false,
            personal_owner_id: None,
            namespace: None,
            extra,
        }
    }

    /// Non-archived children of a collection (`None` = root).
    pub fn collection_children(&self, parent: Option<i64>) -> Vec<&CollectionRec> {
        let location = match parent {
            None => "/".to_string(),
            Some(p) => match self.collections.get(&p) {
                Some(c) => c.children_location(),
                None => return Vec::new(),
            },
        };
        let mut out: Vec<&CollectionRec> = self
            .collections
            .values()
            .filter(|c| !c.archived && c.location == location)
            .collect();
        out.sort_by_key(|c| (c.name.to_lowercase(), c.id));
        out
    }
}
