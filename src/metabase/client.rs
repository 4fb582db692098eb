use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

use backon::{ExponentialBuilder, Retryable};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use url::Url;

use super::error::{MetabaseError, message_from_body};

/// The API key. Redacted in `Debug` and without `Display`, so it cannot be printed by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_string())
    }

    /// Only for building the header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How requests authenticate: the workers use an API key; bootstrap logs in first.
#[derive(Clone, Debug)]
pub enum Auth {
    ApiKey(ApiKey),
    /// A session id (`X-Metabase-Session`), as returned by `/api/setup` and `/api/session`.
    Session(ApiKey),
    None,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub base_url: String,
    pub auth: Auth,
    /// Whole request, including reading the body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Fast retries inside one call, for connection errors, 5xx and 429 only.
    pub retries: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, auth: Auth) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            auth,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retries: 3,
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(2),
        }
    }
}

/// How one request to Metabase ended, as a [`RequestGate`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Metabase answered with this status.
    Answered(u16),
    /// No answer in time.
    TimedOut,
    /// No answer at all (connection refused, reset, TLS...).
    Unreachable,
}

/// A hook around every request the client sends (each retry included), so a process can pace
/// its requests and watch Metabase's health without the client knowing how (Redis, counters).
pub trait RequestGate: Send + Sync {
    /// Resolves when the request may be sent (waits, never fails).
    fn admit(&self) -> BoxFuture<'_, ()>;
    /// Called once per request sent, with how it ended.
    fn record(&self, outcome: RequestOutcome);
}

/// The Metabase REST client. Cheap to clone (one connection pool).
///
/// The credentials are shared by every clone and can be swapped at run time
/// ([`MetabaseClient::set_auth`]), so a rotated API key reaches every later request.
#[derive(Clone)]
pub struct MetabaseClient {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
    auth: Arc<RwLock<Auth>>,
    gate: Option<Arc<dyn RequestGate>>,
}

impl fmt::Debug for MetabaseClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetabaseClient")
            .field("base", &self.base.as_str())
            .field("gated", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a request may be sent again after it may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// GET, PUT, DELETE, and revision-fenced graph writes: sending twice has one effect.
    Safe,
    /// Creating POSTs: only retried when the request surely never left (`NotSent`); after an
    /// unknown outcome the caller looks up before creating again.
    OnlyIfUnsent,
}

