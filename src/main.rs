use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mbprov::cli;

/// Provisions Metabase users, groups and permissions from a RabbitMQ queue.
#[derive(Parser, Debug)]
#[command(name = "mbprov", version, about)]
struct Cli {
    /// Log format: readable `text` or `json` lines; levels come from RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "MBPROV_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: mbprov::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume jobs and run them against Metabase until SIGTERM/SIGINT.
    Worker(Box<cli::worker::WorkerCommand>),
    /// Publish job envelopes from files (`-` is stdin) with publisher confirms.
    Publish(cli::publish::PublishArgs),
    /// List, inspect, replay or purge dead-lettered jobs.
    Dlq(cli::dlq::DlqArgs),
    /// Depth of the queues, consumers, and each worker's intake (open, paused, key refused, breaker).
    Status(cli::status::StatusArgs),
    /// Stop every worker of the prefix from taking jobs (stored: survives restarts).
    Pause(cli::pause::PauseArgs),
    /// Let the workers of the prefix take jobs again.
    Resume(cli::pause::ResumeArgs),
    /// Move the queues of an earlier mbprov to topology version 2, losing no message.
    MigrateTopology(cli::migrate::MigrateArgs),
    /// Print the changes needed for Metabase to match a permissions document (exit 2: drift).
    Plan(cli::plan::PlanArgs),
    /// Make Metabase match a permissions document, then check that no drift remains.
    Apply(cli::plan::PlanArgs),
    /// Report tenant isolation problems in Metabase (exit 2: something is flagged).
    Audit(cli::audit::AuditArgs),
    /// Prepare a fresh Metabase: first admin, then an API key for the workers, written to a file.
    BootstrapMetabase(cli::bootstrap::BootstrapArgs),
    /// An emulator of the Metabase API, for tests and for trying the pipeline.
    FakeMetabase(mbprov::emulator::EmulatorOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mbprov: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The runtime comes first: the span exporter sends on it.
    let telemetry = match mbprov::telemetry::init(cli.log_format, Some(runtime.handle().clone())) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mbprov: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Worker(cmd) => cli::worker::run(*cmd).await,
            Command::Publish(args) => cli::publish::run(args).await,
            Command::Dlq(args) => cli::dlq::run(args).await,
            Command::Status(args) => cli::status::run(args).await,
            Command::Pause(args) => cli::pause::pause(args).await,
            Command::Resume(args) => cli::pause::resume(args).await,
            Command::MigrateTopology(args) => cli::migrate::run(args).await,
            Command::Plan(args) => cli::plan::plan(args).await,
            Command::Apply(args) => cli::plan::apply(args).await,
            Command::Audit(args) => cli::audit::run(args).await,
            Command::BootstrapMetabase(args) => cli::bootstrap::run(args).await,
            Command::FakeMetabase(opts) => cli::report(mbprov::emulator::serve(opts).await),
        }
    });
    // Outside `block_on`, with the runtime still running: the last spans go out.
    telemetry.shutdown();
    code
}
