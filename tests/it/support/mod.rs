//! The end-to-end harness: a fresh prefix, a fresh emulator process and real `mbprov worker`
//! processes on the shared RabbitMQ and Redis, with helpers that wait on conditions.
#![allow(dead_code)]

use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub const API_KEY: &str = "mb_test_key_5ecr3t";
pub const BIN: &str = env!("CARGO_BIN_EXE_mbprov");

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// How a stack starts.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub emulator_args: Vec<String>,
    pub max_attempts: u32,
    pub retry_delays: String,
    pub concurrency: u16,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            emulator_args: vec![],
            max_attempts: 10,
            retry_delays: "100ms,200ms,400ms".into(),
            concurrency: 8,
        }
    }
}

pub struct Stack {
    pub prefix: String,
    pub emulator_url: String,
    pub options: StackOptions,
    emulator: Child,
    workers: Vec<Worker>,
    http: reqwest::Client,
    /// A test that panics before [`Stack::teardown`] still leaves no queue behind; its Redis
    /// keys go in [`Stack`]'s `Drop`.
    _queues: crate::queue_support::CleanupOnPanic,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            delete_redis_prefix(&self.prefix);
        }
    }
}

pub struct Worker {
    pub child: Child,
    pub log: std::path::PathBuf,
    pub http_port: Option<u16>,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Stack {
        let prefix = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (emulator, port) = start_emulator(
            Command::new(BIN)
                .args(["fake-metabase", "--port", "0", "--api-key", API_KEY])
                .args(&options.emulator_args),
        )
        .await;
        let topology = mbprov::queue::topology::Topology::new(
            &prefix,
            mbprov::queue::retry::RetryPolicy::new(&parse_delays(&options.retry_delays)),
        );
        Stack {
            _queues: crate::queue_support::CleanupOnPanic::for_topology(&topology),
            prefix,
            emulator_url: format!("http://127.0.0.1:{port}"),
            options,
            emulator,
            workers: Vec::new(),
            http: reqwest::Client::new(),
        }
    }

