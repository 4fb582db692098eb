//! The emulator over HTTP: every documented error path with its exact status and body, and the
//! semantics clients depend on (partial PUTs, sparse graphs, copy-on-create, faults).

use std::time::{Duration, Instant};

use mbprov::emulator::{EmulatorOptions, RunningEmulator, spawn};
use reqwest::Method;
use serde_json::{Value, json};

use crate::conformance::Answer;

const KEY: &str = "test-key";

struct Emu {
    _running: RunningEmulator,
    base: String,
    http: reqwest::Client,
}

async fn start(opts: EmulatorOptions) -> Emu {
    let running = spawn(opts).await.expect("emulator starts");
    Emu {
        base: running.url(),
        _running: running,
        http: reqwest::Client::new(),
    }
}

async fn emu() -> Emu {
    start(EmulatorOptions::new(KEY)).await
}

impl Emu {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::read(req.send().await.expect("request")).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, body, &[("x-api-key", KEY)]).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    async fn new_group(&self, name: &str) -> i64 {
        let a = self
            .post("/api/permissions/group", json!({"name": name}))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        a.json()["id"].as_i64().expect("group id")
    }

    async fn data_revision(&self) -> i64 {
        self.get("/api/permissions/graph").await.json()["revision"]
            .as_i64()
            .expect("revision")
    }

    async fn collection_revision(&self) -> i64 {
        self.get("/api/collection/graph").await.json()["revision"]
            .as_i64()
            .expect("revision")
    }
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn credentials_are_required_and_401_is_plain_text() {
    let e = emu().await;
    let none = e.send(Method::GET, "/api/user", None, &[]).await;
    none.plain(401, "Unauthenticated");
    let wrong = e
        .send(Method::GET, "/api/user", None, &[("x-api-key", "nope")])
        .await;
    wrong.plain(401, "Unauthenticated");
    assert_eq!(
        e.send(Method::GET, "/api/health", None, &[]).await.json(),
        json!({"status": "ok"})
    );
    let props = e
        .send(Method::GET, "/api/session/properties", None, &[])
        .await
        .json();
    // The default is pro at the newest release (EE builds are tagged v1.x.y).
    assert_eq!(props["version"]["tag"], "v1.64.0");
    assert_eq!(
        props["token-features"],
        json!({"sandboxes": true, "advanced_permissions": true, "tenants": true})
    );
    assert_eq!(props["has-user-setup"], true);
    e.send(Method::GET, "/_emulator/state", None, &[])
        .await
        .plain(401, "Unauthenticated");

    // A session, then an API key made with it, both authenticate.
    let bad = e
        .send(
            Method::POST,
            "/api/session",
            Some(json!({"username": "admin@example.com", "password": "x"})),
            &[],
        )
        .await;
    assert_eq!(bad.status, 401);
    let login = e
        .send(
            Method::POST,
            "/api/session",
            Some(json!({"username": "ADMIN@example.com", "password": "admin-password-1"})),
            &[],
        )
        .await;
    let session = login.json()["id"].as_str().expect("session id").to_string();
    let key = e
        .send(
            Method::POST,
            "/api/api-key",
            Some(json!({"name": "workers", "group_id": 2})),
            &[("x-metabase-session", &session)],
        )
        .await
        .json();
    let unmasked = key["unmasked_key"]
        .as_str()
        .expect("unmasked key")
        .to_string();
    let me = e
        .send(Method::GET, "/api/user", None, &[("x-api-key", &unmasked)])
        .await;
    assert_eq!(me.status, 200);
    let listed = e.get("/api/api-key").await.json();
    assert_eq!(listed[0]["name"], "workers");
    assert!(listed[0].get("unmasked_key").is_none());
}

