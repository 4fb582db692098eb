//! Metabase's error answers, in the two shapes clients must tell apart: plain text and JSON.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Texts Metabase sends verbatim (metabase-api.md, "Quick reference").
pub mod text {
    pub const NOT_FOUND: &str = "Not found.";
    pub const FORBIDDEN: &str = "You don't have permissions to do that.";
    pub const UNAUTHENTICATED: &str = "Unauthenticated";
    pub const INVALID_REQUEST: &str = "Invalid Request.";
    pub const ALL_USERS_MEMBERSHIP: &str =
        "You cannot add or remove users to/from the 'All Users' group.";
    pub const LAST_ADMIN: &str = "You cannot remove the last member of the 'Admin' group!";
    pub const GROUP_NAME_TAKEN: &str = "A group with that name already exists.";
    pub const STALE_REVISION: &str = "Looks like someone else edited the permissions and your data is out of date. Please fetch new data and try again.";
    pub const INVALID_GRAPH: &str = "Cannot parse permissions graph because it is invalid: ";
    pub const ADMIN_PERMISSIONS: &str =
        "You cannot create or revoke permissions for the 'Admin' group.";
    pub const BLOCKED_NEEDS_TOKEN: &str = "The blocked permissions functionality is only enabled if you have a premium token with the advanced-permissions feature.";
    pub const SANDBOXES_PAID: &str = "Sandboxes is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/";
    pub const IMPERSONATION_PAID: &str = "Connection impersonation is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/";
    pub const TENANTS_PAID: &str = "Tenants is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/";
    pub const GROUP_MANAGER_NEEDS_TOKEN: &str = "The group manager permissions functionality is only enabled if you have a premium token with the advanced-permissions feature.";
    pub const MEMBERSHIP_INSERT_FAILED: &str = "Error inserting Permissions Group Membership";
    pub const INITIALIZING: &str = "Metabase is still initializing. Please sit tight...";
    pub const SETUP_DONE: &str = "The /api/setup route can only be used to create the first user, however a user currently exists.";
}

/// An error answer: the status plus a body in the shape Metabase uses for that case.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiError {
    /// ex-data with only a status code: the message as `text/plain`.
    Plain(StatusCode, String),
    /// ex-data with `:errors` or a message map: a JSON object.
    Json(StatusCode, Value),
}

impl ApiError {
    pub fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::Plain(status, message.into())
    }

    pub fn not_found() -> Self {
        Self::plain(StatusCode::NOT_FOUND, text::NOT_FOUND)
    }

    pub fn forbidden() -> Self {
        Self::plain(StatusCode::FORBIDDEN, text::FORBIDDEN)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::BAD_REQUEST, message)
    }

    /// `api/checkp` and schema failures: `{"errors": {field: message}}`.
    pub fn field(field: &str, message: &str) -> Self {
        ApiError::Json(StatusCode::BAD_REQUEST, json!({"errors": {field: message}}))
    }

    /// A malli schema failure, which also carries `specific-errors`.
    pub fn schema(field: &str, message: &str) -> Self {
        ApiError::Json(
            StatusCode::BAD_REQUEST,
            json!({"errors": {field: message}, "specific-errors": {field: [message]}}),
        )
    }

    /// A premium-feature 402 (`ee-feature-error`): plain text in older releases, JSON
    /// `{"message", "status"}` in newer ones (correction 8).
    pub fn premium(json: bool, message: &str) -> Self {
        if json {
            ApiError::Json(
                StatusCode::PAYMENT_REQUIRED,
                json!({"message": message, "status": "error-premium-feature-not-available"}),
            )
        } else {
            Self::plain(StatusCode::PAYMENT_REQUIRED, message)
        }
    }

    /// A 500 as Metabase's exception middleware renders one (`{"message": …}`).
    pub fn server(message: &str) -> Self {
        ApiError::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": message}),
        )
    }

    pub fn invalid_graph(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("{}{detail}", text::INVALID_GRAPH))
    }

    pub fn stale_revision() -> Self {
        Self::plain(StatusCode::CONFLICT, text::STALE_REVISION)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Plain(s, _) | ApiError::Json(s, _) => *s,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Plain(status, message) => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response(),
            ApiError::Json(status, body) => (status, axum::Json(body)).into_response(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
