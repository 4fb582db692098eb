use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
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

/// The Metabase REST client. Cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct MetabaseClient {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
}

/// Whether a request may be sent again after it may have reached the server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// GET, PUT, DELETE, and revision-fenced graph writes: sending twice has one effect.
    Safe,
    /// Creating POSTs: only retried when the request surely never left (connect errors).
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
        Ok(MetabaseClient { http, base, config })
    }

    /// The same client authenticating differently (bootstrap: session, then API key).
    pub fn with_auth(&self, auth: Auth) -> Self {
        let mut c = self.clone();
        c.config.auth = auth;
        c
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
            .when(|e: &MetabaseError| match replay {
                Replay::Safe => e.is_retryable_now(),
                Replay::OnlyIfUnsent => matches!(e, MetabaseError::Connect { .. }),
            })
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
        req = match &self.config.auth {
            Auth::ApiKey(k) => req.header("x-api-key", k.expose()),
            Auth::Session(s) => req.header("X-Metabase-Session", s.expose()),
            Auth::None => req,
        };
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                crate::ops::metrics::metabase_request(method.as_str(), None);
                crate::trace::record_response(None);
                return Err(transport_error(method, route, &e));
            }
        };
        let status = resp.status();
        crate::ops::metrics::metabase_request(method.as_str(), Some(status.as_u16()));
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

fn transport_error(method: &Method, route: &str, e: &reqwest::Error) -> MetabaseError {
    if e.is_timeout() {
        MetabaseError::Timeout {
            method: method.clone(),
            route: route.to_string(),
        }
    } else if e.is_decode() || e.status().is_some_and(|s: StatusCode| s.is_success()) {
        MetabaseError::Decode {
            method: method.clone(),
            route: route.to_string(),
            detail: e.to_string(),
        }
    } else {
        // reqwest's message names the URL, which carries no secret (the key is a header).
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        MetabaseError::Connect {
            method: method.clone(),
            route: route.to_string(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
