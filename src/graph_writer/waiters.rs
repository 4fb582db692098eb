//! This process's jobs waiting for the outcome of their graph changes, and the listener that
//! hears outcomes settled by whichever replica held the lock.
//!
//! A job registers before it queues its change, so no outcome can pass it by; the listener
//! delivers announced outcomes, the local holder delivers its own batch's directly (with the
//! error as it was, not as text), and a waiter that missed both reads the stored outcome on its
//! own poll (see [`super::pending`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use super::WriteError;
use super::pending::{Outcome, PendingLog, parse_announcement};

/// What a job learns: its output as JSON, or why its change failed.
pub(super) type Delivered = Result<serde_json::Value, WriteError>;

/// Pause before subscribing again after the subscription broke; waiters poll meanwhile.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);
/// How often a listener on a quiet channel checks that its writer still exists.
const GONE_CHECK: Duration = Duration::from_secs(5);

struct Waiter {
    reply: oneshot::Sender<Delivered>,
    /// In the stream, and not yet in a batch this process is writing.
    queued: bool,
    /// In a batch this process is writing: its outcome comes from that batch, after the lock
    /// is released, not from the announcement (which is sent while the lock is held).
    taken: bool,
}

/// The waiting jobs of one graph in this process.
pub(super) struct Waiters {
    map: Mutex<HashMap<String, Waiter>>,
    /// How many changes of this process are in the stream, waiting for an outcome: the writer
    /// task competes for the lock while there are any.
    waiting: watch::Sender<usize>,
    /// How many of them no batch of this process has taken yet (tests wait on it).
    backlog: watch::Sender<usize>,
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            map: Mutex::new(HashMap::new()),
            waiting: watch::Sender::new(0),
            backlog: watch::Sender::new(0),
        }
    }
}

/// Forgets its waiter when dropped: a job abandoned at its deadline leaves nothing behind.
pub(super) struct Registration<'a> {
    waiters: &'a Waiters,
    id: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.waiters.update(|map| {
            map.remove(&self.id);
        });
    }
}

impl Waiters {
    /// Registers a waiter for change `id`, before it is queued.
    pub fn register(&self, id: &str) -> (oneshot::Receiver<Delivered>, Registration<'_>) {
        let (reply, rx) = oneshot::channel();
        self.update(|map| {
            map.insert(
                id.to_owned(),
                Waiter {
                    reply,
                    queued: false,
                    taken: false,
                },
            );
        });
        (
            rx,
            Registration {
                waiters: self,
                id: id.to_owned(),
            },
        )
    }

    /// Change `id` is in the stream: the writer task now competes for the lock.
    pub fn queued(&self, id: &str) {
        self.update(|map| {
            if let Some(w) = map.get_mut(id) {
                w.queued = true;
            }
        });
    }

    /// Change `id` is in a batch this process is writing.
    pub fn taken(&self, id: &str) {
        self.update(|map| {
            if let Some(w) = map.get_mut(id) {
                w.queued = false;
                w.taken = true;
            }
        });
    }

    /// Whether change `id` is in a batch this process is writing.
    pub fn is_taken(&self, id: &str) -> bool {
        self.map
            .lock()
            .is_ok_and(|map| map.get(id).is_some_and(|w| w.taken))
    }

    /// The writer task died with a batch in hand: its changes are queued still, and their
    /// outcomes will come from another holder.
    pub fn release_taken(&self) {
        self.update(|map| {
            for w in map.values_mut().filter(|w| w.taken) {
                w.taken = false;
                w.queued = true;
            }
        });
    }

    /// Hands change `id` its outcome, if it is waiting here.
    pub fn deliver(&self, id: &str, delivered: Delivered) {
        let mut found = None;
        self.update(|map| found = map.remove(id));
        if let Some(w) = found {
            let _ = w.reply.send(delivered);
        }
    }

