//! `mbprov audit` against the emulator: problems made directly through the Metabase API are
//! each flagged, and an isolated instance exits 0.

use crate::support::Stack;
use reqwest::Method;
use serde_json::{Value, json};

async fn send(stack: &Stack, method: Method, path: &str, body: Value) -> Value {
    let r = stack.emu_send(method.clone(), path, body).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn put_data(stack: &Stack, groups: Value) {
    let revision = stack.emu_get("/api/permissions/graph").await["revision"].clone();
    let body = json!({"revision": revision, "groups": groups});
    send(stack, Method::PUT, "/api/permissions/graph", body).await;
}

async fn put_collections(stack: &Stack, groups: Value) {
    let revision = stack.emu_get("/api/collection/graph").await["revision"].clone();
    let body = json!({"revision": revision, "groups": groups});
    send(stack, Method::PUT, "/api/collection/graph", body).await;
}

/// Runs `mbprov audit ARGS`: exit code, stdout, stderr.
async fn audit(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let out = stack.run(&all).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn findings(stack: &Stack, args: &[&str]) -> (i32, Vec<Value>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = audit(stack, &all).await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v["findings"].as_array().unwrap().clone())
}

fn has(findings: &[Value], want: Value) -> bool {
    let want = want.as_object().unwrap();
    findings
        .iter()
        .any(|f| want.iter().all(|(k, v)| f.get(k) == Some(v)))
}

struct Tenants {
    groups: [i64; 2],
    collections: [i64; 2],
    users: [i64; 2],
}

/// Two tenants isolated the way `tenant.created` leaves them, with All Users blocked on the
/// database they use and absent from their collections.
async fn isolated_tenants(stack: &Stack) -> Tenants {
    let mut groups = [0; 2];
    let mut collections = [0; 2];
    let mut users = [0; 2];
    for i in 0..2 {
        let n = i + 1;
        groups[i] = stack
            .emu_create(
                "/api/permissions/group",
                json!({"name": format!("Tenant: {n}")}),
            )
            .await;
        collections[i] = stack
            .emu_create(
                "/api/collection",
                json!({"name": format!("Acme {n} Dashboards"), "parent_id": 2}),
            )
            .await;
        users[i] = stack
            .emu_create(
                "/api/user",
                json!({"email": format!("t{n}@acme.test"), "first_name": "T", "last_name": "U",
                   "user_group_memberships": [{"id": 1, "is_group_manager": false},
                                              {"id": groups[i], "is_group_manager": false}]}),
            )
            .await;
    }
    let [g1, g2] = groups.map(|g| g.to_string());
    let query = json!({"view-data": "unrestricted", "create-queries": "query-builder"});
    let blocked = json!({"view-data": "blocked", "create-queries": "no"});
    put_data(
        stack,
        json!({
            "1": {"1": blocked},
            g1.clone(): {"1": query, "2": blocked},
            g2.clone(): {"1": query, "2": blocked},
        }),
    )
    .await;
    let [c1, c2] = collections.map(|c| c.to_string());
    put_collections(
        stack,
        json!({
            "1": {c1.clone(): "none", c2.clone(): "none"},
            g1: {c1: "read"},
            g2: {c2: "write"},
        }),
    )
    .await;
    Tenants {
        groups,
        collections,
        users,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_isolation_problem_is_flagged_and_a_clean_instance_exits_0() {
    let stack = Stack::start().await;
    let t = isolated_tenants(&stack).await;

    let (code, out, err) = audit(&stack, &[]).await;
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(
        out.trim(),
        "no isolation problem found (2 tenant(s), 2 tenant group(s))"
    );
    let (code, found) = findings(&stack, &[]).await;
    assert_eq!((code, found), (0, vec![]));

    // All Users sees data of a database the tenants use.
    put_data(
        &stack,
        json!({"1": {"1": {"view-data": "unrestricted", "create-queries": "no"}}}),
    )
    .await;
    let (code, found) = findings(&stack, &[]).await;
    assert_eq!(code, 2);
    assert!(
        has(
            &found,
            json!({"check": "all-users-can-view-tenant-database", "database_id": 1,
                   "access": "view-only", "tenant_groups": ["Tenant: 1", "Tenant: 2"]})
        ),
        "{found:?}"
    );

    // Tenant 2's group reads tenant 1's collection.
    let [g1, g2] = t.groups;
    let [c1, c2] = t.collections;
    put_collections(&stack, json!({g2.to_string(): {c1.to_string(): "read"}})).await;
    let (_, found) = findings(&stack, &[]).await;
    assert!(
        has(
            &found,
            json!({"check": "collection-shared-by-tenants", "collection": c1,
            "groups": [
                {"group_id": g1, "group": "Tenant: 1", "tenant_id": "1", "access": "read"},
                {"group_id": g2, "group": "Tenant: 2", "tenant_id": "2", "access": "read"},
            ]})
        ),
        "{found:?}"
    );

    // All Users reads tenant 2's collection.
    put_collections(&stack, json!({"1": {c2.to_string(): "read"}})).await;
    let (_, found) = findings(&stack, &[]).await;
    assert!(
        has(
            &found,
            json!({"check": "all-users-can-read-tenant-collection",
                   "collection": c2, "access": "read"})
        ),
        "{found:?}"
    );

    // Tenant 1's user joins tenant 2's group.
    let [u1, u2] = t.users;
    send(
        &stack,
        Method::POST,
        "/api/permissions/membership",
        json!({"group_id": g2, "user_id": u1}),
    )
    .await;
    let (_, found) = findings(&stack, &[]).await;
    assert!(
        has(
            &found,
            json!({"check": "user-in-several-tenants", "user_id": u1,
                   "email": "t1@acme.test", "groups": ["Tenant: 1", "Tenant: 2"]})
        ),
        "{found:?}"
    );

    // Tenant 2's user becomes an administrator.
    send(
        &stack,
        Method::PUT,
        &format!("/api/user/{u2}"),
        json!({"is_superuser": true}),
    )
    .await;
    let (code, found) = findings(&stack, &[]).await;
    assert!(
        has(
            &found,
            json!({"check": "tenant-user-is-admin", "user_id": u2, "email": "t2@acme.test",
                   "groups": ["Tenant: 2"]})
        ),
        "{found:?}"
    );
    assert_eq!(
        (code, found.len()),
        (2, 5),
        "one finding per problem: {found:?}"
    );

    // People get one line per finding and a count; a shared collection can be exempted.
    let (code, out, _) = audit(&stack, &[]).await;
    assert_eq!(code, 2);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[5], "5 isolation problem(s) found");
    assert!(
        lines.contains(
            &format!(
                "user {u2} (t2@acme.test): an administrator who is also a tenant user (Tenant: 2)"
            )
            .as_str()
        ),
        "{out}"
    );
    let (_, found) = findings(&stack, &["--shared-collection", &c1.to_string()]).await;
    assert_eq!(found.len(), 4, "{found:?}");
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_exit_1_without_printing_the_key() {
    let stack = Stack::start().await;
    let out = stack
        .command(&["audit"])
        .env("METABASE_API_KEY", "mb_wrong_key_xyz")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("mbprov audit: "), "{err}");
    assert!(!err.contains("mb_wrong_key_xyz"), "{err}");
    assert!(out.stdout.is_empty());
    stack.teardown().await;
}
