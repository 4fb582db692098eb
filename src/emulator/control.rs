//! Test control under `/_emulator/*` (configured `x-api-key` only; not counted in the stats):
//!
//! - `GET /_emulator/state`: everything, see [`dump`].
//! - `GET /_emulator/stats`: [`crate::emulator::stats::StatsSnapshot`]; `POST /_emulator/reset-stats`.
//! - `GET /_emulator/requests`: the last 10,000 `/api` requests
//!   `[{"method","path","query","status"}]`, oldest first.
//! - `POST /_emulator/faults` `{"latency_ms"?, "error_rate"?, "outage"?, "fail"?}`: answers the
//!   settings now in force `{"latency_ms","error_rate","outage","initializing","fail"}`. `fail` is
//!   `{"method","path","status"}` (that one route answers `status`) or `null` to clear it.
//!   `drop_reply` `{"method","path","times"?}` (default 1) applies the next `times` requests to
//!   that route and closes the connection without answering; `null` clears it.
//! - `POST /_emulator/revoke-api-key` `{"id": N}`: deletes a key made with `POST /api/api-key`,
//!   as Metabase's `DELETE /api/api-key/:id` does (../shared/metabase-api.md section 8): later
//!   requests with it are unauthenticated (401). Answers `{"revoked": bool}`.
//! - `POST /_emulator/seed` `{"tenants": N}`: answers `{"tenants": [{"index","group_id",
//!   "user_id","collection_id"}], "data_revision", "collection_revision"}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::App;
use super::error::{ApiError, ApiResult};
use super::faults::RouteFault;
use super::routes::json_body;
use super::state::State as Db;

pub fn router() -> Router<App> {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/reset-stats", post(reset_stats))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/faults", post(faults))
        .route("/_emulator/seed", post(seed))
        .route("/_emulator/revoke-api-key", post(revoke_api_key))
}

/// The state dump: `users` (with `group_ids` and `login_attributes`), `groups`, `memberships`,
/// `collections`, `data_graph` (`stored`: group -> table -> values; `rendered`: what GET
/// answers), `collection_graph` (rendered) and `collection_perms` (stored), `sandboxes`,
/// `api_keys` (masked), `revisions` `{data, collection}`, `tenancy` (tenants, tenant users,
/// tenant groups and collections, `use-tenants`).
pub fn dump(db: &Db) -> Value {
    let index = db.group_index();
    let users: Vec<Value> = db
        .users
        .values()
        .map(|u| {
            let mut v = json!(u);
            if let Some(o) = v.as_object_mut() {
                o.insert("group_ids".into(), json!(index.get(&u.id)));
            }
            v
        })
        .collect();
    json!({
        "users": users,
        "groups": db.groups.values().collect::<Vec<_>>(),
        "memberships": db.memberships.values().collect::<Vec<_>>(),
        "collections": db.collections.values().collect::<Vec<_>>(),
        "data_graph": {
            "stored": {"tables": db.data.tables, "databases": db.data.dbs},
            "rendered": db.render_data_graph(None, None),
        },
        "collection_perms": db.collection_perms,
        "collection_graph": db.render_collection_graph(),
        "sandboxes": db.sandboxes.values().collect::<Vec<_>>(),
        "api_keys": db.api_keys.values().collect::<Vec<_>>(),
        "revisions": {"data": db.data_revision, "collection": db.collection_revision},
        "tenancy": db.tenancy,
    })
}

async fn state(State(app): State<App>) -> Json<Value> {
    Json(dump(&*app.state.lock().await))
}

async fn stats(State(app): State<App>) -> Json<Value> {
    Json(json!(app.stats.snapshot()))
}

async fn reset_stats(State(app): State<App>) -> Json<Value> {
    app.stats.reset();
    Json(json!({"success": true}))
}

async fn requests(State(app): State<App>) -> Json<Value> {
    Json(json!(app.stats.requests()))
}

async fn faults(State(app): State<App>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    if let Some(rate) = body.get("error_rate").and_then(Value::as_f64) {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ApiError::bad_request("error_rate must be between 0 and 1"));
        }
        app.faults.set_error_rate(rate);
    }
    if let Some(ms) = body.get("latency_ms").and_then(Value::as_u64) {
        app.faults.set_latency_ms(ms);
    }
    if let Some(on) = body.get("outage").and_then(Value::as_bool) {
        app.faults.set_outage(on);
    }
    match body.get("fail") {
        None => {}
        Some(Value::Null) => app.faults.set_failing(None),
        Some(fail) => {
            let fail: RouteFault = serde_json::from_value(fail.clone()).map_err(|e| {
                ApiError::bad_request(format!("fail must be {{method, path, status}}: {e}"))
            })?;
            app.faults.set_failing(Some(fail));
        }
    }
    app.faults
        .set_drop_reply_from(&body)
        .map_err(ApiError::bad_request)?;
    Ok(Json(json!(app.faults.settings())))
}

async fn revoke_api_key(State(app): State<App>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let id = body
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("id must be the integer id of an API key"))?;
    let revoked = app.state.lock().await.api_keys.remove(&id).is_some();
    Ok(Json(json!({"revoked": revoked})))
}

async fn seed(State(app): State<App>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let n = body
        .get("tenants")
        .and_then(Value::as_i64)
        .filter(|n| (0..=1_000_000).contains(n))
        .ok_or_else(|| ApiError::bad_request("tenants must be an integer from 0 to 1000000"))?;
    let mut db = app.state.lock().await;
    let tenants = db.seed_tenants(n);
    Ok(Json(json!({
        "tenants": tenants,
        "data_revision": db.data_revision,
        "collection_revision": db.collection_revision,
    })))
}
