//! Every kind of job end to end: the `jobs/` examples, malformed messages, policy refusals.

use crate::support;
use crate::support::{Stack, find};
use serde_json::{Value, json};

fn example(name: &str) -> Value {
    let path = format!("{}/jobs/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("example")).expect("example json")
}

async fn run(stack: &Stack, envelope: Value) {
    let id = envelope["id"]
        .as_str()
        .expect("examples have ids")
        .to_string();
    stack.publish(&[envelope]).await;
    stack.wait_done(&id).await;
}

fn group<'a>(state: &'a Value, name: &str) -> Option<&'a Value> {
    find(&state["groups"], "name", name).into_iter().next()
}

fn user<'a>(state: &'a Value, email: &str) -> &'a Value {
    find(&state["users"], "email", email)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no user {email}"))
}

fn in_group(state: &Value, email: &str, group_id: &Value) -> bool {
    user(state, email)["group_ids"]
        .as_array()
        .unwrap()
        .contains(group_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_envelope_has_its_effect() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;

    run(&stack, example("tenant.created")).await;
    run(&stack, example("tenant.created.sandboxed")).await;
    let state = stack.state().await;
    let globex = group(&state, "Tenant: 43").expect("tenant 43 group")["id"].clone();
    let sandboxes: Vec<&Value> = state["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["group_id"] == globex)
        .collect();
    assert_eq!(sandboxes.len(), 2, "one sandbox per listed table");
    for s in &sandboxes {
        assert_eq!(s["attribute_remappings"]["organization_id"][0], "dimension");
    }
    let cells = &state["data_graph"]["rendered"]["groups"][globex.to_string()]["1"];
    assert_eq!(cells["view-data"]["PUBLIC"]["10"], "sandboxed", "{cells}");
    // Both tables of the database share the value, so Metabase collapses it to the database.
    assert_eq!(cells["create-queries"], "query-builder", "{cells}");

    run(&stack, example("user.upserted")).await;
    let state = stack.state().await;
    let acme = group(&state, "Tenant: 42").unwrap()["id"].clone();
    assert!(in_group(&state, "bob@acme.test", &acme));
    assert_eq!(
        user(&state, "bob@acme.test")["login_attributes"],
        json!({"organization_id": "42", "region": "eu"})
    );

    run(&stack, example("users.synced")).await;
    let state = stack.state().await;
    let editors = group(&state, "Tenant: 42 Editors").expect("editors group created")["id"].clone();
    assert!(in_group(&state, "ada@acme.test", &editors));
    assert!(!in_group(&state, "bob@acme.test", &editors));
    assert!(in_group(&state, "bob@acme.test", &acme));

    run(&stack, example("permissions.applied")).await;
    let state = stack.state().await;
    let analysts = group(&state, "Analysts").expect("Analysts created")["id"].clone();
    let cells = &state["data_graph"]["rendered"]["groups"][analysts.to_string()];
    assert_eq!(cells["2"]["create-queries"], "query-builder");
    assert_eq!(
        state["collection_graph"]["groups"][analysts.to_string()]["2"],
        "read"
    );

    run(&stack, example("user.deactivated")).await;
    let state = stack.state().await;
    assert_eq!(user(&state, "bob@acme.test")["is_active"], false);

    run(&stack, example("tenant.deleted")).await;
    let state = stack.state().await;
    assert!(group(&state, "Tenant: 43").is_none(), "group deleted");
    assert_eq!(
        user(&state, "hank@globex.test")["is_active"],
        false,
        "its only-tenant member is deactivated"
    );
    let globex_coll = find(&state["collections"], "name", "Globex Dashboards");
    assert_eq!(globex_coll.len(), 1);
    assert_eq!(globex_coll[0]["archived"], true);
    assert!(
        state["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["group_id"] != globex)
    );
    // The other tenant is untouched.
    assert!(group(&state, "Tenant: 42").is_some());
    assert_eq!(user(&state, "ada@acme.test")["is_active"], true);

    assert!(stack.dead_letters().await.is_empty());
    assert_eq!(stack.stats().await["forced_puts"], 0);
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_dead_lettered_naming_the_field_and_change_nothing() {
    let mut stack = Stack::start().await;
    stack.spawn_worker().await;
    let before = stack.state().await;

    let valid = support::tenant_created(1)["payload"].clone();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut p = valid.clone();
        f(&mut p);
        json!({"kind": "tenant.created", "payload": p})
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not json", b"{not json".to_vec(), "body: not JSON"),
        ("too large", format!("{{\"kind\":\"user.deactivated\",\"payload\":{{\"email\":\"{}@a.test\"}}}}", "x".repeat(1_100_000)).into_bytes(), "over the 1 MiB limit"),
        ("unknown kind", br#"{"kind":"tenant.exploded","payload":{}}"#.to_vec(), "kind: unknown kind"),
        ("missing field", with(&|p| { p.as_object_mut().unwrap().remove("database_id"); }).to_string().into_bytes(), "missing field `database_id`"),
        ("mistyped field", with(&|p| p["database_id"] = json!("one")).to_string().into_bytes(), "payload.database_id"),
        ("unknown field", with(&|p| p["colour"] = json!("red")).to_string().into_bytes(), "unknown field `colour`"),
        ("bad email", with(&|p| p["admin_user"]["email"] = json!("ada-at-acme")).to_string().into_bytes(), "payload.admin_user.email"),
        ("sandbox missing", with(&|p| p["data_access"] = json!("sandboxed")).to_string().into_bytes(), "payload.sandbox"),
        ("Administrators", br#"{"kind":"user.upserted","payload":{"email":"eve@evil.test","groups":["Administrators"]}}"#.to_vec(), "payload.groups[0]"),
        ("All Users", br#"{"kind":"users.synced","payload":{"managed_groups":["All Users"],"users":[]}}"#.to_vec(), "built-in group"),
        ("All Users document", json!({"kind": "permissions.applied", "payload": {"document": {"version": 1, "groups": {"All Users": {"collections": {"root": "write"}}}}}}).to_string().into_bytes(), "built-in groups"),
    ];
    for (what, body, _) in &cases {
        stack.publish_raw(what, body).await;
    }
    // A good job after the bad ones still runs.
    stack.publish(&[support::tenant_created(5)]).await;
    stack.wait_done("tenant-5-created").await;

    let dead = support::eventually("every bad message dead-lettered", || async {
        let d = stack.dead_letters().await;
        (d.len() == cases.len()).then_some(d)
    })
    .await;
    for (what, _, reason) in &cases {
        let letter = dead
            .iter()
            .find(|d| d["kind"].as_str() == Some(what))
            .unwrap_or_else(|| panic!("{what} not dead-lettered: {dead:?}"));
        assert_eq!(letter["error_class"], "permanent", "{what}");
        let error = letter["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{what}: {error:?} should mention {reason:?}"
        );
    }

    // Nothing changed in Metabase but tenant 5.
    let after = stack.state().await;
    let names = |s: &Value| {
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut expected = names(&before);
    expected.push("Tenant: 5".into());
    let mut got = names(&after);
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        after["users"].as_array().unwrap().len(),
        before["users"].as_array().unwrap().len() + 1
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_free_edition_gets_what_it_can_hold_and_a_clear_refusal_for_sandboxes() {
    let mut stack = Stack::start_with(support::StackOptions {
        emulator_args: vec!["--oss".into()],
        ..support::StackOptions::default()
    })
    .await;
    stack.spawn_worker().await;
    let mut none = support::tenant_created(1);
    none["payload"]["data_access"] = json!("none");
    stack.publish(&[none]).await;
    stack.wait_done("tenant-1-created").await;
    let state = stack.state().await;
    let g = group(&state, "Tenant: 1").unwrap()["id"].to_string();
    let cells = &state["data_graph"]["rendered"]["groups"][&g]["1"];
    // No `blocked` without advanced permissions: the group keeps view-data but cannot query.
    assert!(cells["create-queries"].is_null(), "{cells}");
    assert_eq!(cells["view-data"], "unrestricted");

    stack.publish(&[example("tenant.created.sandboxed")]).await;
    let dead = support::eventually("the sandboxed tenant refused", || async {
        let d = stack.dead_letters().await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0]["error_class"], "permanent");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("sandboxes feature"),
        "{}",
        dead[0]
    );
    assert!(
        group(&stack.state().await, "Tenant: 43").is_none(),
        "refused before creating anything"
    );
    stack.teardown().await;
}
