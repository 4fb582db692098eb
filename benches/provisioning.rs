//! `cargo bench --bench provisioning`: what provisioning new tenants costs a Metabase instance
//! (requests, graph bytes), how fast a fleet of workers does it, and how long a user waits,
//! side by side with the article's sequential pattern.
//!
//! Each scenario starts the emulator in this process with a fixed latency, seeds N existing
//! tenants, starts R real `mbprov worker` replicas (the binary cargo built with this bench, in
//! `target/release/mbprov`; `MBPROV_BENCH_BIN` points elsewhere), publishes M `tenant.created`
//! jobs with publisher confirms, records each job's time from its publish to its `P:done:<id>`
//! key in Redis (p50/p99), then reads the emulator's counters and the replicas' peak RSS, and
//! finally publishes single tenants one at a time on the idle fleet (median publish→done). Two
//! tenants are provisioned before the measured wave and reported apart: on an instance mbprov
//! has not written to, the collection writer reads the whole graph once to start its snapshot
//! and once more to confirm that creating a collection bumps the revision, once per instance
//! rather than per tenant. Before the first scenario's workers start, the
//! article's sequential pattern ([`baseline`]) provisions a few tenants on the same emulator;
//! throughput is reported as a ratio to it. Only 127.0.0.1 is contacted; every scenario
//! removes its queues, exchanges and Redis keys.
//!
//! Settings (environment, or the flag in brackets):
//! - `MBPROV_BENCH_QUICK=1` [`--quick`]: 50 new tenants on 1,000 existing with 1 and 2
//!   replicas, and on 100 existing; a 5-tenant baseline.
//! - `MBPROV_BENCH_SCENARIOS=ISSUE:EXISTING:NEW[:REPLICAS[:TENANCY]],...` [`--scenarios`]:
//!   e.g. `14:2000:300:2,5:5000:300,15:2000:300:2:native` (TENANCY `groups`, the default, or
//!   `native`: Metabase Tenants turned on and `MBPROV_TENANCY=native`).
//! - `MBPROV_BENCH_NEW=M`: new tenants in every scenario.
//! - `MBPROV_BENCH_BASELINE=K`: tenants of the sequential baseline (default 30, quick 5, 0 none).
//! - `MBPROV_BENCH_LATENCY_MS` [`--latency-ms`]: emulated latency per request (default 5).
//! - `MBPROV_BENCH_CONCURRENCY` (default 8, per replica), `MBPROV_BENCH_TIMEOUT_S` per scenario
//!   (default 300),
//!   `MBPROV_BENCH_WORKER_LOG` the worker's RUST_LOG (default `info`), `MBPROV_BENCH_KEEP_LOGS=1`
//!   keeps the worker logs in `target/bench-logs/` (they are kept anyway when a scenario fails),
//!   `MBPROV_BENCH_WORKER_ENV=K=V,K2=V2` extra worker settings, `MBPROV_BENCH_BIN`, `AMQP_URL`,
//!   `REDIS_URL` (127.0.0.1 only).
//!
//! Results: a markdown report on stdout and in `target/bench-provisioning.md`; the raw emulator
//! counters in `target/bench-provisioning.json`.

#[path = "provisioning/baseline.rs"]
mod baseline;
#[path = "provisioning/fleet.rs"]
mod fleet;
#[path = "provisioning/report.rs"]
mod report;
#[path = "provisioning/stack.rs"]
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use baseline::Baseline;
use report::Outcome;
use stack::{BenchResult, Env, Stack, peak_rss_kib, tenant_created};

/// Hard caps, so a typo cannot start an unbounded run.
const MAX_NEW: u32 = 10_000;
const MAX_EXISTING: u32 = 100_000;
const MAX_REPLICAS: u32 = 8;
/// Single tenants published one at a time on the idle fleet after the wave.
const IDLE_SAMPLES: u32 = 5;

