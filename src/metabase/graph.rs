use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{CollectionGraph, DataGraph, Revision};

/// How to PUT the data graph. There is deliberately no `force`: the revision is the only fence
/// that protects other writers, so this client cannot send `force=true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataGraphPut {
    /// Ask for `{"revision"}` only (`skip_graph=true`).
    SkipGraph,
    /// Ask for the submitted groups back (v0.51+ answers with only those): a free read-back.
    ReturnGroups,
}

impl MetabaseClient {
    /// The whole data graph: grows with groups x databases; prefer the per-group read.
    pub async fn data_graph(&self) -> Result<DataGraph, MetabaseError> {
        self.get("/api/permissions/graph", &[]).await
    }

    /// One group's slice of the data graph, with the global revision.
    pub async fn data_graph_for_group(&self, group_id: i64) -> Result<DataGraph, MetabaseError> {
        self.get(&format!("/api/permissions/graph/group/{group_id}"), &[])
            .await
    }

    /// One database's slice of the data graph, with the global revision.
    pub async fn data_graph_for_db(&self, db_id: i64) -> Result<DataGraph, MetabaseError> {
        self.get(&format!("/api/permissions/graph/db/{db_id}"), &[])
            .await
    }

    /// A partial write: only the groups and values in `graph` change; `graph.revision` must be the
    /// current one, else 409 (re-read and re-apply).
    pub async fn put_data_graph(
        &self,
        graph: &DataGraph,
        mode: DataGraphPut,
    ) -> Result<DataGraph, MetabaseError> {
        let query = match mode {
            DataGraphPut::SkipGraph => vec![("skip_graph", "true".to_string())],
            DataGraphPut::ReturnGroups => vec![],
        };
        self.call(
            Method::PUT,
            "/api/permissions/graph",
            &query,
            Some(graph),
            Replay::Safe,
        )
        .await
    }

    /// The whole collection graph (sparse: missing cells are `none`). There is no per-group read.
    pub async fn collection_graph(&self) -> Result<CollectionGraph, MetabaseError> {
        self.get("/api/collection/graph", &[]).await
    }

    /// A partial write of the collection graph; answers with the new revision only.
    pub async fn put_collection_graph(
        &self,
        graph: &CollectionGraph,
    ) -> Result<Revision, MetabaseError> {
        self.call(
            Method::PUT,
            "/api/collection/graph",
            &[("skip_graph", "true".to_string())],
            Some(graph),
            Replay::Safe,
        )
        .await
    }
}
