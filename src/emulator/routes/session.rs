//! Health, public settings, first-run setup, login and API keys (metabase-api.md §8, §9, §12).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::json_body;
use crate::emulator::App;
use crate::emulator::auth::Superuser;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::state::{ApiKeyRec, Sequences, now};

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn properties(State(app): State<App>) -> Json<Value> {
    let state = app.state.lock().await;
    let e = &state.edition;
    Json(json!({
        "version": {"tag": app.config.version, "hash": "e1ee7a5", "date": "2025-08-20"},
        "token-features": {
            "sandboxes": e.sandboxes(),
            "advanced_permissions": e.advanced_permissions(),
            "tenants": e.tenants(),
        },
        // `:visibility :authenticated` (newest) or `:admin`: shown to callers like the workers.
        "use-tenants": state.tenancy.enabled,
        "setup-token": state.setup_token,
        "has-user-setup": !state.users.is_empty(),
        "site-name": "Metabase emulator",
    }))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn new_session(state: &mut crate::emulator::state::State, user_id: i64) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    state.sessions.insert(id.clone(), user_id);
    if let Some(u) = state.users.get_mut(&user_id) {
        u.last_login = Some(now());
    }
    id
}

/// `POST /api/setup`: the first superuser; answers a session id.
pub async fn setup(State(app): State<App>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let field = |path: &[&str]| str_at(&body, path).unwrap_or("");
    let mut state = app.state.lock().await;
    let user_id = state.setup_first_user(
        field(&["token"]),
        field(&["user", "email"]),
        field(&["user", "first_name"]),
        field(&["user", "last_name"]),
        field(&["user", "password"]),
    )?;
    let id = new_session(&mut state, user_id);
    Ok(Json(json!({"id": id})))
}

/// `POST /api/session` with `{username, password}`.
pub async fn login(State(app): State<App>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let username = str_at(&body, &["username"]).unwrap_or("");
    let password = str_at(&body, &["password"]).unwrap_or("");
    let mut state = app.state.lock().await;
    match state.login(username, password) {
        Some(user_id) => Ok(Json(json!({"id": new_session(&mut state, user_id)}))),
        None => Err(ApiError::Json(
            StatusCode::UNAUTHORIZED,
            json!({"errors": {"password": "did not match stored password"}}),
        )),
    }
}

fn key_json(k: &ApiKeyRec, group_name: &str, unmasked: Option<&str>) -> Value {
    let mut v = json!({
        "id": k.id,
        "name": k.name,
        "masked_key": k.masked_key,
        "group": {"id": k.group_id, "name": group_name},
        "created_at": k.created_at,
        "updated_at": k.created_at,
    });
    if let (Some(key), Some(o)) = (unmasked, v.as_object_mut()) {
        o.insert("unmasked_key".into(), json!(key));
    }
    v
}

/// `POST /api/api-key` `{name, group_id}`: the only answer that shows the key.
pub async fn create_key(
    State(app): State<App>,
    _: Superuser,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let name = super::opt_string(&body, "name")?
        .ok_or_else(|| ApiError::schema("name", "value must be a non-blank string."))?;
    let group_id = body
        .get("group_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::schema("group_id", "value must be an integer greater than zero.")
        })?;
    let mut state = app.state.lock().await;
    let group_name = state
        .groups
        .get(&group_id)
        .map(|g| g.name.clone())
        .ok_or_else(ApiError::not_found)?;
    if state.api_keys.values().any(|k| k.name == name) {
        return Err(ApiError::field(
            "name",
            "An API key with this name already exists.",
        ));
    }
    let key = format!(
        "mb_{}{}",
        uuid::Uuid::new_v4().simple(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let id = Sequences::take(&mut state.seq.api_key);
    let rec = ApiKeyRec {
        id,
        name,
        group_id,
        masked_key: format!("{}...", &key[..7]),
        key: key.clone(),
        created_at: now(),
    };
    let out = key_json(&rec, &group_name, Some(&key));
    state.api_keys.insert(id, rec);
    Ok(Json(out))
}

/// `GET /api/api-key`: masked.
pub async fn list_keys(State(app): State<App>, _: Superuser) -> ApiResult<Json<Value>> {
    let state = app.state.lock().await;
    let keys = state
        .api_keys
        .values()
        .map(|k| {
            let group = state
                .groups
                .get(&k.group_id)
                .map_or("", |g| g.name.as_str());
            key_json(k, group, None)
        })
        .collect();
    Ok(Json(Value::Array(keys)))
}
