//! Which collection is a tenant's: a marker stored in Metabase itself, in the collection's
//! `description`, never its display name.
//!
//! Collection names are not unique in Metabase (`create-collection!` has no name check), and
//! two customers may well share one. So mbprov binds a tenant's collection to its `tenant_id`
//! with a line of the description, `mbprov:tenant="<id>"` (the id as a JSON string, so any id
//! fits on one line). Every release serves `description` on `GET /api/collection/:id` and on
//! `GET /api/collection/:id/items?models=collection` (`collection-children-query :collection`
//! selects it, in `collections/api.clj` and later `collections_rest/api.clj`), and both
//! `POST /api/collection` and `PUT /api/collection/:id` declare it. The marker is found on any
//! line, so an administrator may edit the rest of the description freely. Redis only caches
//! tenant -> collection id; losing it costs one listing of the parent's children.

/// The start of the marker line.
pub const MARKER_PREFIX: &str = "mbprov:tenant=";

/// The marker line for `tenant_id`.
pub fn marker_line(tenant_id: &str) -> String {
    // A JSON string of a `str` cannot fail to serialise.
    let quoted = serde_json::to_string(tenant_id).unwrap_or_default();
    format!("{MARKER_PREFIX}{quoted}")
}

/// The description a new tenant collection is created with.
pub fn new_description(tenant_id: &str) -> String {
    format!(
        "Managed by mbprov. The next line binds this collection to its tenant; \
         edit anything else.\n{}",
        marker_line(tenant_id)
    )
}

/// The tenant ids a description is marked for (usually none or one).
pub fn marked_tenants(description: Option<&str>) -> Vec<String> {
    let Some(text) = description else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix(MARKER_PREFIX) else {
            continue;
        };
        if let Ok(id) = serde_json::from_str::<String>(rest.trim())
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

/// Whether a description marks its collection for `tenant_id`, and for no other tenant: a
/// collection claimed by two tenants belongs to neither (mbprov never wrote such a thing, so
/// someone copied a marker by hand).
pub fn is_marked_for(description: Option<&str>, tenant_id: &str) -> bool {
    matches!(marked_tenants(description).as_slice(), [only] if only == tenant_id)
}

/// What a listing says about a candidate collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub archived: bool,
    pub personal: bool,
}

/// The tenant's collection among `candidates`, and whether it needs renaming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    Found { id: i64, rename: bool },
    Missing,
}

/// Picks the tenant's live collection among `candidates`: only one marked for `tenant_id`
/// counts, whatever its name; an unmarked collection called `wanted_name` is never taken. Two
/// marked ones (a copy an administrator made, or a creation from before markers) resolve to
/// the oldest (lowest id), so every replica picks the same.
pub fn pick(candidates: &[Candidate], tenant_id: &str, wanted_name: &str) -> Pick {
    candidates
        .iter()
        .filter(|c| {
            !c.archived && !c.personal && is_marked_for(c.description.as_deref(), tenant_id)
        })
        .min_by_key(|c| c.id)
        .map_or(Pick::Missing, |c| Pick::Found {
            id: c.id,
            rename: c.name != wanted_name,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i64, name: &str, description: Option<&str>) -> Candidate {
        Candidate {
            id,
            name: name.into(),
            description: description.map(str::to_string),
            archived: false,
            personal: false,
        }
    }

    #[test]
    fn markers_are_read_from_any_line_and_survive_edits() {
        let cases: &[(Option<&str>, &[&str])] = &[
            (None, &[]),
            (Some("Acme's dashboards"), &[]),
            (Some(&new_description("42")), &["42"]),
            (
                Some("edited by hand\n  mbprov:tenant=\"42\"  \nmore notes"),
                &["42"],
            ),
            (Some("mbprov:tenant=\"a\\nb\""), &["a\nb"]),
            // Not a JSON string: no marker (an administrator's free text, e.g. 42 unquoted).
            (Some("mbprov:tenant=42"), &[]),
            (
                Some("mbprov:tenant=\"1\"\nmbprov:tenant=\"2\"\nmbprov:tenant=\"1\""),
                &["1", "2"],
            ),
        ];
        for (description, want) in cases {
            assert_eq!(marked_tenants(*description), *want, "{description:?}");
        }
        assert_eq!(marked_tenants(Some(&marker_line("x\"y"))), ["x\"y"]);
    }

    #[test]
    fn a_collection_claimed_twice_is_nobodys() {
        assert!(is_marked_for(Some(&marker_line("42")), "42"));
        assert!(!is_marked_for(Some(&marker_line("42")), "43"));
        assert!(!is_marked_for(
            Some("mbprov:tenant=\"42\"\nmbprov:tenant=\"43\""),
            "42"
        ));
        assert!(!is_marked_for(None, "42"));
    }

    #[test]
    fn only_a_collection_marked_for_the_tenant_is_picked() {
        let m42 = marker_line("42");
        let m43 = marker_line("43");
        let admins = c(5, "Acme Dashboards", Some("the administrator's own"));
        let mut archived = c(3, "Acme Dashboards", Some(&m42));
        archived.archived = true;
        let mut personal = c(4, "Acme Dashboards", Some(&m42));
        personal.personal = true;
        let cases = [
            (vec![admins.clone()], "42", Pick::Missing),
            (
                vec![admins.clone(), c(9, "Acme Dashboards", Some(&m43))],
                "42",
                Pick::Missing,
            ),
            (
                vec![
                    admins.clone(),
                    c(9, "Acme Dashboards", Some(&m43)),
                    c(10, "Acme Dashboards", Some(&m42)),
                ],
                "42",
                Pick::Found {
                    id: 10,
                    rename: false,
                },
            ),
            // Renamed tenant: same marker, old name.
            (
                vec![c(10, "Old Dashboards", Some(&m42))],
                "42",
                Pick::Found {
                    id: 10,
                    rename: true,
                },
            ),
            (vec![archived, personal], "42", Pick::Missing),
            (
                vec![
                    c(12, "Acme Dashboards", Some(&m42)),
                    c(11, "Acme Dashboards", Some(&m42)),
                ],
                "42",
                Pick::Found {
                    id: 11,
                    rename: false,
                },
            ),
        ];
        for (candidates, tenant, want) in cases {
            assert_eq!(
                pick(&candidates, tenant, "Acme Dashboards"),
                want,
                "{candidates:?}"
            );
        }
    }
}
