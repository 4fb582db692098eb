use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{CollectionGraph, CollectionNamespace, DataGraph, Revision};

/// How to PUT the data graph. There is deliberately no `force`: the revision is the only fence
/// that protects other writers, so this client cannot send `force=true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataGraphPut {
    /// Ask for `{"revision"}` only (`?skip-graph=true`).
    SkipGraph,
    /// Ask for the submitted groups back (v0.51+ answers with only those, test
    /// `update-graph-response-echoes-only-modified-groups-test`): a read-back for verification
    /// at no extra request, and small because it holds only what was written.
    ReturnGroups,
}

/// `?skip-graph=true`, kebab case: the only spelling Metabase declares on both graph PUTs
/// (data graph since PR #36724, Dec 2023; collection graph since PR #49856, about v0.52).
/// `skip_graph` is undeclared, stripped, and the whole graph comes back (correction 2; tests
/// `update-perms-graph-with-skip-graph-test`, `skip-graph-skips-graph-on-graph-PUT`). Releases
/// that do not know the parameter ignore it.
const SKIP_GRAPH: (&str, &str) = ("skip-graph", "true");

fn skip_graph() -> Vec<(&'static str, String)> {
    vec![(SKIP_GRAPH.0, SKIP_GRAPH.1.to_string())]
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
            DataGraphPut::SkipGraph => skip_graph(),
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

    /// One namespace's collection graph: its collections and its own root, with the revision
    /// shared by every namespace (`collections_rest/api.clj`, `GET /graph`: `perms/graph
    /// namespace`). Write it back with `namespace` set in the body.
    pub async fn collection_graph_in(
        &self,
        namespace: CollectionNamespace,
    ) -> Result<CollectionGraph, MetabaseError> {
        match namespace.api_name() {
            None => self.collection_graph().await,
            Some(ns) => {
                self.get("/api/collection/graph", &[("namespace", ns.to_string())])
                    .await
            }
        }
    }

    /// A partial write of the collection graph; asks for the new revision only (v0.52+; older
    /// releases answer the whole graph, of which only `revision` is read).
    pub async fn put_collection_graph(
        &self,
        graph: &CollectionGraph,
    ) -> Result<Revision, MetabaseError> {
        self.call(
            Method::PUT,
            "/api/collection/graph",
            &skip_graph(),
            Some(graph),
            Replay::Safe,
        )
        .await
    }
}
