//! What happens to a delivery once its handler has answered: acknowledged, copied to a retry
//! tier, or copied to `P.dead`, always copy-with-confirm first and acknowledge second, so a crash
//! in between duplicates a job (its id makes that harmless) and never loses one.

use std::time::SystemTime;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use super::broker::{QueueError, amqp, publish_confirmed};
use super::headers::{self, long_string};
use super::retry::{RetryPolicy, RetryTier};
use super::topology::Topology;
use super::{IncomingJob, JobResult};
use crate::error::ErrorClass;

/// Longest error text kept in a header; headers share one AMQP frame with the properties.
const MAX_ERROR_LEN: usize = 2000;

/// Why a job is in `P.dead`, as `x-mbprov-error-class` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadClass {
    /// The same input would fail the same way.
    Permanent,
    /// Transient failures used up every attempt.
    Exhausted,
}

impl DeadClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadClass::Permanent => "permanent",
            DeadClass::Exhausted => "exhausted",
        }
    }
}

/// Where a delivery goes, decided from the result and the attempt alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    Retry(RetryTier),
    Dead(DeadClass),
}

pub fn disposition(
    result: &JobResult,
    attempt: u32,
    max_attempts: u32,
    policy: &RetryPolicy,
) -> Disposition {
    match result {
        JobResult::Done => Disposition::Ack,
        JobResult::Failed {
            class: ErrorClass::Permanent,
            ..
        } => Disposition::Dead(DeadClass::Permanent),
        JobResult::Failed { class, .. } if class.is_transient() && attempt >= max_attempts => {
            Disposition::Dead(DeadClass::Exhausted)
        }
        JobResult::Failed { .. } => Disposition::Retry(policy.tier_for(attempt)),
    }
}

/// The headers of a failed job's copy: the original ones (without RabbitMQ's dead-letter
/// history), the routing key it was published with, and its failure history updated with this
/// attempt. `first-failed-at` survives from the first failure; `class` is set on dead letters.
pub fn failure_headers(
    original: Option<&FieldTable>,
    job: &IncomingJob,
    error: &str,
    class: Option<DeadClass>,
    now: SystemTime,
) -> FieldTable {
    let now = headers::rfc3339(now);
    let first = original
        .and_then(|h| headers::get_str(h, headers::FIRST_FAILED_AT))
        .unwrap_or_else(|| now.clone());
    let mut out = headers::carried_over(original, true);
    out.insert(headers::ROUTING_KEY.into(), long_string(&job.routing_key));
    out.insert(
        headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(job.attempt.into()),
    );
    out.insert(
        headers::ERROR.into(),
        long_string(truncate(error, MAX_ERROR_LEN)),
    );
    out.insert(headers::FIRST_FAILED_AT.into(), long_string(&first));
    out.insert(headers::LAST_FAILED_AT.into(), long_string(&now));
    if let Some(class) = class {
        out.insert(headers::ERROR_CLASS.into(), long_string(class.as_str()));
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// The properties of a republished copy: the original's identity and content description, the
/// given headers, persistent, and no expiration unless the caller sets one.
pub fn copy_properties(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = original.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = original.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = original.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        p = p.with_app_id(v.clone());
    }
    p
}

/// Carries out a disposition on one delivery.
pub(crate) struct Settler {
    /// A confirm-mode channel (publishing on the consuming channel would tie the two together).
    pub publish: Channel,
    pub topology: Topology,
    pub max_attempts: u32,
}

impl Settler {
    /// Settles `delivery`. A failed copy nacks the delivery back onto the queue (the broker
    /// keeps it) and returns the error so the worker can reconnect.
    pub async fn settle(
        &self,
        delivery: &Delivery,
        job: &IncomingJob,
        result: &JobResult,
    ) -> Result<(), QueueError> {
        let copied = match disposition(
            result,
            job.attempt,
            self.max_attempts,
            self.topology.policy(),
        ) {
            Disposition::Ack => Ok(()),
            Disposition::Retry(tier) => self.to_retry_tier(delivery, job, result, tier).await,
            Disposition::Dead(class) => self.to_dead(delivery, job, result, class).await,
        };
        match copied {
            Ok(()) => delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(|source| amqp("acknowledge a delivery", source)),
            Err(e) => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = delivery.acker.nack(requeue).await;
                Err(e)
            }
        }
    }

    async fn to_retry_tier(
        &self,
        delivery: &Delivery,
        job: &IncomingJob,
        result: &JobResult,
        tier: RetryTier,
    ) -> Result<(), QueueError> {
        let headers = failure_headers(
            delivery.properties.headers().as_ref(),
            job,
            error_text(result),
            None,
            SystemTime::now(),
        );
        let expiration = tier.expiration(rand::random_range(-1.0..=1.0));
        let properties = copy_properties(&delivery.properties, headers)
            .with_expiration(expiration.as_millis().to_string().into());
        let queue = self.topology.retry_queue(tier);
        publish_confirmed(&self.publish, "", &queue, &delivery.data, properties).await?;
        metrics::counter!("mbprov_retries_total").increment(1);
        tracing::info!(
            routing_key = %job.routing_key,
            attempt = job.attempt,
            retry_in_ms = expiration.as_millis() as u64,
            error = error_text(result),
            "job failed transiently, retrying later"
        );
        Ok(())
    }

    async fn to_dead(
        &self,
        delivery: &Delivery,
        job: &IncomingJob,
        result: &JobResult,
        class: DeadClass,
    ) -> Result<(), QueueError> {
        let headers = failure_headers(
            delivery.properties.headers().as_ref(),
            job,
            error_text(result),
            Some(class),
            SystemTime::now(),
        );
        let properties = copy_properties(&delivery.properties, headers);
        let dead = self.topology.dead();
        publish_confirmed(
            &self.publish,
            &dead,
            &job.routing_key,
            &delivery.data,
            properties,
        )
        .await?;
        metrics::counter!("mbprov_dead_lettered_total").increment(1);
        tracing::warn!(
            routing_key = %job.routing_key,
            attempt = job.attempt,
            class = class.as_str(),
            error = error_text(result),
            "job dead-lettered"
        );
        Ok(())
    }
}

