//! `/api/table` and `/api/database`: the fixed catalog the graph refers to.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{IdPath, path_id};
use crate::emulator::App;
use crate::emulator::auth::Caller;
use crate::emulator::error::{ApiError, ApiResult};

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<Json<Value>> {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn table_json(app: &App, raw: &str, with_fields: bool) -> ApiResult<Json<Value>> {
    let id = path_id(raw)?;
    let db = app.state.lock().await;
    let t = db.catalog.table(id).ok_or_else(ApiError::not_found)?;
    to_json(&t.to_model(with_fields))
}

pub async fn table(
    State(app): State<App>,
    Extension(_caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    table_json(&app, &raw, false).await
}

pub async fn query_metadata(
    State(app): State<App>,
    Extension(_caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    table_json(&app, &raw, true).await
}

pub async fn databases(
    State(app): State<App>,
    Extension(_caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let db = app.state.lock().await;
    let data: Vec<_> = db
        .catalog
        .databases
        .iter()
        .map(|d| d.to_model(false))
        .collect();
    let total = data.len();
    Ok(Json(json!({"data": data, "total": total})))
}

pub async fn database_metadata(
    State(app): State<App>,
    Extension(_caller): Extension<Caller>,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    let db = app.state.lock().await;
    let d = db.catalog.database(id).ok_or_else(ApiError::not_found)?;
    to_json(&d.to_model(true))
}
