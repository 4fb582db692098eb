//! The data permissions graph (both formats) and the collection permissions graph.
//!
//! Shapes, from Metabase's `permissions_rest` and `collections_rest`:
//! - v0.50+: `{group: {db: {"view-data": V, "create-queries": V, "download": {"schemas": V},
//!   "data-model": {"schemas": V}, "details": "yes"|"no"}}}` where each V is a value, or
//!   `{schema: value | {table_id: value}}` (granular).
//! - legacy (<= v0.49): `{group: {db: {"data": {"native": "write"|"none", "schemas": V}}}}`
//!   with V `all`/`none`/`block` or granular, and table values possibly `{"read", "query"}`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{CollectionKey, Extra};

/// A numeric id used as a JSON object key (group, database, table).
///
/// JSON keys are strings; serde's buffering (untagged enums, `flatten`) cannot read them as plain
/// integers, so this type accepts `"12"` and `12` and always writes `"12"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub i64);

impl From<i64> for Id {
    fn from(v: i64) -> Self {
        Id(v)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_i64()
                .map(Id)
                .ok_or_else(|| serde::de::Error::custom("id out of range")),
            Value::String(s) => s
                .parse()
                .map(Id)
                .map_err(|_| serde::de::Error::custom(format!("expected a numeric id, got {s:?}"))),
            other => Err(serde::de::Error::custom(format!(
                "expected an id, got {other}"
            ))),
        }
    }
}

/// A permission value spelled as a string by the API. Unknown spellings are kept in `Other`
/// so a newer Metabase round-trips without loss.
macro_rules! perm_value {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant,)+
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }

            /// Every known value, most permissive first.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(match s {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(s.parse().unwrap_or_else(|e: std::convert::Infallible| match e {}))
            }
        }
    };
}

perm_value!(
    /// `view-data`. `sandboxed` is table-level only; `blocked` needs EE advanced-permissions.
    ViewData {
        Unrestricted => "unrestricted",
        Impersonated => "impersonated",
        Sandboxed => "sandboxed",
        LegacyNoSelfService => "legacy-no-self-service",
        Blocked => "blocked",
    }
);

perm_value!(
    /// `create-queries`.
    CreateQueries {
        QueryBuilderAndNative => "query-builder-and-native",
        QueryBuilder => "query-builder",
        No => "no",
    }
);

perm_value!(
    /// `download.schemas`: full = 1M rows, limited = 10k rows.
    Download {
        Full => "full",
        Limited => "limited",
        None => "none",
    }
);

perm_value!(
    /// `data-model.schemas`.
    DataModel {
        All => "all",
        None => "none",
    }
);

perm_value!(
    /// `details` and `transforms`.
    YesNo {
        Yes => "yes",
        No => "no",
    }
);

perm_value!(
    /// A collection graph cell.
    CollectionAccess {
        Write => "write",
        Read => "read",
        None => "none",
    }
);

perm_value!(
    /// Legacy `data.native`.
    LegacyNative {
        Write => "write",
        Read => "read",
        None => "none",
    }
);

perm_value!(
    /// Legacy `data.schemas` values.
    LegacyAccess {
        All => "all",
        None => "none",
        Block => "block",
    }
);

/// The least permissive value of a permission type: what Metabase leaves out of a GET, and what
/// a client must send explicitly to revoke (omission changes nothing).
pub trait LeastPermissive: Sized {
    fn least() -> Self;
}

impl LeastPermissive for ViewData {
    fn least() -> Self {
        ViewData::Blocked
    }
}
impl LeastPermissive for CreateQueries {
    fn least() -> Self {
        CreateQueries::No
    }
}
impl LeastPermissive for Download {
    fn least() -> Self {
        Download::None
    }
}
impl LeastPermissive for DataModel {
    fn least() -> Self {
        DataModel::None
    }
}
impl LeastPermissive for YesNo {
    fn least() -> Self {
        YesNo::No
    }
}
impl LeastPermissive for CollectionAccess {
    fn least() -> Self {
        CollectionAccess::None
    }
}

