//! One scenario's moving parts: the in-process emulator, one real `mbprov worker` process, the
//! broker connection that publishes, and Redis, all under a fresh prefix that is removed after.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use mbprov::config::RetryDelays;
use mbprov::emulator::{EmulatorOptions, RunningEmulator};
use mbprov::queue::Broker;
use mbprov::queue::retry::RetryPolicy;
use mbprov::queue::topology::Topology;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const API_KEY: &str = "mb_bench_key_5ecr3t";

/// Retries should not happen in a healthy run; the tiers only need to match the worker's.
const RETRY_DELAYS: &str = "1s,5s,30s";

/// What the bench needs from its surroundings; every address is on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Env {
    pub bin: PathBuf,
    pub amqp_url: String,
    pub redis_url: String,
    pub latency_ms: u64,
    pub concurrency: u16,
    pub rust_log: String,
    pub log_dir: PathBuf,
    /// Extra `KEY=VALUE` settings for the worker (`MBPROV_BENCH_WORKER_ENV`), e.g. to compare
    /// a tuning knob of a patched binary.
    pub worker_env: Vec<(String, String)>,
}

pub type BenchResult<T> = Result<T, String>;

pub struct Stack {
    pub prefix: String,
    emulator: Option<RunningEmulator>,
    emulator_url: String,
    /// Worker replicas, in start order.
    workers: Vec<Child>,
    pub worker_log: PathBuf,
    broker: Broker,
    redis: redis::aio::MultiplexedConnection,
    http: reqwest::Client,
}

fn delays() -> RetryDelays {
    RetryDelays(
        RETRY_DELAYS
            .split(',')
            .filter_map(|d| mbprov::config::parse_duration(d).ok())
            .collect(),
    )
}

impl Stack {
    /// Starts the emulator with `existing` seeded tenants and connects to the broker and Redis.
    pub async fn start(env: &Env, existing: u32) -> BenchResult<Stack> {
        let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut opts = EmulatorOptions::new(API_KEY);
        opts.latency_ms = env.latency_ms;
        let emulator = mbprov::emulator::spawn(opts)
            .await
            .map_err(|e| format!("emulator: {e}"))?;
        let emulator_url = emulator.url();
        let topology = Topology::new(&prefix, RetryPolicy::new(&delays()));
        let broker = Broker::connect(&env.amqp_url, topology)
            .await
            .map_err(|e| format!("broker: {e}"))?;
        let redis = redis::Client::open(env.redis_url.as_str())
            .map_err(|e| format!("redis: {e}"))?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let worker_log = env.log_dir.join(format!("{prefix}-worker.log"));
        let stack = Stack {
            prefix,
            emulator: Some(emulator),
            emulator_url,
            workers: Vec::new(),
            worker_log,
            broker,
            redis,
            http: reqwest::Client::new(),
        };
        let seeded = stack
            .control(
                "POST",
                "/_emulator/seed",
                Some(json!({"tenants": existing})),
            )
            .await?;
        let n = seeded["tenants"].as_array().map_or(0, Vec::len);
        if n != existing as usize {
            return Err(format!("seeded {n} tenants, wanted {existing}"));
        }
        Ok(stack)
    }

