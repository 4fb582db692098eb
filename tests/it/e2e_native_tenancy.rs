//! Native tenancy (`MBPROV_TENANCY=native`) end to end: real workers, RabbitMQ, Redis and the
//! emulator's pro edition with Metabase Tenants (the emulator's default edition in this branch
//! is the EE-like one, which has the `tenants` feature; `--oss` has none).

use serde_json::{Value, json};

use crate::support::{Stack, StackOptions, find, tenant_created};

const NATIVE: &[(&str, &str)] = &[("MBPROV_TENANCY", "native")];

fn example(name: &str) -> Value {
    let path = format!("{}/jobs/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("example")).expect("example json")
}

async fn use_tenants(stack: &Stack, on: bool) {
    let r = stack
        .emu_send(
            reqwest::Method::PUT,
            "/api/setting/use-tenants",
            json!({"value": on}),
        )
        .await;
    assert!(r.status().is_success(), "use-tenants: {}", r.status());
}

/// A stack whose Metabase has tenants turned on, with `workers` native workers.
async fn native_stack(workers: usize) -> Stack {
    let mut stack = Stack::start().await;
    use_tenants(&stack, true).await;
    for _ in 0..workers {
        stack.spawn_worker_with(NATIVE).await;
    }
    stack
}

async fn run(stack: &Stack, envelopes: &[Value]) {
    stack.publish(envelopes).await;
    for e in envelopes {
        stack.wait_done(e["id"].as_str().expect("an id")).await;
    }
}

fn tenant<'a>(state: &'a Value, slug: &str) -> &'a Value {
    let all: Vec<&Value> = state["tenancy"]["tenants"]
        .as_object()
        .expect("tenants")
        .values()
        .filter(|t| t["slug"] == slug)
        .collect();
    assert_eq!(
        all.len(),
        1,
        "exactly one tenant {slug}: {}",
        state["tenancy"]
    );
    all[0]
}

fn user<'a>(state: &'a Value, email: &str) -> &'a Value {
    let all = find(&state["users"], "email", email);
    assert_eq!(all.len(), 1, "exactly one user {email}");
    all[0]
}

fn user_tenant(state: &Value, user: &Value) -> Value {
    state["tenancy"]["user_tenant"][user["id"].to_string()].clone()
}

fn all_tenant_users(state: &Value) -> i64 {
    state["tenancy"]["all_tenant_users"]
        .as_i64()
        .expect("All tenant users")
}

