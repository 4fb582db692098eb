//! Planning: what must change for Metabase to match a document. Pure: the caller reads the
//! state, this decides.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::graph::data::DataChange;
use crate::graph::granular::satisfies;
use crate::graph::{CollectionOp, Features};
use crate::metabase::models::{
    CollectionAccess, CollectionGraph, CollectionKey, CollectionNamespace, DataGroups, DbPerms,
    Granular, Id, Sandbox, SchemaLevel, SchemasValue,
};

use super::document::{DbSpec, Document};

/// What Metabase holds now, for the groups a document names.
#[derive(Clone, Debug, Default)]
pub struct CurrentState {
    /// Existing groups: lower-cased name -> id.
    pub groups: BTreeMap<String, i64>,
    /// The named groups' slices of the data graph.
    pub data: DataGroups,
    pub collections: CollectionGraph,
    /// The `shared-tenant-collection` namespace's graph; read only when the document names
    /// collections.
    pub shared_collections: CollectionGraph,
    /// The named groups that are tenant groups (All tenant users included).
    pub tenant_groups: BTreeSet<i64>,
    /// The Administrators group, whose row in a namespace's graph lists its live collections.
    pub admin_group: i64,
    /// Table id -> schema (`""` for none), for every table the document names.
    pub table_schemas: BTreeMap<i64, String>,
    /// The named groups' sandboxes.
    pub sandboxes: Vec<Sandbox>,
    pub features: Features,
}

/// One line of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanLine {
    pub group: String,
    pub what: String,
    pub from: String,
    pub to: String,
}

impl fmt::Display for PlanLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "~ group {:?} {}: {} -> {}",
            self.group, self.what, self.from, self.to
        )
    }
}

/// The changes a document needs.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Groups to create first (their access is planned after they exist).
    pub create_groups: Vec<String>,
    pub lines: Vec<PlanLine>,
    pub data: DataChange,
    pub collections: Vec<CollectionOp>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create_groups.is_empty() && self.lines.is_empty()
    }

    /// One line per change, as `mbprov plan` prints them.
    pub fn render(&self) -> Vec<String> {
        self.create_groups
            .iter()
            .map(|g| format!("+ group {g:?}: create"))
            .chain(self.lines.iter().map(ToString::to_string))
            .collect()
    }
}

