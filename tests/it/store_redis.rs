//! The job store against a real Redis (127.0.0.1:6379), each test under its own prefix.

use std::time::Duration;

use mbprov::error::{Classify, ErrorClass};
use mbprov::lock::Release;
use mbprov::store::{JobStore, StoreError};
use redis::AsyncCommands;
use tokio::time::Instant;

const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const DEADLINE: Duration = Duration::from_secs(20);

async fn store() -> JobStore {
    let prefix = format!("test-store-{}", uuid::Uuid::new_v4());
    JobStore::connect(REDIS_URL, &prefix).await.unwrap()
}

#[tokio::test]
async fn ping_answers() {
    store().await.ping().await.unwrap();
}

#[tokio::test]
async fn connect_failure_is_transient_and_hides_the_password() {
    let err = JobStore::connect("redis://:s3cret-pw@127.0.0.1:1/", "p")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Connect(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

#[tokio::test]
async fn done_jobs_are_remembered_under_the_prefix_for_seven_days() {
    let store = store().await;
    assert!(!store.is_done("job-1").await.unwrap());
    store.mark_done("job-1").await.unwrap();
    assert!(store.is_done("job-1").await.unwrap());
    assert!(!store.is_done("job-2").await.unwrap());

    let mut conn = store.connection();
    let key = format!("{}:done:job-1", store.prefix());
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    let week = 7 * 24 * 60 * 60;
    assert!(ttl > week - 60 && ttl <= week, "ttl {ttl}");
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn done_marks_expire() {
    let store = store().await.with_done_ttl(Duration::from_millis(50));
    store.mark_done("short-lived").await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while store.is_done("short-lived").await.unwrap() {
        assert!(Instant::now() < deadline, "done mark never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn ids_are_cached_per_kind_and_name() {
    let store = store().await;
    assert_eq!(store.get_id("group", "tenant: 42").await.unwrap(), None);
    store.set_id("group", "tenant: 42", 17).await.unwrap();
    store.set_id("user", "tenant: 42", 99).await.unwrap();
    assert_eq!(store.get_id("group", "tenant: 42").await.unwrap(), Some(17));
    assert_eq!(store.get_id("user", "tenant: 42").await.unwrap(), Some(99));

    store.set_id("group", "tenant: 42", 18).await.unwrap();
    assert_eq!(store.get_id("group", "tenant: 42").await.unwrap(), Some(18));

    let mut conn = store.connection();
    let raw: Option<String> = conn
        .get(format!("{}:map:group:tenant: 42", store.prefix()))
        .await
        .unwrap();
    assert_eq!(raw.as_deref(), Some("18"));

    store.forget_id("group", "tenant: 42").await.unwrap();
    assert_eq!(store.get_id("group", "tenant: 42").await.unwrap(), None);
    // Forgetting what is not cached is fine.
    store.forget_id("group", "tenant: 42").await.unwrap();
    store.forget_id("user", "tenant: 42").await.unwrap();
}

#[tokio::test]
async fn locks_use_the_contract_key_names() {
    let store = store().await;
    let p = store.prefix().to_owned();
    let ttl = Duration::from_secs(5);
    let cases = [
        (
            store.graph_lock("data", ttl),
            format!("{p}:lock:graph:data"),
        ),
        (
            store.graph_lock("collection", ttl),
            format!("{p}:lock:graph:collection"),
        ),
        (
            store.lock("group:tenant: 42", ttl),
            format!("{p}:lock:entity:group:tenant: 42"),
        ),
    ];
    let mut conn = store.connection();
    for (lock, key) in cases {
        assert_eq!(lock.key(), key);
        let guard = lock.acquire(Duration::ZERO).await.unwrap();
        let held: Option<String> = conn.get(&key).await.unwrap();
        assert_eq!(held.as_deref(), Some(guard.token()));
        assert_eq!(guard.release().await.unwrap(), Release::Released);
    }
}

#[tokio::test]
async fn stores_with_different_prefixes_do_not_see_each_other() {
    let a = store().await;
    let b = store().await;
    a.mark_done("shared-id").await.unwrap();
    a.set_id("group", "g", 1).await.unwrap();
    assert!(!b.is_done("shared-id").await.unwrap());
    assert_eq!(b.get_id("group", "g").await.unwrap(), None);
    let _held = a
        .graph_lock("data", Duration::from_secs(5))
        .acquire(Duration::ZERO)
        .await
        .unwrap();
    b.graph_lock("data", Duration::from_secs(5))
        .acquire(Duration::ZERO)
        .await
        .unwrap();
    a.forget_id("group", "g").await.unwrap();
}

fn snapshot(v: serde_json::Value) -> mbprov::graph::Snapshot {
    mbprov::graph::Snapshot::from_graph(&serde_json::from_value(v).unwrap())
}

#[tokio::test]
async fn the_collection_snapshot_moves_only_from_the_revision_it_is_at() {
    use mbprov::metabase::models::CollectionKey::{Id, Root};
    use std::collections::BTreeSet;

    let store = store().await;
    assert_eq!(store.load_snapshot(None, MAX_AGE).await.unwrap(), None);
    let whole = snapshot(serde_json::json!({"revision": 4, "groups": {
        "1": {"root": "write", "2": "read"}, "2": {"root": "write", "2": "write"}}}));
    store.replace_snapshot(&whole).await.unwrap();
    assert_eq!(
        store.load_snapshot(None, MAX_AGE).await.unwrap(),
        Some(whole.clone())
    );

    // Only the asked-for rows come back; a row with no cells is simply empty.
    let some = store
        .load_snapshot(Some(&BTreeSet::from([Id(2), Id(9)])), MAX_AGE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(some.revision, 4);
    assert_eq!(some.rows.keys().collect::<Vec<_>>(), vec![&Id(2)]);

    // A new collection 9 under 2, then All Users' copy revoked.
    let mut next = some.clone();
    next.created(9, Id(2));
    let body =
        serde_json::from_value(serde_json::json!({"1": {"9": "none", "2": "none"}})).unwrap();
    let changed = next.apply(&body);
    assert_eq!(next.revision, 6);
    assert!(
        store
            .advance_snapshot(4, &next, &changed.iter().copied().chain([Id(9)]).collect())
            .await
            .unwrap()
    );
    // A writer that still thinks the snapshot is at 4 (it lost its lock) changes nothing.
    let mut late = some.clone();
    late.apply(&serde_json::from_value(serde_json::json!({"5": {"2": "write"}})).unwrap());
    assert!(
        !store
            .advance_snapshot(4, &late, &BTreeSet::from([Id(2)]))
            .await
            .unwrap()
    );

    let stored = store.load_snapshot(None, MAX_AGE).await.unwrap().unwrap();
    assert_eq!(stored.revision, 6);
    assert_eq!(
        serde_json::to_value(stored.graph().groups).unwrap(),
        serde_json::json!({"1": {"root": "write"}, "2": {"root": "write", "2": "write", "9": "write"}})
    );
    assert!(stored.rows.contains_key(&Root));

    // A snapshot older than the age a writer trusts is none at all.
    let mut conn = store.connection();
    let key = format!("{}:graph:collection:rows", store.prefix());
    let taken_at: u64 = conn.hget(&key, "taken_at").await.unwrap();
    let _: () = conn.hset(&key, "taken_at", taken_at - 3_600).await.unwrap();
    assert_eq!(store.load_snapshot(None, MAX_AGE).await.unwrap(), None);
    assert!(
        store
            .load_snapshot(None, Duration::from_secs(7_200))
            .await
            .unwrap()
            .is_some()
    );

    store.forget_snapshot().await.unwrap();
    assert_eq!(store.load_snapshot(None, MAX_AGE).await.unwrap(), None);
}

const MAX_AGE: Duration = Duration::from_secs(600);
