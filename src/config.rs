//! Configuration shared by the subcommands: flags first, then environment variables, then the
//! defaults of the public contract (CONTRACT.md section 1).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where RabbitMQ is and which names to use on it.
#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ URL (`amqp://` or `amqps://`).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix of every exchange, queue and Redis key.
    #[arg(long, env = "MBPROV_PREFIX", default_value = "mbprov", global = true)]
    pub prefix: String,
}

/// Where Redis is (graph locks, job de-duplication, name caches).
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL (`redis://` or `rediss://`).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
}

/// How to reach Metabase.
#[derive(Args, Clone, Debug)]
pub struct MetabaseArgs {
    /// Base URL of the Metabase instance.
    #[arg(long, env = "METABASE_SITE_URL")]
    pub site_url: Option<String>,
    /// API key sent as `x-api-key`. Prefer METABASE_API_KEY_FILE for container secrets.
    #[arg(long, env = "METABASE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key (surrounding whitespace is ignored).
    #[arg(long, env = "METABASE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Timeout of one HTTP request to Metabase.
    #[arg(long, env = "MBPROV_HTTP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_timeout: Duration,
}

/// How a worker process runs.
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    /// Jobs run at once by this process (also the AMQP prefetch).
    #[arg(long, env = "MBPROV_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Attempts before a transiently failing job is dead-lettered as `exhausted`.
    #[arg(long, env = "MBPROV_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Address of /healthz, /readyz and /metrics, or `off`.
    #[arg(long, env = "MBPROV_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: String,
    /// How long in-flight jobs may run after SIGTERM before they are left for redelivery.
    #[arg(long, env = "MBPROV_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Retry delays, one per tier, e.g. `5s,30s,2m,10m,1h`; attempts past the last tier reuse it.
    #[arg(long, env = "MBPROV_RETRY_DELAYS", default_value = "5s,30s,2m,10m,1h", value_parser = parse_delays)]
    pub retry_delays: RetryDelays,
    /// How long a job waits for a graph lock before failing transiently.
    #[arg(long, env = "MBPROV_LOCK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub lock_wait: Duration,
    /// Optional extra wait, after the first change of a batch, for other jobs' changes to merge
    /// into the same write. 0 (the default): write at once when no write of that graph is in
    /// flight; changes arriving during a write are merged into the next one anyway.
    #[arg(long, env = "MBPROV_BATCH_LINGER", default_value = "0ms", value_parser = parse_duration)]
    pub batch_linger: Duration,
    /// Lifetime of a graph lock without its holder extending it (a crashed holder's lock frees after it).
    #[arg(long, env = "MBPROV_LOCK_TTL", default_value = "15s", value_parser = parse_duration)]
    pub lock_ttl: Duration,
    /// How long one run of a job may take; past it the run is abandoned and the job retried.
    #[arg(long, env = "MBPROV_JOB_DEADLINE", default_value = "2m", value_parser = crate::jobs::deadline::parse_deadline)]
    pub job_deadline: Duration,
    /// Per-kind deadlines overriding `MBPROV_JOB_DEADLINE`, e.g. `users.synced=10m`.
    #[arg(long, env = "MBPROV_JOB_DEADLINES", default_value = "users.synced=10m,permissions.applied=5m", value_parser = crate::jobs::deadline::parse_kind_deadlines)]
    pub job_deadlines: crate::jobs::deadline::KindDeadlines,
    /// Requests per second that all workers of the prefix send to Metabase together (unset: no cap).
    #[arg(long, env = "MBPROV_METABASE_RPS", value_parser = crate::intake::budget::parse_rps)]
    pub metabase_rps: Option<f64>,
    /// `off` disables the circuit breaker (jobs then spend their retries during an outage).
    #[arg(long, env = "MBPROV_BREAKER", default_value = "on", value_parser = parse_switch)]
    pub breaker: bool,
    /// Longest pause between two probes of Metabase while intake is held (refused key, breaker).
    #[arg(long, env = "MBPROV_PROBE_MAX_DELAY", default_value = "30s", value_parser = parse_duration)]
    pub probe_max_delay: Duration,
    /// How tenants are made in Metabase: `groups` (a group and a collection per tenant) or
    /// `native` (Metabase's own Tenants, Pro/Enterprise v0.58+).
    #[arg(long, env = "MBPROV_TENANCY", value_enum, default_value_t = Tenancy::Groups)]
    pub tenancy: Tenancy,
    /// Longest one write may hold a graph lock; past it the write is abandoned and retried later.
    #[arg(long, env = "MBPROV_GRAPH_LOCK_BUDGET", default_value = "20s", value_parser = parse_duration)]
    pub graph_lock_budget: Duration,
}

/// `on` or `off` (also `true`/`false`, `1`/`0`).
pub fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{s:?} is neither `on` nor `off`")),
    }
}

/// The tenancy backend (`MBPROV_TENANCY`); the envelope and the job kinds are the same for both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Tenancy {
    /// A group `Tenant: {tenant_id}` and a collection per tenant (works on every edition).
    #[default]
    Groups,
    /// Metabase Tenants: a tenant object per tenant, tenant users, shared tenant groups.
    Native,
}

/// The base delays of the retry tiers, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryDelays(pub Vec<Duration>);

/// `500ms`, `5s`, `2m`, `1h`, `1h30m` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 5s or 2m: {e}"))
}

/// `5s,30s,2m`: the base delays of the retry tiers, all positive.
pub fn parse_delays(s: &str) -> Result<RetryDelays, String> {
    let delays = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("at least one retry delay is needed".into());
    }
    if delays.iter().any(|d| d.is_zero()) {
        return Err("retry delays must be positive".into());
    }
    Ok(RetryDelays(delays))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_in_order() {
        let d = parse_delays("5s, 30s,2m").unwrap();
        assert_eq!(
            d.0,
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120)
            ]
        );
        assert!(parse_delays("").is_err());
        assert!(parse_delays("0s").is_err());
        assert!(parse_delays("soon").is_err());
    }

    #[test]
    fn switches() {
        for (input, want) in [
            ("on", Some(true)),
            ("OFF", Some(false)),
            (" 1 ", Some(true)),
            ("0", Some(false)),
            ("maybe", None),
        ] {
            assert_eq!(parse_switch(input).ok(), want, "{input:?}");
        }
    }
}
