//! The tenancy rules as data, each citing the Metabase source or test it reflects.

use std::collections::BTreeMap;

use serde_json::json;

use super::super::{Edition, NewUserInput, State};
use super::*;

fn on() -> State {
    let mut s = State::new(Edition::default(), false);
    s.set_use_tenants(true);
    s
}

fn user(email: &str, groups: Option<Vec<i64>>) -> NewUserInput {
    NewUserInput {
        email: email.into(),
        memberships: groups.map(|g| {
            g.into_iter()
                .map(|group_id| crate::emulator::state::MembershipItem {
                    group_id,
                    is_group_manager: Some(Some(false)),
                })
                .collect()
        }),
        ..NewUserInput::default()
    }
}

fn message(e: ApiError) -> String {
    match e {
        ApiError::Plain(_, m) => m,
        ApiError::Json(_, v) => v.to_string(),
    }
}

/// `update-use-tenants!` / `create-all-external-users!`: turning tenants on makes "All tenant
/// users" (magic `all-external-users`), once.
#[test]
fn turning_tenants_on_makes_all_tenant_users_once() {
    let mut s = on();
    let atu = s.tenancy.all_tenant_users.unwrap();
    assert_eq!(s.groups[&atu].name, "All tenant users");
    assert_eq!(
        s.groups[&atu].magic_group_type.as_deref(),
        Some("all-external-users")
    );
    s.set_use_tenants(false);
    s.set_use_tenants(true);
    assert_eq!(s.tenancy.all_tenant_users, Some(atu));
}

/// `create-tenant!`, `tenant-exists?`, `Slug`, `define-before-insert :model/Tenant`.
#[test]
fn tenants_are_unique_by_name_and_slug_and_come_with_their_collection() {
    let mut s = on();
    let before = s.collection_revision;
    let id = s.create_tenant("Acme", "acme", None).unwrap();
    let c = s.tenancy.tenants[&id].tenant_collection_id;
    assert_eq!(s.collections[&c].name, "Tenant Collection: Acme");
    assert!(s.tenancy.tenant_collections.contains(&c));
    assert_eq!(
        s.collection_revision, before,
        "tenant collections do not bump the graph"
    );
    let cases = [
        ("Acme", "other", TENANT_TAKEN),
        ("Other", "acme", TENANT_TAKEN),
        ("Other", "Acme", "invalid slug"),
        ("Other", "a b", "invalid slug"),
        ("", "blank", "non-blank"),
    ];
    for (name, slug, want) in cases {
        let e = s.create_tenant(name, slug, None).unwrap_err();
        assert!(message(e).contains(want), "{name} {slug}");
    }
    assert!(is_valid_slug(&"a".repeat(255)) && !is_valid_slug(&"a".repeat(256)));
}

/// `PUT /api/ee/tenant/:id`: a rename to another tenant's name is refused, to its own is not.
#[test]
fn renames_check_other_tenants_names_only() {
    let mut s = on();
    let a = s.create_tenant("Acme", "acme", None).unwrap();
    s.create_tenant("Beta", "beta", None).unwrap();
    let rename = |name: &str| TenantPatch {
        name: Some(name.into()),
        ..TenantPatch::default()
    };
    assert_eq!(
        message(s.update_tenant(a, rename("Beta")).unwrap_err()),
        NAME_TAKEN
    );
    s.update_tenant(a, rename("Acme")).unwrap();
    s.update_tenant(a, rename("Acme 2")).unwrap();
    assert_eq!(s.tenancy.tenants[&a].name, "Acme 2");
    assert!(s.update_tenant(99, rename("X")).is_err());
}

