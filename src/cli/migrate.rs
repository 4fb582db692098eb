//! `mbprov migrate-topology`: brings a prefix's queues from topology version 1 to version 2
//! (at-least-once dead-lettering; see `queue::migration` for the steps and why no message is
//! lost). Safe to run again, and on a prefix that is already current (it then changes nothing).

use std::process::ExitCode;

use super::status::RetryTierArgs;
use crate::config::{BrokerArgs, RetryDelays};
use crate::queue::{Broker, QueueError, migration};

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub tiers: RetryTierArgs,
    /// Delays of the old retry tiers to empty (`P.retry.<delay>`), when they differ from
    /// `MBPROV_RETRY_DELAYS` (for example after the delays were changed).
    #[arg(long, value_parser = crate::config::parse_delays)]
    pub legacy_retry_delays: Option<RetryDelays>,
}

pub async fn run(args: MigrateArgs) -> ExitCode {
    super::report(migrate(args).await)
}

async fn migrate(args: MigrateArgs) -> Result<(), QueueError> {
    let topology = args.tiers.topology(&args.broker);
    let legacy = args
        .legacy_retry_delays
        .unwrap_or_else(|| args.tiers.retry_delays.clone());
    let broker = Broker::connect_undeclared(&args.broker.amqp_url, topology).await?;
    let mut progress = |line: &str| eprintln!("migrate-topology: {line}");
    let report = migration::migrate(&broker, &legacy.0, &mut progress).await;
    broker.close().await;
    let report = report?;
    if report.changed_nothing() {
        println!("topology is current (version 2); nothing to do");
    } else {
        let moved: u64 = report.moved.iter().map(|(_, n)| n).sum();
        let from: Vec<String> = report
            .moved
            .iter()
            .map(|(queue, n)| format!("{n} from {queue}"))
            .collect();
        println!(
            "migrated to topology version 2: moved {moved} message(s) ({})",
            from.join(", ")
        );
    }
    Ok(())
}
