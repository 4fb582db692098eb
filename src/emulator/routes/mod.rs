//! The HTTP surface: one file per API area, wired here with the auth, fault and stats layers.

mod collections;
mod data_graph;
mod groups;
mod sandboxes;
mod session;
mod tables;
mod tenants;
mod users;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::{App, auth, control, faults, stats};

/// Every route, with its layers. Order of layers, outermost first: stats, faults, auth.
pub fn router(app: App) -> Router {
    let public = Router::new()
        .route("/api/health", get(session::health))
        .route("/api/session/properties", get(session::properties))
        .route("/api/setup", post(session::setup))
        .route("/api/session", post(session::login));
    let authed = Router::new()
        .route(
            "/api/api-key",
            get(session::list_keys).post(session::create_key),
        )
        .route("/api/user", get(users::list).post(users::create))
        .route("/api/user/current", get(users::current))
        .route(
            "/api/user/{id}",
            get(users::get_one)
                .put(users::update)
                .delete(users::deactivate),
        )
        .route("/api/user/{id}/reactivate", put(users::reactivate))
        .route(
            "/api/permissions/group",
            get(groups::list).post(groups::create),
        )
        .route(
            "/api/permissions/group/{id}",
            get(groups::get_one)
                .put(groups::rename)
                .delete(groups::remove),
        )
        .route(
            "/api/permissions/membership",
            get(groups::memberships).post(groups::add_member),
        )
        .route(
            "/api/permissions/membership/{id}",
            put(groups::update_member).delete(groups::remove_member),
        )
        .route("/api/permissions/membership/{id}/clear", put(groups::clear))
        .route(
            "/api/permissions/graph",
            get(data_graph::get_all).put(data_graph::put),
        )
        .route(
            "/api/permissions/graph/group/{id}",
            get(data_graph::get_group),
        )
        .route("/api/permissions/graph/db/{id}", get(data_graph::get_db))
        .route(
            "/api/collection/graph",
            get(collections::get_graph).put(collections::put_graph),
        )
        .route(
            "/api/collection",
            get(collections::list).post(collections::create),
        )
        .route(
            "/api/collection/{id}",
            get(collections::get_one)
                .put(collections::update)
                .delete(collections::remove),
        )
        .route("/api/collection/{id}/items", get(collections::items))
        .route("/api/table/{id}", get(tables::table))
        .route(
            "/api/table/{id}/query_metadata",
            get(tables::query_metadata),
        )
        .route("/api/database", get(tables::databases))
        .route(
            "/api/database/{id}/metadata",
            get(tables::database_metadata),
        )
        .route("/api/ee/tenant", get(tenants::list).post(tenants::create))
        .route(
            "/api/ee/tenant/{id}",
            get(tenants::get_one).put(tenants::update),
        )
        .route(
            "/api/setting/use-tenants",
            get(tenants::get_use_tenants).put(tenants::put_use_tenants),
        )
        .route("/api/mt/gtap", get(sandboxes::list).post(sandboxes::create))
        .route("/api/mt/gtap/validate", post(sandboxes::validate))
        .route(
            "/api/mt/gtap/{id}",
            get(sandboxes::get_one).delete(sandboxes::remove),
        )
        .fallback(unknown_endpoint)
        .layer(from_fn_with_state(app.clone(), auth::require));
    let api = public
        .merge(authed)
        .layer(from_fn_with_state(app.clone(), faults::inject))
        .layer(from_fn_with_state(app.clone(), stats::record));
    let control = control::router().layer(from_fn_with_state(
        app.clone(),
        auth::require_configured_key,
    ));
    api.merge(control).with_state(app)
}

async fn unknown_endpoint() -> Response {
    ApiError::plain(StatusCode::NOT_FOUND, "API endpoint does not exist.").into_response()
}

/// A JSON body; an empty body reads as `{}`.
pub fn json_body(body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON request: {e}")))
}

/// Query-string parameters, read leniently (Metabase ignores unknown ones).
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Params(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// An integer parameter; a malformed one is a 400 like Metabase's schema check.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::schema(key, "value must be an integer.")),
        }
    }
}

/// A path id Metabase would accept (`ms/PositiveInt`).
/// The `{id}` of a route, a positive integer (Metabase's 400 otherwise).
pub struct IdPath(pub i64);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found())?;
        path_id(&raw).map(IdPath)
    }
}

pub fn path_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::schema("id", "value must be an integer greater than zero."))
}

/// Reads an optional key of a JSON body: outer `None` when absent, inner `None` when `null`.
pub fn present<'a>(body: &'a Value, key: &str) -> Option<Option<&'a Value>> {
    body.get(key).map(|v| (!v.is_null()).then_some(v))
}

/// An optional non-blank string key (absent or null -> `None`).
pub fn opt_string(body: &Value, key: &str) -> ApiResult<Option<String>> {
    match present(body, key) {
        None | Some(None) => Ok(None),
        Some(Some(Value::String(s))) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(Some(_)) => Err(ApiError::schema(key, "value must be a non-blank string.")),
    }
}

/// A key a PUT may set, clear (`null`) or leave alone (absent): outer `None` when absent,
/// `Some(None)` when `null`, else the non-blank string.
pub fn opt_nullable_string(body: &Value, key: &str) -> ApiResult<Option<Option<String>>> {
    match present(body, key) {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(_)) => opt_string(body, key).map(Some),
    }
}

/// 204 with an empty body.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