#[tokio::test]
async fn user_errors_have_metabases_exact_bodies() {
    let e = emu().await;
    let g = e.new_group("Tenant A").await;
    let made = e
        .post(
            "/api/user",
            json!({"email": "Jane@Example.com", "first_name": "Jane", "login_attributes": {"org": 42},
                   "user_group_memberships": [{"id": 1, "is_group_manager": false},
                                              {"id": g, "is_group_manager": false}],
                   "password": "ignored"}),
        )
        .await;
    assert_eq!(made.status, 200, "{made:?}");
    let jane = made.json();
    assert_eq!(jane["email"], "jane@example.com");
    assert_eq!(jane["login_attributes"], json!({"org": "42"}));
    assert_eq!(
        jane["user_group_memberships"],
        json!([{"id": 1, "is_group_manager": false}, {"id": g, "is_group_manager": false}])
    );
    let id = jane["id"].as_i64().expect("id");

    e.post("/api/user", json!({"email": "JANE@example.COM"}))
        .await
        .assert_json(
            400,
            json!({"errors": {"email": "Email address already in use."}}),
        );
    e.put("/api/user/1", json!({"email": "jane@EXAMPLE.com"}))
        .await
        .assert_json(
            400,
            json!({"errors": {"email": "Email address already associated to another user."}}),
        );
    let invalid = e.post("/api/user", json!({"email": "not-an-email"})).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(
        invalid.json()["errors"],
        json!({"email": "value must be a valid email address."})
    );
    e.post(
        "/api/user",
        json!({"email": "bob@example.com", "user_group_memberships": [{"id": g}]}),
    )
    .await
    .plain(
        400,
        "You cannot add or remove users to/from the 'All Users' group.",
    );
    let bob = e.get("/api/user?query=bob").await.json();
    assert_eq!(
        bob["total"], 0,
        "no user is created when memberships are refused"
    );

    // PUT replaces login_attributes and memberships.
    let put = e
        .put(
            &format!("/api/user/{id}"),
            json!({"login_attributes": {"x": true},
                   "user_group_memberships": [{"id": 1, "is_group_manager": false}]}),
        )
        .await
        .json();
    assert_eq!(put["login_attributes"], json!({"x": "true"}));
    assert_eq!(
        put["user_group_memberships"],
        json!([{"id": 1, "is_group_manager": false}])
    );

    assert_eq!(
        e.delete(&format!("/api/user/{id}")).await.json(),
        json!({"success": true})
    );
    assert_eq!(
        e.delete(&format!("/api/user/{id}")).await.json(),
        json!({"success": true})
    );
    e.put(&format!("/api/user/{id}"), json!({"first_name": "J"}))
        .await
        .plain(404, "Not found.");
    assert_eq!(
        e.get(&format!("/api/user/{id}")).await.json()["is_active"],
        false
    );
    let listed = e.get("/api/user?status=deactivated").await.json();
    assert_eq!(listed["data"][0]["id"], id);
    let back = e
        .put(&format!("/api/user/{id}/reactivate"), json!({}))
        .await;
    assert_eq!(back.status, 200);
    assert!(back.json().get("user_group_memberships").is_none());
    let again = e
        .put(&format!("/api/user/{id}/reactivate"), json!({}))
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(
        again.json()["message"],
        "Not able to reactivate an active user"
    );
    e.get("/api/user/999").await.plain(404, "Not found.");
    e.put("/api/user/999/reactivate", json!({}))
        .await
        .plain(404, "Not found.");
    e.delete("/api/user/1").await.plain(
        400,
        "You cannot remove the last member of the 'Admin' group!",
    );
}

#[tokio::test]
async fn group_and_membership_errors() {
    let e = emu().await;
    let g = e.new_group("Sales").await;
    e.post("/api/permissions/group", json!({"name": "sALES"}))
        .await
        .plain(400, "A group with that name already exists.");
    e.put("/api/permissions/group/2", json!({"name": "Bosses"}))
        .await
        .plain(
            400,
            "You cannot edit or delete the 'Administrators' permissions group!",
        );
    e.delete("/api/permissions/group/1").await.plain(
        400,
        "You cannot edit or delete the 'All Users' permissions group!",
    );
    e.get("/api/permissions/group/999")
        .await
        .plain(404, "Not found.");

    let members = e
        .post(
            "/api/permissions/membership",
            json!({"group_id": g, "user_id": 1}),
        )
        .await
        .json();
    assert_eq!(members[0]["user_id"], 1);
    let membership_id = members[0]["membership_id"].as_i64().expect("membership id");
    assert_eq!(
        e.post(
            "/api/permissions/membership",
            json!({"group_id": g, "user_id": 1})
        )
        .await
        .status,
        500
    );
    e.post(
        "/api/permissions/membership",
        json!({"group_id": 1, "user_id": 1}),
    )
    .await
    .plain(
        400,
        "You cannot add or remove users to/from the 'All Users' group.",
    );
    let all = e.get("/api/permissions/membership").await.json();
    assert_eq!(all["1"].as_array().map(Vec::len), Some(3));
    let groups = e.get("/api/permissions/group").await.json();
    let names: Vec<&str> = groups
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Administrators", "All Users", "Sales"]);
    assert_eq!(
        e.delete(&format!("/api/permissions/membership/{membership_id}"))
            .await
            .status,
        204
    );
    e.delete(&format!("/api/permissions/membership/{membership_id}"))
        .await
        .plain(404, "Not found.");
    assert_eq!(
        e.put("/api/permissions/membership/2/clear", json!({}))
            .await
            .status,
        400
    );
    assert_eq!(
        e.delete(&format!("/api/permissions/group/{g}"))
            .await
            .status,
        204
    );
    assert_eq!(e.delete("/api/permissions/group/999").await.status, 204);
}

