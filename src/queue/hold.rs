//! Jobs held back by the intake gate: which failures go back to the queue instead of being
//! settled, and how they go back without spending an attempt.
//!
//! A plain `nack` with requeue would count as a delivery on the quorum queue `P.jobs` (whose
//! `x-delivery-limit` dead-letters a message after a few), and holding the delivery unacked
//! through a long hold would trip RabbitMQ's `consumer_timeout`. So a held job is copied back
//! to `P.jobs` with publisher confirms, with its headers (and so its attempt count) unchanged,
//! and only then acknowledged: a crash in between duplicates it (harmless by its id), never
//! loses it. It goes to the back of the queue.

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use super::broker::{QueueError, amqp, publish_confirmed};
use super::headers::{self, long_string};
use super::settle::copy_properties;
use super::topology::Topology;
use super::{IncomingJob, JobResult};
use crate::error::ErrorClass;
use crate::intake::{GateState, Hold};

/// Whether a finished job goes back to the queue (and why) instead of being settled: a
/// refused key always (the job is not at fault, and every job would fail alike), a transient
/// failure while the breaker is open (Metabase is down; retrying on a timer only burns
/// attempts). Everything else is settled as usual.
pub fn held_back(result: &JobResult, gate: &GateState) -> Option<Hold> {
    match result {
        JobResult::Failed {
            class: ErrorClass::Authentication,
            ..
        } => Some(Hold::Authentication),
        JobResult::Failed { class, .. } if class.is_transient() && gate.breaker.is_some() => {
            Some(Hold::Breaker)
        }
        _ => None,
    }
}

/// Puts `delivery` back on `P.jobs` unchanged, then acknowledges it. On failure the delivery is
/// nacked back (the broker keeps it, counting a delivery) and the error returned.
pub(crate) async fn send_back(
    publish: &Channel,
    topology: &Topology,
    delivery: &Delivery,
    job: &IncomingJob,
    hold: Hold,
) -> Result<(), QueueError> {
    let mut headers = headers::carried_over(delivery.properties.headers().as_ref(), true);
    // Straight to the queue through the default exchange: the original routing key travels in
    // our header, as it does through the retry tiers.
    headers.insert(headers::ROUTING_KEY.into(), long_string(&job.routing_key));
    let properties = copy_properties(&delivery.properties, headers);
    let queue = topology.jobs_queue();
    let copied = publish_confirmed(publish, "", &queue, &delivery.data, properties).await;
    if let Err(e) = copied {
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        let _ = delivery.acker.nack(requeue).await;
        return Err(e);
    }
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .map_err(|source| amqp("acknowledge a delivery", source))?;
    crate::ops::metrics::job_returned(hold);
    tracing::info!(routing_key = %job.routing_key, attempt = job.attempt, reason = hold.as_str(), "job put back on the queue without spending an attempt");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(class: ErrorClass) -> JobResult {
        JobResult::Failed {
            class,
            error: "x".into(),
        }
    }

    #[test]
    fn what_goes_back() {
        let open = GateState::default();
        let breaker = GateState {
            breaker: Some("10 of 10".into()),
            ..GateState::default()
        };
        let paused = GateState {
            paused: Some(crate::intake::PauseInfo {
                reason: None,
                since: "t".into(),
            }),
            ..GateState::default()
        };
        let table = [
            (JobResult::Done, &open, None),
            (JobResult::Done, &breaker, None),
            (
                failed(ErrorClass::Authentication),
                &open,
                Some(Hold::Authentication),
            ),
            (
                failed(ErrorClass::Authentication),
                &breaker,
                Some(Hold::Authentication),
            ),
            (failed(ErrorClass::Transient), &open, None),
            (failed(ErrorClass::Transient), &paused, None),
            (failed(ErrorClass::Transient), &breaker, Some(Hold::Breaker)),
            (
                failed(ErrorClass::OutcomeUnknown),
                &breaker,
                Some(Hold::Breaker),
            ),
            (failed(ErrorClass::Permanent), &breaker, None),
        ];
        for (result, gate, want) in table {
            assert_eq!(held_back(&result, gate), want, "{result:?} {gate:?}");
        }
    }
}
