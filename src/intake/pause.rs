//! The operator's pause, stored in Redis so it outlives every worker: `mbprov pause` writes
//! `P:intake:pause` and announces it on the channel `P:intake`; workers re-read the key when
//! told and every [`POLL`] anyway (a missed message, a Redis restart), so a pause reaches the
//! whole fleet within seconds even without pub/sub.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::{Event, Intake, PauseInfo};

/// The safety net's period: the longest a missed announcement delays a pause or a resume.
pub const POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the stored pause is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Reads and writes the pause of one prefix.
#[derive(Clone)]
pub struct PauseStore {
    conn: ConnectionManager,
    client: redis::Client,
    prefix: String,
}

impl PauseStore {
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<Self, PauseError> {
        let client = redis::Client::open(redis_url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(PauseStore {
            conn,
            client,
            prefix: prefix.to_owned(),
        })
    }

    /// A connection for the other intake parts (the budget, the reports).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn key(&self) -> String {
        format!("{}:intake:pause", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:intake", self.prefix)
    }

    pub async fn get(&self) -> Result<Option<PauseInfo>, PauseError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.key()).await?;
        Ok(match raw {
            Some(raw) => Some(serde_json::from_str(&raw)?),
            None => None,
        })
    }

    /// Pauses (or updates the reason of a pause) and tells the workers.
    pub async fn pause(&self, reason: Option<String>) -> Result<PauseInfo, PauseError> {
        let info = PauseInfo {
            reason,
            since: crate::queue::headers::rfc3339(SystemTime::now()),
        };
        let mut conn = self.conn.clone();
        let _: () = conn.set(self.key(), serde_json::to_string(&info)?).await?;
        let _: i64 = conn.publish(self.channel(), "pause").await?;
        Ok(info)
    }

    /// Resumes and tells the workers; the pause that was lifted, if any.
    pub async fn resume(&self) -> Result<Option<PauseInfo>, PauseError> {
        let was = self.get().await.unwrap_or(None);
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.key()).await?;
        let _: i64 = conn.publish(self.channel(), "resume").await?;
        Ok(was)
    }

    /// Keeps `intake` in step with the stored pause until `shutdown`.
    pub async fn follow(self, intake: Intake, shutdown: CancellationToken) {
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            // An unreachable Redis must not stall the periodic re-read.
            let subscribed = async {
                tokio::time::timeout(POLL, subscribed)
                    .await
                    .unwrap_or_else(|_| {
                        Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "subscribing timed out",
                        )))
                    })
            };
            let pubsub = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = subscribed => p,
            };
            // Read after subscribing, so a change between the two is not missed.
            self.sync(&intake).await;
            let mut messages = match pubsub {
                Ok(p) => Some(p.into_on_message()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to pause announcements; re-reading every {POLL:?}");
                    None
                }
            };
            loop {
                let message = async {
                    match messages.as_mut() {
                        Some(m) => m.next().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = message => {
                        if m.is_none() {
                            // The subscription ended (Redis restarted): subscribe again.
                            break;
                        }
                        self.sync(&intake).await;
                    }
                    _ = tokio::time::sleep(POLL) => {
                        self.sync(&intake).await;
                        if messages.is_none() {
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn sync(&self, intake: &Intake) {
        match self.get().await {
            Ok(Some(info)) => intake.apply(Event::Paused(info)),
            Ok(None) => intake.apply(Event::Resumed),
            // Keep the last known state: a Redis hiccup neither pauses nor resumes the fleet.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pause state; keeping the last known")
            }
        }
    }
}
