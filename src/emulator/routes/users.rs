//! `/api/user` (metabase-api.md §1).

use std::collections::BTreeMap;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};

use super::{IdPath, Params, json_body, opt_nullable_string, opt_string, present};
use crate::emulator::App;
use crate::emulator::auth::{Caller, Superuser};
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::state::{
    Edition, MembershipItem, NewUserInput, State as Db, StatusFilter, UserListQuery, UserPatch,
    UserRec,
};
use crate::metabase::models::{Extra, MembershipRef, User};

/// Which extra keys a user answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `GET /api/user/:id`, POST, PUT: with `user_group_memberships`.
    Single,
    /// `GET /api/user` items: with `group_ids` and `personal_collection_id`.
    ListItem,
    /// Reactivate: the columns only.
    Plain,
}

/// A tenant user's `tenant_id` (Tenants exist from v0.58, so the key is there too); other
/// users carry `tenant_id: null` only where the release has the column (v0.57+).
fn with_tenant(model: &mut User, tenant: Option<i64>, edition: &Edition) {
    if tenant.is_some() || edition.v057_fields() {
        model.extra.insert("tenant_id".into(), json!(tenant));
    }
}

/// `groups`: the user's memberships as (group id, `is_group_manager`), sorted by group.
pub fn user_model(
    u: &UserRec,
    groups: Vec<(i64, Option<bool>)>,
    shape: Shape,
    edition: &Edition,
) -> User {
    let mut extra = Extra::new();
    for (k, v) in [
        ("date_joined", json!(u.date_joined)),
        ("last_login", json!(u.last_login)),
        ("updated_at", json!(u.updated_at)),
        ("is_qbnewb", json!(true)),
        ("sso_source", json!(null)),
        ("jwt_attributes", json!(null)),
        ("locale", json!(u.locale)),
    ] {
        extra.insert(k.into(), v);
    }
    // New columns from v0.57 on (correction 11): `default-user-columns` gains them.
    if edition.v057_fields() {
        extra.insert("is_data_analyst".into(), json!(false));
        extra.insert("tenant_id".into(), json!(null));
        if shape == Shape::Single {
            extra.insert("structured_attributes".into(), json!({}));
        }
    }
    User {
        id: u.id,
        email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        common_name: u.common_name(),
        is_superuser: u.is_superuser,
        is_active: u.is_active,
        login_attributes: u.login_attributes.as_ref().map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        }),
        // Items carry `is_group_manager` only with advanced permissions (metabase-api.md §1).
        user_group_memberships: (shape == Shape::Single).then(|| {
            groups
                .iter()
                .map(|(g, manager)| MembershipRef {
                    id: *g,
                    is_group_manager: if edition.advanced_permissions() {
                        Some(manager.unwrap_or(false))
                    } else {
                        None
                    },
                })
                .collect()
        }),
        group_ids: (shape == Shape::ListItem).then(|| groups.iter().map(|(g, _)| *g).collect()),
        personal_collection_id: (shape == Shape::ListItem)
            .then_some(u.personal_collection_id)
            .flatten(),
        extra,
    }
}

fn render(db: &Db, id: i64, shape: Shape) -> ApiResult<Json<Value>> {
    let u = db.users.get(&id).ok_or_else(ApiError::not_found)?;
    let mut model = user_model(u, db.membership_pairs(id), shape, &db.edition);
    with_tenant(&mut model, db.tenant_of(id), &db.edition);
    serde_json::to_value(model)
        .map(Json)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `login_attributes`: a map whose values Metabase stores as strings.
fn attributes(v: Option<&Value>) -> ApiResult<Option<BTreeMap<String, String>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if m.keys().any(|k| k.starts_with('@') || k.trim().is_empty()) {
                return Err(ApiError::schema(
                    "login_attributes",
                    "login attribute keys must not be blank or start with @",
                ));
            }
            Ok(Some(
                m.iter()
                    .map(|(k, v)| {
                        let s = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), s)
                    })
                    .collect(),
            ))
        }
        Some(_) => Err(ApiError::schema(
            "login_attributes",
            "value must be a map with string keys.",
        )),
    }
}

/// `user_group_memberships`: `[{id, is_group_manager?}]`.
fn memberships(v: Option<&Value>) -> ApiResult<Option<Vec<MembershipItem>>> {
    let bad = || {
        ApiError::schema(
            "user_group_memberships",
            "value must be an array of maps with an integer id.",
        )
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                let group_id = i
                    .get("id")
                    .and_then(Value::as_i64)
                    .filter(|id| *id > 0)
                    .ok_or_else(bad)?;
                let is_group_manager = match i.get("is_group_manager") {
                    None => None,
                    Some(Value::Null) => Some(None),
                    Some(Value::Bool(b)) => Some(Some(*b)),
                    Some(_) => return Err(bad()),
                };
                Ok(MembershipItem {
                    group_id,
                    is_group_manager,
                })
            })
            .collect::<ApiResult<Vec<MembershipItem>>>()
            .map(Some),
        Some(_) => Err(ApiError::schema(
            "user_group_memberships",
            "value must be an array of maps with an integer id.",
        )),
    }
}

