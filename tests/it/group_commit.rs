//! Group commit across replicas, in-process: two graph writers sharing one Redis prefix stand
//! for two replicas. Whoever holds the graph's lock writes every queued change, its own and the
//! other's, in one PUT; a change refused by Metabase fails only its own job, on whichever
//! replica it runs; a change whose job has gone is still written by the next holder.

use std::time::Duration;

use mbprov::error::{Classify, ErrorClass};
use mbprov::graph::access::db_perms;
use mbprov::graph::{DataAccess, DataChange, Features};
use mbprov::graph_writer::{GraphWriter, TenantCollection, WriteError};
use mbprov::jobs::policy::BuiltinGroups;
use mbprov::metabase::models::*;
use mbprov::metabase::{ApiKey, Auth, ClientConfig, MetabaseClient};
use mbprov::store::JobStore;

use crate::writer_support::{
    WriterEnv, data_puts, faults, hold_graph_lock, writer_config, writer_env,
};

/// Two replicas' writers on one prefix, each with its own Redis connection, as two processes.
struct Replicas {
    a: GraphWriter,
    b: GraphWriter,
    env: WriterEnv,
}

async fn replicas() -> Replicas {
    replicas_with_ttl(Duration::from_secs(5)).await
}

async fn replicas_with_ttl(lock_ttl: Duration) -> Replicas {
    let env = writer_env("gc").await;
    let config = writer_config(lock_ttl, Duration::from_secs(20));
    let other = JobStore::connect(&crate::support::redis_url(), &env.prefix)
        .await
        .unwrap();
    Replicas {
        a: GraphWriter::start(env.mb.clone(), env.store.clone(), config.clone()),
        b: GraphWriter::start(env.mb.clone(), other, config),
        env,
    }
}

/// Yields until `writer` has `n` data changes queued and untaken, for at most 10 s.
async fn queued(writer: &GraphWriter, n: usize) {
    crate::writer_support::wait_for_backlog(writer, n, GraphWriter::data_backlog).await;
}

type Job = tokio::task::JoinHandle<Result<(), WriteError>>;

fn write(writer: &GraphWriter, change: DataChange) -> Job {
    let w = writer.clone();
    tokio::spawn(async move { w.write_data(change).await })
}

fn view(group: i64, db: i64) -> DataChange {
    DataChange::set(
        group,
        db,
        db_perms(DataAccess::ViewOnly, Features::default()),
    )
}

