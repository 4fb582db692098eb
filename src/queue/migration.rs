//! `mbprov migrate-topology`: moves a prefix from topology version 1 (classic retry tiers
//! `P.retry.<delay>`, a `P.jobs` without at-least-once dead-lettering) to version 2 (see
//! [`super::topology`]) without losing or dropping a message.
//!
//! RabbitMQ cannot change a queue's arguments in place over AMQP (a policy can, but policies
//! need `rabbitmqctl` or the management API, which mbprov does not assume), so `P.jobs` is
//! re-created under the same name, the name the contract gives publishers' operators:
//!
//! 1. Refuse while `P.jobs` has consumers: the workers must be stopped (old workers would keep
//!    dead-lettering into the old tiers).
//! 2. Declare the staging queue `P.jobs.migrating` (version 2 arguments), bind it to `P` with
//!    `#`, then unbind `P.jobs`: from here new jobs wait in the staging queue. For a moment
//!    both are bound, so a job published then is in both (a duplicate, harmless: jobs are
//!    idempotent by id), never in neither.
//! 3. Move every message of each old tier to the holding queue `P.retry.migrating` (quorum, no
//!    TTL; each message's `expiration` kept in `x-mbprov-migrating-expiration` so it cannot
//!    expire there), then delete the old tier once empty (`if-empty`: a classic queue supports
//!    it). The old tiers must be gone before the old `P.jobs` is: a classic queue's TTL
//!    dead-lettering drops a message whose target queue is missing. They cannot go straight
//!    to the version 2 tiers: those dead-letter to `P.jobs` by name, into the old queue about to
//!    be deleted.
//! 4. Move every message of the old `P.jobs` to the staging queue, delete it, and declare it
//!    again with version 2 arguments. Nothing routes to it by then (unbound, old tiers gone,
//!    version 2 tiers empty, no worker). RabbitMQ 3.10 refuses `if-empty` on a quorum queue
//!    (NOT_IMPLEMENTED, closing the connection), so the delete follows a depth check instead.
//! 5. Bind the new `P.jobs` to `P`; move the held retries to the version 2 tier that fits the
//!    rest of their wait (from their expiration and `x-mbprov-last-failed-at`, see
//!    [`remaining_wait`]); unbind the staging queue and move its jobs to `P.jobs`; delete both.
//!
//! Every move copies with a publisher confirm before it acknowledges, and every step checks
//! what exists first, so an interrupted migration is finished by running it again. Messages
//! keep their body, properties and headers; those that travel through a queue named other than
//! by their kind carry it in `x-mbprov-routing-key`, as retries always have.

use std::time::{Duration, SystemTime};

use lapin::Channel;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::broker::{
    Broker, QueueError, amqp, is_not_found, is_precondition_failed, publish_confirmed,
    same_properties, same_properties_but_expiration,
};
use super::headers::{self, long_string};
use super::retry::{RetryPolicy, RetryTier};
use super::topology::bind;

/// Rounds of "move what is left, try to delete" before a queue that keeps filling is reported.
const DELETE_ROUNDS: usize = 50;

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// `P.jobs` had version 1 arguments and was re-created.
    pub recreated_jobs_queue: bool,
    /// Messages moved out of the old queues (old tiers, old `P.jobs`), per queue, in the order
    /// they were emptied; the passes through the temporary queues are not counted again.
    pub moved: Vec<(String, u64)>,
}

impl MigrationReport {
    pub fn changed_nothing(&self) -> bool {
        !self.recreated_jobs_queue && self.moved.is_empty()
    }
}

