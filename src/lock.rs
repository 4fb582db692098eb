//! A Redis lock that serialises writes of a shared resource (the permission graphs) across worker
//! replicas, and tells its holder when it can no longer trust that it holds it.
//!
//! The lock is one key set with `SET NX PX` to a random token. A watchdog task extends it while
//! the holder works; extension and release are Lua compare-and-act scripts, so a holder whose
//! lock expired never extends or deletes the lock of whoever took it next. A lock whose holder
//! crashed frees itself after its ttl. A release publishes on `<key>:released`; a waiter
//! subscribed there (when the lock was given a client, [`RedisLock::with_release_signal`]) tries
//! again at once instead of sleeping, and keeps a bounded poll as a safety net for a holder that
//! crashed (its lock expires by ttl, and nobody publishes). Because a paused holder can still lose the lock, callers
//! select on [`LockGuard::lost`] and the Metabase revision check stays the real fence.

use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFuture};

use crate::error::{Classify, ErrorClass};
use crate::ops::metrics;

/// First pause after finding the lock taken; doubled after each miss up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// Cap of the safety-net poll of a waiter that is subscribed to the release signal: the signal
/// wakes it on every release, the poll only catches a lock freed by its ttl.
pub const SIGNALLED_POLL: Duration = Duration::from_secs(1);
/// Longest wait for a subscription; past it the waiter just polls.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `PEXPIRE` only while the key still holds our token.
const EXTEND_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// `DEL` only while the key still holds our token, then tell the waiters (`PUBLISH` on the
/// channel in ARGV[2]; a channel is not a key, so it is an argument).
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local deleted = redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return deleted
end
return 0
"#;

/// Why a lock could not be taken or kept. Every case is worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {key} still held by another worker after waiting {waited:?}")]
    Timeout { key: String, waited: Duration },
    #[error("lock {key} was lost while held (expired or taken over)")]
    Lost { key: String },
    #[error("redis failed on lock {key}: {source}")]
    Redis {
        key: String,
        #[source]
        source: redis::RedisError,
    },
}

impl Classify for LockError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// What [`LockGuard::release`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The key held our token and is now deleted.
    Released,
    /// The key had expired or belonged to another holder; it was left alone.
    NotHeld,
}

/// One named lock. Cheap to clone; each [`acquire`](RedisLock::acquire) takes it anew.
#[derive(Clone)]
pub struct RedisLock {
    conn: ConnectionManager,
    key: String,
    ttl: Duration,
    /// Opens the dedicated connection a waiter subscribes on (a multiplexed connection cannot
    /// carry a subscription). `None`: waiters poll with backoff.
    signal: Option<redis::Client>,
    /// Cap of the safety-net poll while subscribed.
    signalled_poll: Duration,
}

impl RedisLock {
    /// `ttl` is how long the lock outlives a holder that stopped extending it (a crash).
    pub fn new(conn: ConnectionManager, key: String, ttl: Duration) -> Self {
        // Redis rejects PX 0, and the watchdog needs a positive period.
        let ttl = ttl.max(Duration::from_millis(3));
        RedisLock {
            conn,
            key,
            ttl,
            signal: None,
            signalled_poll: SIGNALLED_POLL,
        }
    }

    /// Waiters subscribe to the release signal through connections of `client`, and poll about
    /// every `safety_poll` (for a lock freed by its ttl) instead of backing off up to
    /// [`MAX_BACKOFF`].
    pub fn with_release_signal(mut self, client: redis::Client, safety_poll: Duration) -> Self {
        self.signal = Some(client);
        self.signalled_poll = safety_poll.max(MIN_BACKOFF);
        self
    }

    /// The channel a release publishes on.
    pub fn release_channel(&self) -> String {
        format!("{}:released", self.key)
    }

