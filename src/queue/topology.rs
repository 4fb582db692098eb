//! The names and arguments of every exchange and queue under a prefix, and their idempotent
//! declaration (CONTRACT.md section 2).
//!
//! For prefix `P` (topology version 2):
//!
//! | name | what | arguments |
//! | --- | --- | --- |
//! | `P` | topic exchange, durable | publishers send with routing key = kind |
//! | `P.jobs` | quorum queue, bound to `P` with `#` | `x-delivery-limit` 5, dead-letters to exchange `P.dead` at least once |
//! | `P.retry.v2.<delay>` | quorum queue, one per retry tier (`P.retry.v2.5s`, `P.retry.v2.2m`) | `x-message-ttl` = 1.1 × delay, dead-letters to `P.jobs` through the default exchange at least once |
//! | `P.dead` | fanout exchange, durable | |
//! | `P.dead` | classic queue, durable, bound to exchange `P.dead` | |
//!
//! "At least once" is RabbitMQ 3.10's dead-letter strategy for quorum queues: the source queue
//! keeps a dead-lettered message until the target queue has confirmed it, and retries when the
//! target is missing or unroutable. It needs `x-dead-letter-strategy: at-least-once`,
//! `x-overflow: reject-publish` (with the default `drop-head` RabbitMQ silently falls back to at
//! most once) and the `stream_queue` feature flag (on by default since 3.9). Quorum queues
//! support message TTL, queue-wide and per message, since 3.10, so the tiers keep their jitter
//! (see [`super::retry`]). No queue sets a length limit, so `reject-publish` never rejects.
//!
//! Version 1 (mbprov before December 2026) declared the tiers as classic queues named
//! `P.retry.<delay>`, whose TTL dead-lettering is at most once, and `P.jobs` without the
//! strategy and overflow arguments. RabbitMQ refuses to redeclare a queue with other arguments
//! (PRECONDITION_FAILED, closing the channel), so [`Topology::declare`] reports an outdated
//! `P.jobs` as [`QueueError::OutdatedTopology`] and `mbprov migrate-topology`
//! ([`super::migration`]) moves a version-1 deployment over without losing a message.
//!
//! The arguments here are a pure function of the prefix and the retry delays, and a tier is
//! named by its delay: changing `MBPROV_RETRY_DELAYS` declares new tier queues instead of failing
//! on the old ones. An abandoned tier empties itself (its messages expire back to `P.jobs`) and
//! can then be deleted by an operator.
//!
//! Dead letters go through a fanout exchange rather than straight to the queue so that they keep
//! their original routing key (the contract asks for it): both our own dead-lettering and
//! RabbitMQ's (the delivery limit) publish to exchange `P.dead` with the message's routing key.
//! `P.dead` stays a classic queue: nothing dead-letters out of it, and `mbprov dlq` relies on a
//! classic queue putting a requeued message back where it was (see [`super::dead_letters`]).
//!
//! `x-delivery-limit` guards against a job that kills the worker on every delivery: RabbitMQ
//! 3.10 has no default limit, and without one such a job would crash-loop every replica forever.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::broker::{QueueError, is_precondition_failed};
use super::retry::{RetryPolicy, RetryTier};

/// Deliveries of one message to `P.jobs` before RabbitMQ dead-letters it to `P.dead`.
pub const DELIVERY_LIMIT: i64 = 5;

/// The version of the queue layout this build declares; in the retry tiers' names.
pub const VERSION: u32 = 2;

/// The names under one prefix, with the retry tiers of one policy.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    policy: RetryPolicy,
}