/// A value for a whole database, or per schema (then per table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Granular<T> {
    All(T),
    Schemas(BTreeMap<String, SchemaLevel<T>>),
}

/// A value for a whole schema, or per table id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SchemaLevel<T> {
    All(T),
    Tables(BTreeMap<Id, T>),
}

/// `{"schemas": ...}` wrapper used by `download` and `data-model` (legacy adds `native`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemasValue<T> {
    pub schemas: Granular<T>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl<T> SchemasValue<T> {
    pub fn new(schemas: Granular<T>) -> Self {
        SchemasValue {
            schemas,
            extra: Extra::new(),
        }
    }
}

/// One group's permissions on one database, in either format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DbPerms {
    #[serde(rename = "view-data", default, skip_serializing_if = "Option::is_none")]
    pub view_data: Option<Granular<ViewData>>,
    #[serde(
        rename = "create-queries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub create_queries: Option<Granular<CreateQueries>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<SchemasValue<Download>>,
    #[serde(
        rename = "data-model",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub data_model: Option<SchemasValue<DataModel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<YesNo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transforms: Option<YesNo>,
    /// Legacy (<= v0.49) format only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<LegacyData>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Legacy `data` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<LegacyNative>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Granular<LegacyTableAccess>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Legacy table cell: a plain value, or `{"read": "all", "query": "segmented"}` (sandboxed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LegacyTableAccess {
    Value(LegacyAccess),
    Split(LegacySplit),
}

/// `{"read": "all", "query": "segmented"}`. `read` is required and nothing else is allowed, so
/// that a schema map is never mistaken for a split cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySplit {
    pub read: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Group id -> database id -> permissions.
pub type DataGroups = BTreeMap<Id, BTreeMap<Id, DbPerms>>;

/// `GET /api/permissions/graph[/group/:id]` and the body of `PUT /api/permissions/graph`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataGraph {
    pub revision: i64,
    #[serde(default)]
    pub groups: DataGroups,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<Sandbox>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonations: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The answer of a graph PUT with `skip_graph=true`, or the revision part of any graph answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A sandbox (EE): a group's row-level filter on a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<i64>,
    #[serde(default)]
    pub card_id: Option<i64>,
    /// Attribute name -> field name, field id, or a parameter target such as
    /// `["dimension", ["field", 34, null]]`.
    #[serde(default)]
    pub attribute_remappings: BTreeMap<String, Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Sandbox {
    /// A new sandbox filtering `table_id` by `field_id` = the user's `attribute`, the way the
    /// Metabase UI writes it.
    pub fn filter_by_attribute(
        group_id: i64,
        table_id: i64,
        attribute: &str,
        field_id: i64,
    ) -> Self {
        let mut attribute_remappings = BTreeMap::new();
        attribute_remappings.insert(attribute.to_string(), field_target(field_id));
        Sandbox {
            id: None,
            group_id: Some(group_id),
            table_id: Some(table_id),
            card_id: None,
            attribute_remappings,
            extra: Extra::new(),
        }
    }
}

/// `["dimension", ["field", id, null]]`.
pub fn field_target(field_id: i64) -> Value {
    serde_json::json!(["dimension", ["field", field_id, null]])
}

/// Group id -> collection -> access.
pub type CollectionGroups = BTreeMap<Id, BTreeMap<CollectionKey, CollectionAccess>>;

/// `GET /api/collection/graph` and the body of `PUT /api/collection/graph`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionGraph {
    pub revision: i64,
    #[serde(default)]
    pub groups: CollectionGroups,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl CollectionGraph {
    /// A cell, reading a missing one as `none` (the graph is sparse since ~v0.56).
    pub fn access(&self, group: i64, collection: CollectionKey) -> CollectionAccess {
        self.groups
            .get(&Id(group))
            .and_then(|g| g.get(&collection))
            .cloned()
            .unwrap_or(CollectionAccess::None)
    }
}
