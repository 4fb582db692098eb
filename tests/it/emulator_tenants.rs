//! The emulator's Tenants over HTTP, each behaviour citing what it reflects in Metabase, and
//! mbprov's tenant client against it.

use mbprov::emulator::{EmulatorOptions, RunningEmulator, spawn};
use mbprov::metabase::models::{NewTenant, TenantStatus, TenantUpdate};
use mbprov::metabase::{ApiKey, Auth, ClientConfig, MetabaseClient};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "tenants-key";

struct Emu {
    _running: RunningEmulator,
    base: String,
    http: reqwest::Client,
}

async fn start(oss: bool) -> Emu {
    let mut opts = EmulatorOptions::new(KEY);
    opts.oss = oss;
    let running = spawn(opts).await.expect("emulator starts");
    Emu {
        base: running.url(),
        _running: running,
        http: reqwest::Client::new(),
    }
}

impl Emu {
    /// (status, body as JSON or as a JSON string when plain text)
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn client(&self) -> MetabaseClient {
        MetabaseClient::new(ClientConfig::new(
            self.base.clone(),
            Auth::ApiKey(ApiKey::new(KEY)),
        ))
        .expect("client")
    }
}

#[tokio::test]
async fn tenants_behave_like_metabase() {
    let emu = start(false).await;
    // The setting and the feature, as /api/session/properties shows them to an admin.
    let (_, props) = emu.call(Method::GET, "/api/session/properties", None).await;
    assert_eq!(props["token-features"]["tenants"], true);
    assert_eq!(props["use-tenants"], false, "use-tenants defaults to false");
    // invite-user!: a tenant user needs use-tenants.
    let (status, body) = emu
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "t@x.test", "tenant_id": 1})),
        )
        .await;
    assert_eq!(
        (status, &body["errors"]["tenant_id"]),
        (
            400,
            &json!("Cannot create a Tenant User as Tenants are not enabled for this instance.")
        )
    );
    let (status, _) = emu
        .call(
            Method::PUT,
            "/api/setting/use-tenants",
            Some(json!({"value": true})),
        )
        .await;
    assert_eq!(status, 204);

    // create-tenant!: 200 Tenant with its collection in the tenant-specific namespace.
    let (status, acme) = emu
        .call(
            Method::POST,
            "/api/ee/tenant",
            Some(json!({"name": "Acme", "slug": "acme", "attributes": {"region": "eu", "n": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{acme}");
    assert_eq!(acme["slug"], "acme");
    assert_eq!(acme["is_active"], true);
    assert_eq!(acme["member_count"], 0);
    assert_eq!(
        acme["attributes"],
        json!({"region": "eu", "n": "1"}),
        "values answered as strings"
    );
    let coll = acme["tenant_collection_id"].as_i64().unwrap();
    let (_, c) = emu
        .call(Method::GET, &format!("/api/collection/{coll}"), None)
        .await;
    assert_eq!(
        (c["name"].as_str(), c["namespace"].as_str()),
        (Some("Tenant Collection: Acme"), Some("tenant-specific"))
    );

    // Errors: duplicate name or slug (tenant-exists?), bad slug (Slug schema), closed schema,
    // `@` attribute keys (Attributes), rename to a taken name, unknown id.
    let cases = [
        (
            Method::POST,
            "/api/ee/tenant".to_string(),
            json!({"name": "Acme", "slug": "other"}),
            400,
            Some("This tenant name or slug is already taken."),
        ),
        (
            Method::POST,
            "/api/ee/tenant".to_string(),
            json!({"name": "Other", "slug": "acme"}),
            400,
            Some("This tenant name or slug is already taken."),
        ),
        (
            Method::POST,
            "/api/ee/tenant".to_string(),
            json!({"name": "Other", "slug": "Not Valid"}),
            400,
            None,
        ),
        (
            Method::POST,
            "/api/ee/tenant".to_string(),
            json!({"name": "Other", "slug": "other", "extra": 1}),
            400,
            None,
        ),
        (
            Method::POST,
            "/api/ee/tenant".to_string(),
            json!({"name": "Other", "slug": "other", "attributes": {"@tenant.slug": "x"}}),
            400,
            None,
        ),
    ];
    for (method, path, body, want, text) in cases {
        let (status, answer) = emu.call(method, &path, Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {answer}");
        if let Some(t) = text {
            assert_eq!(answer, json!(t), "plain text");
        }
    }
    let (_, beta) = emu
        .call(
            Method::POST,
            "/api/ee/tenant",
            Some(json!({"name": "Beta", "slug": "beta"})),
        )
        .await;
    let beta_id = beta["id"].as_i64().unwrap();
    let (status, answer) = emu
        .call(
            Method::PUT,
            &format!("/api/ee/tenant/{beta_id}"),
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(
        (status, answer),
        (400, json!("This name is already taken."))
    );
    let (status, _) = emu.call(Method::GET, "/api/ee/tenant/999", None).await;
    assert_eq!(status, 404);
    let (status, _) = emu
        .call(Method::DELETE, &format!("/api/ee/tenant/{beta_id}"), None)
        .await;
    assert!(status == 404 || status == 405, "no DELETE route: {status}");

    // Tenant users and groups (user_api_test.clj).
    let acme_id = acme["id"].as_i64().unwrap();
    let (_, groups) = emu
        .call(Method::GET, "/api/permissions/group?tenancy=external", None)
        .await;
    let atu = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["magic_group_type"] == "all-external-users")
        .expect("All tenant users")["id"]
        .clone();
    let (status, tg) = emu
        .call(
            Method::POST,
            "/api/permissions/group",
            Some(json!({"name": "Recruiters", "is_tenant_group": true})),
        )
        .await;
    assert_eq!((status, &tg["is_tenant_group"]), (200, &json!(true)));
    let (status, u) = emu.call(Method::POST, "/api/user", Some(json!({"email": "ann@acme.test", "tenant_id": acme_id,
        "user_group_memberships": [{"id": atu, "is_group_manager": false}, {"id": tg["id"], "is_group_manager": false}]}))).await;
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["tenant_id"], acme_id);
    let (status, answer) = emu
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "bob@acme.test", "tenant_id": acme_id,
        "user_group_memberships": [{"id": tg["id"]}]})),
        )
        .await;
    assert_eq!(
        (status, answer),
        (
            400,
            json!("You cannot add or remove users to/from the 'All tenant users' group.")
        )
    );
    let (status, answer) = emu
        .call(
            Method::POST,
            "/api/user",
            // Items as every edition wants them (correction 1), so that only the mixed
            // membership is wrong.
            Some(json!({"email": "cy@x.test",
        "user_group_memberships": [{"id": 1, "is_group_manager": false},
                                   {"id": tg["id"], "is_group_manager": false}]})),
        )
        .await;
    assert_eq!(
        (status, &answer["message"]),
        (
            400,
            &json!("Cannot add non-tenant user to tenant-group or vice versa")
        )
    );
    // GET /api/user: internal users only, unless tenancy or tenant_id says otherwise.
    let (_, internal) = emu.call(Method::GET, "/api/user?status=all", None).await;
    assert!(
        internal["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["tenant_id"].is_null())
    );
    let (_, members) = emu
        .call(Method::GET, &format!("/api/user?tenant_id={acme_id}"), None)
        .await;
    assert_eq!(members["data"].as_array().unwrap().len(), 1);

    // update-tenant!: deactivation cascades and reverses.
    let (_, off) = emu
        .call(
            Method::PUT,
            &format!("/api/ee/tenant/{acme_id}"),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(
        (off["is_active"].as_bool(), off["member_count"].as_i64()),
        (Some(false), Some(0))
    );
    let (_, c) = emu
        .call(Method::GET, &format!("/api/collection/{coll}"), None)
        .await;
    assert_eq!(c["archived"], true);
    let (_, listed) = emu
        .call(Method::GET, "/api/ee/tenant?status=deactivated", None)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let (_, on) = emu
        .call(
            Method::PUT,
            &format!("/api/ee/tenant/{acme_id}"),
            Some(json!({"is_active": true})),
        )
        .await;
    assert_eq!(on["member_count"], 1);
}

#[tokio::test]
async fn without_the_feature_tenants_are_a_paid_feature() {
    let emu = start(true).await;
    let paid = json!(
        "Tenants is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/"
    );
    for (method, path, body) in [
        (Method::GET, "/api/ee/tenant", None),
        (
            Method::POST,
            "/api/ee/tenant",
            Some(json!({"name": "A", "slug": "a"})),
        ),
        (
            Method::POST,
            "/api/permissions/group",
            Some(json!({"name": "T", "is_tenant_group": true})),
        ),
    ] {
        let (status, answer) = emu.call(method, path, body).await;
        assert_eq!((status, &answer["message"]), (402, &paid), "{path}");
    }
}

#[tokio::test]
async fn the_tenant_client_speaks_the_emulators_tenants() {
    let emu = start(false).await;
    emu.call(
        Method::PUT,
        "/api/setting/use-tenants",
        Some(json!({"value": true})),
    )
    .await;
    let mb = emu.client();
    let t = mb
        .create_tenant(&NewTenant {
            name: "Acme".into(),
            slug: "42".into(),
            attributes: None,
        })
        .await
        .expect("create");
    let again = mb
        .create_tenant(&NewTenant {
            name: "Acme".into(),
            slug: "42".into(),
            attributes: None,
        })
        .await
        .expect_err("duplicate");
    assert_eq!(
        again.message(),
        Some(mbprov::metabase::tenants::TENANT_TAKEN)
    );
    assert_eq!(
        mb.find_tenant_by_slug("42").await.unwrap().map(|t| t.id),
        Some(t.id)
    );
    assert_eq!(mb.find_tenant_by_slug("43").await.unwrap(), None);
    let off = mb
        .update_tenant(
            t.id,
            &TenantUpdate {
                is_active: Some(false),
                ..TenantUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(!off.is_active);
    assert_eq!(
        mb.list_tenants(TenantStatus::Active).await.unwrap().len(),
        0
    );
    let g = mb.create_tenant_group("Managers").await.unwrap();
    assert!(mbprov::metabase::tenants::is_tenant_group(&g));
}

/// Shared tenant collections: made with `POST /api/collection {"namespace":
/// "shared-tenant-collection"}` once `use-tenants` is on (`validate-new-tenant-collection!`,
/// `tenants/core.clj`: `api/check-400`, "Invalid Request."; the OSS version refuses them all),
/// kept in their own graph slice, and tenant groups may view them but curate nothing and view
/// nothing else (`permissions/models/permissions.clj`, `grant-collection-read-permissions!` and
/// `grant-collection-readwrite-permissions!`; test `cannot-grant-collection-permissions-to-tenant-group`):
/// plain `ex-info`s, so a 500 and nothing written.
#[tokio::test]
async fn shared_tenant_collections_and_what_tenant_groups_may_hold() {
    let oss = start(true).await;
    let shared = json!({"name": "Shared", "namespace": "shared-tenant-collection"});
    let (status, body) = oss
        .call(Method::POST, "/api/collection", Some(shared.clone()))
        .await;
    assert_eq!(
        (status, body),
        (400, json!("Cannot create tenant collection on OSS."))
    );

    let emu = start(false).await;
    let (status, body) = emu
        .call(Method::POST, "/api/collection", Some(shared.clone()))
        .await;
    assert_eq!(
        (status, body),
        (400, json!("Invalid Request.")),
        "tenants off"
    );
    emu.call(
        Method::PUT,
        "/api/setting/use-tenants",
        Some(json!({"value": true})),
    )
    .await;
    let (status, sc) = emu
        .call(Method::POST, "/api/collection", Some(shared))
        .await;
    assert_eq!(status, 200, "{sc}");
    assert_eq!(sc["namespace"], "shared-tenant-collection");
    let sc = sc["id"].as_i64().expect("id");
    let (_, tg) = emu
        .call(
            Method::POST,
            "/api/permissions/group",
            Some(json!({"name": "Readers", "is_tenant_group": true})),
        )
        .await;
    let tg = tg["id"].as_i64().expect("group id").to_string();
    let graph = |ns: &'static str| {
        let emu = &emu;
        async move {
            emu.call(Method::GET, &format!("/api/collection/graph{ns}"), None)
                .await
                .1
        }
    };
    let put = |ns: Value, cells: Value| {
        let emu = &emu;
        let tg = tg.clone();
        async move {
            let revision =
                emu.call(Method::GET, "/api/collection/graph", None).await.1["revision"].clone();
            emu.call(
                Method::PUT,
                "/api/collection/graph",
                Some(json!({"revision": revision, "namespace": ns, "groups": {tg: cells}})),
            )
            .await
        }
    };
    let ns = json!("shared-tenant-collection");
    let sk = sc.to_string();
    // The default slice does not hold it; the shared one does, with its own root.
    assert!(graph("").await["groups"]["2"].get(&sk).is_none());
    let shared_graph = graph("?namespace=shared-tenant-collection").await;
    assert_eq!(shared_graph["groups"]["2"][&sk], "write");
    assert_eq!(shared_graph["groups"]["2"]["root"], "write");

    let before = graph("").await["revision"].clone();
    let (status, body) = put(ns.clone(), json!({&sk: "write"})).await;
    assert_eq!(
        (status, &body["message"]),
        (
            500,
            &json!("Tenant groups cannot have write access to any collections.")
        )
    );
    let (status, body) = put(Value::Null, json!({"root": "read"})).await;
    assert_eq!(
        (status, &body["message"]),
        (
            500,
            &json!("Tenant groups cannot receive access to non-tenant collections.")
        )
    );
    assert_eq!(graph("").await["revision"], before, "nothing written");
    let (status, body) = put(ns.clone(), json!({&sk: "read", "root": "read"})).await;
    assert_eq!(status, 200, "{body}");
    let shared_graph = graph("?namespace=shared-tenant-collection").await;
    assert_eq!(shared_graph["groups"][&tg][&sk], "read");
    assert_eq!(shared_graph["groups"][&tg]["root"], "read");
    assert!(graph("").await["groups"].get(&tg).is_none());
    // Taking access away is always allowed.
    let (status, _) = put(ns, json!({&sk: "none"})).await;
    assert_eq!(status, 200);
}