fn query(group: i64, db: i64) -> DataChange {
    DataChange::set(
        group,
        db,
        db_perms(DataAccess::QueryBuilderAndNative, Features::default()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_holder_writes_every_replicas_changes_in_one_put_and_the_later_wins() {
    let r = replicas().await;
    let g = r.env.mb.create_group("Shared").await.unwrap().id;
    let h = r.env.mb.create_group("Other").await.unwrap().id;
    let before = data_puts(&r.env.url).await;
    let lock = hold_graph_lock(&r.env.store, "data").await;
    // Arrival order across the replicas: a, b, then a again on the same cell as its first.
    let a1 = write(&r.a, query(g, 1));
    queued(&r.a, 1).await;
    let b1 = write(&r.b, view(h, 2));
    queued(&r.b, 1).await;
    let a2 = write(&r.a, view(g, 1));
    queued(&r.a, 2).await;
    lock.release().await.unwrap();
    for job in [a1, b1, a2] {
        job.await.unwrap().unwrap();
    }
    assert_eq!(
        data_puts(&r.env.url).await - before,
        1,
        "one PUT for both replicas"
    );
    assert_eq!(
        r.a.data_batches() + r.b.data_batches(),
        1,
        "one holder wrote them all"
    );
    let cell = &r.env.mb.data_graph_for_group(g).await.unwrap().groups[&Id(g)][&Id(1)];
    assert_eq!(cell.create_queries, None, "the later change wins: {cell:?}");
    assert_eq!(cell.view_data, Some(Granular::All(ViewData::Unrestricted)));
    let other = &r.env.mb.data_graph_for_group(h).await.unwrap().groups[&Id(h)][&Id(2)];
    assert_eq!(other.view_data, Some(Granular::All(ViewData::Unrestricted)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_refused_by_metabase_fails_only_its_own_job_on_its_own_replica() {
    let r = replicas().await;
    let good = r.env.mb.create_group("Good").await.unwrap().id;
    let bad = r.env.mb.create_group("Bad").await.unwrap().id;
    // Blocked view with native queries: Metabase refuses it with a 400.
    let invalid = DataChange {
        groups: std::collections::BTreeMap::from([(
            Id(bad),
            std::collections::BTreeMap::from([(
                Id(1),
                DbPerms {
                    view_data: Some(Granular::All(ViewData::Blocked)),
                    create_queries: Some(Granular::All(CreateQueries::QueryBuilderAndNative)),
                    ..DbPerms::default()
                },
            )]),
        )]),
        sandboxes: vec![],
    };
    let lock = hold_graph_lock(&r.env.store, "data").await;
    let a1 = write(&r.a, view(good, 1));
    queued(&r.a, 1).await;
    let b1 = write(&r.b, invalid);
    queued(&r.b, 1).await;
    let a2 = write(&r.a, view(good, 2));
    queued(&r.a, 2).await;
    lock.release().await.unwrap();
    a1.await.unwrap().unwrap();
    a2.await.unwrap().unwrap();
    let refused = b1.await.unwrap().unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Permanent, "{refused}");
    assert!(refused.to_string().contains("400"), "{refused}");
    let slice = r.env.mb.data_graph_for_group(good).await.unwrap();
    assert!(slice.groups[&Id(good)].contains_key(&Id(2)), "{slice:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_job_is_gone_is_written_by_the_next_holder() {
    let r = replicas().await;
    let g = r.env.mb.create_group("Orphan").await.unwrap().id;
    let h = r.env.mb.create_group("Survivor").await.unwrap().id;
    let lock = hold_graph_lock(&r.env.store, "data").await;
    // Replica a queues a change, then its job is dropped (a crash, or its deadline).
    let orphan = write(&r.a, view(g, 1));
    queued(&r.a, 1).await;
    orphan.abort();
    assert!(orphan.await.unwrap_err().is_cancelled());
    queued(&r.a, 0).await;
    let before = data_puts(&r.env.url).await;
    let survivor = write(&r.b, view(h, 1));
    queued(&r.b, 1).await;
    lock.release().await.unwrap();
    survivor.await.unwrap().unwrap();
    assert_eq!(data_puts(&r.env.url).await - before, 1, "written together");
    // Either replica may have held the lock next (a's writer was already asking for it).
    assert_eq!(
        r.a.data_batches() + r.b.data_batches(),
        1,
        "one batch carried both"
    );
    let cell = &r.env.mb.data_graph_for_group(g).await.unwrap().groups[&Id(g)][&Id(1)];
    assert_eq!(cell.view_data, Some(Granular::All(ViewData::Unrestricted)));
}

/// A holder that created a new tenant's collection and then lost its lock (a crash, a pause)
/// leaves the change queued; whoever writes it next looks the collection up by its marker
/// instead of trusting "new tenant" again, so there is one collection, granted and isolated.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_that_dies_after_creating_a_collection_leaves_no_second_one() {
    // A short ttl: the holder learns it lost the lock within a few hundred milliseconds.
    let r = replicas_with_ttl(Duration::from_millis(600)).await;
    let g = r.env.mb.create_group("Tenant: crash").await.unwrap().id;
    let builtin = BuiltinGroups {
        all_users: 1,
        admin: 2,
        all: [1, 2].into(),
    };
    let work = || {
        TenantCollection::new(
            "crash".into(),
            "Crash Dashboards".into(),
            None,
            g,
            CollectionAccess::Read,
            true,
            builtin.clone(),
        )
        .new_tenant(true)
    };
    // The collection is created, then every graph write conflicts (retried under the lock).
    faults(
        &r.env.url,
        serde_json::json!({"fail": {"method": "PUT", "path": "/api/collection/graph", "status": 500}}),
    )
    .await;
    let w = r.a.clone();
    let job = {
        let t = work();
        tokio::spawn(async move { w.provision_tenant_collection(t).await })
    };
    let named = |list: Vec<Collection>| {
        list.into_iter()
            .filter(|c| c.name == "Crash Dashboards")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while named(r.env.mb.list_collections(false).await.unwrap()) == 0 {
        assert!(std::time::Instant::now() < deadline, "never created");
        tokio::task::yield_now().await;
    }
    // Taken over mid-write, as when the holder stalls past its ttl or dies: it gives the
    // batch up, queued (its job waits on), while the fault still fails its write.
    let key = format!("{}:lock:graph:collection", r.env.prefix);
    let mut conn = r.env.store.connection();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("intruder")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    while r.a.collection_backlog() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch was never given up"
        );
        tokio::task::yield_now().await;
    }
    faults(&r.env.url, serde_json::json!({"fail": null})).await;
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The queued change is written again by the next holder (here its own replica's writer).
    let first = job.await.unwrap().unwrap();
    // The other replica's job of the same tenant (a redelivery) finds the same one.
    let other =
        r.b.provision_tenant_collection(work().new_tenant(false))
            .await
            .unwrap();
    assert_eq!(first, other, "one collection for both");
    assert_eq!(
        named(r.env.mb.list_collections(false).await.unwrap()),
        1,
        "made once"
    );
    let graph = r.env.mb.collection_graph().await.unwrap();
    assert_eq!(
        graph.access(g, CollectionKey::Id(first)),
        CollectionAccess::Read
    );
    assert_eq!(
        graph.access(1, CollectionKey::Id(first)),
        CollectionAccess::None,
        "isolated"
    );
}

/// `mbprov status` counts the changes queued for each graph, whichever replica queued them.
#[tokio::test(flavor = "multi_thread")]
async fn status_counts_the_graph_changes_queued_for_the_lock_holder() {
    let stack = crate::support::Stack::start().await;
    let mb = MetabaseClient::new(ClientConfig::new(
        stack.emulator_url.clone(),
        Auth::ApiKey(ApiKey::new(crate::support::API_KEY)),
    ))
    .unwrap();
    let store = JobStore::connect(&crate::support::redis_url(), &stack.prefix)
        .await
        .unwrap();
    let writer = GraphWriter::start(
        mb.clone(),
        store.clone(),
        writer_config(Duration::from_secs(5), Duration::from_secs(20)),
    );
    let queued_now = |out: std::process::Output| {
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        doc["graph_changes_queued"].clone()
    };
    let g = mb.create_group("Waiting").await.unwrap().id;
    let lock = hold_graph_lock(&store, "data").await;
    let job = write(&writer, view(g, 1));
    queued(&writer, 1).await;
    let during = queued_now(stack.run(&["status", "--json"]).await);
    assert_eq!(during, serde_json::json!({"data": 1, "collection": 0}));
    lock.release().await.unwrap();
    job.await.unwrap().unwrap();
    let after = queued_now(stack.run(&["status", "--json"]).await);
    assert_eq!(after, serde_json::json!({"data": 0, "collection": 0}));
    stack.teardown().await;
}
