//! What the in-process graph-writer tests share: the emulator, a Metabase client, a store on a
//! prefix of their own (its Redis keys deleted on drop, even when the test panics), the writer's
//! settings, and the emulator's control routes.

use std::time::Duration;

use mbprov::emulator::{EmulatorOptions, RunningEmulator, spawn};
use mbprov::graph::Features;
use mbprov::graph_writer::{GraphWriter, WriterConfig};
use mbprov::lock::LockGuard;
use mbprov::metabase::models::Version;
use mbprov::metabase::{ApiKey, Auth, ClientConfig, MetabaseClient};
use mbprov::store::JobStore;
use serde_json::Value;

pub const KEY: &str = "writer-key";

pub struct WriterEnv {
    pub mb: MetabaseClient,
    pub store: JobStore,
    pub url: String,
    pub prefix: String,
    _emu: RunningEmulator,
}

impl Drop for WriterEnv {
    fn drop(&mut self) {
        crate::support::delete_redis_prefix(&self.prefix);
    }
}

/// A fresh emulator and a store on a new prefix starting with `tag`.
pub async fn writer_env(tag: &str) -> WriterEnv {
    let emu = spawn(EmulatorOptions::new(KEY)).await.unwrap();
    let mb =
        MetabaseClient::new(ClientConfig::new(emu.url(), Auth::ApiKey(ApiKey::new(KEY)))).unwrap();
    let prefix = format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let store = JobStore::connect(&crate::support::redis_url(), &prefix)
        .await
        .unwrap();
    WriterEnv {
        url: emu.url(),
        mb,
        store,
        prefix,
        _emu: emu,
    }
}

/// The writer's settings for a v0.56.3 instance, writing at once (no linger).
pub fn writer_config(lock_ttl: Duration, lock_budget: Duration) -> WriterConfig {
    WriterConfig {
        features: Features::default(),
        version: Some(Version {
            major: 56,
            minor: 3,
        }),
        admin_group: 2,
        lock_ttl,
        lock_wait: Duration::from_secs(20),
        batch_linger: Duration::ZERO,
        lock_budget,
    }
}

/// Takes the graph's lock as another replica would, so that changes queue behind it.
pub async fn hold_graph_lock(store: &JobStore, graph: &str) -> LockGuard {
    store
        .graph_lock(graph, Duration::from_secs(5))
        .acquire(Duration::from_secs(5))
        .await
        .unwrap()
}

/// The emulator's counters (`GET /_emulator/stats`).
pub async fn stats(url: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/_emulator/stats"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn data_puts(url: &str) -> u64 {
    stats(url).await["graph_puts"]["data"].as_u64().unwrap()
}

/// `POST /_emulator/faults`.
pub async fn faults(url: &str, body: Value) {
    let answer = reqwest::Client::new()
        .post(format!("{url}/_emulator/faults"))
        .header("x-api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "faults: {}", answer.status());
}

/// Yields until `backlog(writer)` (changes queued, not yet taken) is `n`, for at most 10 s.
pub async fn wait_for_backlog(
    writer: &GraphWriter,
    n: usize,
    backlog: impl Fn(&GraphWriter) -> usize,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while backlog(writer) != n {
        assert!(
            std::time::Instant::now() < deadline,
            "backlog never reached {n}"
        );
        tokio::task::yield_now().await;
    }
}
