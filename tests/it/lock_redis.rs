//! The Redis lock against a real Redis (127.0.0.1:6379), each test under its own key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mbprov::error::{Classify, ErrorClass};
use mbprov::lock::{LockError, RedisLock, Release};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// Generous bound for conditions that should hold quickly; never a measure of speed.
const DEADLINE: Duration = Duration::from_secs(20);

async fn conn() -> ConnectionManager {
    let client = redis::Client::open(REDIS_URL).unwrap();
    ConnectionManager::new(client).await.unwrap()
}

fn fresh_key(what: &str) -> String {
    format!("test-lock-{}:{what}", uuid::Uuid::new_v4())
}

async fn value_of(conn: &mut ConnectionManager, key: &str) -> Option<String> {
    conn.get(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_exclude_each_other() {
    let lock = RedisLock::new(conn().await, fresh_key("mutex"), Duration::from_secs(5));
    // A read-modify-write with a yield in between loses updates unless the lock serialises it.
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let lock = lock.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let guard = lock.acquire(Duration::from_secs(60)).await.unwrap();
                let seen = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.store(seen + 1, Ordering::SeqCst);
                assert_eq!(guard.release().await.unwrap(), Release::Released);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 80);
}

#[tokio::test]
async fn times_out_while_held() {
    let lock = RedisLock::new(conn().await, fresh_key("held"), Duration::from_secs(10));
    let guard = lock.acquire(Duration::ZERO).await.unwrap();
    let err = lock.acquire(Duration::from_millis(50)).await.err().unwrap();
    assert!(matches!(err, LockError::Timeout { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(guard.release().await.unwrap(), Release::Released);
    // Free again: taken at once.
    lock.acquire(Duration::ZERO)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crashed_holder_frees_the_lock_after_its_ttl() {
    let key = fresh_key("crashed");
    let lock = RedisLock::new(conn().await, key.clone(), Duration::from_millis(300));
    let crashed = lock.acquire(Duration::ZERO).await.unwrap();
    // Dropping without release stops extending, as a dead process would.
    drop(crashed);
    let mut c = conn().await;
    assert!(
        value_of(&mut c, &key).await.is_some(),
        "drop must not delete the key"
    );
    let next = lock.acquire(DEADLINE).await.unwrap();
    assert!(!next.is_lost());
    assert_eq!(value_of(&mut c, &key).await.as_deref(), Some(next.token()));
    next.release().await.unwrap();
}

#[tokio::test]
async fn release_never_deletes_a_lock_taken_over() {
    let key = fresh_key("takeover");
    let mut c = conn().await;
    let lock = RedisLock::new(conn().await, key.clone(), Duration::from_secs(10));
    let first = lock.acquire(Duration::ZERO).await.unwrap();
    // Another holder takes over, as after an expiry while the first was paused.
    let _: () = c.set(&key, "someone-else").await.unwrap();
    assert_eq!(first.release().await.unwrap(), Release::NotHeld);
    assert_eq!(
        value_of(&mut c, &key).await.as_deref(),
        Some("someone-else")
    );
    let _: () = c.del(&key).await.unwrap();
}

#[tokio::test]
async fn the_watchdog_keeps_the_lock_past_its_ttl() {
    let key = fresh_key("watchdog");
    // Long enough that a busy test machine still runs the watchdog (every ttl/3) in time.
    let ttl = Duration::from_millis(900);
    let lock = RedisLock::new(conn().await, key.clone(), ttl);
    let guard = lock.acquire(Duration::ZERO).await.unwrap();
    let mut c = conn().await;
    // Watch the key's remaining life go back up: that is an extension, observed, not timed.
    let mut extensions = 0;
    let mut last_pttl: i64 = c.pttl(&key).await.unwrap();
    let held_since = Instant::now();
    while extensions < 3 || held_since.elapsed() < ttl * 3 {
        assert!(held_since.elapsed() < DEADLINE, "no extensions seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let pttl: i64 = c.pttl(&key).await.unwrap();
        assert!(
            pttl > 0,
            "lock expired while its holder was alive (pttl {pttl})"
        );
        if pttl > last_pttl {
            extensions += 1;
        }
        last_pttl = pttl;
    }
    assert!(!guard.is_lost());
    assert_eq!(value_of(&mut c, &key).await.as_deref(), Some(guard.token()));
    assert_eq!(guard.release().await.unwrap(), Release::Released);
    assert_eq!(value_of(&mut c, &key).await, None);
}

#[tokio::test]
async fn loss_is_detected_when_the_key_is_deleted() {
    let key = fresh_key("deleted");
    let lock = RedisLock::new(conn().await, key.clone(), Duration::from_millis(300));
    let guard = lock.acquire(Duration::ZERO).await.unwrap();
    assert!(guard.ensure_held().is_ok());
    let mut c = conn().await;
    let _: () = c.del(&key).await.unwrap();
    tokio::time::timeout(DEADLINE, guard.lost()).await.unwrap();
    assert!(guard.is_lost());
    assert!(matches!(guard.ensure_held(), Err(LockError::Lost { .. })));
    assert_eq!(guard.release().await.unwrap(), Release::NotHeld);
}

#[tokio::test]
async fn loss_is_detected_when_the_key_is_overwritten() {
    let key = fresh_key("overwritten");
    let lock = RedisLock::new(conn().await, key.clone(), Duration::from_millis(300));
    let guard = lock.acquire(Duration::ZERO).await.unwrap();
    let lost = guard.lost_token();
    let mut c = conn().await;
    let _: () = c.set(&key, "intruder").await.unwrap();
    // A write in progress selects on the loss and gives up.
    let abandoned = tokio::select! {
        _ = lost.cancelled() => true,
        _ = tokio::time::sleep(DEADLINE) => false,
    };
    assert!(abandoned);
    // The watchdog must not have extended the intruder's key.
    assert_eq!(value_of(&mut c, &key).await.as_deref(), Some("intruder"));
    let pttl: i64 = c.pttl(&key).await.unwrap();
    assert_eq!(
        pttl, -1,
        "the intruder's key must keep its own (absent) expiry"
    );
    let _: () = c.del(&key).await.unwrap();
}

#[tokio::test]
async fn redis_down_is_a_transient_error() {
    // Nothing listens on port 1.
    let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
    let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0);
    let Ok(conn) = redis::aio::ConnectionManager::new_lazy_with_config(client, config) else {
        panic!("a lazy connection manager needs no server");
    };
    let lock = RedisLock::new(conn, fresh_key("down"), Duration::from_secs(1));
    let err = lock.acquire(Duration::from_millis(10)).await.err().unwrap();
    assert!(matches!(err, LockError::Redis { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn acquisition_waits_for_a_release() {
    let lock = RedisLock::new(conn().await, fresh_key("handover"), Duration::from_secs(10));
    let first = lock.acquire(Duration::ZERO).await.unwrap();
    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.acquire(DEADLINE).await })
    };
    first.release().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(second.release().await.unwrap(), Release::Released);
}

/// A waiter subscribed to the release signal takes the lock as soon as it is released, not at
/// its next poll: its safety-net poll is an hour and the holder's ttl a minute, so only the
/// signal can wake it before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_learns_of_the_release_without_polling() {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let lock = RedisLock::new(conn().await, fresh_key("signal"), Duration::from_secs(60))
        .with_release_signal(client, Duration::from_secs(3600));
    let holder = lock.acquire(Duration::ZERO).await.unwrap();
    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.acquire(Duration::from_secs(7200)).await })
    };
    // Release only once the waiter listens, so the test shows the signal and not a lucky first try.
    let mut c = conn().await;
    let channel = lock.release_channel();
    let started = Instant::now();
    loop {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async::<Vec<(String, u64)>>(&mut c)
            .await
            .unwrap()
            .pop()
            .unwrap();
        if subscribers == 1 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the waiter never subscribed");
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "the lock is still held");
    assert_eq!(holder.release().await.unwrap(), Release::Released);
    let second = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the waiter slept through the release")
        .unwrap()
        .unwrap();
    assert_eq!(second.release().await.unwrap(), Release::Released);
    let _: () = c.del(lock.key()).await.unwrap();
}

/// A TCP relay to Redis that the test can cut, to simulate an outage seen by one process only.
struct Relay {
    addr: std::net::SocketAddr,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accepted = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accepted.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(accept);
        Relay { addr, tasks }
    }

    /// Closes the listener and every relayed connection: Redis is now unreachable through it.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn loss_is_detected_when_redis_stays_unreachable() {
    let relay = Relay::start().await;
    let client = redis::Client::open(format!("redis://{}/", relay.addr)).unwrap();
    let through_relay = ConnectionManager::new(client).await.unwrap();
    let key = fresh_key("outage");
    let lock = RedisLock::new(through_relay, key.clone(), Duration::from_millis(600));
    let guard = lock.acquire(Duration::ZERO).await.unwrap();
    relay.cut();
    tokio::time::timeout(DEADLINE, guard.lost()).await.unwrap();
    assert!(guard.is_lost());
    // Redis itself never lost the key's expiry: it frees without anyone deleting it.
    let mut c = conn().await;
    let deadline = Instant::now() + DEADLINE;
    while value_of(&mut c, &key).await.is_some() {
        assert!(Instant::now() < deadline, "the key outlived its ttl");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