    /// Hands change `id` an outcome settled elsewhere (announced or read back), unless a batch
    /// of this process is writing it and will deliver it itself.
    pub fn deliver_settled(&self, id: &str, delivered: Delivered) {
        let mut found = None;
        self.update(|map| {
            if map.get(id).is_some_and(|w| !w.taken) {
                found = map.remove(id);
            }
        });
        if let Some(w) = found {
            let _ = w.reply.send(delivered);
        }
    }

    /// Changes of this process waiting for an outcome.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        *self.waiting.borrow()
    }

    /// Changes of this process no local batch has taken yet.
    pub fn backlog(&self) -> usize {
        *self.backlog.borrow()
    }

    /// Returns once a change of this process waits for an outcome.
    pub async fn until_waiting(&self) {
        let mut rx = self.waiting.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<String, Waiter>)) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        f(&mut map);
        // A registered change counts once it is queued (or taken, which it was first).
        let waiting = map.len();
        let backlog = map.values().filter(|w| w.queued).count();
        drop(map);
        self.waiting
            .send_if_modified(|n| std::mem::replace(n, waiting) != waiting);
        self.backlog
            .send_if_modified(|n| std::mem::replace(n, backlog) != backlog);
    }
}

/// An outcome read from Redis, as the job sees it.
pub(super) fn delivered(outcome: Outcome) -> Delivered {
    match outcome {
        Outcome::Ok(value) => Ok(value),
        Outcome::Err { class, message } => Err(WriteError::Batch {
            class: class.into(),
            message,
        }),
    }
}

/// Delivers every outcome announced on the graph's channel to the waiters of this process;
/// runs until the waiters are gone. A broken subscription is made again; the waiters' own
/// polls cover the gap.
pub(super) async fn listen(log: PendingLog, waiters: std::sync::Weak<Waiters>) {
    loop {
        let subscribed = async {
            let mut pubsub = log.client().get_async_pubsub().await?;
            pubsub.subscribe(log.results_channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        // A quiet channel: look now and then whether the writer is gone.
                        () = tokio::time::sleep(GONE_CHECK) => {
                            if waiters.strong_count() == 0 {
                                return;
                            }
                            continue;
                        }
                    };
                    let Some(message) = message else {
                        break;
                    };
                    let Some(waiters) = waiters.upgrade() else {
                        return;
                    };
                    let text: String = message.get_payload().unwrap_or_default();
                    for (id, outcome) in parse_announcement(&text) {
                        waiters.deliver_settled(&id, delivered(outcome));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot subscribe to graph outcomes; waiters poll")
            }
        }
        if waiters.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_counts_as_waiting_from_queued_to_delivered() {
        let w = Waiters::default();
        let (rx, registration) = w.register("a");
        assert_eq!((w.waiting(), w.backlog()), (1, 0));
        w.queued("a");
        assert_eq!((w.waiting(), w.backlog()), (1, 1));
        w.taken("a");
        assert_eq!((w.waiting(), w.backlog()), (1, 0));
        w.release_taken();
        assert_eq!((w.waiting(), w.backlog()), (1, 1), "left queued again");
        assert!(!w.is_taken("a"));
        w.taken("a");
        w.deliver("a", Ok(serde_json::json!(7)));
        assert_eq!((w.waiting(), w.backlog()), (0, 0));
        assert_eq!(rx.await.unwrap().unwrap(), serde_json::json!(7));
        drop(registration);
        assert_eq!(w.waiting(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_waiter_is_forgotten_and_its_outcome_goes_nowhere() {
        let w = Waiters::default();
        let (_rx, registration) = w.register("a");
        w.queued("a");
        drop(registration);
        assert_eq!((w.waiting(), w.backlog()), (0, 0));
        w.deliver("a", Ok(serde_json::Value::Null));
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn a_remote_failure_keeps_its_class_and_message() {
        let e = delivered(Outcome::Err {
            class: super::super::pending::WireClass::Permanent,
            message: "HTTP 400: refused".into(),
        })
        .unwrap_err();
        assert_eq!(
            crate::error::Classify::class(&e),
            crate::error::ErrorClass::Permanent
        );
        assert_eq!(e.to_string(), "HTTP 400: refused");
    }
}
