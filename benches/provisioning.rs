//! `cargo bench --bench provisioning`: what provisioning new tenants costs a Metabase instance
//! (requests, graph bytes) and how fast one worker does it, on small and large instances.
//!
//! Each scenario starts the emulator in this process with a fixed latency, seeds N existing
//! tenants, starts one real `mbprov worker` (the binary cargo built with this bench, in
//! `target/release/mbprov`; `MBPROV_BENCH_BIN` points elsewhere), publishes M `tenant.created`
//! jobs with publisher confirms, waits for their `P:done:<id>` keys in Redis, then reads the
//! emulator's counters and the worker's peak RSS. One tenant is provisioned before the measured
//! wave and reported apart: the first write on an instance reads the whole collection graph to
//! start the collection writer's snapshot, once per instance rather than per tenant. Only 127.0.0.1 is contacted; every scenario
//! removes its queues, exchanges and Redis keys.
//!
//! Settings (environment, or the flag in brackets):
//! - `MBPROV_BENCH_QUICK=1` [`--quick`]: 50 new tenants on 100 and on 1,000 existing.
//! - `MBPROV_BENCH_SCENARIOS=ISSUE:EXISTING:NEW,...` [`--scenarios`]: e.g. `5:100:300,5:5000:300`.
//! - `MBPROV_BENCH_NEW=M`: new tenants in every scenario.
//! - `MBPROV_BENCH_LATENCY_MS` [`--latency-ms`]: emulated latency per request (default 5).
//! - `MBPROV_BENCH_CONCURRENCY` (default 8), `MBPROV_BENCH_TIMEOUT_S` per scenario (default 300),
//!   `MBPROV_BENCH_WORKER_LOG` the worker's RUST_LOG (default `info`), `MBPROV_BENCH_KEEP_LOGS=1`
//!   keeps the worker logs in `target/bench-logs/` (they are kept anyway when a scenario fails),
//!   `MBPROV_BENCH_WORKER_ENV=K=V,K2=V2` extra worker settings, `MBPROV_BENCH_BIN`, `AMQP_URL`,
//!   `REDIS_URL` (127.0.0.1 only).
//!
//! Results: a markdown report on stdout and in `target/bench-provisioning.md`; the raw emulator
//! counters in `target/bench-provisioning.json`.

#[path = "provisioning/report.rs"]
mod report;
#[path = "provisioning/stack.rs"]
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use report::Outcome;
use stack::{BenchResult, Env, Stack, peak_rss_kib, tenant_created};

/// Hard caps, so a typo cannot start an unbounded run.
const MAX_NEW: u32 = 10_000;
const MAX_EXISTING: u32 = 100_000;

#[derive(Clone, Copy, Debug)]
struct Scenario {
    issue: &'static str,
    existing: u32,
    new: u32,
}

const FULL: [Scenario; 4] = [
    Scenario {
        issue: "3",
        existing: 2_000,
        new: 300,
    },
    Scenario {
        issue: "5",
        existing: 100,
        new: 300,
    },
    Scenario {
        issue: "5",
        existing: 1_000,
        new: 300,
    },
    Scenario {
        issue: "5",
        existing: 5_000,
        new: 300,
    },
];

const QUICK: [Scenario; 2] = [
    Scenario {
        issue: "5",
        existing: 100,
        new: 50,
    },
    Scenario {
        issue: "5",
        existing: 1_000,
        new: 50,
    },
];

struct Settings {
    env: Env,
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
            let (issue, existing, new) = match parts.as_slice() {
                [i, e, n] => (*i, *e, *n),
                [e, n] => ("-", *e, *n),
                _ => return Err(format!("scenario {s:?} is not ISSUE:EXISTING:NEW")),
            };
            let issue: &'static str = match issue {
                "3" => "3",
                "5" => "5",
                _ => "-",
            };
            Ok(Scenario {
                issue,
                existing: number(Some(existing.into()), "EXISTING", 0)?,
                new: number(Some(new.into()), "NEW", 0)?,
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
        || scenarios
            .iter()
            .any(|s| s.new == 0 || s.new > MAX_NEW || s.existing > MAX_EXISTING)
    {
        return Err(format!(
            "each scenario needs 1 to {MAX_NEW} new tenants and at most {MAX_EXISTING} existing"
        ));
    }
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
        scenarios,
        timeout,
        out: target.join("bench-provisioning.md"),
    })
}

async fn run_scenario(env: &Env, s: Scenario, timeout: Duration) -> BenchResult<Outcome> {
    let mut stack = Stack::start(env, s.existing).await?;
    let result = measure(&mut stack, env, s, timeout).await;
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
    stack.start_worker(env).await?;
    // Start-up reads (session, groups) are a fixed cost per process, not per tenant.
    let startup = stack.control("GET", "/_emulator/stats", None).await?;
    stack
        .control("POST", "/_emulator/reset-stats", None)
        .await?;

    let run = stack.prefix.clone();
    // The first tenant on an instance mbprov has not written to yet reads the whole collection
    // graph once to start its snapshot: a cost per instance (and per change made outside
    // mbprov), not per tenant, so it is measured and reported on its own.
    let first = tenant_created(&run, 0);
    stack.publish(&first).await?;
    let first_id = first["id"].as_str().unwrap_or_default().to_string();
    let first_started = Instant::now();
    while stack.done_count(std::slice::from_ref(&first_id)).await? < 1 {
        if first_started.elapsed() > timeout {
            return Err("the first tenant was not done in time".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    for job in &jobs {
        stack.publish(job).await?;
    }
    let published = started.elapsed();
    let mut dead = 0;
    let mut polls = 0u32;
    let (done, finished) = loop {
        let done = stack.done_count(&ids).await?;
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let peak_rss_kib = stack.worker_pid().and_then(peak_rss_kib);
    let stats = stack.control("GET", "/_emulator/stats", None).await?;
    if dead == 0 {
        dead = stack.dead_letters().await?;
    }
    stack.stop_worker().await;
    let state = stack.control("GET", "/_emulator/state", None).await?;
    let verified = state["groups"].as_array().map(|gs| {
        gs.iter()
            .filter(|g| {
                g["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("Tenant: bench-") && n != "Tenant: bench-0")
            })
            .count() as u64
    });
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
    })
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
    for s in &settings.scenarios {
        eprintln!(
            "issue {}: {} new tenants on {} existing, {} ms latency",
            s.issue, s.new, s.existing, settings.env.latency_ms
        );
        match run_scenario(&settings.env, *s, settings.timeout).await {
            Ok(o) => outcomes.push(o),
            Err(e) => eprintln!("  scenario failed: {e}"),
        }
    }
    if outcomes.is_empty() {
        return Err("no scenario completed".into());
    }
    let md = report::markdown(&outcomes, settings.env.latency_ms, settings.env.concurrency);
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