    /// The environment every mbprov command of this stack runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("METABASE_SITE_URL".into(), self.emulator_url.clone()),
            ("METABASE_API_KEY".into(), API_KEY.into()),
            ("AMQP_URL".into(), amqp_url()),
            ("REDIS_URL".into(), redis_url()),
            ("MBPROV_PREFIX".into(), self.prefix.clone()),
            (
                "MBPROV_MAX_ATTEMPTS".into(),
                self.options.max_attempts.to_string(),
            ),
            (
                "MBPROV_RETRY_DELAYS".into(),
                self.options.retry_delays.clone(),
            ),
            (
                "MBPROV_CONCURRENCY".into(),
                self.options.concurrency.to_string(),
            ),
            ("MBPROV_SHUTDOWN_GRACE".into(), "10s".into()),
            ("MBPROV_LOCK_TTL".into(), "3s".into()),
            ("RUST_LOG".into(), "info,mbprov=debug".into()),
        ]
    }

    /// `mbprov ARGS` with this stack's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).envs(self.env()).kill_on_drop(true);
        c
    }

    /// Starts a worker process; its log goes to a file (read with [`Stack::worker_log`]).
    pub async fn spawn_worker(&mut self) -> usize {
        self.spawn_worker_with(&[]).await
    }

    pub async fn spawn_worker_with(&mut self, extra_env: &[(&str, &str)]) -> usize {
        let i = self.spawn_worker_serving(extra_env).await;
        // Consuming starts right after the endpoint; wait for the consumer to be registered.
        let status_env = self.env();
        let expected = self
            .workers
            .iter_mut()
            .filter_map(|w| matches!(w.child.try_wait(), Ok(None)).then_some(()))
            .count() as u64;
        eventually("the worker consuming", || {
            let env = status_env.clone();
            async move {
                let out = Command::new(BIN)
                    .args(["status", "--json"])
                    .envs(env)
                    .output()
                    .await
                    .ok()?;
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                (v["consumers"].as_u64()? >= expected).then_some(())
            }
        })
        .await;
        i
    }

    /// Starts a worker and waits for its health endpoint only, not for it to consume (a worker
    /// of a paused fleet serves /readyz but has no consumer).
    pub async fn spawn_worker_serving(&mut self, extra_env: &[(&str, &str)]) -> usize {
        let port = free_port();
        let i = self.start_worker_process(extra_env, Some(port));
        let url = format!("http://127.0.0.1:{port}/healthz");
        let http = self.http.clone();
        eventually("the worker's health endpoint", || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        i
    }

    /// Starts a worker without waiting for it to be ready (it may die at once).
    pub async fn spawn_worker_detached(&mut self, extra_env: &[(&str, &str)]) -> usize {
        self.start_worker_process(extra_env, None)
    }

    /// Starts `mbprov worker` with its log in a file; `http_port` None turns the endpoint off.
    fn start_worker_process(
        &mut self,
        extra_env: &[(&str, &str)],
        http_port: Option<u16>,
    ) -> usize {
        let log =
            std::env::temp_dir().join(format!("{}-worker-{}.log", self.prefix, self.workers.len()));
        let file = std::fs::File::create(&log).expect("log file");
        let addr = http_port.map_or("off".to_string(), |p| format!("127.0.0.1:{p}"));
        let child = self
            .command(&["worker"])
            .env("MBPROV_HTTP_ADDR", addr)
            .envs(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start a worker");
        self.workers.push(Worker {
            child,
            log,
            http_port,
        });
        self.workers.len() - 1
    }

    /// Waits for a worker process to exit by itself.
    pub async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(60), self.workers[i].child.wait())
            .await
            .expect("worker exits within 60 s")
            .expect("wait")
    }

    pub fn worker_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.workers[i].log).unwrap_or_default()
    }

    pub fn all_worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|i| self.worker_log(i))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn worker_http_port(&self, i: usize) -> u16 {
        self.workers[i].http_port.expect("worker has an http port")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn stop_worker(&mut self, i: usize) -> std::process::ExitStatus {
        let w = &mut self.workers[i];
        if let Some(pid) = w.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), w.child.wait())
            .await
            .expect("worker stops within 30 s")
            .expect("wait")
    }

    pub async fn kill_worker(&mut self, i: usize) {
        let _ = self.workers[i].child.kill().await;
    }

    /// Publishes envelopes with `mbprov publish -`; returns its stdout lines.
    pub async fn publish(&self, envelopes: &[Value]) -> Vec<String> {
        let out = self
            .run_stdin(
                &["publish", "-"],
                &Value::Array(envelopes.to_vec()).to_string(),
            )
            .await;
        assert!(
            out.status.success(),
            "publish failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Publishes raw bytes with a routing key (for malformed messages), bypassing validation.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        use mbprov::queue::retry::RetryPolicy;
        use mbprov::queue::topology::Topology;
        let delays = parse_delays(&self.options.retry_delays);
        let broker = mbprov::queue::Broker::connect(
            &amqp_url(),
            Topology::new(&self.prefix, RetryPolicy::new(&delays)),
        )
        .await
        .expect("broker");
        let props = lapin::BasicProperties::default().with_delivery_mode(2);
        broker
            .publish(&self.prefix, routing_key, body, props)
            .await
            .expect("publish raw");
        broker.close().await;
    }

    pub async fn run_stdin(&self, args: &[&str], input: &str) -> std::process::Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mbprov");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        drop(stdin);
        child.wait_with_output().await.expect("mbprov output")
    }

    pub async fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().await.expect("run mbprov")
    }

    pub async fn dead_letters(&self) -> Vec<Value> {
        let out = self.run(&["dlq", "list", "--json"]).await;
        assert!(
            out.status.success(),
            "dlq list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("dlq json");
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn emu_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.emulator_url))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("emulator")
            .json()
            .await
            .expect("emulator json")
    }

    pub async fn emu_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.emulator_url))
            .header("x-api-key", API_KEY)
            .json(&body)
            .send()
            .await
            .expect("emulator")
    }

    /// `POST path` to the emulator as an administrator would; the new object's id.
    pub async fn emu_create(&self, path: &str, body: Value) -> i64 {
        let answer = self.emu_send(reqwest::Method::POST, path, body).await;
        assert!(
            answer.status().is_success(),
            "POST {path}: {}",
            answer.status()
        );
        answer.json::<Value>().await.expect("emulator json")["id"]
            .as_i64()
            .expect("an id")
    }

    pub async fn state(&self) -> Value {
        self.emu_get("/_emulator/state").await
    }

    pub async fn stats(&self) -> Value {
        self.emu_get("/_emulator/stats").await
    }

    pub async fn faults(&self, body: Value) {
        let r = self
            .emu_send(reqwest::Method::POST, "/_emulator/faults", body)
            .await;
        assert!(r.status().is_success());
    }

    /// Waits until the job with this id is recorded as completed in Redis.
    pub async fn wait_done(&self, job_id: &str) {
        let key = format!("{}:done:{job_id}", self.prefix);
        let client = redis::Client::open(redis_url()).expect("redis");
        eventually(&format!("job {job_id} done"), || {
            let client = client.clone();
            let key = key.clone();
            async move {
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                let n: i64 = redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .ok()?;
                (n == 1).then_some(())
            }
        })
        .await;
    }

    /// Stops the processes and deletes this prefix's queues, exchanges and Redis keys.
    pub async fn teardown(mut self) {
        for i in 0..self.workers.len() {
            let _ = self.workers[i].child.kill().await;
        }
        let _ = self.emulator.kill().await;
        delete_redis_prefix(&self.prefix);
        use mbprov::queue::retry::RetryPolicy;
        use mbprov::queue::topology::Topology;
        let delays = parse_delays(&self.options.retry_delays);
        if let Ok(b) = mbprov::queue::Broker::connect(
            &amqp_url(),
            Topology::new(&self.prefix, RetryPolicy::new(&delays)),
        )
        .await
        {
            let topo = b.topology().clone();
            for q in topo.queues() {
                let _ = b.channel().queue_delete(q.into(), Default::default()).await;
            }
            for x in [topo.work_exchange(), topo.dead()] {
                let _ = b
                    .channel()
                    .exchange_delete(x.into(), Default::default())
                    .await;
            }
            b.close().await;
        }
    }
}