/// Plans `doc` against `state`. Groups missing from `state` are only listed for creation.
pub fn plan(doc: &Document, state: &CurrentState) -> Result<Plan, String> {
    let mut out = Plan::default();
    for (name, spec) in &doc.groups {
        let Some(&gid) = state.groups.get(&name.to_lowercase()) else {
            out.create_groups.push(name.clone());
            continue;
        };
        for (db_key, db_spec) in &spec.data {
            let db: i64 = db_key
                .parse()
                .map_err(|_| format!("database {db_key:?} is not an id"))?;
            let wanted = wanted_perms(db_spec, state)?;
            let have = state
                .data
                .get(&Id(gid))
                .and_then(|d| d.get(&Id(db)))
                .cloned()
                .unwrap_or_default();
            let mut changed = DbPerms::default();
            let mut line = |what: &str, from: String, to: String| {
                out.lines.push(PlanLine {
                    group: name.clone(),
                    what: format!("database {db} {what}"),
                    from,
                    to,
                });
            };
            if let Some(w) = &wanted.view_data
                && !satisfies(have.view_data.as_ref(), w)
            {
                line("view-data", show(have.view_data.as_ref()), show(Some(w)));
                changed.view_data = Some(w.clone());
            }
            if let Some(w) = &wanted.create_queries
                && !satisfies(have.create_queries.as_ref(), w)
            {
                line(
                    "create-queries",
                    show(have.create_queries.as_ref()),
                    show(Some(w)),
                );
                changed.create_queries = Some(w.clone());
            }
            if let Some(w) = &wanted.download {
                let h = have.download.as_ref().map(|d| &d.schemas);
                if !satisfies(h, &w.schemas) {
                    line("download", show(h), show(Some(&w.schemas)));
                    changed.download = Some(w.clone());
                }
            }
            if let Some(w) = &wanted.data_model {
                let h = have.data_model.as_ref().map(|d| &d.schemas);
                if !satisfies(h, &w.schemas) {
                    line("data-model", show(h), show(Some(&w.schemas)));
                    changed.data_model = Some(w.clone());
                }
            }
            if let Some(w) = &wanted.details {
                let h = have
                    .details
                    .clone()
                    .unwrap_or(crate::metabase::models::YesNo::No);
                if h != *w {
                    line("details", h.to_string(), w.to_string());
                    changed.details = Some(w.clone());
                }
            }
            if changed != DbPerms::default() {
                out.data.put(gid, db, changed);
            }
            for (table_key, t) in &db_spec.tables {
                let Some(sb) = &t.sandbox else { continue };
                let table: i64 = table_key
                    .parse()
                    .map_err(|_| format!("table {table_key:?} is not an id"))?;
                let mut want = Sandbox::filter_by_attribute(gid, table, &sb.attribute, sb.field_id);
                let existing = state
                    .sandboxes
                    .iter()
                    .find(|s| s.group_id == Some(gid) && s.table_id == Some(table));
                if existing.is_some_and(|e| {
                    e.attribute_remappings == want.attribute_remappings && e.card_id.is_none()
                }) {
                    continue;
                }
                out.lines.push(PlanLine {
                    group: name.clone(),
                    what: format!("table {table} sandbox"),
                    from: existing.map_or("none".into(), |e| {
                        serde_json::to_string(&e.attribute_remappings).unwrap_or_default()
                    }),
                    to: format!("{} = field {}", sb.attribute, sb.field_id),
                });
                want.id = existing.and_then(|e| e.id);
                out.data.sandboxes.push(want);
            }
        }
        let tenant_group = state.tenant_groups.contains(&gid);
        for (key, access) in &spec.collections {
            let collection: CollectionKey = key.parse()?;
            if tenant_group && *access != CollectionAccess::None {
                return Err(format!(
                    "group {name:?} is a tenant group: Metabase gives tenant groups no access \
                     to collections outside the shared ones (\"Tenant groups cannot receive \
                     access to non-tenant collections.\"); name shared collections under \
                     shared_collections"
                ));
            }
            if let CollectionKey::Id(id) = collection
                && holds(&state.shared_collections, state.admin_group, collection)
            {
                return Err(format!(
                    "collection {id} is a shared tenant collection: name it under \
                     shared_collections (a grant in the default namespace would be dropped)"
                ));
            }
            plan_collection(
                &mut out,
                name,
                gid,
                collection,
                access,
                &state.collections,
                None,
            );
        }
        let shared = CollectionNamespace::SharedTenant;
        for (key, access) in &spec.shared_collections {
            let collection: CollectionKey = key.parse()?;
            if tenant_group && *access == CollectionAccess::Write {
                return Err(format!(
                    "group {name:?} is a tenant group: tenant users may view shared collections, \
                     never curate them (Metabase: \"Tenant groups cannot have write access to \
                     any collections.\"); give read"
                ));
            }
            let graph = &state.shared_collections;
            if let CollectionKey::Id(id) = collection
                && !holds(graph, state.admin_group, collection)
            {
                return Err(format!(
                    "shared collection {id} is not a live shared tenant collection (it is in \
                     another namespace, archived or missing); a default-namespace collection \
                     goes under collections"
                ));
            }
            plan_collection(&mut out, name, gid, collection, access, graph, Some(shared));
        }
    }
    Ok(out)
}

/// Whether `graph` (one namespace's) holds `collection`: the Administrators' row lists every
/// live collection of the namespace.
fn holds(graph: &CollectionGraph, admin_group: i64, collection: CollectionKey) -> bool {
    graph
        .groups
        .get(&Id(admin_group))
        .is_some_and(|cells| cells.contains_key(&collection))
}

/// One collection cell of the document: a plan line and an op when it differs. `shared`: the
/// namespace when it is not the default one, named in the line.
fn plan_collection(
    out: &mut Plan,
    group: &str,
    gid: i64,
    collection: CollectionKey,
    access: &CollectionAccess,
    current: &CollectionGraph,
    shared: Option<CollectionNamespace>,
) {
    let have = current.access(gid, collection);
    if have == *access {
        return;
    }
    let what = match shared {
        None => format!("collection {collection}"),
        Some(_) => format!("shared collection {collection}"),
    };
    out.lines.push(PlanLine {
        group: group.to_string(),
        what,
        from: have.to_string(),
        to: access.to_string(),
    });
    out.collections.push(CollectionOp::Set {
        group: gid,
        collection,
        access: access.clone(),
        namespace: shared.unwrap_or_default(),
    });
}