/// Migrates the broker's topology for `broker`'s prefix. `legacy_delays` are the delays of the
/// old tiers to empty (usually the configured ones; a tier that does not exist is skipped).
pub async fn migrate(
    broker: &Broker,
    legacy_delays: &[Duration],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<MigrationReport, QueueError> {
    let topo = broker.topology().clone();
    let jobs = topo.jobs_queue();
    let staging = topo.staging_queue();
    let mut report = MigrationReport::default();

    topo.declare_exchanges_and_dead(broker.channel()).await?;
    let probe = broker.open_channel().await?;
    let jobs_current = match topo.declare_jobs(&probe).await {
        Ok(()) => {
            let _ = probe.close(200, "bye".into()).await;
            true
        }
        Err(QueueError::OutdatedTopology { .. }) => false,
        Err(e) => return Err(e),
    };

    if !jobs_current {
        let consumers = inspect(broker, &jobs).await?.map_or(0, |q| q.1);
        if consumers > 0 {
            return Err(QueueError::Refused(format!(
                "{jobs} has {consumers} consumer(s): stop every worker of this prefix before migrating"
            )));
        }
        topo.declare_work_queue(broker.channel(), &staging).await?;
        bind(broker.channel(), &staging, &topo.work_exchange(), "#").await?;
        unbind(broker, &jobs, &topo.work_exchange()).await?;
        progress(&format!(
            "new jobs wait in {staging} while {jobs} is re-created"
        ));
    }

    topo.declare_tiers(broker.channel()).await?;
    // Queues that may or may not be there (an old tier, what an interrupted run left) are
    // declared rather than probed: a passive declare of a missing queue closes the channel and
    // logs an error, and a migration should read clean. One that was not there is empty and
    // is deleted again at once.
    let holding = topo.retry_holding_queue();
    declare_holding(broker, &holding).await?;
    for &delay in legacy_delays {
        let old = topo.legacy_retry_queue(delay);
        declare_existing(broker, &old, topo.legacy_retry_arguments(delay)).await?;
        let ceiling = delay.mul_f64(1.0 + super::retry::JITTER);
        let to_holding = |m: &BasicGetMessage| (holding.clone(), held_retry(m, ceiling));
        empty_and_delete(
            broker,
            &old,
            &to_holding,
            Source::OldTier,
            &mut report,
            progress,
        )
        .await?;
    }

    if !jobs_current {
        let to_staging = |m: &BasicGetMessage| (staging.clone(), keep_routing_key(m));
        empty_and_delete(
            broker,
            &jobs,
            &to_staging,
            Source::Old,
            &mut report,
            progress,
        )
        .await?;
        topo.declare_jobs(broker.channel()).await?;
        report.recreated_jobs_queue = true;
        progress(&format!("{jobs} declared again with version 2 arguments"));
    }
    bind(broker.channel(), &jobs, &topo.work_exchange(), "#").await?;

    let policy = topo.policy().clone();
    let to_tier = |m: &BasicGetMessage| {
        let (tier, properties) = released_retry(m, &policy, SystemTime::now());
        (topo.retry_queue(tier), properties)
    };
    empty_and_delete(
        broker,
        &holding,
        &to_tier,
        Source::Temporary,
        &mut report,
        progress,
    )
    .await?;
    let probe = broker.open_channel().await?;
    let staged = topo.declare_work_queue(&probe, &staging).await;
    let _ = probe.close(200, "bye".into()).await;
    staged?;
    unbind(broker, &staging, &topo.work_exchange()).await?;
    let to_jobs = |m: &BasicGetMessage| (jobs.clone(), keep_routing_key(m));
    empty_and_delete(
        broker,
        &staging,
        &to_jobs,
        Source::Temporary,
        &mut report,
        progress,
    )
    .await?;
    Ok(report)
}

/// How long a message taken out of an old tier still had to wait: its `expiration` (else the
/// tier's ceiling, `fallback`) less the time since it was put there (`x-mbprov-last-failed-at`,
/// written by the worker as it did so). Unknown times count as "just put there".
pub fn remaining_wait(
    expiration_ms: Option<&str>,
    failed_at: Option<SystemTime>,
    fallback: Duration,
    now: SystemTime,
) -> Duration {
    let total = expiration_ms
        .and_then(|e| e.trim().parse::<u64>().ok())
        .map_or(fallback, Duration::from_millis);
    let waited = failed_at
        .and_then(|at| now.duration_since(at).ok())
        .unwrap_or_default();
    total.saturating_sub(waited)
}

/// The version 2 tier for a message that still has `wait` to go, and its `expiration` there:
/// the shortest tier whose ceiling holds the wait (so it does not queue behind much longer
/// waits), else the longest tier, capped at its ceiling. Never 0 ms.
pub fn landing(policy: &RetryPolicy, wait: Duration) -> (RetryTier, Duration) {
    let mut by_ceiling: Vec<RetryTier> = policy.tiers().collect();
    by_ceiling.sort_by_key(|t| t.queue_ttl());
    let tier = by_ceiling
        .iter()
        .find(|t| t.queue_ttl() >= wait)
        .or(by_ceiling.last())
        .copied()
        .unwrap_or_else(|| policy.tier_for(1));
    let expiration = wait.min(tier.queue_ttl()).max(Duration::from_millis(1));
    (tier, expiration)
}

/// Header of a held retry: the `expiration` it had in its old tier (ms).
pub const MIGRATING_EXPIRATION: &str = "x-mbprov-migrating-expiration";

/// A retry taken out of an old tier, for the holding queue: no `expiration` (it would expire
/// there, with nowhere to go), the one it had kept in a header (else the tier's ceiling).
fn held_retry(m: &BasicGetMessage, ceiling: Duration) -> lapin::BasicProperties {
    let p = &m.delivery.properties;
    let expiration = p
        .expiration()
        .as_ref()
        .map(|e| e.to_string())
        .unwrap_or_else(|| ceiling.as_millis().to_string());
    let mut h = p.headers().clone().unwrap_or_default();
    h.insert(MIGRATING_EXPIRATION.into(), long_string(&expiration));
    same_properties_but_expiration(p, h)
}

/// A held retry, for the version 2 tier that fits the rest of its wait.
fn released_retry(
    m: &BasicGetMessage,
    policy: &RetryPolicy,
    now: SystemTime,
) -> (RetryTier, lapin::BasicProperties) {
    let p = &m.delivery.properties;
    let original = p.headers().clone().unwrap_or_default();
    let wait = remaining_wait(
        headers::get_str(&original, MIGRATING_EXPIRATION).as_deref(),
        message_failed_at(m),
        Duration::ZERO,
        now,
    );
    let (tier, expiration) = landing(policy, wait);
    let mut h = lapin::types::FieldTable::default();
    for (k, v) in original.inner().iter() {
        if k.as_str() != MIGRATING_EXPIRATION {
            h.insert(k.clone(), v.clone());
        }
    }
    let properties = same_properties_but_expiration(p, h)
        .with_expiration(expiration.as_millis().to_string().into());
    (tier, properties)
}

/// Same message, with its kind kept in `x-mbprov-routing-key` (the default exchange replaces
/// the routing key with the queue name) and without RabbitMQ's delivery history.
fn keep_routing_key(m: &BasicGetMessage) -> lapin::BasicProperties {
    let original = m.delivery.properties.headers().as_ref();
    let kind = headers::original_routing_key(original, m.delivery.routing_key.as_str());
    let mut h = headers::carried_over(original, true);
    h.insert(headers::ROUTING_KEY.into(), long_string(&kind));
    same_properties(&m.delivery.properties, h)
}

fn message_failed_at(m: &BasicGetMessage) -> Option<SystemTime> {
    let h = m.delivery.properties.headers().as_ref()?;
    super::dead_letters::parse_time(&headers::get_str(h, headers::LAST_FAILED_AT)?)
}

/// How a drained queue is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deletion {
    /// `queue.delete` with `if-empty`, atomic (classic queues).
    IfEmpty,
    /// A depth check, then a plain delete: quorum queues refuse `if-empty` in RabbitMQ 3.10, so
    /// this is only used on queues nothing routes to any more.
    AfterDrain,
}

