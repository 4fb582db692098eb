//! Who is calling: the configured key, a key made with `POST /api/api-key`, or a session.
//! Anything else gets Metabase's plain-text `401 Unauthenticated`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::error::{ApiError, ApiResult, text};
use super::state::ADMIN_GROUP;

/// The authenticated caller, put in the request's extensions by [`require`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The `--api-key` given at start: a superuser with no user row.
    ConfiguredKey,
    /// A key from `POST /api/api-key`.
    ApiKey {
        id: i64,
        name: String,
        group_id: i64,
    },
    /// A session from `/api/session` or `/api/setup`.
    User { id: i64, is_superuser: bool },
}

impl Caller {
    pub fn is_superuser(&self) -> bool {
        match self {
            Caller::ConfiguredKey => true,
            Caller::ApiKey { group_id, .. } => *group_id == ADMIN_GROUP,
            Caller::User { is_superuser, .. } => *is_superuser,
        }
    }

    /// Most endpoints the emulator has are superuser-only in Metabase.
    pub fn require_superuser(&self) -> ApiResult<()> {
        if self.is_superuser() {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// A handler argument that admits only superusers (most of Metabase's endpoints the emulator
/// has), answering 403 to anyone else before the handler runs.
pub struct Superuser;

impl<S: Send + Sync> FromRequestParts<S> for Superuser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .ok_or_else(|| ApiError::plain(StatusCode::UNAUTHORIZED, text::UNAUTHENTICATED))?;
        caller.require_superuser()?;
        Ok(Superuser)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Resolves the caller from the headers; `None` means unauthenticated.
pub async fn identify(app: &App, headers: &HeaderMap) -> Option<Caller> {
    let state = app.state.lock().await;
    if let Some(session) = header(headers, "x-metabase-session")
        && let Some(user_id) = state.sessions.get(session)
        && let Some(user) = state.users.get(user_id).filter(|u| u.is_active)
    {
        return Some(Caller::User {
            id: user.id,
            is_superuser: user.is_superuser,
        });
    }
    let key = header(headers, "x-api-key")?;
    if key == app.config.api_key {
        return Some(Caller::ConfiguredKey);
    }
    state
        .api_keys
        .values()
        .find(|k| k.key == key)
        .map(|k| Caller::ApiKey {
            id: k.id,
            name: k.name.clone(),
            group_id: k.group_id,
        })
}

/// Layer for authenticated routes.
pub async fn require(State(app): State<App>, mut req: Request, next: Next) -> Response {
    match identify(&app, req.headers()).await {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => ApiError::plain(StatusCode::UNAUTHORIZED, text::UNAUTHENTICATED).into_response(),
    }
}

/// Layer for `/_emulator/*`: only the configured key.
pub async fn require_configured_key(State(app): State<App>, req: Request, next: Next) -> Response {
    if header(req.headers(), "x-api-key") == Some(app.config.api_key.as_str()) {
        next.run(req).await
    } else {
        ApiError::plain(StatusCode::UNAUTHORIZED, text::UNAUTHENTICATED).into_response()
    }
}
