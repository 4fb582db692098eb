use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{
    ApiKeyInfo, Health, LoginRequest, NewApiKey, SessionId, SessionProperties, SetupRequest,
};

impl MetabaseClient {
    /// Public settings (no auth needed): version, token features, setup token.
    pub async fn session_properties(&self) -> Result<SessionProperties, MetabaseError> {
        self.get("/api/session/properties", &[]).await
    }

    /// `{"status":"ok"}`, or a 503 while Metabase starts.
    pub async fn health(&self) -> Result<Health, MetabaseError> {
        self.get("/api/health", &[]).await
    }

    /// Creates the first admin of a fresh instance; 403 once any user exists.
    pub async fn setup(&self, req: &SetupRequest) -> Result<SessionId, MetabaseError> {
        self.call(
            Method::POST,
            "/api/setup",
            &[],
            Some(req),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<SessionId, MetabaseError> {
        let body = LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        };
        self.call(
            Method::POST,
            "/api/session",
            &[],
            Some(&body),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, MetabaseError> {
        self.get("/api/api-key", &[]).await
    }

    /// The answer holds `unmasked_key`, shown this once.
    pub async fn create_api_key(
        &self,
        name: &str,
        group_id: i64,
    ) -> Result<ApiKeyInfo, MetabaseError> {
        let body = NewApiKey {
            name: name.to_string(),
            group_id,
        };
        self.call(
            Method::POST,
            "/api/api-key",
            &[],
            Some(&body),
            Replay::OnlyIfUnsent,
        )
        .await
    }
}
