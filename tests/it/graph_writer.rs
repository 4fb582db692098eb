//! The coalescing graph writer in-process, against the emulator and the real Redis: changes that
//! wait together are merged into one write in arrival order, and a bad change fails alone.

use std::collections::BTreeMap;
use std::time::Duration;

use mbprov::error::{Classify, ErrorClass};
use mbprov::graph::access::db_perms;
use mbprov::graph::{CollectionOp, DataAccess, DataChange, Features};
use mbprov::graph_writer::{GraphWriter, TenantCollection, WriteError};
use mbprov::jobs::policy::BuiltinGroups;
use mbprov::metabase::MetabaseClient;
use mbprov::metabase::models::*;
use mbprov::store::JobStore;
use serde_json::json;

use crate::writer_support::{
    KEY, WriterEnv, data_puts, faults, hold_graph_lock, stats, writer_config, writer_env,
};

struct Setup {
    mb: MetabaseClient,
    store: JobStore,
    writer: GraphWriter,
    url: String,
    _env: WriterEnv,
}

async fn setup() -> Setup {
    setup_with_budget(Duration::from_secs(20)).await
}

async fn setup_with_budget(lock_budget: Duration) -> Setup {
    let env = writer_env("gw").await;
    let writer = GraphWriter::start(
        env.mb.clone(),
        env.store.clone(),
        writer_config(Duration::from_secs(5), lock_budget),
    );
    Setup {
        mb: env.mb.clone(),
        store: env.store.clone(),
        url: env.url.clone(),
        writer,
        _env: env,
    }
}

async fn wait_for_backlog(s: &Setup, n: usize) {
    crate::writer_support::wait_for_backlog(&s.writer, n, GraphWriter::data_backlog).await;
}

async fn wait_for_collection_backlog(s: &Setup, n: usize) {
    crate::writer_support::wait_for_backlog(&s.writer, n, GraphWriter::collection_backlog).await;
}