impl MetabaseClient {
    pub fn new(config: ClientConfig) -> Result<Self, MetabaseError> {
        let mut base = Url::parse(config.base_url.trim())
            .map_err(|e| MetabaseError::Config(format!("METABASE_SITE_URL is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(MetabaseError::Config(
                "METABASE_SITE_URL must start with http:// or https://".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("mbprov/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MetabaseError::Config(format!("cannot build the HTTP client: {e}")))?;
        let auth = Arc::new(RwLock::new(config.auth.clone()));
        Ok(MetabaseClient {
            http,
            base,
            config,
            auth,
            gate: None,
        })
    }

    /// The same client authenticating differently (bootstrap: session, then API key). The
    /// copy has its own credentials: swapping them does not touch this client.
    pub fn with_auth(&self, auth: Auth) -> Self {
        let mut c = self.clone();
        c.config.auth = auth.clone();
        c.auth = Arc::new(RwLock::new(auth));
        c
    }

    /// Replaces the credentials of this client and of every clone sharing them (a rotated key).
    pub fn set_auth(&self, auth: Auth) {
        *self.auth.write().unwrap_or_else(PoisonError::into_inner) = auth;
    }

    /// The same client (credentials and gate shared) without fast retries: one probe, one request.
    pub fn with_retries(&self, retries: usize) -> Self {
        let mut c = self.clone();
        c.config.retries = retries;
        c
    }

    /// The same client (credentials shared) outside the gate: for readiness and the probes,
    /// which must neither queue behind jobs for the budget nor count as the jobs' traffic.
    pub fn without_gate(&self) -> Self {
        let mut c = self.clone();
        c.gate = None;
        c
    }

    /// Sends every later request of this client (and of clones made after) through `gate`.
    pub fn with_gate(mut self, gate: Arc<dyn RequestGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, MetabaseError> {
        self.call(Method::GET, path, query, None::<&()>, Replay::Safe)
            .await
    }

    /// Sends a request and decodes a JSON answer; empty answers (204) decode as `null`.
    pub(crate) async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        replay: Replay,
    ) -> Result<T, MetabaseError> {
        let route = path.to_string();
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| MetabaseError::Decode {
                method: method.clone(),
                route: route.clone(),
                detail: format!("cannot encode the request: {e}"),
            })?),
            None => None,
        };
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| MetabaseError::Config(format!("bad path {path}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        // One span per HTTP request, retries included, named by the route template only.
        let attempt = || {
            self.send_once(&method, &route, url.clone(), body.clone())
                .instrument(crate::trace::metabase_request_span(method.as_str(), path))
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.retries)
            .with_jitter();
        let bytes = attempt
            .retry(backoff)
            .when(|e: &MetabaseError| e.is_retryable_now(replay))
            .notify(|e, delay| {
                tracing::debug!(error = %e, ?delay, "retrying Metabase request");
            })
            .await?;
        let text = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text).map_err(|e| MetabaseError::Decode {
            method,
            route,
            detail: e.to_string(),
        })
    }

    async fn send_once(
        &self,
        method: &Method,
        route: &str,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, MetabaseError> {
        let mut req = self.http.request(method.clone(), url);
        req = {
            // Read per request: a key swapped by the auth probe applies from the next send.
            let auth = self.auth.read().unwrap_or_else(PoisonError::into_inner);
            match &*auth {
                Auth::ApiKey(k) => req.header("x-api-key", k.expose()),
                Auth::Session(s) => req.header("X-Metabase-Session", s.expose()),
                Auth::None => req,
            }
        };
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        if let Some(gate) = &self.gate {
            gate.admit().await;
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                crate::ops::metrics::metabase_request(method.as_str(), None);
                crate::trace::record_response(None);
                let e = transport_error(method, route, &e);
                self.record(match e {
                    MetabaseError::Timeout { .. } => RequestOutcome::TimedOut,
                    _ => RequestOutcome::Unreachable,
                });
                return Err(e);
            }
        };
        let status = resp.status();
        crate::ops::metrics::metabase_request(method.as_str(), Some(status.as_u16()));
        self.record(RequestOutcome::Answered(status.as_u16()));
        crate::trace::record_response(Some(status.as_u16()));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(method, route, &e))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(MetabaseError::Status {
            method: method.clone(),
            route: route.to_string(),
            status: status.as_u16(),
            message: message_from_body(&String::from_utf8_lossy(&bytes)),
        })
    }
}

impl MetabaseClient {
    fn record(&self, outcome: RequestOutcome) {
        if let Some(gate) = &self.gate {
            gate.record(outcome);
        }
    }
}

/// What reqwest says about a transport failure, as plain facts (reqwest's errors cannot be
/// built in a test; these can).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Facts {
    /// `is_connect()`: hyper-util's connector failed (DNS, TCP connect, TLS handshake, connect
    /// timeout), so nothing of the request was written.
    connect: bool,
    /// `is_timeout()`: the whole-request timeout (or the connect timeout, which is also `connect`).
    timeout: bool,
    /// `is_builder()`: the request could not even be built.
    builder: bool,
}

impl Facts {
    fn of(e: &reqwest::Error) -> Self {
        Facts {
            connect: e.is_connect(),
            timeout: e.is_timeout(),
            builder: e.is_builder(),
        }
    }
}

/// The kinds of transport failure, each with its own error variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    NotSent,
    OutcomeUnknown,
    Timeout,
    Config,
}

/// Decides whether a failed request may have reached Metabase. Anything not proven unsent is
/// an unknown outcome: a connection reset or closed after the request was written
/// (hyper's "connection closed before message completed"), or a body that broke off (reqwest
/// labels that one `is_decode()` too, "error decoding response body: ... end of file before
/// message length reached", so a body failure is never read as a decoding one; the JSON is
/// decoded by the caller, after the whole body arrived). Stale pooled connections are not in
/// this set: hyper-util 0.1 re-sends a request by itself only when the dead connection handed
/// it back unwritten (`try_send_request` -> `take_message`, `retry_canceled_requests`). A
/// request it hands back on a fresh connection surfaces as "canceled", which is not
/// `is_connect()` and so is counted as unknown: the safe side.
fn classify_transport(f: Facts) -> Transport {
    if f.builder {
        Transport::Config
    } else if f.connect {
        Transport::NotSent
    } else if f.timeout {
        Transport::Timeout
    } else {
        // Sending failed after the connection was made, or the body broke off: either way
        // the request may have reached Metabase.
        Transport::OutcomeUnknown
    }
}

