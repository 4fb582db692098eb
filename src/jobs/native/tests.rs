use serde_json::json;

use super::*;

fn props(v: Value) -> SessionProperties {
    serde_json::from_value(v).unwrap()
}

fn groups(with_external: bool) -> Vec<Group> {
    let mut g = vec![
        json!({"id": 1, "name": "All internal users", "magic_group_type": "all-internal-users"}),
    ];
    if with_external {
        g.push(
            json!({"id": 3, "name": "All tenant users", "magic_group_type": "all-external-users"}),
        );
    }
    serde_json::from_value(json!(g)).unwrap()
}

#[test]
fn native_tenancy_starts_only_when_metabase_is_ready_for_it() {
    let cases = [
        (
            json!({"token-features": {"sandboxes": true}}),
            true,
            Err("`tenants` feature"),
        ),
        (
            json!({"token-features": {"tenants": true}}),
            true,
            Err("`use-tenants` on, and it is off"),
        ),
        (
            json!({"token-features": {"tenants": true}, "use-tenants": false}),
            true,
            Err("`use-tenants`"),
        ),
        (
            json!({"token-features": {"tenants": true}, "use-tenants": true}),
            false,
            Err("All tenant users"),
        ),
        (
            json!({"token-features": {"tenants": true}, "use-tenants": true}),
            true,
            Ok(3),
        ),
    ];
    for (p, external, want) in cases {
        let got = check_ready(&props(p.clone()), &groups(external));
        match (want, got) {
            (Ok(id), Ok(n)) => assert_eq!(n.all_tenant_users, id),
            (Err(text), Err(e)) => assert!(e.contains(text), "{p}: {e}"),
            (want, got) => panic!("{p}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn slugs_are_the_tenant_id_unchanged_or_refused() {
    for ok in ["42", "acme", "acme-eu_2", "0"] {
        assert_eq!(slug(ok).unwrap(), ok);
    }
    for bad in ["Acme", "acme corp", "a.b", "ü", "", "tenant/1"] {
        let e = slug(bad).unwrap_err();
        assert_eq!(e.field, "payload.tenant_id", "{bad}");
    }
}

#[test]
fn tenant_ids_on_user_payloads_and_tenant_updated_are_validated() {
    use super::super::envelope::parse;
    let job = |v: Value| parse(v.to_string().as_bytes(), None);
    let upserted = |tid: Value| json!({"kind": "user.upserted", "payload": {"email": "a@b.test", "tenant_id": tid}});
    match job(upserted(json!(42))).unwrap().job {
        Job::UserUpserted(u) => assert_eq!(u.tenant_id.as_deref(), Some("42")),
        other => panic!("{other:?}"),
    }
    match job(upserted(json!(null))).unwrap().job {
        Job::UserUpserted(u) => assert_eq!(u.tenant_id, None),
        other => panic!("{other:?}"),
    }
    let refused = [
        (upserted(json!(true)), "payload.tenant_id"),
        (upserted(json!("")), "payload.tenant_id"),
        (
            json!({"kind": "user.deactivated", "payload": {"email": "a@b.test", "tenant_id": " 7"}}),
            "payload.tenant_id",
        ),
        (
            json!({"kind": "users.synced", "payload": {"managed_groups": [], "users": [{"email": "a@b.test", "tenant_id": []}]}}),
            "payload.users[0].tenant_id",
        ),
        (
            json!({"kind": "tenant.updated", "payload": {"tenant_id": "7", "attributes": {"@tenant.slug": "x"}}}),
            "payload.attributes.@tenant.slug",
        ),
        (
            json!({"kind": "tenant.updated", "payload": {"tenant_id": "7", "tenant_name": " "}}),
            "payload.tenant_name",
        ),
        (
            json!({"kind": "tenant.created", "payload": {"tenant_id": "7", "tenant_name": "A", "database_id": 1,
            "admin_user": {"email": "a@b.test"}, "tenant_groups": ["All tenant users"]}}),
            "payload.tenant_groups[0]",
        ),
    ];
    for (input, field) in refused {
        let e = job(input.clone()).unwrap_err();
        assert!(e.field.starts_with(field), "{input}: {e}");
    }
    match job(json!({"kind": "tenant.updated", "payload": {"tenant_id": 7, "attributes": {"region": null}}})).unwrap().job {
        Job::TenantUpdated(t) => {
            assert_eq!(t.tenant_id, "7");
            assert_eq!(t.attributes.get("region"), Some(&None));
        }
        other => panic!("{other:?}"),
    }
}
