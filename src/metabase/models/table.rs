use serde::{Deserialize, Serialize};

use super::Extra;

/// `GET /api/table/:id`: what the worker needs to address a table in the data graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub id: i64,
    pub db_id: i64,
    /// `None` for a database without schemas; the graph then uses the key `""`.
    #[serde(default)]
    pub schema: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<Field>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Table {
    /// The schema key of this table in the data permissions graph.
    pub fn graph_schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub base_type: Option<String>,
    #[serde(default)]
    pub table_id: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A database as `GET /api/database` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Database {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<Table>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `GET /api/database`: newer versions wrap the list in `{"data": [...], "total": N}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DatabaseList {
    Wrapped { data: Vec<Database> },
    Plain(Vec<Database>),
}

impl DatabaseList {
    pub fn into_vec(self) -> Vec<Database> {
        match self {
            DatabaseList::Wrapped { data } => data,
            DatabaseList::Plain(v) => v,
        }
    }
}