const STALE: &str = "Looks like someone else edited the permissions and your data is out of date. Please fetch new data and try again.";

#[tokio::test]
async fn data_graph_puts_are_partial_and_fenced_by_the_revision() {
    let e = emu().await;
    let g = e.new_group("Tenant").await;
    let gs = g.to_string();
    // A new group copies All Users' data permissions, without a revision bump.
    let slice = e
        .get(&format!("/api/permissions/graph/group/{g}"))
        .await
        .json();
    let all_users = e.get("/api/permissions/graph/group/1").await.json();
    assert_eq!(slice["groups"][&gs], all_users["groups"]["1"]);
    assert_eq!(slice["revision"], 1);

    let stale = e
        .put(
            "/api/permissions/graph",
            json!({"revision": 0, "groups": {}}),
        )
        .await;
    stale.plain(409, STALE);
    let put = e
        .put(
            "/api/permissions/graph",
            json!({"revision": 1, "groups": {&gs: {"2": {"view-data": "blocked", "create-queries": "no", "download": {"schemas": "none"}}}}}),
        )
        .await
        .json();
    assert_eq!(put["revision"], 2);
    assert_eq!(
        put["groups"].as_object().map(|o| o.len()),
        Some(1),
        "only the submitted groups"
    );
    assert_eq!(
        put["groups"][&gs]["1"]["create-queries"],
        "query-builder-and-native"
    );
    assert_eq!(
        put["groups"][&gs].get("2"),
        None,
        "least values are left out"
    );
    let skipped = e
        .put(
            "/api/permissions/graph?skip-graph=true",
            json!({"revision": 2, "groups": {}}),
        )
        .await
        .json();
    assert_eq!(skipped, json!({"revision": 3}));

    let invalid = e
        .put(
            "/api/permissions/graph",
            json!({"revision": 3, "groups": {&gs: {"1": {"view-data": "sandboxed"}}}}),
        )
        .await;
    assert_eq!(invalid.status, 400);
    assert!(invalid.plain);
    assert!(
        invalid
            .text
            .starts_with("Cannot parse permissions graph because it is invalid: "),
        "{invalid:?}"
    );
    e.put(
        "/api/permissions/graph",
        json!({"revision": 3, "groups": {"2": {"1": {"create-queries": "no"}}}}),
    )
    .await
    .plain(
        400,
        "You cannot create or revoke permissions for the 'Admin' group.",
    );
    assert_eq!(e.data_revision().await, 3);
    let db = e.get("/api/permissions/graph/db/2").await.json();
    assert_eq!(db["groups"]["1"]["2"]["view-data"], "unrestricted");
    e.get("/api/permissions/graph/db/9")
        .await
        .plain(404, "Not found.");
    let stats = e.get("/_emulator/stats").await.json();
    assert_eq!(stats["graph_puts"]["data"], 5);
    assert_eq!(stats["conflicts"]["data"], 1);
    assert!(stats["bytes"]["PUT /api/permissions/graph"]["in"].as_u64() > Some(0));
    assert!(stats["bytes"]["GET /api/permissions/graph/group/:id"]["out"].as_u64() > Some(0));
}

