//! Reading and moving what is in `P.dead`, for `mbprov dlq`.
//!
//! AMQP has no "peek" and no "fetch by id", so a command takes every dead letter with
//! `basic.get` (unacknowledged, so nothing is lost if the command dies), acts on the selected
//! ones, and hands the others back with `nack(requeue)`. While a command holds the queue another
//! `dlq` command sees it empty; that is the price of never removing a message it was not asked
//! to touch. A replay publishes each copy with a confirm before it acknowledges the dead letter,
//! so an interrupted replay can duplicate a job (its id makes that harmless) but not lose one.

use lapin::Acker;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::FieldTable;

use super::broker::{Broker, QueueError, amqp};
use super::envelope_id::envelope_id;
use super::headers::{self, DeathNote};
use super::settle::copy_properties;

/// One dead-lettered job, as `dlq` shows it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub id: String,
    /// The routing key it was first published with (its kind, by convention).
    pub kind: String,
    pub note: DeathNote,
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub properties: BasicProperties,
}

/// A dead letter taken from the queue and not yet acknowledged.
pub struct Held {
    pub letter: DeadLetter,
    acker: Acker,
}

/// Which dead letters a command is about: every one (`--all`) or the named ids, narrowed to one
/// kind when `kind` is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub ids: Vec<String>,
    pub all: bool,
    pub kind: Option<String>,
}

impl Selection {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let named = self.all || self.ids.contains(&letter.id);
        named && self.kind.as_ref().is_none_or(|k| *k == letter.kind)
    }
}

/// Takes every message of `P.dead` without acknowledging it, oldest first.
pub async fn take_all(broker: &Broker) -> Result<Vec<Held>, QueueError> {
    let queue = broker.topology().dead();
    let mut held = Vec::new();
    loop {
        let got = broker
            .channel()
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|source| amqp(&format!("read {queue}"), source))?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string());
        let letter = DeadLetter {
            id: envelope_id(&delivery.data, message_id.as_deref()),
            kind: headers::original_routing_key(Some(&headers), delivery.routing_key.as_str()),
            note: headers::death_note(Some(&headers)),
            body: delivery.data,
            headers,
            properties: delivery.properties,
        };
        held.push(Held {
            letter,
            acker: delivery.acker,
        });
    }
    Ok(held)
}

impl Held {
    /// Puts the letter back in `P.dead`.
    pub async fn release(&self) -> Result<(), QueueError> {
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        self.acker
            .nack(requeue)
            .await
            .map(drop)
            .map_err(|source| amqp("return a dead letter to its queue", source))
    }

    /// Deletes the letter.
    pub async fn delete(&self) -> Result<(), QueueError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|source| amqp("remove a dead letter", source))
    }

    /// Publishes the job again to the work exchange with its original routing key, its id, and
    /// none of its failure history (a fresh attempt count), then deletes the dead letter.
    pub async fn replay(&self, broker: &Broker) -> Result<(), QueueError> {
        let letter = &self.letter;
        let fresh = headers::carried_over(Some(&letter.headers), false);
        let properties = copy_properties(&letter.properties, fresh);
        broker
            .publish(
                &broker.topology().work_exchange(),
                &letter.kind,
                &letter.body,
                properties,
            )
            .await?;
        self.delete().await
    }
}

/// Hands every letter back; used on the way out of every command.
pub async fn release_all(held: &[Held]) -> Result<(), QueueError> {
    for h in held {
        h.release().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: &str, kind: &str) -> DeadLetter {
        DeadLetter {
            id: id.into(),
            kind: kind.into(),
            note: headers::death_note(None),
            body: vec![],
            headers: FieldTable::default(),
            properties: BasicProperties::default(),
        }
    }

    #[test]
    fn selection_table() {
        let a = letter("a", "user.upserted");
        let b = letter("b", "tenant.created");
        let sel = |ids: &[&str], all: bool, kind: Option<&str>| Selection {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            all,
            kind: kind.map(str::to_owned),
        };
        let table = [
            (sel(&[], true, None), true, true),
            (sel(&[], true, Some("user.upserted")), true, false),
            (sel(&["b"], false, None), false, true),
            (sel(&["a", "b"], false, Some("tenant.created")), false, true),
            (sel(&[], false, None), false, false),
        ];
        for (s, want_a, want_b) in table {
            assert_eq!((s.matches(&a), s.matches(&b)), (want_a, want_b), "{s:?}");
        }
    }
}