/// Which queue a pass empties: the report counts messages out of the old ones only (the same
/// message passes through a temporary queue once more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A classic retry tier of version 1.
    OldTier,
    /// The version 1 `P.jobs`.
    Old,
    /// The staging or holding queue.
    Temporary,
}

impl Source {
    fn deletion(self) -> Deletion {
        match self {
            Source::OldTier => Deletion::IfEmpty,
            Source::Old | Source::Temporary => Deletion::AfterDrain,
        }
    }
}

/// Moves every message of `queue` to the queue `route` names (through the default exchange,
/// with the properties it gives), then deletes `queue` once it is empty.
async fn empty_and_delete(
    broker: &Broker,
    queue: &str,
    route: &(dyn Fn(&BasicGetMessage) -> (String, lapin::BasicProperties) + Sync),
    source: Source,
    report: &mut MigrationReport,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), QueueError> {
    let mut moved = 0u64;
    for _ in 0..DELETE_ROUNDS {
        moved += move_all(broker, queue, route).await?;
        let deletion = source.deletion();
        if deletion == Deletion::AfterDrain
            && inspect(broker, queue).await?.is_some_and(|q| q.0 > 0)
        {
            continue;
        }
        let scratch = broker.open_channel().await?;
        let options = QueueDeleteOptions {
            if_empty: deletion == Deletion::IfEmpty,
            ..QueueDeleteOptions::default()
        };
        match scratch.queue_delete(queue.into(), options).await {
            Ok(_) => {
                let _ = scratch.close(200, "bye".into()).await;
                if moved > 0 {
                    progress(&format!(
                        "moved {moved} message(s) out of {queue}, deleted it"
                    ));
                    if source != Source::Temporary {
                        report.moved.push((queue.to_owned(), moved));
                    }
                }
                return Ok(());
            }
            // Something arrived after the last read: move it too.
            Err(e) if is_precondition_failed(&e) => continue,
            Err(e) => return Err(amqp(&format!("delete queue {queue}"), e)),
        }
    }
    Err(QueueError::Refused(format!(
        "{queue} keeps receiving messages; is a worker or publisher still using it?"
    )))
}