fn error_text(result: &JobResult) -> &str {
    match result {
        JobResult::Done => "",
        JobResult::Failed { error, .. } => error,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::RetryDelays;

    fn failed(class: ErrorClass) -> JobResult {
        JobResult::Failed {
            class,
            error: "boom".into(),
        }
    }

    #[test]
    fn disposition_table() {
        let policy = RetryPolicy::new(&RetryDelays(vec![
            Duration::from_secs(5),
            Duration::from_secs(30),
        ]));
        let tier = |index: usize, s: u64| {
            Disposition::Retry(RetryTier {
                index,
                base: Duration::from_secs(s),
            })
        };
        let table = [
            (JobResult::Done, 1, Disposition::Ack),
            (JobResult::Done, 10, Disposition::Ack),
            (failed(ErrorClass::Transient), 1, tier(0, 5)),
            (failed(ErrorClass::Transient), 2, tier(1, 30)),
            (failed(ErrorClass::Transient), 9, tier(1, 30)),
            (
                failed(ErrorClass::Transient),
                10,
                Disposition::Dead(DeadClass::Exhausted),
            ),
            (
                failed(ErrorClass::Transient),
                11,
                Disposition::Dead(DeadClass::Exhausted),
            ),
            (
                failed(ErrorClass::Permanent),
                1,
                Disposition::Dead(DeadClass::Permanent),
            ),
        ];
        for (result, attempt, want) in table {
            assert_eq!(
                disposition(&result, attempt, 10, &policy),
                want,
                "{result:?} at {attempt}"
            );
        }
    }

    #[test]
    fn first_failure_time_survives_and_the_rest_is_updated() {
        let job = IncomingJob {
            body: vec![],
            routing_key: "user.upserted".into(),
            message_id: None,
            attempt: 3,
            trace: Default::default(),
        };
        let mut original = FieldTable::default();
        original.insert(
            headers::FIRST_FAILED_AT.into(),
            long_string("2020-01-01T00:00:00.000Z"),
        );
        original.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(2));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        let h = failure_headers(
            Some(&original),
            &job,
            "late",
            Some(DeadClass::Exhausted),
            now,
        );
        let get = |k| headers::get_str(&h, k);
        assert_eq!(
            get(headers::FIRST_FAILED_AT).as_deref(),
            Some("2020-01-01T00:00:00.000Z")
        );
        assert_eq!(
            get(headers::LAST_FAILED_AT).as_deref(),
            Some("1970-01-02T00:00:00.000Z")
        );
        assert_eq!(headers::get_u32(&h, headers::ATTEMPTS), Some(3));
        assert_eq!(get(headers::ERROR_CLASS).as_deref(), Some("exhausted"));
        assert_eq!(get(headers::ROUTING_KEY).as_deref(), Some("user.upserted"));

        let fresh = failure_headers(None, &job, &"é".repeat(3000), None, now);
        assert_eq!(
            headers::get_str(&fresh, headers::FIRST_FAILED_AT).as_deref(),
            Some("1970-01-02T00:00:00.000Z")
        );
        assert_eq!(
            headers::get_str(&fresh, headers::ERROR).map(|e| e.chars().count()),
            Some(2000)
        );
        assert!(!fresh.contains_key(headers::ERROR_CLASS));
    }
}