fn transport_error(method: &Method, route: &str, e: &reqwest::Error) -> MetabaseError {
    let (method, route) = (method.clone(), route.to_string());
    // reqwest's message names the URL, which carries no secret (the key is a header).
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    match classify_transport(Facts::of(e)) {
        Transport::NotSent => MetabaseError::NotSent {
            method,
            route,
            detail,
        },
        Transport::OutcomeUnknown => MetabaseError::OutcomeUnknown {
            method,
            route,
            detail,
        },
        Transport::Timeout => MetabaseError::Timeout { method, route },
        Transport::Config => MetabaseError::Config(format!(
            "{method} {route}: cannot build the request: {detail}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, ErrorClass};

    #[test]
    fn the_key_never_prints() {
        let k = ApiKey::new("mb_secret_123");
        assert!(!format!("{k:?}").contains("secret"));
        let c = ClientConfig::new("http://x", Auth::ApiKey(k));
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn base_urls_are_checked_and_normalised() {
        let c = MetabaseClient::new(ClientConfig::new("http://mb.local/sub", Auth::None)).unwrap();
        assert_eq!(c.base_url().as_str(), "http://mb.local/sub/");
        assert!(MetabaseClient::new(ClientConfig::new("mb.local", Auth::None)).is_err());
        assert!(MetabaseClient::new(ClientConfig::new("ftp://mb", Auth::None)).is_err());
    }

    #[test]
    fn transport_failures_are_unsent_only_when_proven() {
        let f = |connect, timeout| Facts {
            connect,
            timeout,
            builder: false,
        };
        #[rustfmt::skip]
        let cases = [
            // (what, facts, kind); a broken-off body has the facts of a broken send
            ("connection refused, DNS, TLS handshake", f(true, false), Transport::NotSent),
            ("connect timeout", f(true, true), Transport::NotSent),
            ("closed after the request was written", f(false, false), Transport::OutcomeUnknown),
            ("no answer in time", f(false, true), Transport::Timeout),
            ("body broke off", f(false, false), Transport::OutcomeUnknown),
            ("body timed out", f(false, true), Transport::Timeout),
            ("cannot build", Facts { builder: true, ..Facts::default() }, Transport::Config),
        ];
        for (what, facts, want) in cases {
            assert_eq!(classify_transport(facts), want, "{what}");
        }
    }

    /// A one-trick server: accepts connections, reads one request each, counts them, and then
    /// does `answer` (close at once, or a partial answer).
    async fn server(
        answer: &'static [u8],
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Up to the end of the body ("{}" is the last thing sent).
                    while !buf.ends_with(b"{}") && !buf.ends_with(b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = sock.write_all(answer).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (url, seen)
    }

    fn client(url: &str, timeout: Duration) -> MetabaseClient {
        MetabaseClient::new(ClientConfig {
            timeout,
            retries: 2,
            retry_min_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(2),
            ..ClientConfig::new(url, Auth::None)
        })
        .unwrap()
    }

    async fn post(mb: &MetabaseClient, replay: Replay) -> MetabaseError {
        mb.call::<_, serde_json::Value>(
            Method::POST,
            "/api/x",
            &[],
            Some(&serde_json::json!({})),
            replay,
        )
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn a_lost_answer_is_an_unknown_outcome_and_a_creation_is_sent_once() {
        let (url, seen) = server(b"").await;
        let mb = client(&url, Duration::from_secs(10));
        let e = post(&mb, Replay::OnlyIfUnsent).await;
        assert!(matches!(e, MetabaseError::OutcomeUnknown { .. }), "{e:?}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "sent once"
        );
        let e = post(&mb, Replay::Safe).await;
        assert!(matches!(e, MetabaseError::OutcomeUnknown { .. }), "{e:?}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1 + 3,
            "a safe request is retried"
        );
    }

    #[tokio::test]
    async fn a_broken_body_is_an_unknown_outcome() {
        let (url, seen) =
            server(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\"").await;
        let e = post(&client(&url, Duration::from_secs(10)), Replay::OnlyIfUnsent).await;
        assert!(matches!(e, MetabaseError::OutcomeUnknown { .. }), "{e:?}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_and_retried() {
        // Bind then drop: the port is closed, so connecting is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = post(
            &client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10)),
            Replay::OnlyIfUnsent,
        )
        .await;
        assert!(matches!(e, MetabaseError::NotSent { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Transient);
    }

    #[tokio::test]
    async fn a_late_answer_is_a_timeout_with_an_unknown_outcome() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Reads and never answers; the sockets live as long as the task.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut chunk = [0u8; 4096];
                let _ = sock.read(&mut chunk).await;
                held.push(sock);
            }
        });
        let e = post(
            &client(&url, Duration::from_millis(200)),
            Replay::OnlyIfUnsent,
        )
        .await;
        assert!(matches!(e, MetabaseError::Timeout { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::OutcomeUnknown);
    }
}
