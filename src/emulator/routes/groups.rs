//! `/api/permissions/group` and `/api/permissions/membership` (metabase-api.md §2).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::{IdPath, Params, json_body, no_content};
use crate::emulator::App;
use crate::emulator::auth::Superuser;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::state::{GroupRec, State as Db};

fn group_json(db: &Db, g: &GroupRec) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "entity_id": g.entity_id,
        "magic_group_type": g.magic_group_type,
        "is_tenant_group": db.is_tenant_group(g.id),
    })
}

fn insert(mut v: Value, key: &str, value: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.into(), value);
    }
    v
}

/// `name`: a non-blank string, with malli's exact answer for a missing or null one (test
/// `create-group-test`).
fn name_of(body: &Value) -> ApiResult<String> {
    match body.get("name") {
        None | Some(Value::Null) => Err(ApiError::Json(
            axum::http::StatusCode::BAD_REQUEST,
            json!({"errors": {"name": "value must be a non-blank string."},
                   "specific-errors": {"name": ["should be a string, received: nil",
                                                "non-blank string, received: nil"]}}),
        )),
        _ => super::opt_string(body, "name")?
            .ok_or_else(|| ApiError::schema("name", "value must be a non-blank string.")),
    }
}

/// Ordered by lower(name), each with `member_count` (active users only); paged only when
/// `limit` or `offset` is given (test `groups-list-limit-test`); `tenancy=internal|external`
/// filters by tenant groups (test `fetch-groups-tenancy-filter-test`).
pub async fn list(
    State(app): State<App>,
    _: Superuser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(query.as_deref());
    let (limit, offset) = (p.int("limit")?, p.int("offset")?);
    let tenancy = crate::emulator::state::TenancyFilter::parse(p.get("tenancy"))?;
    let db = app.state.lock().await;
    let mut groups: Vec<&GroupRec> = db
        .groups
        .values()
        .filter(|g| db.group_matches_tenancy(g.id, tenancy))
        .collect();
    groups.sort_by_key(|g| (g.name.to_lowercase(), g.id));
    if limit.is_some() || offset.is_some() {
        let skip = offset.unwrap_or(0).max(0) as usize;
        let take = limit.unwrap_or(50).max(0) as usize;
        groups = groups.into_iter().skip(skip).take(take).collect();
    }
    let counts = db.member_counts();
    let out = groups
        .into_iter()
        .map(|g| {
            let count = counts.get(&g.id).copied().unwrap_or(0);
            insert(group_json(&db, g), "member_count", json!(count))
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

fn group_with_members(db: &Db, id: i64) -> ApiResult<Json<Value>> {
    let g = db
        .groups
        .get(&id)
        .filter(|g| db.group_visible(g.id))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(insert(
        group_json(db, g),
        "members",
        Value::Array(db.group_members(id)),
    )))
}

pub async fn get_one(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    group_with_members(&*app.state.lock().await, id)
}

pub async fn create(State(app): State<App>, _: Superuser, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let name = name_of(&body)?;
    // `is_tenant_group: true` needs the tenants feature: 402 otherwise (test
    // `create-group-test-enterprise-features`); `false`/`null` make a regular group.
    let tenant_group = body.get("is_tenant_group").and_then(Value::as_bool) == Some(true);
    if tenant_group && !super::tenants::has_tenants(&app) {
        return Err(crate::emulator::state::tenants_paid());
    }
    let mut db = app.state.lock().await;
    let id = if tenant_group {
        db.create_tenant_group(&name)?
    } else {
        db.create_group(&name)?
    };
    let g = db.groups.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(group_json(&db, g)))
}

pub async fn rename(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let name = name_of(&json_body(&body)?)?;
    let mut db = app.state.lock().await;
    if !db.group_visible(id) {
        return Err(ApiError::not_found());
    }
    db.rename_group(id, &name)?;
    let g = db.groups.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(group_json(&db, g)))
}

pub async fn remove(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    let mut db = app.state.lock().await;
    // A tenant group is "Not found." while `use-tenants` is off, and stays (metabase-test-facts.md
    // 13, `update-and-delete-hide-tenant-group-test`).
    if db.groups.contains_key(&id) && !db.group_visible(id) {
        return Err(ApiError::not_found());
    }
    db.delete_group(id)?;
    Ok(no_content())
}

/// `{"<user_id>": [{membership_id, group_id, user_id, is_group_manager}]}`.
pub async fn memberships(State(app): State<App>, _: Superuser) -> ApiResult<Json<Value>> {
    let db = app.state.lock().await;
    let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for m in db.memberships.values() {
        out.entry(m.user_id).or_default().push(json!({
            "membership_id": m.id,
            "group_id": m.group_id,
            "user_id": m.user_id,
            "is_group_manager": m.is_group_manager,
        }));
    }
    let map: serde_json::Map<String, Value> = out
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::Array(v)))
        .collect();
    Ok(Json(Value::Object(map)))
}

/// Answers every member of the group, as Metabase does.
pub async fn add_member(
    State(app): State<App>,
    _: Superuser,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let int = |k: &str| {
        body.get(k)
            .and_then(Value::as_i64)
            .filter(|v| *v > 0)
            .ok_or_else(|| ApiError::schema(k, "value must be an integer greater than zero."))
    };
    let (group_id, user_id) = (int("group_id")?, int("user_id")?);
    let manager = body.get("is_group_manager").and_then(Value::as_bool);
    let mut db = app.state.lock().await;
    db.add_member(group_id, user_id, manager)?;
    Ok(Json(Value::Array(db.group_members(group_id))))
}

/// `PUT /api/permissions/membership/:id {"is_group_manager": bool}`: the updated record.
pub async fn update_member(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let manager = body
        .get("is_group_manager")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::schema("is_group_manager", "value must be a boolean."))?;
    let mut db = app.state.lock().await;
    db.set_group_manager(id, manager)?;
    let m = db.memberships.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({
        "id": m.id,
        "group_id": m.group_id,
        "user_id": m.user_id,
        "is_group_manager": m.is_group_manager,
    })))
}

pub async fn remove_member(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    app.state.lock().await.remove_member(id)?;
    Ok(no_content())
}

pub async fn clear(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    app.state.lock().await.clear_group(id)?;
    Ok(no_content())
}