    /// A `/_emulator/*` call (never counted in the emulator's stats).
    pub async fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> BenchResult<Value> {
        let url = format!("{}{path}", self.emulator_url);
        let req = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or(json!({}))),
            _ => self.http.get(url),
        };
        let resp = req
            .header("x-api-key", API_KEY)
            .send()
            .await
            .map_err(|e| format!("emulator {path}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("emulator {path}: {}", resp.status()));
        }
        resp.json()
            .await
            .map_err(|e| format!("emulator {path}: {e}"))
    }

    pub fn emulator_url(&self) -> &str {
        &self.emulator_url
    }

    /// Turns Metabase Tenants on (`PUT /api/setting/use-tenants`), as an administrator would
    /// before switching mbprov to native tenancy.
    pub async fn enable_tenants(&self) -> BenchResult<()> {
        let url = format!("{}/api/setting/use-tenants", self.emulator_url);
        let resp = self
            .http
            .put(url)
            .header("x-api-key", API_KEY)
            .json(&json!({"value": true}))
            .send()
            .await
            .map_err(|e| format!("use-tenants: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("use-tenants: {}", resp.status()));
        }
        Ok(())
    }

    /// Starts one more worker replica (`tenancy`: `groups` or `native`) and waits until it
    /// consumes the work queue.
    pub async fn start_worker(&mut self, env: &Env, tenancy: &str) -> BenchResult<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.worker_log)
            .map_err(|e| format!("{}: {e}", self.worker_log.display()))?;
        let child = Command::new(&env.bin)
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("METABASE_SITE_URL", &self.emulator_url)
            .env("METABASE_API_KEY", API_KEY)
            .env("AMQP_URL", &env.amqp_url)
            .env("REDIS_URL", &env.redis_url)
            .env("MBPROV_PREFIX", &self.prefix)
            .env("MBPROV_CONCURRENCY", env.concurrency.to_string())
            .env("MBPROV_HTTP_ADDR", "off")
            .env("MBPROV_RETRY_DELAYS", RETRY_DELAYS)
            .env("MBPROV_SHUTDOWN_GRACE", "10s")
            .env("MBPROV_TENANCY", tenancy)
            .env("RUST_LOG", &env.rust_log)
            .envs(env.worker_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", env.bin.display()))?;
        self.workers.push(child);
        let wanted = self.workers.len() as u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(w) = self.workers.last_mut()
                && let Ok(Some(status)) = w.try_wait()
            {
                return Err(format!(
                    "the worker exited ({status}) before consuming; see {}",
                    self.worker_log.display()
                ));
            }
            if self.broker.consumer_count().await.unwrap_or(0) >= wanted {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the worker did not consume within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Process ids of the running replicas.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(Child::id).collect()
    }

    /// Publishes with publisher confirms, the way `mbprov publish` does.
    pub async fn publish(&self, envelope: &Value) -> BenchResult<()> {
        let kind = envelope["kind"].as_str().unwrap_or_default();
        let body = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(id) = envelope["id"].as_str() {
            props = props.with_message_id(id.into());
        }
        self.broker
            .publish(&self.broker.topology().work_exchange(), kind, &body, props)
            .await
            .map_err(|e| e.to_string())
    }

    /// How many of these jobs Redis records as done (`P:done:<id>`).
    pub async fn done_count(&mut self, ids: &[String]) -> BenchResult<u64> {
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}:done:{id}", self.prefix))
            .collect();
        redis::cmd("EXISTS")
            .arg(keys)
            .query_async(&mut self.redis)
            .await
            .map_err(|e| format!("redis EXISTS: {e}"))
    }

    /// Messages in the dead-letter queue (a job that failed for good).
    pub async fn dead_letters(&self) -> BenchResult<u32> {
        let stats = self.broker.queue_stats().await.map_err(|e| e.to_string())?;
        Ok(stats.last().map_or(0, |s| s.messages))
    }

    /// SIGTERM to every replica, then a kill for one not stopped within 15 s.
    pub async fn stop_worker(&mut self) {
        let children: Vec<Child> = self.workers.drain(..).collect();
        for child in &children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for mut child in children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Which of these jobs Redis records as done (`P:done:<id>`), one flag per id.
    pub async fn done_flags(&mut self, ids: &[String]) -> BenchResult<Vec<bool>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.exists(format!("{}:done:{id}", self.prefix));
        }
        pipe.query_async(&mut self.redis)
            .await
            .map_err(|e| format!("redis EXISTS: {e}"))
    }

    /// Stops everything and deletes the prefix's queues, exchanges and Redis keys.
    pub async fn teardown(mut self) {
        self.stop_worker().await;
        if let Some(emulator) = self.emulator.take() {
            let _ = emulator.shutdown().await;
        }
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let step: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.redis)
                .await;
            let Ok((next, batch)) = step else { break };
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut self.redis)
                .await;
        }
        let topo = self.broker.topology().clone();
        for q in topo.queues() {
            let _ = self
                .broker
                .channel()
                .queue_delete(q.into(), Default::default())
                .await;
        }
        for x in [topo.work_exchange(), topo.dead()] {
            let _ = self
                .broker
                .channel()
                .exchange_delete(x.into(), Default::default())
                .await;
        }
        self.broker.close().await;
    }
}

/// Peak resident memory of a process, in KiB (`VmHWM` of /proc/PID/status).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmHWM:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// A `tenant.created` job for new tenant `n`: its own group, user and collection under Shared
/// (collection 2), with access to database 1.
pub fn tenant_created(run: &str, n: u32) -> Value {
    json!({
        "id": format!("bench-{run}-tenant-{n}"),
        "kind": "tenant.created",
        "payload": {
            "tenant_id": format!("bench-{n}"),
            "tenant_name": format!("Bench {n}"),
            "database_id": 1,
            "shared_collection_id": 2,
            "admin_user": {"email": format!("admin{n}@bench{n}.test"), "first_name": "Ada", "last_name": format!("Bench{n}")}
        }
    })
}
