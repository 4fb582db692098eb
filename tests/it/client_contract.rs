//! Every client call against the emulator, and the documented error paths as the client sees
//! them: the status, Metabase's message, and the one classification callers branch on.

use std::collections::BTreeMap;

use mbprov::emulator::{EmulatorOptions, RunningEmulator, spawn};
use mbprov::error::{Classify, ErrorClass};
use mbprov::metabase::models::*;
use mbprov::metabase::{
    ApiKey, Auth, ClientConfig, DataGraphPut, MetabaseClient, MetabaseError, UserQuery,
};
use serde_json::json;

const KEY: &str = "contract-key";

async fn start(oss: bool) -> (RunningEmulator, MetabaseClient) {
    let mut opts = EmulatorOptions::new(KEY);
    opts.oss = oss;
    let emu = spawn(opts).await.expect("emulator");
    let mut config = ClientConfig::new(emu.url(), Auth::ApiKey(ApiKey::new(KEY)));
    config.retries = 0;
    let mb = MetabaseClient::new(config).expect("client");
    (emu, mb)
}

fn status(e: &MetabaseError) -> (u16, ErrorClass) {
    (e.status().expect("an HTTP error"), e.class())
}

#[tokio::test]
async fn users_round_trip_and_their_errors_classify() {
    let (_emu, mb) = start(false).await;
    let props = mb.session_properties().await.unwrap();
    assert_eq!(
        props.version.parsed(),
        // The emulator's default: the newest release known.
        Some(Version {
            major: 64,
            minor: 0
        })
    );
    assert!(props.has_feature("sandboxes"));
    assert_eq!(mb.health().await.unwrap().status, "ok");
    assert!(mb.current_user().await.unwrap().is_superuser);

    let new = NewUser {
        email: "Jane@Example.com".into(),
        first_name: Some("Jane".into()),
        last_name: None,
        user_group_memberships: Some(vec![MembershipRef::group(1)]),
        login_attributes: Some(BTreeMap::from([("n".to_string(), json!(5))])),
    };
    let jane = mb.create_user(&new).await.unwrap();
    assert_eq!(jane.email, "jane@example.com");
    assert_eq!(jane.login_attributes.as_ref().unwrap()["n"], json!("5"));

    let dup = mb.create_user(&new).await.unwrap_err();
    assert_eq!(status(&dup), (400, ErrorClass::Permanent));
    assert!(dup.is_duplicate(), "{dup}");
    assert_eq!(dup.message(), Some("email: Email address already in use."));

    let no_all_users = NewUser {
        email: "x@example.com".into(),
        user_group_memberships: Some(vec![]),
        ..NewUser::default()
    };
    let e = mb.create_user(&no_all_users).await.unwrap_err();
    assert_eq!(
        e.message(),
        Some("You cannot add or remove users to/from the 'All Users' group.")
    );

    let found = mb
        .find_user_by_email("JANE@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, jane.id);
    assert!(
        mb.find_user_by_email("jan@example.com")
            .await
            .unwrap()
            .is_none(),
        "substring is not a match"
    );
    let list = mb
        .list_users(&UserQuery {
            limit: Some(1),
            ..UserQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((list.data.len(), list.limit), (1, Some(1)));

    let updated = mb
        .update_user(
            jane.id,
            &UserUpdate {
                last_name: Some("Doe".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.last_name.as_deref(), Some("Doe"));
    assert_eq!(
        mb.get_user(jane.id)
            .await
            .unwrap()
            .user_group_memberships
            .unwrap(),
        vec![MembershipRef::group(1)]
    );

    let again = mb.reactivate_user(jane.id).await.unwrap_err();
    assert_eq!(
        again.message(),
        Some("Not able to reactivate an active user")
    );
    mb.deactivate_user(jane.id).await.unwrap();
    mb.deactivate_user(jane.id).await.unwrap();
    let gone = mb
        .update_user(jane.id, &UserUpdate::default())
        .await
        .unwrap_err();
    assert_eq!(status(&gone), (404, ErrorClass::Permanent));
    assert!(gone.is_not_found());
    assert!(mb.reactivate_user(jane.id).await.unwrap().is_active);
    assert_eq!(
        status(&mb.get_user(9999).await.unwrap_err()),
        (404, ErrorClass::Permanent)
    );
}

#[tokio::test]
async fn groups_and_memberships() {
    let (_emu, mb) = start(false).await;
    let groups = mb.list_groups().await.unwrap();
    assert!(
        groups
            .iter()
            .any(|g| g.magic_group_type.as_deref() == Some(MAGIC_ALL_USERS) && g.is_magic())
    );
    let g = mb.create_group("Tenant: 1").await.unwrap();
    let dup = mb.create_group("TENANT: 1").await.unwrap_err();
    assert!(dup.is_duplicate());
    assert_eq!(
        dup.message(),
        Some("A group with that name already exists.")
    );
    let members = mb.add_membership(g.id, 1).await.unwrap();
    assert_eq!(members.len(), 1);
    let group = mb.get_group(g.id).await.unwrap();
    let m = &group.members.unwrap()[0];
    assert_eq!(m.user_id, 1);
    let all = mb.list_memberships().await.unwrap();
    assert!(all["1"].iter().any(|x| x.membership_id == m.membership_id));
    mb.delete_membership(m.membership_id).await.unwrap();
    assert!(
        mb.delete_membership(m.membership_id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let magic = mb.delete_group(2).await.unwrap_err();
    assert_eq!(
        magic.message(),
        Some("You cannot edit or delete the 'Administrators' permissions group!")
    );
    mb.delete_group(g.id).await.unwrap();
}

#[tokio::test]
async fn data_graph_partial_writes_are_fenced_by_the_revision() {
    let (_emu, mb) = start(false).await;
    let g = mb.create_group("Analysts").await.unwrap();
    let whole = mb.data_graph().await.unwrap();
    let slice = mb.data_graph_for_group(g.id).await.unwrap();
    assert_eq!(slice.revision, whole.revision);
    assert!(
        mb.data_graph_for_db(1)
            .await
            .unwrap()
            .groups
            .contains_key(&Id(1))
    );

    let perms = DbPerms {
        create_queries: Some(Granular::All(CreateQueries::No)),
        ..DbPerms::default()
    };
    let mut body = DataGraph {
        revision: slice.revision,
        ..DataGraph::default()
    };
    body.groups
        .insert(Id(g.id), BTreeMap::from([(Id(1), perms)]));
    let answer = mb
        .put_data_graph(&body, DataGraphPut::ReturnGroups)
        .await
        .unwrap();
    assert_eq!(answer.revision, slice.revision + 1);
    assert_eq!(
        answer.groups.keys().copied().collect::<Vec<_>>(),
        vec![Id(g.id)],
        "only the submitted group"
    );

    let stale = mb
        .put_data_graph(&body, DataGraphPut::SkipGraph)
        .await
        .unwrap_err();
    assert_eq!(status(&stale), (409, ErrorClass::Transient));
    assert!(stale.is_conflict());
    assert_eq!(
        stale.message(),
        Some(
            "Looks like someone else edited the permissions and your data is out of date. Please fetch new data and try again."
        )
    );
    body.revision = answer.revision;
    let skipped = mb
        .put_data_graph(&body, DataGraphPut::SkipGraph)
        .await
        .unwrap();
    assert!(skipped.groups.is_empty());

    let mut invalid = body.clone();
    invalid.revision = skipped.revision;
    invalid.groups.get_mut(&Id(g.id)).unwrap().insert(
        Id(1),
        DbPerms {
            view_data: Some(Granular::All(ViewData::Blocked)),
            create_queries: Some(Granular::All(CreateQueries::QueryBuilderAndNative)),
            ..DbPerms::default()
        },
    );
    let e = mb
        .put_data_graph(&invalid, DataGraphPut::SkipGraph)
        .await
        .unwrap_err();
    assert_eq!(status(&e), (400, ErrorClass::Permanent));
    assert!(
        e.message()
            .unwrap()
            .starts_with("Cannot parse permissions graph because it is invalid")
    );
}

#[tokio::test]
async fn oss_refuses_blocked_with_402() {
    let (_emu, mb) = start(true).await;
    assert!(
        !mb.session_properties()
            .await
            .unwrap()
            .has_feature("advanced_permissions")
    );
    let g = mb.create_group("T").await.unwrap();
    let rev = mb.data_graph_for_group(g.id).await.unwrap().revision;
    let mut body = DataGraph {
        revision: rev,
        ..DataGraph::default()
    };
    body.groups.insert(
        Id(g.id),
        BTreeMap::from([(
            Id(1),
            DbPerms {
                view_data: Some(Granular::All(ViewData::Blocked)),
                ..DbPerms::default()
            },
        )]),
    );
    let e = mb
        .put_data_graph(&body, DataGraphPut::SkipGraph)
        .await
        .unwrap_err();
    assert_eq!(status(&e), (402, ErrorClass::Permanent));
}

#[tokio::test]
async fn collections_and_their_graph() {
    let (_emu, mb) = start(false).await;
    let before = mb.collection_graph().await.unwrap();
    let a = mb
        .create_collection(&NewCollection {
            name: "Acme".into(),
            description: None,
            parent_id: Some(2),
            namespace: None,
        })
        .await
        .unwrap();
    let b = mb
        .create_collection(&NewCollection {
            name: "Acme".into(),
            description: None,
            parent_id: Some(2),
            namespace: None,
        })
        .await
        .unwrap();
    assert_ne!(a.id, b.id, "collection names are not unique");
    assert_eq!(a.parent_id(), Some(2));
    let CollectionKey::Id(aid) = a.id else {
        panic!("root?")
    };
    let graph = mb.collection_graph().await.unwrap();
    assert!(
        graph.revision > before.revision,
        "creating copies the parent's cells and bumps the revision"
    );
    assert_eq!(
        graph.access(1, CollectionKey::Id(aid)),
        CollectionAccess::Write,
        "inherited from Shared"
    );
    assert_eq!(mb.child_collections(2).await.unwrap().len(), 2);
    assert!(
        mb.list_collections(false)
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == CollectionKey::Root)
    );

    let mut body = CollectionGraph {
        revision: graph.revision,
        ..CollectionGraph::default()
    };
    body.groups.insert(
        Id(1),
        BTreeMap::from([(CollectionKey::Id(aid), CollectionAccess::None)]),
    );
    let rev = mb.put_collection_graph(&body).await.unwrap();
    assert_eq!(rev.revision, graph.revision + 1);
    assert_eq!(
        mb.collection_graph()
            .await
            .unwrap()
            .access(1, CollectionKey::Id(aid)),
        CollectionAccess::None
    );
    let stale = mb.put_collection_graph(&body).await.unwrap_err();
    assert_eq!(status(&stale), (409, ErrorClass::Transient));
    let mut admin = CollectionGraph {
        revision: rev.revision,
        ..CollectionGraph::default()
    };
    admin.groups.insert(
        Id(2),
        BTreeMap::from([(CollectionKey::Id(aid), CollectionAccess::Read)]),
    );
    assert_eq!(
        mb.put_collection_graph(&admin).await.unwrap_err().message(),
        Some("You cannot create or revoke permissions for the 'Admin' group.")
    );

    let archived = mb.archive_collection(aid).await.unwrap();
    assert!(archived.archived);
    assert!(mb.get_collection(aid).await.unwrap().archived);
    assert!(mb.get_collection(9999).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn tables_and_sandboxes() {
    let (_emu, mb) = start(false).await;
    let t = mb.get_table(10).await.unwrap();
    assert_eq!((t.db_id, t.graph_schema()), (1, "PUBLIC"));
    assert!(
        mb.table_metadata(10)
            .await
            .unwrap()
            .fields
            .unwrap()
            .iter()
            .any(|f| f.id == 101)
    );
    assert_eq!(mb.list_databases().await.unwrap().len(), 2);
    assert!(
        mb.database_metadata(2)
            .await
            .unwrap()
            .tables
            .unwrap()
            .iter()
            .any(|t| t.id == 20)
    );

    let g = mb.create_group("Sandboxed").await.unwrap();
    let s = mb
        .create_sandbox(&Sandbox::filter_by_attribute(
            g.id,
            10,
            "organization_id",
            101,
        ))
        .await
        .unwrap();
    let listed = mb.list_sandboxes(Some(g.id)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].attribute_remappings["organization_id"],
        field_target(101)
    );
    mb.delete_sandbox(s.id.unwrap()).await.unwrap();
    assert!(mb.list_sandboxes(Some(g.id)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_an_authentication_401_and_outages_are_transient() {
    let (emu, mb) = start(false).await;
    let wrong = mb.with_auth(Auth::ApiKey(ApiKey::new("nope")));
    let e = wrong.list_groups().await.unwrap_err();
    assert_eq!(status(&e), (401, ErrorClass::Authentication));
    assert_eq!(e.message(), Some("Unauthenticated"));
    assert!(!e.to_string().contains("nope") && !e.to_string().contains(KEY));

    reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.url()))
        .header("x-api-key", KEY)
        .json(&json!({"outage": true}))
        .send()
        .await
        .unwrap();
    let down = mb.list_groups().await.unwrap_err();
    assert_eq!(status(&down), (503, ErrorClass::Transient));

    let nowhere = MetabaseClient::new(ClientConfig {
        retries: 0,
        ..ClientConfig::new("http://127.0.0.1:1", Auth::ApiKey(ApiKey::new(KEY)))
    })
    .unwrap();
    let refused = nowhere.health().await.unwrap_err();
    assert!(
        matches!(refused, MetabaseError::NotSent { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.class(), ErrorClass::Transient);
}
