//! `mbprov status`: how much work is waiting where, and how many workers take it.

use std::process::ExitCode;

use crate::config::{BrokerArgs, RetryDelays};
use crate::queue::retry::RetryPolicy;
use crate::queue::topology::Topology;
use crate::queue::{Broker, QueueError, QueueStats};

/// The retry tiers a command declares and shows. The worker reads the same variable, so every
/// command agrees on the tier queues.
#[derive(clap::Args, Clone, Debug)]
pub struct RetryTierArgs {
    /// Retry delays, one per tier, e.g. `5s,30s,2m,10m,1h` (the tier queues are named after them).
    #[arg(long, env = "MBPROV_RETRY_DELAYS", default_value = "5s,30s,2m,10m,1h", value_parser = crate::config::parse_delays, global = true)]
    pub retry_delays: RetryDelays,
}

impl RetryTierArgs {
    pub fn topology(&self, broker: &BrokerArgs) -> Topology {
        Topology::new(&broker.prefix, RetryPolicy::new(&self.retry_delays))
    }
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub tiers: RetryTierArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> ExitCode {
    super::report(status(args).await)
}

async fn status(args: StatusArgs) -> Result<(), QueueError> {
    let broker = Broker::connect(&args.broker.amqp_url, args.tiers.topology(&args.broker)).await?;
    let stats = broker.queue_stats().await;
    broker.close().await;
    let stats = stats?;
    if args.json {
        let consumers = stats.first().map_or(0, |s| s.consumers);
        let doc = serde_json::json!({ "queues": stats, "consumers": consumers });
        println!("{doc}");
    } else {
        print!("{}", table(&stats));
    }
    Ok(())
}

fn table(stats: &[QueueStats]) -> String {
    let width = stats.iter().map(|s| s.name.len()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "{:<width$}  {:>8}  {:>9}\n",
        "QUEUE", "MESSAGES", "CONSUMERS"
    );
    for s in stats {
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>9}\n",
            s.name, s.messages, s.consumers
        ));
    }
    out
}