pub async fn list(
    State(app): State<App>,
    _: Superuser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(query.as_deref());
    let status = match (p.get("status"), p.flag("include_deactivated")) {
        (Some("active"), _) => StatusFilter::Active,
        (Some("deactivated"), _) => StatusFilter::Deactivated,
        (Some("all"), _) | (None, true) => StatusFilter::All,
        (None, false) => StatusFilter::Active,
        (Some(_), _) => {
            return Err(ApiError::schema(
                "status",
                "value must be one of: active, deactivated, all.",
            ));
        }
    };
    let limit = p.int("limit")?;
    let offset = p.int("offset")?;
    if p.get("tenancy").is_some() && p.get("tenant_id").is_some() {
        return Err(ApiError::bad_request(
            "You cannot specify both `tenancy` and `tenant_id`",
        ));
    }
    let tenancy = crate::emulator::state::TenancyFilter::parse(p.get("tenancy"))?;
    let tenant_id = p.int("tenant_id")?;
    // The tenancy filters apply before paging, so the page is taken here.
    let q = UserListQuery {
        status,
        query: p.get("query").map(str::to_string),
        group_id: p.int("group_id")?,
        limit: None,
        offset: None,
    };
    let db = app.state.lock().await;
    let (users, _) = db.list_users(&q);
    let users: Vec<_> = users
        .into_iter()
        .filter(|u| db.user_matches_tenancy(u, tenancy, tenant_id))
        .collect();
    let total = users.len();
    let users: Vec<_> = if limit.is_some() || offset.is_some() {
        users
            .into_iter()
            .skip(offset.unwrap_or(0).max(0) as usize)
            .take(limit.unwrap_or(50).max(0) as usize)
            .collect()
    } else {
        users
    };
    let index = db.group_index();
    let data: Vec<User> = users
        .into_iter()
        .map(|u| {
            let groups = index
                .get(&u.id)
                .map(|g| g.iter().map(|g| (*g, None)).collect())
                .unwrap_or_default();
            let mut model = user_model(u, groups, Shape::ListItem, &db.edition);
            with_tenant(&mut model, db.tenant_of(u.id), &db.edition);
            model
        })
        .collect();
    let paged = limit.is_some() || offset.is_some();
    Ok(Json(json!({
        "data": data,
        "total": total,
        "limit": if paged { Some(limit.unwrap_or(50)) } else { None },
        "offset": if paged { Some(offset.unwrap_or(0)) } else { None },
    })))
}

pub async fn current(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let db = app.state.lock().await;
    match caller {
        Caller::User { id, .. } => render(&db, id, Shape::Single),
        // Metabase gives each API key an internal user; this stands in for it.
        Caller::ConfiguredKey | Caller::ApiKey { .. } => {
            let (id, name) = match &caller {
                Caller::ApiKey { id, name, .. } => (1_000_000 + id, name.clone()),
                _ => (1_000_000, "mbprov emulator key".to_string()),
            };
            Ok(Json(json!({
                "id": id,
                "email": format!("api-key-user-{id}@api-key.invalid"),
                "first_name": name,
                "last_name": null,
                "common_name": name,
                "is_superuser": caller.is_superuser(),
                "is_active": true,
                "login_attributes": null,
                "user_group_memberships": [],
            })))
        }
    }
}

pub async fn get_one(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    if !caller.is_superuser()
        && caller
            != (Caller::User {
                id,
                is_superuser: false,
            })
    {
        return Err(ApiError::forbidden());
    }
    let db = app.state.lock().await;
    render(&db, id, Shape::Single)
}

pub async fn create(State(app): State<App>, _: Superuser, body: Bytes) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let email = match body.get("email") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::schema(
                "email",
                "value must be a valid email address.",
            ));
        }
    };
    let input = NewUserInput {
        email,
        first_name: opt_string(&body, "first_name")?,
        last_name: opt_string(&body, "last_name")?,
        memberships: memberships(body.get("user_group_memberships"))?,
        login_attributes: attributes(body.get("login_attributes"))?,
    };
    let tenant_id = match present(&body, "tenant_id") {
        None | Some(None) => None,
        Some(Some(v)) => Some(v.as_i64().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::schema("tenant_id", "value must be an integer greater than zero.")
        })?),
    };
    let mut db = app.state.lock().await;
    let id = match tenant_id {
        Some(t) if super::tenants::has_tenants(&app) => db.create_tenant_user(input, t)?,
        Some(_) => return Err(crate::emulator::state::tenants_paid()),
        None => db.create_user(input)?,
    };
    // `source: "setup"` makes the first admin (test `create-user-setup-source-test`).
    if body.get("source").and_then(Value::as_str) == Some("setup") {
        db.make_superuser(id);
    }
    render(&db, id, Shape::Single)
}

pub async fn update(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = json_body(&body)?;
    let nullable = |key: &str| opt_nullable_string(&body, key);
    let email = match present(&body, "email") {
        None | Some(None) => None,
        Some(Some(Value::String(s))) => Some(s.clone()),
        Some(Some(_)) => {
            return Err(ApiError::schema(
                "email",
                "value must be a valid email address.",
            ));
        }
    };
    let patch = UserPatch {
        email,
        first_name: nullable("first_name")?,
        last_name: nullable("last_name")?,
        locale: nullable("locale")?,
        is_superuser: body.get("is_superuser").and_then(Value::as_bool),
        login_attributes: match body.get("login_attributes") {
            None => None,
            Some(v) => Some(attributes(Some(v))?),
        },
        memberships: memberships(body.get("user_group_memberships"))?,
    };
    let mut db = app.state.lock().await;
    db.update_user(id, patch)?;
    render(&db, id, Shape::Single)
}

pub async fn deactivate(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    app.state.lock().await.deactivate_user(id)?;
    Ok(Json(json!({"success": true})))
}

pub async fn reactivate(
    State(app): State<App>,
    _: Superuser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    let mut db = app.state.lock().await;
    db.reactivate_user(id)?;
    render(&db, id, Shape::Plain)
}
