//! Reading Metabase's state for a document, and applying a plan through the graph writer.

use std::collections::BTreeSet;
use std::path::Path;

use crate::graph_writer::GraphWriter;
use crate::jobs::{Context, JobError, policy};
use crate::metabase::MetabaseClient;
use crate::metabase::models::{CollectionNamespace, Id};
use crate::metabase::tenants::is_tenant_group;

use super::document::Document;
use super::plan::{CurrentState, Plan, builtin_groups_named, plan};

/// A document that could not be read: which file, where in it, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {path}: {reason}")]
pub struct LoadError {
    pub file: String,
    pub path: String,
    pub reason: String,
}

/// Reads a YAML or JSON document (JSON when the file ends in `.json`) and validates it.
pub fn load(file: &Path) -> Result<Document, LoadError> {
    let name = file.display().to_string();
    let fail = |path: String, reason: String| LoadError {
        file: name.clone(),
        path,
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail("-".into(), e.to_string()))?;
    let doc: Document = if file.extension().is_some_and(|e| e == "json") {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| fail(e.path().to_string(), e.into_inner().to_string()))?
    } else {
        let de = serde_norway::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| fail(e.path().to_string(), e.into_inner().to_string()))?
    };
    doc.validate().map_err(|e| fail(e.path, e.reason))?;
    Ok(doc)
}

/// Reads what the document's groups hold now: one slice read per named group, the collection
/// graph (and the shared tenant collections' slice of it), the tables it names, the groups'
/// sandboxes.
pub async fn read_state(
    mb: &MetabaseClient,
    doc: &Document,
    features: crate::graph::Features,
) -> Result<CurrentState, JobError> {
    let mut state = CurrentState {
        features,
        ..CurrentState::default()
    };
    let wanted: BTreeSet<String> = doc.groups.keys().map(|n| n.to_lowercase()).collect();
    for g in mb.list_groups().await? {
        if g.magic_group_type.as_deref() == Some("admin") {
            state.admin_group = g.id;
        }
        let key = g.name.to_lowercase();
        if wanted.contains(&key) {
            // All tenant users holds tenant users only: the docs' rules for tenant users'
            // collection access (`embedding/tenants.md`, "Tenant user collection
            // permissions") hold for it whatever its `is_tenant_group` says.
            if is_tenant_group(&g) || g.magic_group_type.as_deref() == Some("all-external-users") {
                state.tenant_groups.insert(g.id);
            }
            state.groups.insert(key, g.id);
        }
    }
    for id in state.groups.values() {
        let slice = mb.data_graph_for_group(*id).await?;
        if let Some(dbs) = slice.groups.get(&Id(*id)) {
            state.data.insert(Id(*id), dbs.clone());
        }
        if features.sandboxes {
            state.sandboxes.extend(mb.list_sandboxes(Some(*id)).await?);
        }
    }
    state.collections = mb.collection_graph().await?;
    // Read whenever collections are named: also to tell a shared collection named among the
    // default ones, which Metabase would drop without a word.
    if doc
        .groups
        .values()
        .any(|g| !g.shared_collections.is_empty() || !g.collections.is_empty())
    {
        state.shared_collections = mb
            .collection_graph_in(CollectionNamespace::SharedTenant)
            .await?;
    }
    for spec in doc.groups.values() {
        for db in spec.data.values() {
            for table in db.tables.keys() {
                let id: i64 = table
                    .parse()
                    .map_err(|_| JobError::Impossible(format!("table {table:?} is not an id")))?;
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    state.table_schemas.entry(id)
                {
                    let t = mb.get_table(id).await?;
                    slot.insert(t.graph_schema().to_string());
                }
            }
        }
    }
    Ok(state)
}

/// The plan for `doc` against the live instance.
pub async fn plan_live(
    mb: &MetabaseClient,
    doc: &Document,
    features: crate::graph::Features,
) -> Result<Plan, JobError> {
    let state = read_state(mb, doc, features).await?;
    plan(doc, &state).map_err(JobError::Impossible)
}

/// Creates missing groups, writes the plan through the locked graph writer, then plans again
/// and fails if anything is still different. Returns the lines that were applied.
pub async fn apply(
    mb: &MetabaseClient,
    writer: &GraphWriter,
    doc: &Document,
    features: crate::graph::Features,
    builtin: &policy::BuiltinGroups,
) -> Result<Vec<String>, JobError> {
    let mut applied = Vec::new();
    let first = plan_live(mb, doc, features).await?;
    for name in &first.create_groups {
        let tenant_group = doc
            .groups
            .iter()
            .any(|(n, g)| g.tenant_group && n.eq_ignore_ascii_case(name));
        let created = if tenant_group {
            mb.create_tenant_group(name).await
        } else {
            mb.create_group(name).await
        };
        match created {
            Ok(_) => {}
            Err(e) if e.is_duplicate() => {}
            Err(e) => return Err(e.into()),
        }
        applied.push(format!("+ group {name:?}: create"));
    }
    let plan = if first.create_groups.is_empty() {
        first
    } else {
        plan_live(mb, doc, features).await?
    };
    let named: BTreeSet<i64> = plan
        .data
        .groups_touched()
        .into_iter()
        .chain(plan.collections.iter().flat_map(|o| o.groups_named()))
        .collect();
    // Operators may name All Users; Administrators never (validated), and never written.
    if named.contains(&builtin.admin) {
        return Err(JobError::Policy(
            "the Administrators group may never be changed".into(),
        ));
    }
    applied.extend(plan.render());
    let (d, c) = tokio::join!(
        writer.write_data(plan.data.clone()),
        writer.write_collections(plan.collections.clone())
    );
    d?;
    c?;
    let after = plan_live(mb, doc, features).await?;
    if !after.is_empty() {
        return Err(JobError::NotYet(format!(
            "drift remains after apply: {}",
            after.render().join("; ")
        )));
    }
    Ok(applied)
}

/// `permissions.applied`: like `mbprov apply`, but a message may not name a built-in group.
pub async fn apply_from_message(ctx: &Context, doc: &Document) -> Result<(), JobError> {
    let builtin = builtin_groups_named(doc);
    if !builtin.is_empty() {
        return Err(JobError::Policy(format!(
            "a message may not change built-in groups: {}",
            builtin.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let lines = apply(&ctx.mb, &ctx.writer, doc, ctx.features, &ctx.builtin).await?;
    for line in lines {
        tracing::info!(target: "mbprov::audit", change = %line, "permissions document applied");
    }
    Ok(())
}