/// The graph values a database entry of the document asks for.
fn wanted_perms(spec: &DbSpec, state: &CurrentState) -> Result<DbPerms, String> {
    let mut perms = DbPerms {
        view_data: spec.view_data.clone().map(Granular::All),
        create_queries: spec.create_queries.clone().map(Granular::All),
        download: spec
            .download
            .clone()
            .map(|d| SchemasValue::new(Granular::All(d))),
        data_model: spec
            .data_model
            .clone()
            .map(|d| SchemasValue::new(Granular::All(d))),
        details: spec.details.clone(),
        ..DbPerms::default()
    };
    let mut view = BTreeMap::new();
    let mut create = BTreeMap::new();
    let mut download = BTreeMap::new();
    for (key, t) in &spec.tables {
        let table: i64 = key
            .parse()
            .map_err(|_| format!("table {key:?} is not an id"))?;
        let schema = state
            .table_schemas
            .get(&table)
            .ok_or_else(|| format!("table {table} was not found in Metabase"))?;
        let at = (schema.clone(), table);
        if let Some(v) = &t.view_data {
            view.insert(at.clone(), v.clone());
        }
        if let Some(v) = &t.create_queries {
            create.insert(at.clone(), v.clone());
        }
        if let Some(v) = &t.download {
            download.insert(at, v.clone());
        }
    }
    // Table values go over the database value; a database value cannot go with table values of
    // the same permission (Metabase would need every other table spelled out).
    if !view.is_empty() {
        if perms.view_data.is_some() {
            return Err("view-data is given for the database and for tables; give one".into());
        }
        perms.view_data = Some(granular(view));
    }
    if !create.is_empty() {
        if perms.create_queries.is_some() {
            return Err("create-queries is given for the database and for tables; give one".into());
        }
        perms.create_queries = Some(granular(create));
    }
    if !download.is_empty() {
        if perms.download.is_some() {
            return Err("download is given for the database and for tables; give one".into());
        }
        perms.download = Some(SchemasValue::new(granular(download)));
    }
    Ok(perms)
}

fn granular<T: Clone>(cells: BTreeMap<(String, i64), T>) -> Granular<T> {
    let mut schemas: BTreeMap<String, BTreeMap<Id, T>> = BTreeMap::new();
    for ((schema, table), v) in cells {
        schemas.entry(schema).or_default().insert(Id(table), v);
    }
    Granular::Schemas(
        schemas
            .into_iter()
            .map(|(s, t)| (s, SchemaLevel::Tables(t)))
            .collect(),
    )
}

fn show<T: serde::Serialize>(v: Option<&Granular<T>>) -> String {
    match v {
        None => "(lowest)".into(),
        Some(g) => serde_json::to_string(g)
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
    }
}