    /// A subscription to the release channel, or `None` (logged) when it cannot be had: the
    /// waiter then polls, as without a signal.
    async fn subscribe(&self) -> Option<redis::aio::PubSub> {
        let client = self.signal.as_ref()?;
        let channel = self.release_channel();
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, attempt).await {
            Ok(Ok(pubsub)) => Some(pubsub),
            Ok(Err(e)) => {
                tracing::debug!(key = %self.key, error = %e, "no release signal; polling the lock");
                None
            }
            Err(_) => {
                tracing::debug!(key = %self.key, "release signal timed out; polling the lock");
                None
            }
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lock, waiting up to `wait` while another holder has it.
    ///
    /// Not cancellation-safe: dropped while its `SET` is in flight, the lock may be taken with
    /// no guard to release it, and it frees itself only after its ttl. Await it to the end (the
    /// graph writer does; a job dropped at its deadline mid-acquisition can cost one ttl).
    pub async fn acquire(&self, wait: Duration) -> Result<LockGuard, LockError> {
        let started = Instant::now();
        let deadline = started + wait;
        let token = uuid::Uuid::new_v4().to_string();
        let mut backoff = MIN_BACKOFF;
        let mut conn = self.conn.clone();
        // Subscribed after the first miss; the next SET NX runs after the subscription exists,
        // so a release between the miss and the subscription is not missed.
        let mut subscription: Option<redis::aio::PubSub> = None;
        let mut tried_subscribing = false;
        loop {
            let attempt_started = Instant::now();
            let taken: Option<String> = redis::cmd("SET")
                .arg(&self.key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(millis(self.ttl))
                .query_async(&mut conn)
                .await
                .map_err(|source| self.redis_error(source))?;
            if taken.is_some() {
                metrics::lock_waited(started.elapsed());
                return Ok(LockGuard::start(
                    self.clone(),
                    token,
                    attempt_started + self.ttl,
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                metrics::lock_waited(started.elapsed());
                return Err(LockError::Timeout {
                    key: self.key.clone(),
                    waited: started.elapsed(),
                });
            }
            if !tried_subscribing {
                tried_subscribing = true;
                subscription = self.subscribe().await;
                if subscription.is_some() {
                    continue;
                }
            }
            match subscription.as_mut() {
                Some(pubsub) => {
                    // Every release wakes this waiter; the poll only catches a lock freed by its
                    // ttl (a crashed holder), so it need not be frequent.
                    let pause = jittered(self.signalled_poll).min(deadline - now);
                    let mut released = pubsub.on_message();
                    let closed = tokio::select! {
                        message = released.next() => message.is_none(),
                        _ = tokio::time::sleep(pause) => false,
                    };
                    drop(released);
                    if closed {
                        // The subscription's connection closed: poll from now on.
                        subscription = None;
                    }
                }
                None => {
                    tokio::time::sleep(jittered(backoff).min(deadline - now)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn redis_error(&self, source: redis::RedisError) -> LockError {
        LockError::Redis {
            key: self.key.clone(),
            source,
        }
    }
}

/// Proof of holding a lock. Dropping it stops the watchdog without deleting the key, so the ttl
/// frees the lock; call [`release`](LockGuard::release) to free it at once.
pub struct LockGuard {
    lock: RedisLock,
    token: String,
    lost: CancellationToken,
    _stop_watchdog: DropGuard,
}

impl LockGuard {
    fn start(lock: RedisLock, token: String, valid_until: Instant) -> Self {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        tokio::spawn(watchdog(
            lock.clone(),
            token.clone(),
            valid_until,
            lost.clone(),
            stop.clone(),
        ));
        LockGuard {
            lock,
            token,
            lost,
            _stop_watchdog: stop.drop_guard(),
        }
    }

    pub fn key(&self) -> &str {
        &self.lock.key
    }

    /// The random value stored in the key: unique to this holding.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// True once the watchdog found the lock gone or could not extend it in time.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes when the lock is lost; select on it to abandon a write in progress.
    pub fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }

    /// A token cancelled when the lock is lost, for tasks that outlive a borrow of the guard.
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// `Err(LockError::Lost)` once the lock is lost: a check before an irreversible step.
    pub fn ensure_held(&self) -> Result<(), LockError> {
        if self.is_lost() {
            Err(LockError::Lost {
                key: self.lock.key.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Deletes the key if it still holds this guard's token; never touches another holder's lock.
    pub async fn release(self) -> Result<Release, LockError> {
        let mut conn = self.lock.conn.clone();
        let deleted: i64 = Script::new(RELEASE_SCRIPT)
            .key(&self.lock.key)
            .arg(&self.token)
            .arg(self.lock.release_channel())
            .invoke_async(&mut conn)
            .await
            .map_err(|source| self.lock.redis_error(source))?;
        // Dropping `self` now stops the watchdog.
        Ok(if deleted == 1 {
            Release::Released
        } else {
            Release::NotHeld
        })
    }
}

/// Extends the lock every ttl/3 until stopped. Marks it lost when the key no longer holds our
/// token, or when Redis stays unreachable until the last successful extension would have run out.
async fn watchdog(
    lock: RedisLock,
    token: String,
    mut valid_until: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let script = Script::new(EXTEND_SCRIPT);
    let period = lock.ttl / 3;
    let retry_period = (lock.ttl / 10).max(Duration::from_millis(1));
    let mut conn = lock.conn.clone();
    let mut next = Instant::now() + period;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next.min(valid_until)) => {}
        }
        if Instant::now() >= valid_until {
            tracing::warn!(key = %lock.key, "lock expired before the watchdog could extend it");
            lost.cancel();
            return;
        }
        let attempt_started = Instant::now();
        let mut invocation = script.prepare_invoke();
        invocation.key(&lock.key).arg(&token).arg(millis(lock.ttl));
        let extended: Result<i64, _> = tokio::select! {
            _ = stop.cancelled() => return,
            // A hung Redis must not keep the holder believing past the lock's possible expiry.
            _ = tokio::time::sleep_until(valid_until) => {
                tracing::warn!(key = %lock.key, "lock expired while Redis did not answer");
                lost.cancel();
                return;
            }
            r = invocation.invoke_async(&mut conn) => r,
        };
        match extended {
            Ok(1) => {
                valid_until = attempt_started + lock.ttl;
                next = attempt_started + period;
            }
            Ok(_) => {
                tracing::warn!(key = %lock.key, "lock taken over or expired while held");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(key = %lock.key, error = %e, "cannot extend lock, retrying");
                next = Instant::now() + retry_period;
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A pause between half of `base` and `base`, so contenders do not retry in lockstep.
fn jittered(base: Duration) -> Duration {
    let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full_base() {
        for base_ms in [5u64, 40, 200] {
            let base = Duration::from_millis(base_ms);
            for _ in 0..100 {
                let d = jittered(base);
                assert!(
                    d >= base / 2 && d <= base,
                    "{d:?} outside [{:?}, {base:?}]",
                    base / 2
                );
            }
        }
    }

    #[test]
    fn millis_never_zero() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_micros(10), 1),
            (Duration::from_millis(1500), 1500),
        ];
        for (input, expected) in cases {
            assert_eq!(millis(input), expected, "{input:?}");
        }
    }
}
