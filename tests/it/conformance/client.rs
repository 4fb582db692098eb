//! mbprov's own requests, checked against both editions: what the client sends is what every
//! edition and release accepts (corrections 1, 2, 11).

use mbprov::emulator::{EmulatorOptions, spawn};
use mbprov::metabase::models::*;
use mbprov::metabase::{ApiKey, Auth, ClientConfig, DataGraphPut, MetabaseClient};
use serde_json::{Value, json};

use super::BOTH;

const KEY: &str = "client-key";

/// Users with memberships, both graph PUTs, a rename: accepted on both editions, with
/// `?skip-graph=true` on the wire and answers of `{revision}` only.
#[tokio::test]
async fn client_requests_are_right_on_both_editions() {
    for edition in BOTH {
        let mut opts = EmulatorOptions::new(KEY);
        opts.edition = edition;
        let emu = spawn(opts).await.expect("emulator");
        let mut config = ClientConfig::new(emu.url(), Auth::ApiKey(ApiKey::new(KEY)));
        config.retries = 0;
        let mb = MetabaseClient::new(config).expect("client");

        let g = mb.create_group("Tenant").await.expect("group");
        let user = mb
            .create_user(&NewUser {
                email: "ada@example.com".into(),
                user_group_memberships: Some(vec![
                    MembershipRef::group(1),
                    MembershipRef::group(g.id),
                ]),
                ..NewUser::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{edition:?}: {e}"));
        let groups: Vec<i64> = user
            .user_group_memberships
            .unwrap_or_default()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(groups, vec![1, g.id]);
        let memberships = mb.list_memberships().await.expect("memberships");
        assert_eq!(memberships[&user.id.to_string()].len(), 2);

        let data = mb.data_graph_for_group(g.id).await.expect("slice");
        let mut body = DataGraph {
            revision: data.revision,
            ..DataGraph::default()
        };
        body.groups.insert(
            Id(g.id),
            [(
                Id(1),
                DbPerms {
                    view_data: Some(Granular::All(ViewData::Unrestricted)),
                    ..DbPerms::default()
                },
            )]
            .into(),
        );
        let skipped = mb
            .put_data_graph(&body, DataGraphPut::SkipGraph)
            .await
            .expect("data PUT");
        assert!(skipped.groups.is_empty(), "{edition:?}: {{revision}} only");
        let coll = mb.collection_graph().await.expect("graph");
        let mut cbody = CollectionGraph {
            revision: coll.revision,
            ..CollectionGraph::default()
        };
        cbody.groups.insert(
            Id(g.id),
            [(CollectionKey::Root, CollectionAccess::Read)].into(),
        );
        mb.put_collection_graph(&cbody)
            .await
            .expect("collection PUT");

        let c = mb
            .create_collection(&NewCollection {
                name: "Tenant".into(),
                description: None,
                parent_id: None,
                namespace: None,
            })
            .await
            .expect("collection");
        let CollectionKey::Id(cid) = c.id else {
            panic!("root")
        };
        mb.archive_collection(cid).await.expect("archive");
        let renamed = mb
            .update_collection(cid, &CollectionUpdate::rename("Renamed", true))
            .await
            .expect("rename");
        assert!(renamed.archived, "a rename keeps the archived state");

        let requests: Value = reqwest::Client::new()
            .get(format!("{}/_emulator/requests", emu.url()))
            .header("x-api-key", KEY)
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("json");
        let puts: Vec<&Value> = requests
            .as_array()
            .or_else(|| requests["requests"].as_array())
            .expect("a list")
            .iter()
            .filter(|r| {
                r["method"] == "PUT" && r["path"].as_str().is_some_and(|p| p.ends_with("/graph"))
            })
            .collect();
        assert_eq!(puts.len(), 2, "{requests}");
        for p in puts {
            assert_eq!(p["query"], json!("skip-graph=true"), "{p}");
        }
    }
}

/// Correction 9 as the client sees it: a 500 on a creating POST (concurrent collection
/// creates) and on a graph PUT (metabase#73249 "Failed to obtain cluster lock") are transient,
/// so the job is retried rather than dead-lettered. The emulator serialises requests, so the
/// 500 is injected.
#[tokio::test]
async fn server_errors_on_creates_and_graph_writes_are_transient() {
    use mbprov::error::{Classify, ErrorClass};
    let emu = spawn(EmulatorOptions::new(KEY)).await.expect("emulator");
    let mut config = ClientConfig::new(emu.url(), Auth::ApiKey(ApiKey::new(KEY)));
    config.retries = 0;
    let mb = MetabaseClient::new(config).expect("client");
    let http = reqwest::Client::new();
    for (method, path) in [
        ("POST", "/api/collection"),
        ("PUT", "/api/collection/graph"),
    ] {
        http.post(format!("{}/_emulator/faults", emu.url()))
            .header("x-api-key", KEY)
            .json(&json!({"fail": {"method": method, "path": path, "status": 500}}))
            .send()
            .await
            .expect("faults");
        let err = if method == "POST" {
            mb.create_collection(&NewCollection {
                name: "X".into(),
                description: None,
                parent_id: None,
                namespace: None,
            })
            .await
            .map(|_| ())
        } else {
            mb.put_collection_graph(&CollectionGraph::default())
                .await
                .map(|_| ())
        }
        .expect_err("an injected 500");
        assert_eq!(
            (err.status(), err.class()),
            (Some(500), ErrorClass::Transient),
            "{path}"
        );
    }
}