fn group_id(state: &Value, name: &str) -> i64 {
    let all = find(&state["groups"], "name", name);
    assert_eq!(all.len(), 1, "exactly one group {name}");
    all[0]["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn native_workers_refuse_to_start_without_tenants_and_say_why() {
    // Tenants feature present, setting off.
    let mut stack = Stack::start().await;
    let i = stack.spawn_worker_detached(NATIVE).await;
    let status = stack.wait_exit(i).await;
    assert!(!status.success());
    assert!(
        stack
            .worker_log(i)
            .contains("`use-tenants` on, and it is off"),
        "{}",
        stack.worker_log(i)
    );
    stack.teardown().await;

    // No tenants feature at all (free edition).
    let mut stack = Stack::start_with(StackOptions {
        emulator_args: vec!["--oss".into()],
        ..StackOptions::default()
    })
    .await;
    let i = stack.spawn_worker_detached(NATIVE).await;
    let status = stack.wait_exit(i).await;
    assert!(!status.success());
    assert!(
        stack.worker_log(i).contains("`tenants` feature"),
        "{}",
        stack.worker_log(i)
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_lives_its_whole_life_in_native_tenancy() {
    let stack = native_stack(1).await;
    let mut created = tenant_created(7);
    created["payload"]["tenant_groups"] = json!(["Recruiters"]);
    created["payload"]["data_access"] = json!("sandboxed");
    created["payload"]["sandbox"] =
        json!({"attribute": "organization_id", "tables": [{"table_id": 10, "field_id": 101}]});
    run(&stack, &[created.clone()]).await;

    let state = stack.state().await;
    let t = tenant(&state, "7");
    assert_eq!(t["name"], "Acme 7");
    assert_eq!(t["is_active"], true);
    assert_eq!(t["attributes"], json!({"organization_id": "7"}));
    let admin = user(&state, "admin7@acme7.test");
    assert_eq!(user_tenant(&state, admin), t["id"]);
    let recruiters = group_id(&state, "Recruiters");
    assert!(
        state["tenancy"]["tenant_groups"]
            .as_array()
            .unwrap()
            .contains(&json!(recruiters)),
        "Recruiters is a tenant group"
    );
    assert_eq!(
        admin["group_ids"],
        json!([all_tenant_users(&state), recruiters]),
        "only All tenant users and tenant groups"
    );
    assert_eq!(
        admin["login_attributes"],
        Value::Null,
        "attributes come from the tenant"
    );
    // Data access and the sandbox went to the tenant group, keyed on the tenant attribute.
    let sandboxes: Vec<&Value> = state["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["group_id"] == recruiters)
        .collect();
    assert_eq!(sandboxes.len(), 1, "{:?}", state["sandboxes"]);
    assert_eq!(sandboxes[0]["table_id"], 10);
    assert!(
        state["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["name"] != "Tenant: 7"),
        "no per-tenant group"
    );

    // Renamed, attributes changed (null removes), a tenant user added then deactivated.
    run(
        &stack,
        &[
            json!({"id": "t7-updated", "kind": "tenant.updated", "payload": {
            "tenant_id": "7", "tenant_name": "Acme Seven", "attributes": {"region": "eu"}}}),
        ],
    )
    .await;
    run(
        &stack,
        &[
            json!({"id": "bob-upserted", "kind": "user.upserted", "payload": {
            "email": "bob@acme7.test", "first_name": "Bob", "tenant_id": "7",
            "groups": ["Recruiters"], "login_attributes": {"team": "sales"}}}),
        ],
    )
    .await;
    let state = stack.state().await;
    let t = tenant(&state, "7");
    assert_eq!(t["name"], "Acme Seven");
    assert_eq!(
        t["attributes"],
        json!({"organization_id": "7", "region": "eu"})
    );
    let bob = user(&state, "bob@acme7.test");
    assert_eq!(user_tenant(&state, bob), t["id"]);
    assert_eq!(
        bob["group_ids"],
        json!([all_tenant_users(&state), recruiters])
    );
    assert_eq!(bob["login_attributes"], json!({"team": "sales"}));
    run(
        &stack,
        &[
            json!({"id": "bob-gone", "kind": "user.deactivated", "payload": {
            "email": "bob@acme7.test", "tenant_id": "7"}}),
        ],
    )
    .await;
    assert_eq!(
        user(&stack.state().await, "bob@acme7.test")["is_active"],
        false
    );

    // Deleted: the tenant, its users and its collection are deactivated/archived, not gone.
    run(
        &stack,
        &[json!({"id": "t7-deleted", "kind": "tenant.deleted", "payload": {"tenant_id": "7"}})],
    )
    .await;
    let state = stack.state().await;
    let t = tenant(&state, "7");
    assert_eq!(t["is_active"], false);
    assert_eq!(user(&state, "admin7@acme7.test")["is_active"], false);
    let coll = t["tenant_collection_id"].to_string();
    let colls = find(&state["collections"], "name", "Tenant Collection: Acme 7");
    assert_eq!(colls.len(), 1, "the collection keeps its first name");
    assert_eq!(colls[0]["id"].to_string(), coll);
    assert_eq!(colls[0]["archived"], true);

    // Created again: the same tenant comes back with its admin (emails are never freed).
    let mut again = created.clone();
    again["id"] = json!("tenant-7-created-again");
    run(&stack, &[again]).await;
    let state = stack.state().await;
    let t = tenant(&state, "7");
    assert_eq!(t["is_active"], true);
    assert_eq!(t["name"], "Acme 7", "tenant.created names it again");
    assert_eq!(user(&state, "admin7@acme7.test")["is_active"], true);
    assert_eq!(
        user(&state, "bob@acme7.test")["is_active"],
        false,
        "bob was deactivated on his own"
    );
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_job_never_takes_an_internal_users_email() {
    let stack = native_stack(1).await;
    let mut job = tenant_created(9);
    job["payload"]["admin_user"]["email"] = json!("admin@example.com");
    let bad_slug = json!({"id": "bad-slug", "kind": "tenant.created", "payload": {
        "tenant_id": "Acme Corp", "tenant_name": "Acme Corp", "database_id": 1,
        "admin_user": {"email": "x@acme.test"}}});
    stack.publish(&[job, bad_slug]).await;
    let dead = crate::support::eventually("two dead letters", || async {
        let d = stack.dead_letters().await;
        (d.len() == 2).then_some(d)
    })
    .await;
    let errors: Vec<String> = dead.iter().map(|d| d.to_string()).collect();
    assert!(
        errors.iter().any(|e| e.contains("internal Metabase user")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("payload.tenant_id")),
        "{errors:?}"
    );
    let state = stack.state().await;
    let admin = user(&state, "admin@example.com");
    assert_eq!(
        user_tenant(&state, admin),
        Value::Null,
        "the internal user was not moved"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_jobs_run_unchanged_against_both_backends() {
    // One after the other, as a publisher sends them: an update is about a tenant that exists.
    let jobs = [example("tenant.created"), example("tenant.updated")];
    // Group tenancy.
    let mut groups = Stack::start().await;
    groups.spawn_worker().await;
    for job in &jobs {
        run(&groups, std::slice::from_ref(job)).await;
    }
    let state = groups.state().await;
    let ada = user(&state, "ada@acme.test");
    assert_eq!(
        ada["login_attributes"],
        json!({"organization_id": "42", "region": "eu", "plan": "pro"})
    );
    assert!(
        ada["group_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(group_id(&state, "Tenant: 42")))
    );
    groups.teardown().await;

    // Native tenancy, the same bytes.
    let native = native_stack(1).await;
    for job in &jobs {
        run(&native, std::slice::from_ref(job)).await;
    }
    let state = native.state().await;
    let t = tenant(&state, "42");
    assert_eq!(t["name"], "Acme Corporation");
    assert_eq!(
        t["attributes"],
        json!({"organization_id": "42", "region": "eu", "plan": "pro"})
    );
    let ada = user(&state, "ada@acme.test");
    assert_eq!(user_tenant(&state, ada), t["id"]);
    // No tenant groups named: All tenant users gets the access.
    let atu = all_tenant_users(&state).to_string();
    assert_eq!(
        state["data_graph"]["rendered"]["groups"][&atu]["1"]["create-queries"],
        "query-builder"
    );
    native.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_racing_replicas_make_one_tenant_and_one_user() {
    let stack = native_stack(2).await;
    // The same tenant under five job ids (duplicate publishes), and one id twice (redelivery).
    let mut envelopes: Vec<Value> = (0..5)
        .map(|i| {
            let mut e = tenant_created(11);
            e["id"] = json!(format!("tenant-11-copy-{i}"));
            e
        })
        .collect();
    envelopes.push(envelopes[0].clone());
    run(&stack, &envelopes).await;
    let state = stack.state().await;
    tenant(&state, "11");
    user(&state, "admin11@acme11.test");
    assert_eq!(state["tenancy"]["tenants"].as_object().unwrap().len(), 1);
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

/// Requests per new tenant, native against group tenancy, after the first tenant (which pays
/// for the shared grant). A count, not a timing: printed for the README and bounded so a
/// regression shows.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_tenant_costs_about_two_requests_in_native_tenancy() {
    const N: u32 = 20;
    async fn per_tenant(stack: &Stack) -> (f64, Value) {
        run(stack, &[tenant_created(1)]).await;
        let before = stack.stats().await["requests_total"].as_u64().unwrap();
        let jobs: Vec<Value> = (2..=N + 1).map(tenant_created).collect();
        run(stack, &jobs).await;
        let stats = stack.stats().await;
        let n = (stats["requests_total"].as_u64().unwrap() - before) as f64 / f64::from(N);
        (n, stats["requests"].clone())
    }
    let native = native_stack(1).await;
    let (native_cost, native_requests) = per_tenant(&native).await;
    native.teardown().await;
    let mut groups = Stack::start().await;
    groups.spawn_worker().await;
    let (groups_cost, groups_requests) = per_tenant(&groups).await;
    groups.teardown().await;
    println!(
        "native tenancy: {native_cost:.2} Metabase requests per new tenant; {native_requests}"
    );
    println!("group tenancy: {groups_cost:.2} Metabase requests per new tenant; {groups_requests}");
    assert!(
        native_cost <= 2.5,
        "{native_cost} requests per tenant: {native_requests}"
    );
    assert!(
        native_cost < groups_cost,
        "native {native_cost} vs groups {groups_cost}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_synced_reconciles_one_tenant_and_nobody_else() {
    let stack = native_stack(1).await;
    let mut five = tenant_created(5);
    five["payload"]["tenant_groups"] = json!(["Managers"]);
    let mut six = tenant_created(6);
    six["payload"]["tenant_groups"] = json!(["Managers"]);
    run(&stack, &[five, six]).await;
    run(
        &stack,
        &[json!({"id": "bob5", "kind": "user.upserted", "payload": {
            "email": "bob@acme5.test", "tenant_id": 5, "groups": ["Managers"]}})],
    )
    .await;
    let sync = json!({"id": "sync5", "kind": "users.synced", "payload": {
    "managed_groups": ["Managers"], "deactivate_missing": true,
    "users": [
        {"email": "admin5@acme5.test", "tenant_id": "5", "groups": ["Managers"]},
        {"email": "carol@acme5.test", "tenant_id": "5", "first_name": "Carol"}
    ]}});
    run(&stack, &[sync]).await;
    let state = stack.state().await;
    let managers = json!(group_id(&state, "Managers"));
    let atu = json!(all_tenant_users(&state));
    let t5 = tenant(&state, "5")["id"].clone();
    let bob = user(&state, "bob@acme5.test");
    assert_eq!(bob["is_active"], false, "absent from the snapshot");
    assert_eq!(bob["group_ids"], json!([atu]), "left the managed group");
    let carol = user(&state, "carol@acme5.test");
    assert_eq!(user_tenant(&state, carol), t5);
    assert_eq!(carol["group_ids"], json!([atu]));
    assert_eq!(
        user(&state, "admin5@acme5.test")["group_ids"],
        json!([atu, managers])
    );
    // Another tenant's member of the same shared group, and the internal admin: untouched.
    let other = user(&state, "admin6@acme6.test");
    assert_eq!(other["is_active"], true);
    assert_eq!(other["group_ids"], json!([atu, managers]));
    assert_eq!(user(&state, "admin@example.com")["is_active"], true);
    assert!(stack.dead_letters().await.is_empty());
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permissions_message_may_name_all_tenant_users_and_create_tenant_groups() {
    let stack = native_stack(1).await;
    let doc = json!({"version": 1, "groups": {
        "All tenant users": {"data": {"1": {"view-data": "blocked", "create-queries": "no"}}},
        "Premium": {"tenant_group": true,
                    "data": {"1": {"view-data": "unrestricted", "create-queries": "query-builder"}}}
    }});
    run(
        &stack,
        &[json!({"id": "pac-1", "kind": "permissions.applied", "payload": {"document": doc}})],
    )
    .await;
    let state = stack.state().await;
    let premium = group_id(&state, "Premium");
    assert!(
        state["tenancy"]["tenant_groups"]
            .as_array()
            .unwrap()
            .contains(&json!(premium)),
        "created as a tenant group"
    );
    let groups = &state["data_graph"]["rendered"]["groups"];
    // Metabase leaves the lowest values out of the graph it answers (`remove-empty-vals`).
    let atu = &groups[all_tenant_users(&state).to_string()]["1"];
    assert!(
        atu["view-data"].is_null() || atu["view-data"] == "blocked",
        "{atu}"
    );
    assert!(
        atu["create-queries"].is_null() || atu["create-queries"] == "no",
        "{atu}"
    );
    assert_eq!(
        groups[premium.to_string()]["1"]["create-queries"],
        "query-builder"
    );
    // All Users stays out of bounds for messages.
    let refused = json!({"id": "pac-2", "kind": "permissions.applied", "payload": {"document":
        {"version": 1, "groups": {"All Users": {"data": {"1": {"view-data": "blocked"}}}}}}});
    stack.publish(&[refused]).await;
    crate::support::eventually("the All Users document refused", || async {
        (stack.dead_letters().await.len() == 1).then_some(())
    })
    .await;
    stack.teardown().await;
}

/// A shared tenant collection, made as an administrator makes one ("External collections").
async fn shared_collection(stack: &Stack, name: &str) -> i64 {
    stack
        .emu_create(
            "/api/collection",
            json!({"name": name, "namespace": "shared-tenant-collection"}),
        )
        .await
}

async fn shared_graph(stack: &Stack) -> Value {
    stack
        .emu_get("/api/collection/graph?namespace=shared-tenant-collection")
        .await
}

async fn apply(stack: &Stack, id: &str, doc: Value) {
    run(
        stack,
        &[json!({"id": id, "kind": "permissions.applied", "payload": {"document": doc}})],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permissions_message_grants_on_shared_tenant_collections() {
    let stack = native_stack(1).await;
    let sc = shared_collection(&stack, "Analytics for everyone").await;
    let before = stack.emu_get("/api/collection/graph").await;
    apply(
        &stack,
        "shared-1",
        json!({"version": 1, "groups": {
            "All tenant users": {"shared_collections": {"root": "read"}},
            "Premium": {"tenant_group": true, "shared_collections": {sc.to_string(): "read"}},
            "Content team": {"shared_collections": {sc.to_string(): "write"}}
        }}),
    )
    .await;
    let state = stack.state().await;
    let (atu, premium, team) = (
        all_tenant_users(&state).to_string(),
        group_id(&state, "Premium").to_string(),
        group_id(&state, "Content team").to_string(),
    );
    let shared = shared_graph(&stack).await;
    let cells = &shared["groups"];
    assert_eq!(cells[&atu]["root"], "read", "{shared}");
    assert_eq!(cells[&premium][sc.to_string()], "read", "{shared}");
    assert_eq!(cells[&team][sc.to_string()], "write", "{shared}");
    // The default namespace was not written: same cells, and the revision moved by the one
    // shared write only (one revision for every namespace).
    let after = stack.emu_get("/api/collection/graph").await;
    assert_eq!(after["groups"], before["groups"]);
    assert_eq!(after["revision"], shared["revision"]);

    // Tenant users may view shared collections, never curate them: refused before Metabase
    // (which would answer a 500) and dead-lettered, nothing written.
    stack
        .publish(&[json!({"id": "shared-2", "kind": "permissions.applied", "payload": {"document":
            {"version": 1, "groups": {"Premium": {"shared_collections": {sc.to_string(): "write"}}}}}})])
        .await;
    crate::support::eventually("the curating tenant group refused", || async {
        (stack.dead_letters().await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(shared_graph(&stack).await["groups"], shared["groups"]);
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_namespace_grant_leaves_shared_collections_alone() {
    let stack = native_stack(1).await;
    let sc = shared_collection(&stack, "Shared dashboards").await;
    apply(
        &stack,
        "ns-1",
        json!({"version": 1, "groups": {
            "Content team": {"shared_collections": {sc.to_string(): "write"}}}}),
    )
    .await;
    let shared = shared_graph(&stack).await;
    // Root and collection 2 ("Shared", default namespace) for the same group.
    apply(
        &stack,
        "ns-2",
        json!({"version": 1, "groups": {
            "Content team": {"collections": {"root": "read", "2": "write"}}}}),
    )
    .await;
    let state = stack.state().await;
    let team = group_id(&state, "Content team").to_string();
    let default = stack.emu_get("/api/collection/graph").await;
    assert_eq!(default["groups"][&team]["root"], "read");
    assert_eq!(default["groups"][&team]["2"], "write");
    assert!(default["groups"]["2"].get(sc.to_string()).is_none());
    let now = shared_graph(&stack).await;
    assert_eq!(
        now["groups"], shared["groups"],
        "the shared root kept its cells"
    );
    assert_eq!(now["groups"][&team][sc.to_string()], "write");
    assert!(now["groups"][&team].get("root").is_none());

    // A shared collection named among the default ones is refused, not dropped silently.
    stack
        .publish(&[json!({"id": "ns-3", "kind": "permissions.applied", "payload": {"document":
            {"version": 1, "groups": {"Content team": {"collections": {sc.to_string(): "read"}}}}}})])
        .await;
    crate::support::eventually(
        "a shared collection among the default ones refused",
        || async { (stack.dead_letters().await.len() == 1).then_some(()) },
    )
    .await;
    let dead = stack.dead_letters().await;
    assert!(
        dead[0]
            .to_string()
            .contains("is a shared tenant collection"),
        "{dead:?}"
    );
    assert_eq!(shared_graph(&stack).await["groups"], shared["groups"]);
    stack.teardown().await;
}
