use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Extra;

/// A collection id, or the Root collection ("Our analytics"), which the API spells `"root"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CollectionKey {
    Root,
    Id(i64),
}

impl fmt::Display for CollectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectionKey::Root => f.write_str("root"),
            CollectionKey::Id(id) => write!(f, "{id}"),
        }
    }
}

impl FromStr for CollectionKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "root" {
            return Ok(CollectionKey::Root);
        }
        s.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(CollectionKey::Id)
            .ok_or_else(|| {
                format!("collection key must be a positive integer or \"root\", got {s:?}")
            })
    }
}

impl Serialize for CollectionKey {
    /// Ids are numbers in `id` fields; as object keys serde_json writes them as strings.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CollectionKey::Root => s.serialize_str("root"),
            CollectionKey::Id(id) => s.serialize_i64(*id),
        }
    }
}

impl<'de> Deserialize<'de> for CollectionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Ids arrive as numbers in `id` fields and as strings in graph keys.
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(CollectionKey::Id)
                .ok_or_else(|| serde::de::Error::custom("collection id out of range")),
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a collection id, got {other}"
            ))),
        }
    }
}

/// A collection (`GET /api/collection/:id`, `POST /api/collection`, items of `GET /api/collection`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    pub id: CollectionKey,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `"/"` at top level, else `"/<ancestor ids>/"`.
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub personal_owner_id: Option<i64>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl CollectionUpdate {
    /// A rename that keeps the collection's archived state.
    pub fn rename(name: impl Into<String>, archived: bool) -> Self {
        CollectionUpdate {
            name: Some(name.into()),
            archived,
            parent_id: None,
        }
    }
}

impl Collection {
    /// The parent, read from `location` (the last id in it), `None` for top level.
    pub fn parent_id(&self) -> Option<i64> {
        self.location
            .as_deref()?
            .split('/')
            .rfind(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
    }
}

/// `POST /api/collection`. No `color`: current Metabase does not take it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewCollection {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    /// Left out, a child takes its parent's namespace and a top-level collection the default
    /// one (../shared/metabase-api.md §4; metabase-test-facts.md 42).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The collection namespaces mbprov writes grants in. Each is its own hierarchy with its own
/// root and its own slice of the collection graph (`GET /api/collection/graph?namespace=`, the
/// PUT's body key `namespace`), while the revision is one for all of them: Metabase's
/// `permissions/models/collection/graph.clj` (`graph`, `update-graph!`) reads and bumps the
/// one `collection_permission_graph_revision` table whatever the namespace.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum CollectionNamespace {
    /// Metabase's `nil` namespace: "Our analytics" and its collections.
    #[default]
    #[serde(rename = "default")]
    Default,
    /// Shared tenant collections (Metabase Tenants, "External collections" in the UI):
    /// `collections.models.collection/shared-tenant-ns`.
    #[serde(rename = "shared-tenant-collection")]
    SharedTenant,
}

impl CollectionNamespace {
    /// The value of `?namespace=` and of the PUT body's `namespace`; `None` for the default.
    pub fn api_name(self) -> Option<&'static str> {
        match self {
            CollectionNamespace::Default => None,
            CollectionNamespace::SharedTenant => Some("shared-tenant-collection"),
        }
    }
}

impl fmt::Display for CollectionNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name().unwrap_or("default"))
    }
}

/// `PUT /api/collection/:id`. `archived` is always sent: from v0.57 Metabase defaults a missing
/// `archived` to false, so a rename of an archived collection would un-archive it, and older
/// releases leave it alone either way (../shared/metabase-api.md, correction 11).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
}