/// Submits `first` then `changes` so that they wait together, in this order: the graph lock is
/// held while they queue, then released, and the writer takes them all as one batch.
async fn submit_together(
    s: &Setup,
    first: DataChange,
    changes: Vec<DataChange>,
) -> Vec<Result<(), mbprov::graph_writer::WriteError>> {
    let guard = hold_graph_lock(&s.store, "data").await;
    let w = s.writer.clone();
    let head = tokio::spawn(async move { w.write_data(first).await });
    wait_for_backlog(s, 1).await;
    let mut tasks = Vec::new();
    for (i, c) in changes.into_iter().enumerate() {
        let w = s.writer.clone();
        tasks.push(tokio::spawn(async move { w.write_data(c).await }));
        wait_for_backlog(s, i + 2).await;
    }
    assert_eq!(
        s.writer.data_batches(),
        0,
        "nothing written while the lock is held"
    );
    guard.release().await.unwrap();
    head.await.unwrap().unwrap();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_waiting_together_merge_into_one_write_and_the_later_wins() {
    let s = setup().await;
    let g = s.mb.create_group("Contended").await.unwrap().id;
    let other = s.mb.create_group("Other").await.unwrap().id;
    let before = data_puts(&s.url).await;
    let results = submit_together(
        &s,
        DataChange::set(
            other,
            2,
            db_perms(DataAccess::ViewOnly, Features::default()),
        ),
        vec![
            DataChange::set(
                g,
                1,
                db_perms(DataAccess::QueryBuilderAndNative, Features::default()),
            ),
            DataChange::set(g, 1, db_perms(DataAccess::ViewOnly, Features::default())),
        ],
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        data_puts(&s.url).await - before,
        1,
        "the three waiting changes went out as one write"
    );
    assert_eq!(s.writer.data_batches(), 1);
    let slice = s.mb.data_graph_for_group(g).await.unwrap();
    let cell = &slice.groups[&Id(g)][&Id(1)];
    // view-only means `create-queries: no`, which Metabase leaves out of its answer; had the
    // earlier change won, it would read query-builder-and-native.
    assert_eq!(cell.create_queries, None, "the later change wins: {cell:?}");
    assert_eq!(cell.view_data, Some(Granular::All(ViewData::Unrestricted)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_change_fails_alone_and_the_rest_of_its_batch_is_written() {
    let s = setup().await;
    let good = s.mb.create_group("Good").await.unwrap().id;
    let bad = s.mb.create_group("Bad").await.unwrap().id;
    let invalid = DbPerms {
        view_data: Some(Granular::All(ViewData::Blocked)),
        create_queries: Some(Granular::All(CreateQueries::QueryBuilderAndNative)),
        ..DbPerms::default()
    };
    let results = submit_together(
        &s,
        DataChange::set(good, 2, db_perms(DataAccess::ViewOnly, Features::default())),
        vec![
            DataChange {
                groups: BTreeMap::from([(Id(bad), BTreeMap::from([(Id(1), invalid)]))]),
                sandboxes: vec![],
            },
            DataChange::set(
                good,
                1,
                db_perms(DataAccess::QueryBuilder, Features::default()),
            ),
        ],
    )
    .await;
    let bad_result = results[0].as_ref().unwrap_err();
    assert_eq!(bad_result.class(), ErrorClass::Permanent, "{bad_result}");
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let slice = s.mb.data_graph_for_group(good).await.unwrap();
    assert_eq!(
        slice.groups[&Id(good)][&Id(1)].create_queries,
        Some(Granular::All(CreateQueries::QueryBuilder))
    );
}

fn builtin() -> BuiltinGroups {
    BuiltinGroups {
        all_users: 1,
        admin: 2,
        all: std::collections::BTreeSet::from([1, 2]),
    }
}

fn tenant(id: &str, name: &str, group: i64) -> TenantCollection {
    TenantCollection::new(
        id.into(),
        format!("{name} Dashboards"),
        Some(2),
        group,
        CollectionAccess::Read,
        true,
        builtin(),
    )
}

/// A tenant's collection made in a batch that then failed is not made again: the next attempt
/// finds it by its tenant marker and finishes the grant and isolation.
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_created_before_its_batch_failed_is_found_not_made_again() {
    let s = setup().await;
    let g = s.mb.create_group("Tenant: late").await.unwrap().id;
    let set = move |collection| {
        vec![CollectionOp::Set {
            group: g,
            collection,
            access: CollectionAccess::Read,
            namespace: CollectionNamespace::Default,
        }]
    };
    // Hold the lock while the three queue, so they form one batch.
    let guard = hold_graph_lock(&s.store, "collection").await;
    let w = s.writer.clone();
    let head = tokio::spawn(async move { w.write_collections(set(CollectionKey::Root)).await });
    wait_for_collection_backlog(&s, 1).await;
    let w = s.writer.clone();
    let create = tokio::spawn(async move {
        w.provision_tenant_collection(tenant("late", "Late", g))
            .await
    });
    wait_for_collection_backlog(&s, 2).await;
    let w = s.writer.clone();
    let ops = tokio::spawn(async move { w.write_collections(set(CollectionKey::Id(2))).await });
    wait_for_collection_backlog(&s, 3).await;
    // Every collection-graph write from now on conflicts: the batch fails as a whole, after
    // its collection was created.
    faults(&s.url, serde_json::json!({"fail": {"method": "PUT", "path": "/api/collection/graph", "status": 409}}),
    )
    .await;
    guard.release().await.unwrap();
    assert!(head.await.unwrap().is_err(), "the head write conflicts too");
    let failed = ops.await.unwrap().unwrap_err();
    assert_eq!(failed.class(), ErrorClass::Transient, "{failed}");
    let failed = create.await.unwrap().unwrap_err();
    assert_eq!(failed.class(), ErrorClass::Transient, "{failed}");
    assert_eq!(
        s.writer.collection_batches(),
        1,
        "one batch carried all three"
    );
    let made = s.mb.child_collections(2).await.unwrap();
    let ids = made
        .iter()
        .filter(|c| c.name == "Late Dashboards")
        .map(|c| c.id)
        .collect::<Vec<_>>();
    assert_eq!(ids.len(), 1, "created before the failure");
    faults(&s.url, serde_json::json!({"fail": null})).await;
    // The job's next attempt: found by marker (Redis forgotten too, so by listing), not made again.
    s.store
        .forget_id("tenant-collection", "late")
        .await
        .unwrap();
    let id = s
        .writer
        .provision_tenant_collection(tenant("late", "Late", g))
        .await
        .unwrap();
    assert_eq!(ids, vec![CollectionKey::Id(id)]);
    let made = s.mb.child_collections(2).await.unwrap();
    assert_eq!(
        made.iter().filter(|c| c.name == "Late Dashboards").count(),
        1,
        "made once"
    );
    let graph = s.mb.collection_graph().await.unwrap();
    assert_eq!(
        graph.access(g, CollectionKey::Id(id)),
        CollectionAccess::Read
    );
    assert_eq!(
        graph.access(1, CollectionKey::Id(id)),
        CollectionAccess::None,
        "isolated"
    );
}

async fn requests(url: &str, route: &str) -> u64 {
    stats(url).await["requests"][route].as_u64().unwrap_or(0)
}

/// Only a 400 depends on the content of a merged write; a 404 (or 401, 403, 5xx) would fail
/// every half the same way, so the batch fails as a whole without halving into more requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_merged_write_is_split_only_when_refused_with_a_400() {
    let s = setup().await;
    let a = s.mb.create_group("A").await.unwrap().id;
    let b = s.mb.create_group("B").await.unwrap().id;
    let head = s.mb.create_group("Head").await.unwrap().id;
    let perms = || db_perms(DataAccess::ViewOnly, Features::default());
    const ROUTE: &str = "PUT /api/permissions/graph";
    // The three queue together while the lock is held, then every data-graph PUT fails.
    let guard = hold_graph_lock(&s.store, "data").await;
    let w = s.writer.clone();
    let first = tokio::spawn(async move { w.write_data(DataChange::set(head, 1, perms())).await });
    wait_for_backlog(&s, 1).await;
    let mut tasks = Vec::new();
    for (i, g) in [a, b].into_iter().enumerate() {
        let w = s.writer.clone();
        tasks.push(tokio::spawn(async move {
            w.write_data(DataChange::set(g, 1, perms())).await
        }));
        wait_for_backlog(&s, i + 2).await;
    }
    faults(&s.url, serde_json::json!({"fail": {"method": "PUT", "path": "/api/permissions/graph", "status": 404}}),
    )
    .await;
    let before = requests(&s.url, ROUTE).await;
    guard.release().await.unwrap();
    let head_error = first.await.unwrap().unwrap_err();
    // A 404 does not depend on the content of the write: the three fail as one batch with
    // the same class, never split.
    assert_eq!(head_error.class(), ErrorClass::Permanent, "{head_error}");
    assert!(
        matches!(head_error, WriteError::Batch { .. }),
        "merged, not split: {head_error:?}"
    );
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(
            matches!(e, WriteError::Batch { .. }),
            "merged, not split: {e:?}"
        );
        assert_eq!(e.class(), head_error.class(), "{e}");
    }
    assert_eq!(
        requests(&s.url, ROUTE).await - before,
        1,
        "one PUT for the merged three: no halves"
    );
    faults(&s.url, serde_json::json!({"fail": null})).await;
}

/// A slow Metabase cannot keep the graph lock past the budget: the write is abandoned as
/// transient and the lock is free at once for the next writer.
#[tokio::test(flavor = "multi_thread")]
async fn time_under_the_graph_lock_is_capped_by_the_budget() {
    let s = setup_with_budget(Duration::from_millis(300)).await;
    let g = s.mb.create_group("Slow").await.unwrap().id;
    faults(&s.url, serde_json::json!({"latency_ms": 1000})).await;
    let started = std::time::Instant::now();
    let e = s
        .writer
        .write_data(DataChange::set(
            g,
            1,
            db_perms(DataAccess::ViewOnly, Features::default()),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("lock budget"), "{e}");
    // Released, not left to expire with its ttl (5 s here).
    let lock = s.store.graph_lock("data", Duration::from_secs(5));
    let guard = lock
        .acquire(Duration::ZERO)
        .await
        .expect("the lock is free");
    guard.release().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    faults(&s.url, serde_json::json!({"latency_ms": 0})).await;
}

/// Grants in two namespaces in one call: each is written in its own slice of the graph (the
/// shared one with `namespace` in the PUT body), and a grant naming a collection the namespace
/// does not hold is refused before Metabase could drop it silently.
#[tokio::test(flavor = "multi_thread")]
async fn grants_are_written_in_their_namespace_and_foreign_collections_refused() {
    let s = setup().await;
    let on = reqwest::Client::new()
        .put(format!("{}/api/setting/use-tenants", s.url))
        .header("x-api-key", KEY)
        .json(&json!({"value": true}))
        .send()
        .await
        .unwrap();
    assert!(on.status().is_success());
    let sc =
        s.mb.create_collection(&NewCollection {
            name: "Shared".into(),
            namespace: Some("shared-tenant-collection".into()),
            ..NewCollection::default()
        })
        .await
        .unwrap()
        .id;
    let g = s.mb.create_group("Curators").await.unwrap().id;
    let op = |collection, access, namespace| CollectionOp::Set {
        group: g,
        collection,
        access,
        namespace,
    };
    let (shared, default) = (
        CollectionNamespace::SharedTenant,
        CollectionNamespace::Default,
    );
    s.writer
        .write_collections(vec![
            op(sc, CollectionAccess::Write, shared),
            op(CollectionKey::Root, CollectionAccess::Read, default),
        ])
        .await
        .unwrap();
    let in_shared = s.mb.collection_graph_in(shared).await.unwrap();
    let in_default = s.mb.collection_graph().await.unwrap();
    assert_eq!(in_shared.access(g, sc), CollectionAccess::Write);
    assert_eq!(
        in_shared.access(g, CollectionKey::Root),
        CollectionAccess::None
    );
    assert_eq!(
        in_default.access(g, CollectionKey::Root),
        CollectionAccess::Read
    );
    assert_eq!(in_default.access(g, sc), CollectionAccess::None);

    // Collection 2 is the default namespace's "Shared": not a shared tenant collection.
    let refused = s
        .writer
        .write_collections(vec![op(
            CollectionKey::Id(2),
            CollectionAccess::Read,
            shared,
        )])
        .await
        .unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Permanent, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("collection 2 is not a live collection of the shared-tenant-collection"),
        "{refused}"
    );
    let after = s.mb.collection_graph_in(shared).await.unwrap();
    assert_eq!(after.revision, in_shared.revision, "nothing written");
}
