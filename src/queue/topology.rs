//! The names and arguments of every exchange and queue under a prefix, and their idempotent
//! declaration (CONTRACT.md section 2).
//!
//! For prefix `P`:
//!
//! | name | what | arguments |
//! | --- | --- | --- |
//! | `P` | topic exchange, durable | publishers send with routing key = kind |
//! | `P.jobs` | quorum queue, durable, bound to `P` with `#` | `x-delivery-limit` 5, dead-letters to exchange `P.dead` |
//! | `P.retry.<delay>` | classic queue, durable, one per retry tier (`P.retry.5s`, `P.retry.2m`) | `x-message-ttl` = 1.1 × delay, dead-letters to `P.jobs` through the default exchange |
//! | `P.dead` | fanout exchange, durable | |
//! | `P.dead` | classic queue, durable, bound to exchange `P.dead` | |
//!
//! RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED), so the
//! arguments here are a pure function of the prefix and the retry delays, and a tier is named
//! by its delay: changing `MBPROV_RETRY_DELAYS` declares new tier queues instead of failing on
//! the old ones. An abandoned tier empties itself (its messages expire back to `P.jobs`) and can
//! then be deleted by an operator.
//!
//! Dead letters go through a fanout exchange rather than straight to the queue so that they keep
//! their original routing key (the contract asks for it): both our own dead-lettering and
//! RabbitMQ's (the delivery limit) publish to exchange `P.dead` with the message's routing key.
//!
//! `x-delivery-limit` guards against a job that kills the worker on every delivery: RabbitMQ
//! 3.10 has no default limit, and without one such a job would crash-loop every replica forever.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::broker::QueueError;
use super::retry::{RetryPolicy, RetryTier};

/// Deliveries of one message to `P.jobs` before RabbitMQ dead-letters it to `P.dead`.
pub const DELIVERY_LIMIT: i64 = 5;

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
        format!("{}.retry.{}", self.prefix, compact_duration(tier.base))
    }

    /// Every queue, in the order `status` shows them.
    pub fn queues(&self) -> Vec<String> {
        let mut names = vec![self.jobs_queue()];
        names.extend(self.policy.tiers().map(|t| self.retry_queue(t)));
        names.push(self.dead());
        names
    }

    /// Declares everything; safe to run any number of times, from any number of processes.
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let amqp = |what: String| move |source| QueueError::Amqp { what, source };

        channel
            .exchange_declare(
                self.work_exchange().into(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("declare exchange {}", self.work_exchange())))?;
        channel
            .exchange_declare(
                self.dead().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("declare exchange {}", self.dead())))?;

        channel
            .queue_declare(self.dead().into(), durable_queue, FieldTable::default())
            .await
            .map_err(amqp(format!("declare queue {}", self.dead())))?;
        channel
            .queue_bind(
                self.dead().into(),
                self.dead().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("bind queue {}", self.dead())))?;

        channel
            .queue_declare(
                self.jobs_queue().into(),
                durable_queue,
                self.jobs_arguments(),
            )
            .await
            .map_err(amqp(format!("declare queue {}", self.jobs_queue())))?;
        channel
            .queue_bind(
                self.jobs_queue().into(),
                self.work_exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("bind queue {}", self.jobs_queue())))?;

        for tier in self.policy.tiers() {
            let name = self.retry_queue(tier);
            channel
                .queue_declare(
                    name.clone().into(),
                    durable_queue,
                    self.retry_arguments(tier),
                )
                .await
                .map_err(amqp(format!("declare queue {name}")))?;
        }
        Ok(())
    }

    fn jobs_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), string("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert("x-dead-letter-exchange".into(), string(&self.dead()));
        args
    }

    fn retry_arguments(&self, tier: RetryTier) -> FieldTable {
        let ttl_ms = i64::try_from(tier.queue_ttl().as_millis()).unwrap_or(i64::MAX);
        let mut args = FieldTable::default();
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
    fn names_follow_the_prefix_and_the_delays() {
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
                "P.retry.50ms",
                "P.retry.5s",
                "P.retry.2m",
                "P.retry.90m",
                "P.retry.1h",
                "P.dead"
            ]
        );
        assert_eq!(topo.work_exchange(), "P");
    }
}
