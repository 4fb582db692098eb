//! The warehouse databases the emulated instance has synced: fixed, read-only.

use serde_json::json;

use crate::metabase::models::{Database, Extra, Field, Table};

#[derive(Clone, Debug)]
pub struct FieldRec {
    pub id: i64,
    pub name: &'static str,
    pub base_type: &'static str,
}

#[derive(Clone, Debug)]
pub struct TableRec {
    pub id: i64,
    pub db_id: i64,
    pub schema: &'static str,
    pub name: &'static str,
    pub fields: Vec<FieldRec>,
}

#[derive(Clone, Debug)]
pub struct DatabaseRec {
    pub id: i64,
    pub name: &'static str,
    pub engine: &'static str,
    pub tables: Vec<TableRec>,
}

#[derive(Clone, Debug)]
pub struct Catalog {
    pub databases: Vec<DatabaseRec>,
}

fn field(id: i64, name: &'static str, base_type: &'static str) -> FieldRec {
    FieldRec {
        id,
        name,
        base_type,
    }
}

impl Catalog {
    /// The two databases of the documented initial state.
    pub fn sample() -> Self {
        let table = |id, db_id, schema, name, fields| TableRec {
            id,
            db_id,
            schema,
            name,
            fields,
        };
        Catalog {
            databases: vec![
                DatabaseRec {
                    id: 1,
                    name: "Sample Database",
                    engine: "h2",
                    tables: vec![
                        table(
                            10,
                            1,
                            "PUBLIC",
                            "ORDERS",
                            vec![
                                field(100, "ID", "type/BigInteger"),
                                field(101, "ORGANIZATION_ID", "type/Integer"),
                                field(102, "TOTAL", "type/Float"),
                            ],
                        ),
                        table(
                            11,
                            1,
                            "PUBLIC",
                            "PEOPLE",
                            vec![
                                field(110, "ID", "type/BigInteger"),
                                field(111, "ORGANIZATION_ID", "type/Integer"),
                                field(112, "EMAIL", "type/Text"),
                            ],
                        ),
                    ],
                },
                DatabaseRec {
                    id: 2,
                    name: "Warehouse",
                    engine: "postgres",
                    tables: vec![
                        table(
                            20,
                            2,
                            "analytics",
                            "events",
                            vec![
                                field(200, "id", "type/BigInteger"),
                                field(201, "organization_id", "type/Integer"),
                            ],
                        ),
                        table(
                            21,
                            2,
                            "analytics",
                            "accounts",
                            vec![
                                field(210, "id", "type/BigInteger"),
                                field(211, "organization_id", "type/Integer"),
                            ],
                        ),
                    ],
                },
            ],
        }
    }

    pub fn database(&self, id: i64) -> Option<&DatabaseRec> {
        self.databases.iter().find(|d| d.id == id)
    }

    pub fn table(&self, id: i64) -> Option<&TableRec> {
        self.databases
            .iter()
            .flat_map(|d| d.tables.iter())
            .find(|t| t.id == id)
    }
}

/// `ORDERS` -> `Orders`, `organization_id` -> `Organization Id`, like Metabase's humanization.
fn display_name(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl FieldRec {
    pub fn to_model(&self, table_id: i64) -> Field {
        let mut extra = Extra::new();
        extra.insert("display_name".into(), json!(display_name(self.name)));
        Field {
            id: self.id,
            name: self.name.to_string(),
            base_type: Some(self.base_type.to_string()),
            table_id: Some(table_id),
            extra,
        }
    }
}

impl TableRec {
    pub fn to_model(&self, with_fields: bool) -> Table {
        let mut extra = Extra::new();
        extra.insert("active".into(), json!(true));
        extra.insert("visibility_type".into(), json!(null));
        Table {
            id: self.id,
            db_id: self.db_id,
            schema: Some(self.schema.to_string()),
            name: self.name.to_string(),
            display_name: Some(display_name(self.name)),
            fields: with_fields.then(|| self.fields.iter().map(|f| f.to_model(self.id)).collect()),
            extra,
        }
    }
}

impl DatabaseRec {
    pub fn to_model(&self, with_tables: bool) -> Database {
        let mut extra = Extra::new();
        extra.insert("is_sample".into(), json!(self.id == 1));
        extra.insert("is_audit".into(), json!(false));
        Database {
            id: self.id,
            name: self.name.to_string(),
            engine: Some(self.engine.to_string()),
            tables: with_tables.then(|| self.tables.iter().map(|t| t.to_model(true)).collect()),
            extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn display_names_are_humanized() {
        for (name, want) in [
            ("ORDERS", "Orders"),
            ("organization_id", "Organization Id"),
            ("events", "Events"),
        ] {
            assert_eq!(display_name(name), want);
        }
    }
}
