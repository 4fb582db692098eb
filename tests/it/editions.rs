//! The worker against both editions of the emulator (`--edition oss|pro`, newest release):
//! every job kind and `apply`, one matrix, so a difference between the free edition and
//! Pro/Enterprise (membership semantics, 402s, sandboxes) shows up here before a user sees it.

use serde_json::{Value, json};

use crate::support::{self, Stack, find};

fn example(name: &str) -> Value {
    let path = format!("{}/jobs/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("example")).expect("example json")
}

async fn run(stack: &Stack, envelope: Value) {
    let id = envelope["id"].as_str().expect("an id").to_string();
    stack.publish(&[envelope]).await;
    stack.wait_done(&id).await;
}

fn group_id(state: &Value, name: &str) -> Option<Value> {
    find(&state["groups"], "name", name)
        .first()
        .map(|g| g["id"].clone())
}

fn in_group(state: &Value, email: &str, group: &Value) -> bool {
    find(&state["users"], "email", email)
        .first()
        .and_then(|u| u["group_ids"].as_array())
        .is_some_and(|g| g.contains(group))
}

/// A document both editions can hold (no sandbox), for `permissions.applied` and `apply`.
const DOCUMENT: &str = r#"{"version": 1, "groups": {"Analysts": {
    "data": {"2": {"view-data": "unrestricted", "create-queries": "query-builder"}},
    "collections": {"2": "read"}}}}"#;

async fn every_job_kind(edition: &str) {
    let mut stack = Stack::start_with(support::StackOptions {
        emulator_args: vec!["--edition".into(), edition.into()],
        ..support::StackOptions::default()
    })
    .await;
    stack.spawn_worker().await;
    let pro = edition == "pro";

    // tenant.created: group, admin user (with the memberships Pro diffs), collection.
    run(&stack, example("tenant.created")).await;
    let state = stack.state().await;
    let acme = group_id(&state, "Tenant: 42").expect("tenant group");
    assert!(in_group(&state, "ada@acme.test", &acme), "{edition}");
    assert_eq!(
        find(&state["collections"], "name", "Acme Dashboards").len(),
        1
    );

    // tenant.created, sandboxed: sandboxes on Pro; a clear permanent refusal on the free edition.
    let sandboxed = example("tenant.created.sandboxed");
    if pro {
        run(&stack, sandboxed).await;
        let state = stack.state().await;
        let globex = group_id(&state, "Tenant: 43").expect("tenant 43");
        let n = state["sandboxes"]
            .as_array()
            .expect("sandboxes")
            .iter()
            .filter(|s| s["group_id"] == globex)
            .count();
        assert_eq!(n, 2, "one sandbox per table");
    } else {
        stack.publish(&[sandboxed]).await;
        let dead = support::eventually("the sandboxed tenant refused", || async {
            let d = stack.dead_letters().await;
            (!d.is_empty()).then_some(d)
        })
        .await;
        assert_eq!(dead[0]["error_class"], "permanent");
        let error = dead[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("sandboxes feature"), "{error}");
        assert!(group_id(&stack.state().await, "Tenant: 43").is_none());
    }

    // user.upserted and users.synced: new users go through POST /api/user memberships.
    run(&stack, example("user.upserted")).await;
    let state = stack.state().await;
    assert!(in_group(&state, "bob@acme.test", &acme), "{edition}");
    run(&stack, example("users.synced")).await;
    let state = stack.state().await;
    let editors = group_id(&state, "Tenant: 42 Editors").expect("editors group");
    assert!(in_group(&state, "ada@acme.test", &editors));
    assert!(in_group(&state, "bob@acme.test", &acme));

    // permissions.applied.
    let document: Value = serde_json::from_str(DOCUMENT).expect("document");
    run(
        &stack,
        json!({"id": format!("matrix-{edition}-applied"), "kind": "permissions.applied",
               "payload": {"document": document}}),
    )
    .await;
    let state = stack.state().await;
    let analysts = group_id(&state, "Analysts").expect("Analysts");
    assert_eq!(
        state["data_graph"]["rendered"]["groups"][analysts.to_string()]["2"]["create-queries"],
        "query-builder"
    );
    assert_eq!(
        state["collection_graph"]["groups"][analysts.to_string()]["2"],
        "read"
    );

    // tenant.deleted.
    run(
        &stack,
        json!({"id": format!("matrix-{edition}-deleted"), "kind": "tenant.deleted",
               "payload": {"tenant_id": "42", "tenant_name": "Acme"}}),
    )
    .await;
    let state = stack.state().await;
    assert!(group_id(&state, "Tenant: 42").is_none(), "group deleted");
    let coll = find(&state["collections"], "name", "Acme Dashboards");
    assert_eq!(coll[0]["archived"], true);

    // apply: the same document as code.
    let path = std::env::temp_dir().join(format!("{}-doc.json", stack.prefix));
    std::fs::write(&path, DOCUMENT).expect("document file");
    let doc = path.to_string_lossy().to_string();
    let applied = stack.run(&["apply", "-f", &doc]).await;
    let _ = std::fs::remove_file(&path);
    assert!(
        applied.status.success(),
        "{edition}: {}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let dead = stack.dead_letters().await;
    assert_eq!(dead.len(), usize::from(!pro), "{edition}: {dead:?}");
    assert_eq!(stack.stats().await["forced_puts"], 0);
    stack.teardown().await;
}

/// One test per edition: the same body, the edition as its only input.
macro_rules! edition_matrix {
    ($($edition:ident),+) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $edition() {
            every_job_kind(stringify!($edition)).await;
        }
    )+};
}

mod every_job_kind_on {
    use super::every_job_kind;
    edition_matrix!(oss, pro);
}
