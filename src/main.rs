use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mbprov::cli;
use mbprov::config::{BrokerArgs, MetabaseArgs, RedisArgs, WorkerArgs};

/// Provisions Metabase users, groups and permissions from a RabbitMQ queue.
#[derive(Parser, Debug)]
#[command(name = "mbprov", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume jobs and run them against Metabase until SIGTERM/SIGINT.
    Worker {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        metabase: MetabaseArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Publish job envelopes from files (`-` is stdin) with publisher confirms.
    Publish(cli::publish::PublishArgs),
    /// List, inspect, replay or purge dead-lettered jobs.
    Dlq(cli::dlq::DlqArgs),
    /// Depth of the work, retry and dead-letter queues, and the number of consumers.
    Status(cli::status::StatusArgs),
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
    runtime.block_on(async move {
        match cli.command {
            Command::Worker {
                broker,
                redis,
                metabase,
                worker,
            } => cli::worker::run(broker, redis, metabase, worker).await,
            Command::Publish(args) => cli::publish::run(args).await,
            Command::Dlq(args) => cli::dlq::run(args).await,
            Command::Status(args) => cli::status::run(args).await,
            Command::FakeMetabase(opts) => cli::report(mbprov::emulator::serve(opts).await),
        }
    })
}
