//! `/api/ee/tenant` and the `use-tenants` setting (metabase-api.md section 7 and correction 12).
//!
//! The routes sit behind the `tenants` feature (`premium-handler … :tenants` in
//! `metabase-enterprise.api.routes`): 402 without it. There is no DELETE.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};

use super::{IdPath, Params, json_body, opt_string, present};
use crate::emulator::App;
use crate::emulator::auth::Superuser;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::state::TenantPatch;
use crate::emulator::state::tenants_paid;

/// Whether this edition's token has `tenants` (the free edition has no token features).
pub fn has_tenants(app: &App) -> bool {
    // The `tenants` token feature: Pro/Enterprise from v0.58 (premium_features/settings.clj).
    crate::emulator::state::Edition::for_version(&app.config.version, app.config.oss).tenants()
}

fn require_feature(app: &App) -> ApiResult<()> {
    if has_tenants(app) {
        Ok(())
    } else {
        Err(tenants_paid())
    }
}

/// `GET /api/ee/tenant?status=all|active|deactivated`, ordered by id.
pub async fn list(
    State(app): State<App>,
    _: Superuser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    require_feature(&app)?;
    let p = Params::parse(query.as_deref());
    let keep: fn(bool) -> bool = match p.get("status").unwrap_or("all") {
        "all" => |_| true,
        "active" => |a| a,
        "deactivated" => |a| !a,
        _ => {
            return Err(ApiError::schema(
                "status",
                "value must be one of: all, deactivated, active.",
            ));
        }
    };
    let db = app.state.lock().await;
    let mut data: Vec<Value> = db
        .tenancy
        .tenants
        .values()
        .filter(|t| keep(t.is_active))
        .map(|t| db.tenant_json(t))
        .collect();
    if p.get("limit").is_some() || p.get("offset").is_some() {
        let offset = p.int("offset")?.unwrap_or(0).max(0) as usize;
        let limit = p.int("limit")?.unwrap_or(50).max(0) as usize;
        data = data.into_iter().skip(offset).take(limit).collect();
    }
    Ok(Json(json!({"data": data})))
}

pub async fn get_one(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    require_feature(&app)?;
    let db = app.state.lock().await;
    Ok(Json(db.tenant_answer(id)?))
}

/// Closed schemas: an undeclared key is a 400 (`CreateTenantArguments`, `UpdateTenantArguments`).
fn check_keys(body: &Value, allowed: &[&str]) -> ApiResult<()> {
    if let Some(k) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(ApiError::schema(k, "disallowed key"));
    }
    Ok(())
}

pub async fn create(State(app): State<App>, _: Superuser, body: Bytes) -> ApiResult<Json<Value>> {
    require_feature(&app)?;
    let body = json_body(&body)?;
    check_keys(&body, &["name", "slug", "attributes"])?;
    let name = opt_string(&body, "name")?
        .ok_or_else(|| ApiError::schema("name", "value must be a non-blank string."))?;
    let slug = body
        .get("slug")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::schema("slug", "invalid slug"))?
        .to_string();
    let attributes = crate::emulator::state::tenant_attributes(body.get("attributes"))?.flatten();
    let mut db = app.state.lock().await;
    let id = db.create_tenant(&name, &slug, attributes)?;
    Ok(Json(db.tenant_answer(id)?))
}

pub async fn update(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    require_feature(&app)?;
    let body = json_body(&body)?;
    check_keys(&body, &["name", "attributes", "is_active"])?;
    let patch = TenantPatch {
        name: opt_string(&body, "name")?,
        attributes: crate::emulator::state::tenant_attributes(body.get("attributes"))?,
        is_active: match present(&body, "is_active") {
            None | Some(None) => None,
            Some(Some(Value::Bool(b))) => Some(*b),
            Some(Some(_)) => return Err(ApiError::schema("is_active", "value must be a boolean.")),
        },
    };
    let mut db = app.state.lock().await;
    db.update_tenant(id, patch)?;
    Ok(Json(db.tenant_answer(id)?))
}

/// `PUT /api/setting/use-tenants {"value": bool}` (the generic setting endpoint; the setting
/// has `:feature :tenants`).
pub async fn put_use_tenants(
    State(app): State<App>,
    _: Superuser,
    body: Bytes,
) -> ApiResult<axum::response::Response> {
    require_feature(&app)?;
    let body = json_body(&body)?;
    let on = body
        .get("value")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::schema("value", "value must be a boolean."))?;
    app.state.lock().await.set_use_tenants(on);
    Ok(super::no_content())
}

pub async fn get_use_tenants(State(app): State<App>, _: Superuser) -> Json<Value> {
    Json(json!(app.state.lock().await.tenancy.enabled))
}