#[derive(Clone, Copy, Debug)]
struct Scenario {
    issue: &'static str,
    existing: u32,
    new: u32,
    /// Worker replicas, each at the same `MBPROV_BENCH_CONCURRENCY`.
    replicas: u32,
    /// Metabase Tenants (`MBPROV_TENANCY=native`, `use-tenants` on) instead of groups.
    native: bool,
}

const fn sc(issue: &'static str, existing: u32, new: u32, replicas: u32) -> Scenario {
    Scenario {
        issue,
        existing,
        new,
        replicas,
        native: false,
    }
}

impl Scenario {
    const fn native(mut self) -> Self {
        self.native = true;
        self
    }

    fn tenancy(&self) -> &'static str {
        if self.native { "native" } else { "groups" }
    }
}

/// Issue 14: replica scaling at 2,000 existing (the sequential baseline runs on the first
/// scenario's emulator); issues 5/14: requests and graph bytes per tenant at 100 and 5,000
/// existing with two replicas, as at 2,000; issue 15: the same wave in native tenancy.
const FULL: [Scenario; 6] = [
    sc("14", 2_000, 300, 1),
    sc("14", 2_000, 300, 2),
    sc("14", 2_000, 300, 4),
    sc("5", 100, 300, 2),
    sc("5", 5_000, 300, 2),
    sc("15", 2_000, 300, 2).native(),
];

const QUICK: [Scenario; 3] = [
    sc("14", 1_000, 50, 1),
    sc("14", 1_000, 50, 2),
    sc("5", 100, 50, 1),
];

/// Tenants the article's sequential pattern provisions for the baseline (one at a time, so
/// it is the slow part of a run).
const BASELINE_FULL: u32 = 30;
const BASELINE_QUICK: u32 = 5;

struct Settings {
    env: Env,
    /// Tenants of the sequential baseline (`MBPROV_BENCH_BASELINE`, 0 = none).
    baseline: u32,
    scenarios: Vec<Scenario>,
    timeout: Duration,
    out: PathBuf,
}

fn setting(args: &[String], flag: &str, var: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_string))
        })
        .or_else(|| std::env::var(var).ok())
}

fn number<T: std::str::FromStr>(value: Option<String>, what: &str, default: T) -> BenchResult<T> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{what} must be a number, got {v:?}")),
    }
}

fn parse_scenarios(spec: &str) -> BenchResult<Vec<Scenario>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let parts: Vec<&str> = s.trim().split(':').collect();
            let (issue, existing, new, replicas, tenancy) = match parts.as_slice() {
                [i, e, n, r, t] => (*i, *e, *n, *r, *t),
                [i, e, n, r] => (*i, *e, *n, *r, "groups"),
                [i, e, n] => (*i, *e, *n, "1", "groups"),
                [e, n] => ("-", *e, *n, "1", "groups"),
                _ => {
                    return Err(format!(
                        "scenario {s:?} is not ISSUE:EXISTING:NEW[:REPLICAS[:TENANCY]]"
                    ));
                }
            };
            let native = match tenancy {
                "native" => true,
                "groups" => false,
                other => return Err(format!("tenancy {other:?} is not groups or native")),
            };
            let issue: &'static str = match issue {
                "3" => "3",
                "5" => "5",
                "14" => "14",
                "15" => "15",
                _ => "-",
            };
            Ok(Scenario {
                issue,
                existing: number(Some(existing.into()), "EXISTING", 0)?,
                new: number(Some(new.into()), "NEW", 0)?,
                replicas: number(Some(replicas.into()), "REPLICAS", 1)?,
                native,
            })
        })
        .collect()
}

/// Only the local broker and Redis: the bench must never reach another machine.
fn local(url: &str) -> BenchResult<String> {
    let host = url::Url::parse(url)
        .map_err(|e| format!("{url:?}: {e}"))?
        .host_str()
        .map(str::to_string);
    match host.as_deref() {
        Some("127.0.0.1" | "localhost") => Ok(url.to_string()),
        _ => Err(format!("the bench only talks to 127.0.0.1, not {host:?}")),
    }
}

