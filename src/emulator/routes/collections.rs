//! `/api/collection` and `/api/collection/graph` (metabase-api.md §3, §4).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::data_graph::skip_graph;
use super::{IdPath, Params, json_body, opt_nullable_string, opt_string, path_id, present};
use crate::emulator::App;
use crate::emulator::auth::Superuser;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::state::{CollectionPatch, NewCollectionInput, State as Db};
use crate::emulator::stats::Graph;
use crate::metabase::models::{Collection, CollectionKey};

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<Value> {
    serde_json::to_value(v)
        .map_err(|e| ApiError::plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A collection as Metabase writes it: `"id": 12` is a number (only Root's is `"root"`), while
/// the shared `CollectionKey` always serialises as a string.
fn collection_json(c: &Collection) -> ApiResult<Value> {
    let mut v = to_json(c)?;
    if let CollectionKey::Id(id) = c.id
        && let Some(o) = v.as_object_mut()
    {
        o.insert("id".into(), json!(id));
    }
    Ok(v)
}

/// `?namespace=` (a non-blank string) picks the namespace's slice (`GET /graph` in
/// `collections_rest/api.clj`).
fn graph_namespace(p: &Params) -> ApiResult<Option<String>> {
    match p.get("namespace") {
        None => Ok(None),
        Some(ns) if !ns.trim().is_empty() => Ok(Some(ns.to_string())),
        Some(_) => Err(ApiError::schema(
            "namespace",
            "nullable value must be a non-blank string.",
        )),
    }
}

pub async fn get_graph(
    State(app): State<App>,
    _: Superuser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let ns = graph_namespace(&Params::parse(query.as_deref()))?;
    to_json(
        &app.state
            .lock()
            .await
            .render_collection_graph_in(ns.as_deref()),
    )
    .map(Json)
}

pub async fn put_graph(
    State(app): State<App>,
    _: Superuser,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(query.as_deref());
    let body = json_body(&body)?;
    let force = p.flag("force");
    let mut db = app.state.lock().await;
    let result = db.put_collection_graph(&body, force);
    let conflict = matches!(&result, Err(e) if e.status() == StatusCode::CONFLICT);
    app.stats.graph_put(Graph::Collection, force, conflict);
    let revision = result?;
    // `?skip-graph=true` from v0.52 (PR #49856); a `skip_graph` body key in v0.51 (PR #45438);
    // nothing before. Anything else gets the whole graph (correction 2; test
    // `skip-graph-skips-graph-on-graph-PUT`).
    let skip = if db.edition.collection_skip_graph_query() {
        skip_graph(&p)
    } else {
        db.edition.collection_skip_graph_body()
            && body.get("skip_graph").and_then(Value::as_bool) == Some(true)
    };
    if skip {
        return Ok(Json(json!({"revision": revision})));
    }
    let ns = body.get("namespace").and_then(Value::as_str);
    to_json(&db.render_collection_graph_in(ns)).map(Json)
}

/// Root first, then every collection (admins see personal ones too); archived only on request.
pub async fn list(
    State(app): State<App>,
    _: Superuser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(query.as_deref());
    let archived = p.flag("archived");
    // One namespace at a time (`select-collections`: `audit-namespace-clause`).
    let ns = graph_namespace(&p)?;
    let db = app.state.lock().await;
    let mut out: Vec<Collection> = Vec::new();
    if !archived {
        let mut root = Db::root_collection_model();
        root.namespace.clone_from(&ns);
        out.push(root);
    }
    out.extend(
        db.collections
            .values()
            .filter(|c| c.archived == archived && c.namespace == ns)
            .map(|c| db.collection_model(c)),
    );
    out.iter()
        .map(collection_json)
        .collect::<ApiResult<Vec<Value>>>()
        .map(|v| Json(Value::Array(v)))
}

fn collection_id(raw: &str) -> ApiResult<Option<i64>> {
    if raw == "root" {
        Ok(None)
    } else {
        path_id(raw).map(Some)
    }
}

pub async fn get_one(
    State(app): State<App>,
    _: Superuser,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let db = app.state.lock().await;
    match collection_id(&raw)? {
        None => to_json(&Db::root_collection_model()).map(Json),
        Some(id) => {
            let c = db.collections.get(&id).ok_or_else(ApiError::not_found)?;
            let mut model = db.collection_model(c);
            if db.tenancy.tenant_collections.contains(&id) {
                model
                    .extra
                    .insert("type".into(), json!("tenant-specific-root-collection"));
            }
            collection_json(&model).map(Json)
        }
    }
}

/// Only `models=collection` is emulated: child collections, as `{"data", "total"}`.
pub async fn items(
    State(app): State<App>,
    _: Superuser,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let parent = collection_id(&raw)?;
    let db = app.state.lock().await;
    if let Some(id) = parent
        && !db.collections.contains_key(&id)
    {
        return Err(ApiError::not_found());
    }
    let data: Vec<Value> = db
        .collection_children(parent)
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "description": c.description,
                "model": "collection",
                "location": c.location,
                "archived": c.archived,
                "personal_owner_id": c.personal_owner_id,
                "entity_id": c.entity_id,
            })
        })
        .collect();
    let total = data.len();
    Ok(Json(
        json!({"data": data, "total": total, "models": ["collection"]}),
    ))
}

pub async fn create(State(app): State<App>, _: Superuser, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let input = NewCollectionInput {
        name: opt_string(&body, "name")?
            .ok_or_else(|| ApiError::schema("name", "value must be a non-blank string."))?,
        description: opt_string(&body, "description")?,
        parent_id: body.get("parent_id").and_then(Value::as_i64),
        namespace: opt_string(&body, "namespace")?,
    };
    let mut db = app.state.lock().await;
    let id = db.create_collection(input)?;
    let c = db.collections.get(&id).ok_or_else(ApiError::not_found)?;
    collection_json(&db.collection_model(c)).map(Json)
}

pub async fn update(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let edition_v057 = app.state.lock().await.edition.v057_fields();
    let patch = CollectionPatch {
        name: opt_string(&body, "name")?,
        description: opt_nullable_string(&body, "description")?,
        // From v0.57 the schema defaults `archived` to false, so a rename of an archived
        // collection un-archives it (correction 11).
        archived: body
            .get("archived")
            .and_then(Value::as_bool)
            .or_else(|| edition_v057.then_some(false)),
        parent_id: match present(&body, "parent_id") {
            None => None,
            Some(None) => Some(None),
            Some(Some(v)) => Some(Some(v.as_i64().ok_or_else(|| {
                ApiError::schema("parent_id", "value must be an integer greater than zero.")
            })?)),
        },
    };
    let mut db = app.state.lock().await;
    db.update_collection(id, patch)?;
    let c = db.collections.get(&id).ok_or_else(ApiError::not_found)?;
    collection_json(&db.collection_model(c)).map(Json)
}

/// `DELETE /api/collection/:id` (v0.50+ with the Trash): 200 once trashed.
pub async fn remove(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    app.state.lock().await.delete_collection(id)?;
    Ok(Json(json!({"success": true})))
}