/// Groups a document names that a message may not touch. All tenant users is not one of them:
/// it is how Metabase means tenant-wide access to be granted (docs `embedding/tenants.md`, "Data
/// permissions for tenants"), like the access `tenant.created` gives it in native tenancy.
pub fn builtin_groups_named(doc: &Document) -> BTreeSet<String> {
    doc.groups
        .keys()
        .filter(|n| crate::jobs::policy::is_builtin_group_name(n))
        .filter(|n| !n.trim().eq_ignore_ascii_case("all tenant users"))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(yaml: &str) -> Document {
        serde_norway::from_str(yaml).unwrap()
    }

    fn state() -> CurrentState {
        CurrentState {
            groups: BTreeMap::from([("analysts".into(), 5), ("readers".into(), 6)]),
            data: serde_json::from_value(
                json!({"5": {"2": {"view-data": "unrestricted", "create-queries": "no"}}}),
            )
            .unwrap(),
            collections: serde_json::from_value(
                json!({"revision": 3, "groups": {"5": {"1": "read"}}}),
            )
            .unwrap(),
            table_schemas: BTreeMap::from([(1, "PUBLIC".into()), (2, "PUBLIC".into())]),
            sandboxes: vec![],
            features: Features::default(),
            shared_collections: serde_json::from_value(json!({"revision": 3, "groups": {
                "2": {"root": "write", "40": "write"}, "6": {"40": "read"}}}))
            .unwrap(),
            tenant_groups: BTreeSet::from([6]),
            admin_group: 2,
        }
    }

    #[test]
    fn plans_only_what_differs() {
        let d = doc(r#"
version: 1
groups:
  Analysts:
    data:
      "2": {view-data: unrestricted, create-queries: query-builder}
    collections: {"1": read, root: none}
"#);
        let p = plan(&d, &state()).unwrap();
        assert_eq!(
            p.render(),
            vec![
                r#"~ group "Analysts" database 2 create-queries: no -> query-builder"#.to_string()
            ]
        );
        assert_eq!(
            serde_json::to_value(&p.data.groups).unwrap(),
            json!({"5": {"2": {"create-queries": "query-builder"}}})
        );
        assert!(p.collections.is_empty());
    }

    #[test]
    fn missing_groups_are_created_first_and_tables_resolve_schemas() {
        let d = doc(r#"
version: 1
groups:
  New Team: {collections: {root: read}}
  Analysts:
    data:
      "1":
        tables:
          "1": {view-data: sandboxed, create-queries: query-builder, sandbox: {field_id: 11}}
    collections: {"1": write}
"#);
        let p = plan(&d, &state()).unwrap();
        let lines = p.render();
        assert_eq!(lines[0], r#"+ group "New Team": create"#);
        assert!(
            lines.contains(&r#"~ group "Analysts" collection 1: read -> write"#.to_string()),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("table 1 sandbox")),
            "{lines:?}"
        );
        assert_eq!(
            serde_json::to_value(&p.data.groups).unwrap(),
            json!({"5": {"1": {"view-data": {"PUBLIC": {"1": "sandboxed"}}, "create-queries": {"PUBLIC": {"1": "query-builder"}}}}})
        );
        assert_eq!(p.data.sandboxes.len(), 1);
        assert_eq!(p.collections.len(), 1);
    }

    #[test]
    fn shared_collections_are_planned_in_their_namespace() {
        let d = doc(r#"
version: 1
groups:
  Analysts: {collections: {"1": read}, shared_collections: {root: read, "40": write}}
  Readers: {shared_collections: {"40": read, root: none}, collections: {"1": none}}
"#);
        let p = plan(&d, &state()).unwrap();
        assert_eq!(
            p.render(),
            vec![
                r#"~ group "Analysts" shared collection 40: none -> write"#.to_string(),
                r#"~ group "Analysts" shared collection root: none -> read"#.to_string(),
            ]
        );
        let shared = CollectionNamespace::SharedTenant;
        assert_eq!(
            p.collections,
            vec![
                CollectionOp::Set {
                    group: 5,
                    collection: CollectionKey::Id(40),
                    access: CollectionAccess::Write,
                    namespace: shared,
                },
                CollectionOp::Set {
                    group: 5,
                    collection: CollectionKey::Root,
                    access: CollectionAccess::Read,
                    namespace: shared,
                },
            ]
        );
    }

    #[test]
    fn tenant_groups_view_shared_collections_only_and_targets_must_be_shared() {
        let cases = [
            (
                "Readers: {shared_collections: {\"40\": write}}",
                "group \"Readers\" is a tenant group: tenant users may view shared collections",
            ),
            (
                "Readers: {collections: {root: read}}",
                "group \"Readers\" is a tenant group: Metabase gives tenant groups no access",
            ),
            (
                "Analysts: {shared_collections: {\"1\": read}}",
                "shared collection 1 is not a live shared tenant collection",
            ),
            (
                "Analysts: {collections: {\"40\": read}}",
                "collection 40 is a shared tenant collection: name it under shared_collections",
            ),
        ];
        for (groups, want) in cases {
            let d = doc(&format!("version: 1\ngroups: {{{groups}}}"));
            let got = plan(&d, &state()).unwrap_err();
            assert!(got.starts_with(want), "{groups}: {got}");
        }
        // Curating is fine for an internal group, and revoking is fine for anyone.
        let d = doc("version: 1\ngroups: {Readers: {collections: {\"1\": none}}}");
        assert!(plan(&d, &state()).unwrap().is_empty());
    }

    #[test]
    fn unknown_tables_are_an_error() {
        let d = doc(
            "version: 1\ngroups: {Analysts: {data: {\"1\": {tables: {\"99\": {create-queries: \"no\"}}}}}}",
        );
        assert_eq!(
            plan(&d, &state()).unwrap_err(),
            "table 99 was not found in Metabase"
        );
    }
}
