//! The walk through `P.dead` that every `dlq` command makes, in bounded memory with a bounded
//! number of messages unacknowledged.
//!
//! AMQP 0-9-1 has no "peek" and no "fetch by id": a message can only be read by taking it, and a
//! message handed back (`nack` with requeue) goes back to where it was in a classic queue, that
//! is, to the head, so a reader that hands back what it read reads it again. A command therefore
//! reads the queue in one of two ways, chosen from its depth when it starts (`total`):
//!
//! - **In place**, when `total` fits in the window: every letter is taken and held
//!   unacknowledged; the ones the command removes are acknowledged, the others handed back at
//!   the end. `P.dead` is a classic queue, which puts them back at their original positions:
//!   nothing is rewritten and the order is kept.
//! - **Rotating**, when it does not: each letter is taken, and the ones the command keeps are
//!   copied to the tail of `P.dead` (with a publisher confirm) before the original is
//!   acknowledged. After `total` letters the queue has turned once: the same letters in the same
//!   order. Letters dead-lettered meanwhile land between the copies (by arrival, as always).
//!
//! Either way at most `window` letters are unacknowledged at once (the consumer's prefetch),
//! copy-then-acknowledge never loses a letter, and a command that dies half-way leaves every
//! letter in the queue (a rotation that dies can leave up to `window` letters twice: the copy
//! was confirmed, the original not yet acknowledged). The consumer is exclusive, so a second
//! `dlq` command fails at once instead of reading a queue the first one is turning.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;

use super::DeadLetter;
use super::replay::{Outgoing, rotated};
use crate::queue::broker::{Broker, InFlight, QueueError, amqp, is_locked, publish_started};

/// With no delivery for this long, the queue held fewer letters than its depth said (another
/// client took some): the walk ends with what it read.
const IDLE: Duration = Duration::from_secs(5);

/// What a command does with one letter.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Leave it in `P.dead`.
    Keep,
    /// Remove it.
    Delete,
    /// Publish this (with a confirm), then remove the letter.
    Move(Box<Outgoing>),
}

/// How far a walk has come, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub read: u64,
    pub total: u64,
    pub rotating: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub read: u64,
    pub total: u64,
    pub rotating: bool,
    /// The queue gave fewer letters than its depth promised.
    pub ended_early: bool,
}

/// Reads every letter in `P.dead` once, oldest first, calling `visit` on each and carrying out
/// its verdict; `progress` is called after each letter.
pub async fn scan(
    broker: &Broker,
    window: u16,
    visit: &mut (dyn FnMut(&DeadLetter) -> Verdict + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<ScanReport, QueueError> {
    let queue = broker.topology().dead();
    let (ready, consumers) = inspect(broker, &queue).await?;
    // Another `dlq` holds the queue: what is left ready is not the whole queue.
    if consumers > 0 {
        return Err(QueueError::Busy { queue });
    }
    let total = u64::from(ready);
    let window = window.max(1);
    let rotating = total > u64::from(window);
    let mut report = ScanReport {
        total,
        rotating,
        ..ScanReport::default()
    };
    if total == 0 {
        return Ok(report);
    }
    let channel = broker.open_channel().await?;
    let walked = walk(broker, &channel, window, &mut report, visit, progress).await;
    // Closing the channel hands back whatever is still unacknowledged, on success or not.
    let _ = channel.close(200, "done".into()).await;
    walked.map(|()| report)
}

async fn inspect(broker: &Broker, queue: &str) -> Result<(u32, u32), QueueError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    broker
        .channel()
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map(|q| (q.message_count(), q.consumer_count()))
        .map_err(|source| amqp(&format!("inspect queue {queue}"), source))
}

async fn walk(
    broker: &Broker,
    channel: &lapin::Channel,
    window: u16,
    report: &mut ScanReport,
    visit: &mut (dyn FnMut(&DeadLetter) -> Verdict + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), QueueError> {
    let queue = broker.topology().dead();
    channel
        .basic_qos(window, BasicQosOptions::default())
        .await
        .map_err(|source| amqp("set the prefetch", source))?;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let tag = format!("mbprov-dlq-{}", uuid::Uuid::new_v4());
    let mut consumer = channel
        .basic_consume(
            queue.clone().into(),
            tag.clone().into(),
            exclusive,
            FieldTable::default(),
        )
        .await
        .map_err(|source| match is_locked(&source) {
            true => QueueError::Busy {
                queue: queue.clone(),
            },
            false => amqp(&format!("read {queue}"), source),
        })?;

    let mut held: Vec<Acker> = Vec::new();
    let mut pending: VecDeque<(InFlight, Acker)> = VecDeque::new();
    // Confirms are read once half the window is in flight, so the broker, which stops at
    // `window` unacknowledged deliveries, always has room to send the next letter.
    let settle_at = usize::from(window / 2).max(1);
    while report.read < report.total {
        let delivery = match tokio::time::timeout(IDLE, consumer.next()).await {
            Err(_) => {
                report.ended_early = true;
                break;
            }
            Ok(None) => {
                return Err(QueueError::Refused(format!(
                    "RabbitMQ stopped the read of {queue}"
                )));
            }
            Ok(Some(Err(source))) => return Err(amqp(&format!("read {queue}"), source)),
            Ok(Some(Ok(delivery))) => delivery,
        };
        report.read += 1;
        let acker = delivery.acker;
        let letter = DeadLetter::new(
            delivery.data,
            delivery.routing_key.as_str(),
            delivery.properties,
        );
        let outgoing = match visit(&letter) {
            Verdict::Keep if !report.rotating => None,
            Verdict::Keep => Some(rotated(&letter, &queue)),
            Verdict::Move(out) => Some(*out),
            Verdict::Delete => {
                ack(&acker).await?;
                continue_progress(progress, report);
                continue;
            }
        };
        drop(letter);
        match outgoing {
            None => held.push(acker),
            Some(out) => {
                let in_flight = publish_started(
                    broker.channel(),
                    &out.exchange,
                    &out.routing_key,
                    &out.body,
                    out.properties,
                )
                .await?;
                pending.push_back((in_flight, acker));
            }
        }
        while pending.len() >= settle_at {
            settle_oldest(&mut pending).await?;
        }
        continue_progress(progress, report);
    }
    while !pending.is_empty() {
        settle_oldest(&mut pending).await?;
    }
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    for acker in held {
        acker
            .nack(requeue)
            .await
            .map_err(|source| amqp("hand a dead letter back to its queue", source))?;
    }
    let _ = channel
        .basic_cancel(tag.into(), BasicCancelOptions::default())
        .await;
    Ok(())
}

fn continue_progress(progress: &mut (dyn FnMut(Progress) + Send), report: &ScanReport) {
    progress(Progress {
        read: report.read,
        total: report.total,
        rotating: report.rotating,
    });
}

async fn settle_oldest(pending: &mut VecDeque<(InFlight, Acker)>) -> Result<(), QueueError> {
    if let Some((in_flight, acker)) = pending.pop_front() {
        in_flight.confirmed().await?;
        ack(&acker).await?;
    }
    Ok(())
}

async fn ack(acker: &Acker) -> Result<(), QueueError> {
    acker
        .ack(BasicAckOptions::default())
        .await
        .map(drop)
        .map_err(|source| amqp("remove a dead letter", source))
}
