use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::Sandbox;

impl MetabaseClient {
    /// Sandboxes (`/api/mt/gtap`, EE), optionally of one group.
    pub async fn list_sandboxes(
        &self,
        group_id: Option<i64>,
    ) -> Result<Vec<Sandbox>, MetabaseError> {
        let query = group_id
            .map(|g| vec![("group_id", g.to_string())])
            .unwrap_or_default();
        self.get("/api/mt/gtap", &query).await
    }

    /// A duplicate (group, table) is a 500 in Metabase: list first.
    pub async fn create_sandbox(&self, sandbox: &Sandbox) -> Result<Sandbox, MetabaseError> {
        self.call(
            Method::POST,
            "/api/mt/gtap",
            &[],
            Some(sandbox),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    pub async fn delete_sandbox(&self, id: i64) -> Result<(), MetabaseError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/api/mt/gtap/{id}"),
                &[],
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(())
    }
}
