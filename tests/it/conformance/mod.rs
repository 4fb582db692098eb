//! Conformance: one test per request/response fact of Metabase's own test suite
//! (`../shared/metabase-test-facts.md`, facts 1-59) and per verified correction
//! (`../shared/metabase-api.md`, corrections 1-13), run over HTTP against the in-process
//! emulator in every edition the fact applies to. Each test is named `fNN_…` / `cNN_…` and its
//! doc comment names the Metabase test or function it reflects. Facts the emulator does not
//! reproduce are listed, with the reason, in the README ("The Metabase emulator").

mod client;
mod collection_graph;
mod collections;
mod corrections;
mod data_graph;
mod groups;
mod memberships;
mod sandboxes;
mod users;

use mbprov::emulator::{EditionName, EmulatorOptions, RunningEmulator, spawn};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "conformance-key";
pub const BOTH: [EditionName; 2] = [EditionName::Oss, EditionName::Pro];
/// A release before the changes of v0.56/v0.57 (version-gated facts run here too).
pub const OLD: &str = "v0.55.4";
pub const FORBIDDEN: &str = "You don't have permissions to do that.";
pub const STALE: &str = "Looks like someone else edited the permissions and your data is out of date. Please fetch new data and try again.";
pub const SANDBOXES_PAID: &str = "Sandboxes is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/";

pub struct Emu {
    pub edition: EditionName,
    _running: Option<RunningEmulator>,
    base: String,
    http: reqwest::Client,
    /// `x-api-key` of the caller: the superuser key, or a non-admin ("rasta") key.
    key: String,
}

/// A response reduced to what the facts compare.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub plain: bool,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    pub fn plain(&self, status: u16, text: &str) {
        assert_eq!(
            (self.status, self.text.as_str()),
            (status, text),
            "{self:?}"
        );
        assert!(self.plain, "expected text/plain: {self:?}");
    }

    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.json()
    }

    pub fn status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{self:?}");
        self
    }

    /// Asserts a JSON error or answer shape, whole.
    pub fn assert_json(&self, status: u16, body: Value) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.json(), body);
    }

    /// Reads an answer: status, whether Metabase's text/plain shape, the body.
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let plain = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/plain"));
        Answer {
            status,
            plain,
            text: resp.text().await.expect("body"),
        }
    }
}

/// The emulator as `edition` at `version` (`None`: the newest release).
pub async fn start(edition: EditionName, version: Option<&str>) -> Emu {
    let mut opts = EmulatorOptions::new(KEY);
    opts.edition = edition;
    opts.metabase_version = version.map(str::to_string);
    let running = spawn(opts).await.expect("emulator starts");
    Emu {
        edition,
        base: running.url(),
        _running: Some(running),
        http: reqwest::Client::new(),
        key: KEY.into(),
    }
}

/// One emulator per edition, at `version`.
pub async fn each(editions: &[EditionName], version: Option<&str>) -> Vec<Emu> {
    let mut out = Vec::new();
    for e in editions {
        out.push(start(*e, version).await);
    }
    out
}

impl Emu {
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn pro(&self) -> bool {
        self.edition == EditionName::Pro
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::read(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }
    /// `GET /api/permissions/graph/group/:id`: one group's slice of the data graph.
    pub async fn group_slice(&self, group: i64) -> Answer {
        self.get(&format!("/api/permissions/graph/group/{group}"))
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    /// The same instance seen by "rasta", an ordinary user (an API key in All Users).
    pub async fn rasta(&self) -> Emu {
        let made = self
            .post("/api/api-key", json!({"name": "rasta", "group_id": 1}))
            .await
            .ok();
        let key = made["unmasked_key"].as_str().expect("key").to_string();
        Emu {
            edition: self.edition,
            _running: None,
            base: self.base.clone(),
            http: self.http.clone(),
            key,
        }
    }

    pub async fn group(&self, name: &str) -> i64 {
        self.post("/api/permissions/group", json!({"name": name}))
            .await
            .ok()["id"]
            .as_i64()
            .expect("group id")
    }

    /// A user in All Users and `groups`, sent as mbprov sends it.
    pub async fn user(&self, email: &str, groups: &[i64]) -> i64 {
        let items: Vec<Value> = std::iter::once(1)
            .chain(groups.iter().copied())
            .map(|g| json!({"id": g, "is_group_manager": false}))
            .collect();
        self.post(
            "/api/user",
            json!({"email": email, "first_name": "F", "last_name": "L",
                   "user_group_memberships": items}),
        )
        .await
        .ok()["id"]
            .as_i64()
            .expect("user id")
    }

    pub async fn collection(&self, name: &str, parent: Option<i64>) -> i64 {
        let mut body = json!({"name": name});
        if let Some(p) = parent {
            body["parent_id"] = json!(p);
        }
        self.post("/api/collection", body).await.ok()["id"]
            .as_i64()
            .expect("collection id")
    }

    pub async fn data_revision(&self) -> i64 {
        self.get("/api/permissions/graph").await.ok()["revision"]
            .as_i64()
            .expect("revision")
    }

    pub async fn collection_revision(&self) -> i64 {
        self.get("/api/collection/graph").await.ok()["revision"]
            .as_i64()
            .expect("revision")
    }

    /// PUT of one group's entry for one database at the current revision.
    pub async fn put_data(&self, group: i64, db: i64, perms: Value, query: &str) -> Answer {
        let revision = self.data_revision().await;
        self.put(
            &format!("/api/permissions/graph{query}"),
            json!({"revision": revision, "groups": {group.to_string(): {db.to_string(): perms}}}),
        )
        .await
    }

    pub async fn put_collections(&self, groups: Value, query: &str) -> Answer {
        let revision = self.collection_revision().await;
        self.put(
            &format!("/api/collection/graph{query}"),
            json!({"revision": revision, "groups": groups}),
        )
        .await
    }
}
