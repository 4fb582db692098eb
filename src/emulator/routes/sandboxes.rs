//! `/api/mt/gtap`: standalone sandbox CRUD (EE; 402 without the `sandboxes` feature, test
//! `validate-token-test`, correction 8).

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::Value;

use super::{IdPath, Params, json_body, no_content};
use crate::emulator::App;
use crate::emulator::auth::Caller;
use crate::emulator::error::{ApiError, ApiResult, text};

async fn check(app: &App, caller: &Caller) -> ApiResult<()> {
    let edition = app.state.lock().await.edition.clone();
    if !edition.sandboxes() {
        return Err(ApiError::premium(
            edition.json_premium_errors(),
            text::SANDBOXES_PAID,
        ));
    }
    caller.require_superuser()
}

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<Json<Value>> {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// With both `group_id` and `table_id`, Metabase answers the one sandbox or `null`.
pub async fn list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    check(&app, &caller).await?;
    let p = Params::parse(query.as_deref());
    let (group_id, table_id) = (p.int("group_id")?, p.int("table_id")?);
    let db = app.state.lock().await;
    let found: Vec<_> = db
        .list_sandboxes(group_id, table_id)
        .into_iter()
        .map(|s| s.to_model())
        .collect();
    if group_id.is_some() && table_id.is_some() {
        return to_json(&found.into_iter().next());
    }
    to_json(&found)
}

pub async fn get_one(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    check(&app, &caller).await?;
    let db = app.state.lock().await;
    let s = db.sandboxes.get(&id).ok_or_else(ApiError::not_found)?;
    to_json(&s.to_model())
}

pub async fn create(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check(&app, &caller).await?;
    let body = json_body(&body)?;
    let s = app.state.lock().await.create_sandbox(&body)?;
    to_json(&s.to_model())
}

pub async fn remove(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    check(&app, &caller).await?;
    let mut db = app.state.lock().await;
    db.sandboxes.remove(&id).ok_or_else(ApiError::not_found)?;
    Ok(no_content())
}

/// `POST /api/mt/gtap/validate`: 204 when the sandbox could be created, 400 when not.
pub async fn validate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    check(&app, &caller).await?;
    let body = json_body(&body)?;
    app.state
        .lock()
        .await
        .validate_sandbox(&body)
        .map_err(|e| match e {
            ApiError::Plain(_, m) => ApiError::bad_request(m),
            ApiError::Json(_, v) => ApiError::Json(axum::http::StatusCode::BAD_REQUEST, v),
        })?;
    Ok(no_content())
}