#[tokio::test]
async fn collection_graph_is_sparse_and_new_collections_copy_their_parent() {
    let e = emu().await;
    let g = e.new_group("Tenant").await;
    let gs = g.to_string();
    let graph = e.get("/api/collection/graph").await.json();
    assert_eq!(
        graph,
        json!({"revision": 1, "groups": {"1": {"root": "write", "2": "write"}, "2": {"root": "write", "2": "write"}}})
    );
    e.put(
        "/api/collection/graph",
        json!({"revision": 7, "groups": {}}),
    )
    .await
    .plain(409, STALE);
    let put = e
        .put("/api/collection/graph", json!({"revision": 1, "groups": {&gs: {"2": "read", "1": "write"}, "1": {"2": "none"}}}))
        .await
        .json();
    assert_eq!(put["revision"], 2);
    assert_eq!(
        put["groups"][&gs],
        json!({"2": "read"}),
        "personal collections are dropped"
    );
    assert_eq!(put["groups"]["1"], json!({"root": "write"}));
    let noop = e
        .put(
            "/api/collection/graph?skip-graph=true",
            json!({"revision": 2, "groups": {&gs: {"2": "read"}}}),
        )
        .await;
    assert_eq!(noop.json(), json!({"revision": 2}), "no change, no bump");
    e.put(
        "/api/collection/graph",
        json!({"revision": 2, "groups": {"2": {"root": "read"}}}),
    )
    .await
    .plain(
        400,
        "You cannot create or revoke permissions for the 'Admin' group.",
    );

    let child = e
        .post(
            "/api/collection",
            json!({"name": "Tenant dashboards", "parent_id": 2}),
        )
        .await
        .json();
    assert_eq!(child["location"], "/2/");
    let cid = child["id"].as_i64().expect("id").to_string();
    let after = e.get("/api/collection/graph").await.json();
    assert_eq!(
        after["revision"], 3,
        "copying the parent's cells bumps the revision"
    );
    assert_eq!(after["groups"][&gs][&cid], "read");
    assert_eq!(after["groups"]["2"][&cid], "write");
    let twin = e
        .post(
            "/api/collection",
            json!({"name": "Tenant dashboards", "parent_id": 2}),
        )
        .await;
    assert_eq!(twin.status, 200, "collection names are not unique");

    let items = e
        .get("/api/collection/2/items?models=collection")
        .await
        .json();
    assert_eq!(items["total"], 2);
    let list = e.get("/api/collection").await.json();
    assert_eq!(list[0]["id"], "root");
    e.get("/api/collection/999").await.plain(404, "Not found.");
    let archived = e
        .put(&format!("/api/collection/{cid}"), json!({"archived": true}))
        .await
        .json();
    assert_eq!(archived["archived"], true);
    assert!(
        e.get("/api/collection/graph").await.json()["groups"][&gs]
            .get(&cid)
            .is_none()
    );
    assert_eq!(e.collection_revision().await, 4);
}

#[tokio::test]
async fn oss_refuses_premium_features() {
    let mut opts = EmulatorOptions::new(KEY);
    opts.oss = true;
    let e = start(opts).await;
    let props = e.get("/api/session/properties").await.json();
    assert_eq!(
        props["token-features"],
        json!({"sandboxes": false, "advanced_permissions": false, "tenants": false})
    );
    e.put("/api/permissions/graph", json!({"revision": 1, "groups": {"1": {"1": {"view-data": "blocked", "create-queries": "no"}}}}))
        .await
        .plain(
            402,
            "The blocked permissions functionality is only enabled if you have a premium token with the advanced-permissions feature.",
        );
    let sandboxes = e
        .put(
            "/api/permissions/graph",
            json!({"revision": 1, "groups": {}, "sandboxes": [{"group_id": 1, "table_id": 10}]}),
        )
        .await;
    assert_eq!(sandboxes.status, 402);
    // 402, not 403, on every /api/mt/gtap route (correction 8); JSON on newer releases.
    let gtap = e.get("/api/mt/gtap").await;
    assert_eq!(gtap.status, 402, "{gtap:?}");
    assert_eq!(
        gtap.json()["message"],
        "Sandboxes is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/"
    );
}

#[tokio::test]
async fn sandboxes_crud_and_graph_rendering() {
    let e = emu().await;
    let g = e.new_group("Tenant").await;
    let made = e
        .post("/api/mt/gtap", json!({"group_id": g, "table_id": 10, "attribute_remappings": {"org": ["dimension", ["field", 101, null]]}}))
        .await
        .json();
    let id = made["id"].as_i64().expect("id");
    let one = e
        .get(&format!("/api/mt/gtap?group_id={g}&table_id=10"))
        .await
        .json();
    assert_eq!(one["id"], id);
    let graph = e
        .get(&format!("/api/permissions/graph/group/{g}"))
        .await
        .json();
    assert_eq!(
        graph["groups"][g.to_string()]["1"]["view-data"],
        json!({"PUBLIC": {"10": "sandboxed", "11": "unrestricted"}})
    );
    assert_eq!(
        e.post("/api/mt/gtap", json!({"group_id": g, "table_id": 10}))
            .await
            .status,
        500
    );
    assert_eq!(e.delete(&format!("/api/mt/gtap/{id}")).await.status, 204);
    e.get(&format!("/api/mt/gtap/{id}"))
        .await
        .plain(404, "Not found.");
}