impl Topology {
    pub fn new(prefix: &str, policy: RetryPolicy) -> Self {
        Self {
            prefix: prefix.to_owned(),
            policy,
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The topic exchange publishers send jobs to.
    pub fn work_exchange(&self) -> String {
        self.prefix.clone()
    }

    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Both the fanout exchange and the queue of dead letters.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn retry_queue(&self, tier: RetryTier) -> String {
        format!(
            "{}.retry.v{VERSION}.{}",
            self.prefix,
            compact_duration(tier.base)
        )
    }

    /// The name version 1 gave the tier of the same delay (a classic queue).
    pub fn legacy_retry_queue(&self, delay: std::time::Duration) -> String {
        format!("{}.retry.{}", self.prefix, compact_duration(delay))
    }

    /// Where new jobs wait while `P.jobs` is being re-created by a migration.
    pub fn staging_queue(&self) -> String {
        format!("{}.jobs.migrating", self.prefix)
    }

    /// Where a migration keeps the retries of the old tiers while `P.jobs` is re-created.
    pub fn retry_holding_queue(&self) -> String {
        format!("{}.retry.migrating", self.prefix)
    }

    /// Every queue, in the order `status` shows them.
    pub fn queues(&self) -> Vec<String> {
        let mut names = vec![self.jobs_queue()];
        names.extend(self.policy.tiers().map(|t| self.retry_queue(t)));
        names.push(self.dead());
        names
    }

    /// Declares everything; safe to run any number of times, from any number of processes.
    /// A `P.jobs` declared with other arguments (version 1) closes `channel` and comes back as
    /// [`QueueError::OutdatedTopology`].
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        self.declare_exchanges_and_dead(channel).await?;
        self.declare_jobs(channel).await?;
        bind(channel, &self.jobs_queue(), &self.work_exchange(), "#").await?;
        self.declare_tiers(channel).await
    }

    /// The exchanges and `P.dead`, which no version changed.
    pub async fn declare_exchanges_and_dead(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (self.work_exchange(), ExchangeKind::Topic),
            (self.dead(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(
                    name.clone().into(),
                    kind,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!("declare exchange {name}")))?;
        }
        declare_queue(channel, &self.dead(), FieldTable::default()).await?;
        bind(channel, &self.dead(), &self.dead(), "").await
    }

    /// `P.jobs` with this version's arguments.
    pub async fn declare_jobs(&self, channel: &Channel) -> Result<(), QueueError> {
        self.declare_work_queue(channel, &self.jobs_queue()).await
    }

    /// A queue with `P.jobs`' arguments under another name (the migration's staging queue).
    pub async fn declare_work_queue(
        &self,
        channel: &Channel,
        name: &str,
    ) -> Result<(), QueueError> {
        match declare_queue(channel, name, self.jobs_arguments()).await {
            Err(QueueError::Amqp { source, .. }) if is_precondition_failed(&source) => {
                Err(QueueError::OutdatedTopology {
                    queue: name.to_owned(),
                })
            }
            other => other,
        }
    }

    pub async fn declare_tiers(&self, channel: &Channel) -> Result<(), QueueError> {
        for tier in self.policy.tiers() {
            declare_queue(channel, &self.retry_queue(tier), self.retry_arguments(tier)).await?;
        }
        Ok(())
    }

    /// The arguments version 1 gave the classic tier of `delay` (for the migration, which must
    /// name an old tier to empty it).
    pub fn legacy_retry_arguments(&self, delay: std::time::Duration) -> FieldTable {
        let ttl = delay.mul_f64(1.0 + super::retry::JITTER);
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        args.insert("x-dead-letter-exchange".into(), string(""));
        args.insert(
            "x-dead-letter-routing-key".into(),
            string(&self.jobs_queue()),
        );
        args
    }

    fn jobs_arguments(&self) -> FieldTable {
        let mut args = at_least_once();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert("x-dead-letter-exchange".into(), string(&self.dead()));
        args
    }

    fn retry_arguments(&self, tier: RetryTier) -> FieldTable {
        let ttl_ms = i64::try_from(tier.queue_ttl().as_millis()).unwrap_or(i64::MAX);
        let mut args = at_least_once();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
        // The default exchange routes by queue name, so expired messages go to `P.jobs` alone,
        // not to every other queue someone bound to the work exchange.
        args.insert("x-dead-letter-exchange".into(), string(""));
        args.insert(
            "x-dead-letter-routing-key".into(),
            string(&self.jobs_queue()),
        );
        args
    }
}

/// The arguments every dead-lettering queue of version 2 shares: quorum, and dead letters kept
/// until their target confirms them.
fn at_least_once() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    args.insert("x-overflow".into(), string("reject-publish"));
    args
}

fn amqp(what: String) -> impl FnOnce(lapin::Error) -> QueueError {
    move |source| QueueError::Amqp { what, source }
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), QueueError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, args)
        .await
        .map(drop)
        .map_err(amqp(format!("declare queue {name}")))
}

pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), QueueError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp(format!("bind queue {queue} to {exchange:?}")))
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// `5s`, `2m`, `1h`, `90m`, `250ms`: the largest unit that divides the delay exactly, so a name
/// is short, stable and maps back to one delay.
pub fn compact_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::RetryDelays;

    #[test]
    fn names_follow_the_prefix_the_version_and_the_delays() {
        let delays = RetryDelays(vec![
            Duration::from_millis(50),
            Duration::from_secs(5),
            Duration::from_secs(120),
            Duration::from_secs(5400),
            Duration::from_secs(3600),
        ]);
        let topo = Topology::new("P", RetryPolicy::new(&delays));
        assert_eq!(
            topo.queues(),
            vec![
                "P.jobs",
                "P.retry.v2.50ms",
                "P.retry.v2.5s",
                "P.retry.v2.2m",
                "P.retry.v2.90m",
                "P.retry.v2.1h",
                "P.dead"
            ]
        );
        assert_eq!(topo.work_exchange(), "P");
        assert_eq!(
            topo.legacy_retry_queue(Duration::from_secs(30)),
            "P.retry.30s"
        );
        assert_eq!(topo.staging_queue(), "P.jobs.migrating");
    }

    #[test]
    fn every_dead_lettering_queue_is_at_least_once() {
        let topo = Topology::new(
            "P",
            RetryPolicy::new(&RetryDelays(vec![Duration::from_secs(5)])),
        );
        let tier = topo.policy().tier_for(1);
        for args in [topo.jobs_arguments(), topo.retry_arguments(tier)] {
            let get = |k: &str| crate::queue::headers::get_str(&args, k);
            assert_eq!(get("x-queue-type").as_deref(), Some("quorum"));
            assert_eq!(
                get("x-dead-letter-strategy").as_deref(),
                Some("at-least-once")
            );
            assert_eq!(get("x-overflow").as_deref(), Some("reject-publish"));
            assert!(get("x-dead-letter-exchange").is_some());
        }
    }
}
