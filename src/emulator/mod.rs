//! An in-memory emulator of the Metabase API (`mbprov fake-metabase`), faithful to
//! `../shared/metabase-api.md` (its "Verified corrections" first) and to the request/response
//! facts of Metabase's own tests (`../shared/metabase-test-facts.md`), so the worker can be
//! tested and tried without a Metabase.
//!
//! It emulates one edition at one release at a time (`--edition oss|pro`,
//! `--metabase-version`; see [`state::Edition`]): free and Pro differ in membership semantics,
//! token features and 402s, and releases differ in what the graph PUTs answer.
//!
//! The initial data is described on [`state`]. Test control lives under `/_emulator/*`
//! (see [`control`]); faults (latency, error rate, outages, slow start) in [`faults`].

pub mod auth;
pub mod control;
pub mod error;
pub mod faults;
mod routes;
pub mod state;
pub mod stats;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use faults::Faults;
pub use state::EditionName;
use state::{Edition, State};
use stats::Stats;

/// `mbprov fake-metabase` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct EmulatorOptions {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on; `0.0.0.0` to be reachable from other containers.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The API key the emulator accepts in `x-api-key` (acts as a superuser).
    #[arg(long, env = "MB_EMULATOR_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Delay added to every /api request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0..1) of /api requests answered 503 before doing anything.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// The release to emulate, as `GET /api/session/properties` reports it (`v0.50.0` up to
    /// `v1.64.0`); behaviour that changed between releases follows it. Default: the newest
    /// release known, v0.64.0 (tagged `v1.64.0` on pro, `v0.64.0` on oss).
    #[arg(long)]
    pub metabase_version: Option<String>,
    /// The edition to emulate: `oss` (free: no token features, memberships replaced) or `pro`
    /// (Pro/Enterprise: advanced permissions, sandboxes, tenants; memberships diffed with
    /// `is_group_manager`).
    #[arg(long, value_enum, default_value_t = EditionName::Pro)]
    pub edition: EditionName,
    /// Alias of `--edition oss`, kept for existing scripts and compose files.
    #[arg(long)]
    pub oss: bool,
    /// Start with no users, like a new Metabase that needs `POST /api/setup`.
    #[arg(long)]
    pub fresh: bool,
    /// Start an outage (every /api route answers 503) this long after start...
    #[arg(long, default_value_t = 0)]
    pub outage_after_ms: u64,
    /// ...lasting this long (0: no scheduled outage; `POST /_emulator/faults` switches one too).
    #[arg(long, default_value_t = 0)]
    pub outage_for_ms: u64,
    /// For this long after start, answer 503 "still initializing".
    #[arg(long, default_value_t = 0)]
    pub init_delay_ms: u64,
    /// Copy a new collection's parent cells without bumping the collection-graph revision, as
    /// releases before v0.56 did, whatever `--metabase-version` says (tests mbprov's check of
    /// its own assumption).
    #[arg(long)]
    pub silent_collection_copies: bool,
}

impl EmulatorOptions {
    /// Defaults for in-process use: a free port, no faults, pro at the newest release, with
    /// the admin.
    pub fn new(api_key: impl Into<String>) -> Self {
        EmulatorOptions {
            port: 0,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            api_key: api_key.into(),
            latency_ms: 0,
            error_rate: 0.0,
            metabase_version: None,
            edition: EditionName::Pro,
            oss: false,
            fresh: false,
            init_delay_ms: 0,
            outage_after_ms: 0,
            outage_for_ms: 0,
            silent_collection_copies: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {host}:{port}: {source}. Pick another --port (0 = any free port)")]
    Bind {
        host: std::net::IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("the emulator's server failed: {0}")]
    Serve(std::io::Error),
    #[error("--error-rate must be between 0 and 1, got {0}")]
    ErrorRate(f64),
}

impl EmulatorOptions {
    /// `--oss` wins over `--edition`, being the older spelling of `--edition oss`.
    pub fn edition_name(&self) -> EditionName {
        if self.oss {
            EditionName::Oss
        } else {
            self.edition
        }
    }

    /// The tag reported by `/api/session/properties`.
    pub fn version_tag(&self) -> String {
        self.metabase_version
            .clone()
            .unwrap_or_else(|| Edition::default_tag(self.edition_name()))
    }
}

/// Settings fixed at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub api_key: String,
    pub version: String,
    pub oss: bool,
}

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub state: Arc<Mutex<State>>,
    pub stats: Arc<Stats>,
    pub faults: Arc<Faults>,
    pub config: Arc<Config>,
}

impl App {
    pub fn new(opts: &EmulatorOptions) -> Result<Self, EmulatorError> {
        if !(0.0..=1.0).contains(&opts.error_rate) {
            return Err(EmulatorError::ErrorRate(opts.error_rate));
        }
        let tag = opts.version_tag();
        let mut edition = Edition::new(
            opts.edition_name(),
            crate::metabase::models::Version::parse(&tag),
        );
        if opts.silent_collection_copies {
            edition.creation_bumps_collection_revision = false;
        }
        Ok(App {
            state: Arc::new(Mutex::new(State::new(edition, opts.fresh))),
            stats: Arc::new(Stats::default()),
            faults: Arc::new(
                Faults::new(
                    opts.latency_ms,
                    opts.error_rate,
                    Duration::from_millis(opts.init_delay_ms),
                )
                .with_outage_window(
                    Duration::from_millis(opts.outage_after_ms),
                    Duration::from_millis(opts.outage_for_ms),
                ),
            ),
            config: Arc::new(Config {
                api_key: opts.api_key.clone(),
                version: tag,
                oss: opts.edition_name() == EditionName::Oss,
            }),
        })
    }
}

/// An emulator serving in a background task; dropping it stops the server.
pub struct RunningEmulator {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningEmulator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) -> Result<(), EmulatorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r.map_err(EmulatorError::Serve),
                Err(e) => Err(EmulatorError::Serve(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn bind(opts: &EmulatorOptions) -> Result<TcpListener, EmulatorError> {
    let (host, port) = (opts.host, opts.port);
    TcpListener::bind((host, port))
        .await
        .map_err(|source| EmulatorError::Bind { host, port, source })
}

/// Binds and serves in a background task (for tests and benchmarks in the same process).
pub async fn spawn(opts: EmulatorOptions) -> Result<RunningEmulator, EmulatorError> {
    let app = App::new(&opts)?;
    let listener = bind(&opts).await?;
    let addr = listener.local_addr().map_err(EmulatorError::Serve)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let router = routes::router(app);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningEmulator {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

/// `mbprov fake-metabase`: serves until SIGINT/SIGTERM, after printing `listening on PORT`.
pub async fn serve(opts: EmulatorOptions) -> Result<(), EmulatorError> {
    let app = App::new(&opts)?;
    let listener = bind(&opts).await?;
    let port = listener.local_addr().map_err(EmulatorError::Serve)?.port();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {port}")
        .and_then(|()| out.flush())
        .map_err(EmulatorError::Serve)?;
    drop(out);
    axum::serve(listener, routes::router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(EmulatorError::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