fn settings() -> BenchResult<Settings> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("MBPROV_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let mut scenarios = match setting(&args, "--scenarios", "MBPROV_BENCH_SCENARIOS") {
        Some(spec) => parse_scenarios(&spec)?,
        None if quick => QUICK.to_vec(),
        None => FULL.to_vec(),
    };
    if let Ok(n) = std::env::var("MBPROV_BENCH_NEW") {
        let n: u32 = number(Some(n), "MBPROV_BENCH_NEW", 0)?;
        scenarios.iter_mut().for_each(|s| s.new = n);
    }
    if scenarios.is_empty()
        || scenarios.iter().any(|s| {
            s.new == 0
                || s.new > MAX_NEW
                || s.existing > MAX_EXISTING
                || !(1..=MAX_REPLICAS).contains(&s.replicas)
        })
    {
        return Err(format!(
            "each scenario needs 1 to {MAX_NEW} new tenants, at most {MAX_EXISTING} existing \
             and 1 to {MAX_REPLICAS} replicas"
        ));
    }
    let baseline = number(
        std::env::var("MBPROV_BENCH_BASELINE").ok(),
        "MBPROV_BENCH_BASELINE",
        if quick { BASELINE_QUICK } else { BASELINE_FULL },
    )?
    .min(MAX_NEW);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let log_dir = target.join("bench-logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let bin = std::env::var_os("MBPROV_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mbprov")));
    let env = Env {
        bin,
        amqp_url: local(
            &std::env::var("AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        )?,
        redis_url: local(
            &std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
        )?,
        latency_ms: number(
            setting(&args, "--latency-ms", "MBPROV_BENCH_LATENCY_MS"),
            "the latency",
            5,
        )?,
        concurrency: number(
            std::env::var("MBPROV_BENCH_CONCURRENCY").ok(),
            "concurrency",
            8,
        )?,
        rust_log: std::env::var("MBPROV_BENCH_WORKER_LOG").unwrap_or_else(|_| "info".into()),
        worker_env: std::env::var("MBPROV_BENCH_WORKER_ENV")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        log_dir,
    };
    let timeout = Duration::from_secs(number(
        std::env::var("MBPROV_BENCH_TIMEOUT_S").ok(),
        "MBPROV_BENCH_TIMEOUT_S",
        300,
    )?);
    Ok(Settings {
        env,
        baseline,
        scenarios,
        timeout,
        out: target.join("bench-provisioning.md"),
    })
}

async fn run_scenario(
    env: &Env,
    s: Scenario,
    timeout: Duration,
    baseline_tenants: u32,
) -> BenchResult<(Outcome, Option<Baseline>)> {
    let mut stack = Stack::start(env, s.existing).await?;
    // The baseline runs first, on this scenario's emulator, before any worker exists.
    let baseline = if baseline_tenants > 0 {
        eprintln!("  sequential baseline: {baseline_tenants} tenants, one at a time");
        match baseline::run(stack.emulator_url(), &stack.prefix, baseline_tenants).await {
            Ok(b) => Some(b),
            Err(e) => {
                stack.teardown().await;
                return Err(e);
            }
        }
    } else {
        None
    };
    let result = measure(&mut stack, env, s, timeout)
        .await
        .map(|o| (o, baseline));
    let keep = std::env::var("MBPROV_BENCH_KEEP_LOGS").is_ok_and(|v| v != "0");
    if result.is_ok() && !keep {
        let _ = std::fs::remove_file(&stack.worker_log);
    } else {
        eprintln!("  worker log kept: {}", stack.worker_log.display());
    }
    stack.teardown().await;
    result
}

async fn measure(
    stack: &mut Stack,
    env: &Env,
    s: Scenario,
    timeout: Duration,
) -> BenchResult<Outcome> {
    if s.native {
        // A worker in native tenancy refuses to start unless `use-tenants` is on.
        stack.enable_tenants().await?;
    }
    for _ in 0..s.replicas {
        stack.start_worker(env, s.tenancy()).await?;
    }
    // Start-up reads (session, groups) are a fixed cost per process, not per tenant.
    let startup = stack.control("GET", "/_emulator/stats", None).await?;
    stack
        .control("POST", "/_emulator/reset-stats", None)
        .await?;

    let run = stack.prefix.clone();
    // The first tenants on an instance mbprov has not written to yet read the whole collection
    // graph: the first to start the snapshot, the second to confirm that a creation bumps the
    // revision by one. A cost per instance (and per change made outside mbprov), not per tenant,
    // so it is measured and reported on its own. Numbered past any the wave or the idle samples
    // use.
    for k in 0..report::FIRST_CONTACT {
        let tenant = tenant_created(&run, MAX_NEW + IDLE_SAMPLES + 1 + k);
        stack.publish(&tenant).await?;
        let id = tenant["id"].as_str().unwrap_or_default().to_string();
        let sent = Instant::now();
        while stack.done_count(std::slice::from_ref(&id)).await? < 1 {
            if sent.elapsed() > timeout {
                return Err("a first-contact tenant was not done in time".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let first_contact = stack.control("GET", "/_emulator/stats", None).await?;
    stack
        .control("POST", "/_emulator/reset-stats", None)
        .await?;

    let jobs: Vec<_> = (1..=s.new).map(|n| tenant_created(&run, n)).collect();
    let ids: Vec<String> = jobs
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    let started = Instant::now();
    let mut published_at = Vec::with_capacity(jobs.len());
    for job in &jobs {
        stack.publish(job).await?;
        published_at.push(Instant::now());
    }
    let published = started.elapsed();
    // Seconds from each job's publish to its done key, filled as they complete.
    let mut latencies: Vec<Option<f64>> = vec![None; ids.len()];
    let mut dead = 0;
    let mut polls = 0u32;
    let (done, finished) = loop {
        let pending: Vec<usize> = (0..ids.len()).filter(|i| latencies[*i].is_none()).collect();
        let names: Vec<String> = pending.iter().map(|i| ids[*i].clone()).collect();
        let flags = stack.done_flags(&names).await?;
        let now = Instant::now();
        for (i, is_done) in pending.iter().zip(flags) {
            if is_done {
                latencies[*i] = Some(now.duration_since(published_at[*i]).as_secs_f64());
            }
        }
        let done = latencies.iter().filter(|l| l.is_some()).count() as u64;
        if done >= u64::from(s.new) {
            break (done, started.elapsed());
        }
        polls += 1;
        if polls.is_multiple_of(50) {
            dead = stack.dead_letters().await?;
            if done + u64::from(dead) >= u64::from(s.new) {
                break (done, started.elapsed());
            }
        }
        if started.elapsed() > timeout {
            eprintln!("  timed out: {done} of {} done", s.new);
            break (done, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Counters of the wave only; the idle samples below are measured for latency alone.
    let stats = stack.control("GET", "/_emulator/stats", None).await?;
    let idle_seconds = idle_latency(stack, &run, s.new, timeout).await?;
    let peak_rss_kib = stack
        .worker_pids()
        .into_iter()
        .filter_map(peak_rss_kib)
        .max();
    if dead == 0 {
        dead = stack.dead_letters().await?;
    }
    stack.stop_worker().await;
    let state = stack.control("GET", "/_emulator/state", None).await?;
    let verified = Some(provisioned(&state, s));
    eprintln!(
        "  published {} in {:.2} s; {done} done, {dead} dead in {:.2} s",
        s.new,
        published.as_secs_f64(),
        finished.as_secs_f64()
    );
    Ok(Outcome {
        issue: s.issue,
        existing: s.existing,
        new: s.new,
        done,
        dead,
        verified,
        startup_requests: startup["requests_total"].as_u64().unwrap_or(0),
        first_contact,
        seconds: finished.as_secs_f64(),
        peak_rss_kib,
        stats,
        replicas: s.replicas,
        tenancy: s.tenancy(),
        latencies: latencies.into_iter().flatten().collect(),
        idle_seconds,
    })
}

/// How many of the wave's tenants the emulator holds: their groups (`Tenant: bench-N`) in group
/// tenancy, their Metabase tenants (slug `bench-N`) in native tenancy.
fn provisioned(state: &serde_json::Value, s: Scenario) -> u64 {
    let in_wave = |n: Option<&str>| {
        n.and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=s.new).contains(&n))
    };
    if s.native {
        state["tenancy"]["tenants"]
            .as_object()
            .map_or(0, |tenants| {
                tenants
                    .values()
                    .filter(|t| in_wave(t["slug"].as_str().and_then(|n| n.strip_prefix("bench-"))))
                    .count() as u64
            })
    } else {
        state["groups"].as_array().map_or(0, |groups| {
            groups
                .iter()
                .filter(|g| {
                    in_wave(
                        g["name"]
                            .as_str()
                            .and_then(|n| n.strip_prefix("Tenant: bench-")),
                    )
                })
                .count() as u64
        })
    }
}

/// Publishes [`IDLE_SAMPLES`] single tenants one after the other on the now idle fleet and
/// returns the median time from publish to done.
async fn idle_latency(
    stack: &mut Stack,
    run: &str,
    after: u32,
    timeout: Duration,
) -> BenchResult<Option<f64>> {
    let mut samples = Vec::new();
    for k in 1..=IDLE_SAMPLES {
        let job = tenant_created(run, after + k);
        let id = job["id"].as_str().unwrap_or_default().to_string();
        let sent = Instant::now();
        stack.publish(&job).await?;
        loop {
            if stack.done_flags(std::slice::from_ref(&id)).await?[..] == [true] {
                samples.push(sent.elapsed().as_secs_f64());
                break;
            }
            if sent.elapsed() > timeout {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(fleet::quantile(&samples, 0.5))
}

async fn bench() -> BenchResult<()> {
    let settings = settings()?;
    if !settings.env.bin.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release --bin mbprov` or set MBPROV_BENCH_BIN",
            settings.env.bin.display()
        ));
    }
    eprintln!("worker binary: {}", settings.env.bin.display());
    let mut outcomes = Vec::new();
    let mut baseline: Option<Baseline> = None;
    for (i, s) in settings.scenarios.iter().enumerate() {
        eprintln!(
            "issue {}: {} new tenants on {} existing, {} replica(s), {} tenancy, {} ms latency",
            s.issue,
            s.new,
            s.existing,
            s.replicas,
            s.tenancy(),
            settings.env.latency_ms
        );
        let baseline_tenants = if i == 0 { settings.baseline } else { 0 };
        match run_scenario(&settings.env, *s, settings.timeout, baseline_tenants).await {
            Ok((o, b)) => {
                outcomes.push(o);
                baseline = baseline.or(b);
            }
            Err(e) => eprintln!("  scenario failed: {e}"),
        }
    }
    if outcomes.is_empty() {
        return Err("no scenario completed".into());
    }
    let mut md = report::markdown(&outcomes, settings.env.latency_ms, settings.env.concurrency);
    md.push_str(&fleet::markdown(
        &outcomes,
        baseline.as_ref(),
        settings.env.latency_ms,
    ));
    println!("{md}");
    std::fs::write(&settings.out, &md).map_err(|e| format!("{}: {e}", settings.out.display()))?;
    eprintln!("written to {}", settings.out.display());
    let json: Vec<_> = outcomes
        .iter()
        .map(|o| serde_json::json!({"issue": o.issue, "existing": o.existing, "new": o.new, "stats": o.stats}))
        .collect();
    let raw = settings.out.with_extension("json");
    let _ = std::fs::write(
        &raw,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    if outcomes.len() < settings.scenarios.len() {
        return Err("some scenarios failed".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provisioning bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provisioning bench: {e}");
            ExitCode::FAILURE
        }
    }
}