/// A quorum queue without TTL or dead-lettering: retries wait here, unexpiring, while `P.jobs`
/// is re-created.
async fn declare_holding(broker: &Broker, name: &str) -> Result<(), QueueError> {
    let mut args = lapin::types::FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    broker
        .channel()
        .queue_declare(name.into(), durable, args)
        .await
        .map(drop)
        .map_err(|source| amqp(&format!("declare queue {name}"), source))
}

async fn move_all(
    broker: &Broker,
    queue: &str,
    route: &(dyn Fn(&BasicGetMessage) -> (String, lapin::BasicProperties) + Sync),
) -> Result<u64, QueueError> {
    let reader = broker.open_channel().await?;
    let mut moved = 0;
    let result = async {
        while let Some(m) = reader
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|source| amqp(&format!("read {queue}"), source))?
        {
            let (target, properties) = route(&m);
            publish_confirmed(broker.channel(), "", &target, &m.delivery.data, properties).await?;
            m.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|source| amqp(&format!("remove a moved message from {queue}"), source))?;
            moved += 1;
        }
        Ok::<_, QueueError>(moved)
    }
    .await;
    let _ = reader.close(200, "bye".into()).await;
    result
}

/// `(messages, consumers)` of a queue, or `None` when it does not exist (probed on a channel
/// of its own: RabbitMQ closes the channel of a passive declare that finds nothing).
async fn inspect(broker: &Broker, queue: &str) -> Result<Option<(u32, u32)>, QueueError> {
    let probe: Channel = broker.open_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = match probe
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => Some((q.message_count(), q.consumer_count())),
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(amqp(&format!("inspect queue {queue}"), e)),
    };
    let _ = probe.close(200, "bye".into()).await;
    Ok(found)
}

/// Unbinds `queue` from `exchange` (`#`); a binding that is already gone is fine (a run that
/// was interrupted after unbinding).
async fn unbind(broker: &Broker, queue: &str, exchange: &str) -> Result<(), QueueError> {
    let scratch = broker.open_channel().await?;
    let unbound = scratch
        .queue_unbind(
            queue.into(),
            exchange.into(),
            "#".into(),
            FieldTable::default(),
        )
        .await;
    let _ = scratch.close(200, "bye".into()).await;
    match unbound {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(amqp(&format!("unbind queue {queue} from {exchange:?}"), e)),
    }
}

/// Makes sure `queue` exists: declared with `args`, or already there with other arguments.
async fn declare_existing(
    broker: &Broker,
    queue: &str,
    args: FieldTable,
) -> Result<(), QueueError> {
    let scratch = broker.open_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = scratch.queue_declare(queue.into(), durable, args).await;
    let _ = scratch.close(200, "bye".into()).await;
    match declared {
        Ok(_) => Ok(()),
        Err(e) if is_precondition_failed(&e) => Ok(()),
        Err(e) => Err(amqp(&format!("declare queue {queue}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryDelays;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_rest_of_a_wait() {
        let now = SystemTime::UNIX_EPOCH + secs(1000);
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + secs(s));
        let table = [
            (Some("30000"), at(990), secs(33), secs(20)),
            (Some("30000"), at(900), secs(33), secs(0)),
            (None, at(990), secs(33), secs(23)),
            (Some("30000"), None, secs(33), secs(30)),
            (Some("soon"), None, secs(33), secs(33)),
            (Some("30000"), at(2000), secs(33), secs(30)),
        ];
        for (expiration, failed_at, fallback, want) in table {
            assert_eq!(
                remaining_wait(expiration, failed_at, fallback, now),
                want,
                "{expiration:?} {failed_at:?}"
            );
        }
    }

    #[test]
    fn a_wait_lands_in_the_shortest_tier_that_holds_it() {
        let policy = RetryPolicy::new(&RetryDelays(vec![secs(5), secs(30), secs(120)]));
        let table = [
            (Duration::ZERO, 5, Duration::from_millis(1)),
            (secs(3), 5, secs(3)),
            (
                Duration::from_millis(5_500),
                5,
                Duration::from_millis(5_500),
            ),
            (secs(6), 30, secs(6)),
            (secs(100), 120, secs(100)),
            (secs(3600), 120, secs(132)),
        ];
        for (wait, want_tier, want_expiration) in table {
            let (tier, expiration) = landing(&policy, wait);
            assert_eq!(
                (tier.base, expiration),
                (secs(want_tier), want_expiration),
                "{wait:?}"
            );
        }
    }
}