/// `user_api_test.clj`: `create-tenant-user-auto-assigned-to-external-users-group-test`,
/// `create-tenant-user-must-assign-to-external-users-group-test`,
/// `create-user-tenant-group-restrictions-test`; `invite-user!` without `use-tenants`.
#[test]
fn tenant_users_live_only_in_tenant_groups() {
    let mut s = on();
    let atu = s.tenancy.all_tenant_users.unwrap();
    let t = s.create_tenant("Acme", "acme", None).unwrap();
    let tg = s.create_tenant_group("Recruiters").unwrap();
    let internal = s.create_group("Analysts").unwrap();

    let u = s.create_tenant_user(user("a@acme.test", None), t).unwrap();
    assert_eq!(s.group_ids_of(u), vec![atu]);
    assert_eq!(s.tenant_of(u), Some(t));
    let u2 = s
        .create_tenant_user(user("b@acme.test", Some(vec![atu, tg])), t)
        .unwrap();
    assert_eq!(s.group_ids_of(u2), vec![atu, tg]);

    let refused = [
        (
            user("c@acme.test", Some(vec![tg])),
            ALL_TENANT_USERS_MEMBERSHIP,
        ),
        (
            user("d@acme.test", Some(vec![atu, internal])),
            MIXED_MEMBERSHIP,
        ),
        (user("a@acme.test", None), "Email address already in use."),
    ];
    for (input, want) in refused {
        let email = input.email.clone();
        assert!(
            message(s.create_tenant_user(input, t).unwrap_err()).contains(want),
            "{email}"
        );
    }
    // Internal users cannot join tenant groups, tenant users cannot join internal groups.
    let admin = 1;
    assert!(message(s.add_member(tg, admin, None).unwrap_err()).contains(MIXED_MEMBERSHIP));
    assert!(message(s.add_member(internal, u, None).unwrap_err()).contains(MIXED_MEMBERSHIP));
    s.add_member(tg, u, None).unwrap();

    let mut off = State::new(Edition::default(), false);
    off.set_use_tenants(false);
    assert!(
        message(
            off.create_tenant_user(user("x@y.test", None), 1)
                .unwrap_err()
        )
        .contains(TENANTS_OFF)
    );
}

/// `update-tenant!`: `is_active false` deactivates the tenant's active users (marking them) and
/// archives its collection; `true` brings back exactly those and unarchives it.
#[test]
fn deactivating_a_tenant_cascades_and_reverses() {
    let mut s = on();
    let t = s.create_tenant("Acme", "acme", None).unwrap();
    let other = s.create_tenant("Beta", "beta", None).unwrap();
    let a = s.create_tenant_user(user("a@acme.test", None), t).unwrap();
    let gone = s
        .create_tenant_user(user("gone@acme.test", None), t)
        .unwrap();
    let b = s
        .create_tenant_user(user("b@beta.test", None), other)
        .unwrap();
    s.deactivate_user(gone).unwrap();
    let active = |s: &State, u: i64| s.users[&u].is_active;
    let off = TenantPatch {
        is_active: Some(false),
        ..TenantPatch::default()
    };
    s.update_tenant(t, off).unwrap();
    let c = s.tenancy.tenants[&t].tenant_collection_id;
    assert!(!active(&s, a) && active(&s, b) && s.collections[&c].archived);
    assert_eq!(s.tenant_member_count(t), 0);
    let on_again = TenantPatch {
        is_active: Some(true),
        ..TenantPatch::default()
    };
    s.update_tenant(t, on_again).unwrap();
    assert!(
        active(&s, a) && !active(&s, gone),
        "only users deactivated with the tenant return"
    );
    assert!(!s.collections[&c].archived);
}

/// metabase-api.md correction 11 (`GET /api/user` lists internal users unless `tenancy` or
/// `tenant_id` says otherwise) and test fact 4 (`fetch-groups-tenancy-filter-test`).
#[test]
fn listings_filter_by_tenancy() {
    let mut s = on();
    let t = s.create_tenant("Acme", "acme", None).unwrap();
    let tu = s.create_tenant_user(user("a@acme.test", None), t).unwrap();
    let tg = s.create_tenant_group("Recruiters").unwrap();
    let cases = [
        (None, None, vec![1]),
        (Some(TenancyFilter::External), None, vec![tu]),
        (Some(TenancyFilter::All), None, vec![1, tu]),
        (None, Some(t), vec![tu]),
    ];
    for (filter, tenant, want) in cases {
        let got: Vec<i64> = s
            .users
            .values()
            .filter(|u| s.user_matches_tenancy(u, filter, tenant))
            .map(|u| u.id)
            .collect();
        assert_eq!(got, want, "{filter:?} {tenant:?}");
    }
    assert!(s.group_matches_tenancy(tg, Some(TenancyFilter::External)));
    assert!(!s.group_matches_tenancy(tg, Some(TenancyFilter::Internal)));
    s.set_use_tenants(false);
    assert!(
        !s.group_visible(tg),
        "tenant groups are hidden while use-tenants is off"
    );
    assert!(
        !s.users[&tu].is_active,
        "turning tenants off deactivates tenant users"
    );
    assert!(TenancyFilter::parse(Some("invalid")).is_err());
}

#[test]
fn tenant_attributes_refuse_system_keys() {
    let ok: BTreeMap<String, String> =
        serde_json::from_value(json!({"region": "eu", "n": "1"})).unwrap();
    assert_eq!(
        tenant_attributes(Some(&json!({"region": "eu", "n": 1}))).unwrap(),
        Some(Some(ok))
    );
    assert!(tenant_attributes(Some(&json!({"@tenant.slug": "x"}))).is_err());
    assert_eq!(tenant_attributes(Some(&json!(null))).unwrap(), Some(None));
}