#[tokio::test]
async fn tables_and_databases() {
    let e = emu().await;
    let t = e.get("/api/table/10").await.json();
    assert_eq!(
        (t["db_id"].clone(), t["schema"].clone(), t["name"].clone()),
        (json!(1), json!("PUBLIC"), json!("ORDERS"))
    );
    let meta = e.get("/api/table/21/query_metadata").await.json();
    assert_eq!(meta["fields"][1]["name"], "organization_id");
    assert_eq!(e.get("/api/database").await.json()["total"], 2);
    let db = e.get("/api/database/2/metadata").await.json();
    assert_eq!(db["tables"][0]["name"], "events");
    e.get("/api/table/99").await.plain(404, "Not found.");
}

#[tokio::test]
async fn faults_can_be_switched_at_run_time() {
    let e = emu().await;
    e.post("/_emulator/faults", json!({"outage": true})).await;
    assert_eq!(e.get("/api/user").await.status, 503);
    assert_eq!(e.get("/api/health").await.status, 503);
    e.post(
        "/_emulator/faults",
        json!({"outage": false, "error_rate": 1.0}),
    )
    .await;
    assert_eq!(e.get("/api/user").await.status, 503);
    let settings = e
        .post("/_emulator/faults", json!({"error_rate": 0.0}))
        .await
        .json();
    assert_eq!(settings["error_rate"], 0.0);
    assert_eq!(e.get("/api/user").await.status, 200);
    let log = e.get("/_emulator/requests").await.json();
    let statuses: Vec<i64> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["status"].as_i64())
        .collect();
    assert_eq!(statuses, vec![503, 503, 503, 200]);
    assert_eq!(
        e.get("/_emulator/stats").await.json()["requests"]["GET /api/user"],
        3
    );
    e.post("/_emulator/reset-stats", json!({})).await;
    assert_eq!(e.get("/_emulator/stats").await.json()["requests_total"], 0);
}

#[tokio::test]
async fn a_slow_start_answers_initializing_then_recovers() {
    let mut opts = EmulatorOptions::new(KEY);
    opts.init_delay_ms = 300;
    let e = start(opts).await;
    let health = e.get("/api/health").await;
    health.assert_json(503, json!({"status": "initializing", "progress": 0.5}));
    e.get("/api/user")
        .await
        .plain(503, "Metabase is still initializing. Please sit tight...");
    eventually("health to turn ok", || async {
        e.get("/api/health").await.status == 200
    })
    .await;
    assert_eq!(e.get("/api/user").await.status, 200);
}

#[tokio::test]
async fn a_fresh_instance_is_set_up_once() {
    let mut opts = EmulatorOptions::new(KEY);
    opts.fresh = true;
    let e = start(opts).await;
    let props = e
        .send(Method::GET, "/api/session/properties", None, &[])
        .await
        .json();
    assert_eq!(props["has-user-setup"], false);
    let token = props["setup-token"]
        .as_str()
        .expect("setup token")
        .to_string();
    let body = json!({"token": token, "user": {"first_name": "Ops", "last_name": "Admin", "email": "ops@example.com",
                      "password": "s3cret-pass"}, "prefs": {"site_name": "Acme"}});
    let setup = e
        .send(Method::POST, "/api/setup", Some(body.clone()), &[])
        .await;
    let session = setup.json()["id"].as_str().expect("session").to_string();
    let me = e
        .send(
            Method::GET,
            "/api/user/current",
            None,
            &[("x-metabase-session", &session)],
        )
        .await
        .json();
    assert_eq!(
        (me["email"].clone(), me["is_superuser"].clone()),
        (json!("ops@example.com"), json!(true))
    );
    e.send(Method::POST, "/api/setup", Some(body), &[]).await.plain(
        403,
        "The /api/setup route can only be used to create the first user, however a user currently exists.",
    );
    let login = e
        .send(
            Method::POST,
            "/api/session",
            Some(json!({"username": "ops@example.com", "password": "s3cret-pass"})),
            &[],
        )
        .await;
    assert_eq!(login.status, 200);
}

#[tokio::test]
async fn seeding_fills_a_large_instance() {
    let e = emu().await;
    let seeded = e
        .post("/_emulator/seed", json!({"tenants": 50}))
        .await
        .json();
    assert_eq!(seeded["tenants"].as_array().map(Vec::len), Some(50));
    let groups = e.get("/api/permissions/group").await.json();
    assert_eq!(groups.as_array().map(Vec::len), Some(52));
    let state = e.get("/_emulator/state").await.json();
    assert_eq!(state["revisions"], json!({"data": 2, "collection": 2}));
    assert_eq!(state["users"].as_array().map(Vec::len), Some(51));
}