fn parse_delays(s: &str) -> mbprov::config::RetryDelays {
    mbprov::config::RetryDelays(
        s.split(',')
            .map(|d| mbprov::config::parse_duration(d).expect("delay"))
            .collect(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Spawns `mbprov fake-metabase …` as configured in `command` and waits for its
/// `listening on PORT` line.
pub async fn start_emulator(command: &mut Command) -> (Child, u16) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the emulator");
    let stdout = child.stdout.take().expect("emulator stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read emulator") {
            if let Some(p) = line.strip_prefix("listening on ") {
                return p.trim().parse::<u16>().expect("port");
            }
        }
        panic!("emulator exited before listening");
    })
    .await
    .expect("emulator ready in time");
    (child, port)
}

/// Polls `check` until it returns `Some`, failing the test after 60 seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `tenant.created` envelope for tenant `n`.
pub fn tenant_created(n: u32) -> Value {
    json!({
        "id": format!("tenant-{n}-created"),
        "kind": "tenant.created",
        "payload": {
            "tenant_id": n.to_string(),
            "tenant_name": format!("Acme {n}"),
            "database_id": 1,
            "shared_collection_id": 2,
            "admin_user": {"email": format!("admin{n}@acme{n}.test"), "first_name": "Ada", "last_name": format!("Tenant{n}")}
        }
    })
}

/// A `tenant.created` job with its own id, tenant id and display name (for tests about names).
pub fn tenant_created_named(job: &str, tenant_id: &str, tenant_name: &str) -> Value {
    json!({
        "id": job,
        "kind": "tenant.created",
        "payload": {
            "tenant_id": tenant_id,
            "tenant_name": tenant_name,
            "database_id": 1,
            "shared_collection_id": 2,
            "admin_user": {"email": format!("admin{tenant_id}@example.test")}
        }
    })
}

pub fn find<'a>(items: &'a Value, key: &str, value: &str) -> Vec<&'a Value> {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i[key].as_str() == Some(value))
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP relay to a real server that a test can cut and restore, to make Redis or the broker
/// unreachable for one process without touching the shared server.
pub struct Relay {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: &str) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let target = target.to_string();
        let (open2, cut2) = (open.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !open2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Relay {
            port,
            open,
            cut,
            task,
        }
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Redis `EXISTS key`.
pub async fn redis_exists(key: &str) -> bool {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return false;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut c)
        .await
        .unwrap_or(0)
        == 1
}

/// Deletes every Redis key under `prefix` (blocking, so a `Drop` can call it: a test cleans up
/// even when it panics).
pub fn delete_redis_prefix(prefix: &str) {
    if let Ok(client) = redis::Client::open(redis_url())
        && let Ok(mut c) = client.get_connection()
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}
