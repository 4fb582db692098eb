use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{NewUser, User, UserList, UserStatus, UserUpdate};

/// Filters of `GET /api/user`. Paging applies only when `limit` or `offset` is set.
#[derive(Clone, Debug, Default)]
pub struct UserQuery {
    pub status: Option<UserStatus>,
    /// Lower-case substring of first name, last name or email.
    pub query: Option<String>,
    pub group_id: Option<i64>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl MetabaseClient {
    pub async fn list_users(&self, q: &UserQuery) -> Result<UserList, MetabaseError> {
        let mut query = Vec::new();
        if let Some(s) = q.status {
            query.push(("status", s.as_str().to_string()));
        }
        if let Some(s) = &q.query {
            query.push(("query", s.clone()));
        }
        if let Some(g) = q.group_id {
            query.push(("group_id", g.to_string()));
        }
        if let Some(l) = q.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(o) = q.offset {
            query.push(("offset", o.to_string()));
        }
        self.get("/api/user", &query).await
    }

    /// The user with exactly this email (any case, active or not). `?query=` matches substrings,
    /// so the answer is filtered for an exact, case-insensitive match.
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, MetabaseError> {
        let wanted = email.trim().to_lowercase();
        let list = self
            .list_users(&UserQuery {
                status: Some(UserStatus::All),
                query: Some(wanted.clone()),
                ..UserQuery::default()
            })
            .await?;
        Ok(list
            .data
            .into_iter()
            .find(|u| u.email.to_lowercase() == wanted))
    }

    pub async fn get_user(&self, id: i64) -> Result<User, MetabaseError> {
        self.get(&format!("/api/user/{id}"), &[]).await
    }

    pub async fn current_user(&self) -> Result<User, MetabaseError> {
        self.get("/api/user/current", &[]).await
    }

    /// Include the All Users group in `user_group_memberships` when giving it (see the model).
    pub async fn create_user(&self, user: &NewUser) -> Result<User, MetabaseError> {
        self.call(
            Method::POST,
            "/api/user",
            &[],
            Some(user),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    /// Active users only (Metabase answers 404 for deactivated ones).
    pub async fn update_user(&self, id: i64, update: &UserUpdate) -> Result<User, MetabaseError> {
        self.call(
            Method::PUT,
            &format!("/api/user/{id}"),
            &[],
            Some(update),
            Replay::Safe,
        )
        .await
    }

    /// Deactivates; Metabase keeps the user's content. Idempotent.
    pub async fn deactivate_user(&self, id: i64) -> Result<(), MetabaseError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/api/user/{id}"),
                &[],
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(())
    }

    /// 400 when the user is already active.
    pub async fn reactivate_user(&self, id: i64) -> Result<User, MetabaseError> {
        self.call(
            Method::PUT,
            &format!("/api/user/{id}/reactivate"),
            &[],
            None::<&()>,
            Replay::Safe,
        )
        .await
    }
}
