use reqwest::Method;
use serde::Deserialize;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{Collection, CollectionUpdate, NewCollection};

#[derive(Deserialize)]
struct Items {
    data: Vec<Collection>,
}

impl MetabaseClient {
    /// Every collection the key can read (root first). O(collections): avoid per job.
    pub async fn list_collections(&self, archived: bool) -> Result<Vec<Collection>, MetabaseError> {
        let query = if archived {
            vec![("archived", "true".to_string())]
        } else {
            vec![]
        };
        self.get("/api/collection", &query).await
    }

    pub async fn get_collection(&self, id: i64) -> Result<Collection, MetabaseError> {
        self.get(&format!("/api/collection/{id}"), &[]).await
    }

    /// The child collections of one collection (not archived).
    pub async fn child_collections(&self, id: i64) -> Result<Vec<Collection>, MetabaseError> {
        let items: Items = self
            .get(
                &format!("/api/collection/{id}/items"),
                &[("models", "collection".to_string())],
            )
            .await?;
        Ok(items.data)
    }

    /// Names are not unique: callers must guard against creating twice.
    pub async fn create_collection(&self, c: &NewCollection) -> Result<Collection, MetabaseError> {
        self.call(
            Method::POST,
            "/api/collection",
            &[],
            Some(c),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    pub async fn update_collection(
        &self,
        id: i64,
        update: &CollectionUpdate,
    ) -> Result<Collection, MetabaseError> {
        self.call(
            Method::PUT,
            &format!("/api/collection/{id}"),
            &[],
            Some(update),
            Replay::Safe,
        )
        .await
    }

    /// Moves a collection to the trash (Metabase keeps it).
    pub async fn archive_collection(&self, id: i64) -> Result<Collection, MetabaseError> {
        self.update_collection(
            id,
            &CollectionUpdate {
                archived: true,
                ..CollectionUpdate::default()
            },
        )
        .await
    }
}
