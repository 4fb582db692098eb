//! Which Metabase the emulator is: an edition (free or Pro/Enterprise) at a release.
//!
//! Metabase changed behaviour between releases and between editions; the emulator reproduces
//! one combination at a time so that a test against it says something about a real instance
//! (`../shared/metabase-api.md`, "Verified corrections (December 2026)"). Every gate below is a
//! pure question answered from the edition and the version, so it is table-tested here.

use crate::metabase::models::Version;

/// The release the emulator reports when `--metabase-version` is not given: the newest one
/// the verified corrections describe (v0.64, where concurrent collection creates were seen).
pub const NEWEST_RELEASE: Version = Version {
    major: 64,
    minor: 0,
};

/// `--edition`: free (OSS) or Pro/Enterprise (every token feature mbprov cares about).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EditionName {
    /// The free edition: no token features.
    Oss,
    /// Pro/Enterprise: advanced permissions, sandboxes, tenants.
    #[default]
    Pro,
}

/// Options that change what the instance allows and how it answers.
#[derive(Clone, Debug)]
pub struct Edition {
    /// Token features off: `blocked`, sandboxes and group managers are refused with 402.
    pub oss: bool,
    /// The release; `None` = the newest behaviour (an unparsable tag such as `vLOCAL_DEV`).
    pub version: Option<Version>,
    /// Whether creating a collection bumps the collection-graph revision (metabase#59727,
    /// v0.56.0; correction 4). `--silent-collection-copies` turns it off whatever the version.
    pub creation_bumps_collection_revision: bool,
}

impl Default for Edition {
    /// Pro at the newest release.
    fn default() -> Self {
        Edition::new(EditionName::Pro, None)
    }
}

const fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

impl Edition {
    pub fn new(name: EditionName, version: Option<Version>) -> Self {
        let mut e = Edition {
            oss: name == EditionName::Oss,
            version,
            creation_bumps_collection_revision: true,
        };
        e.creation_bumps_collection_revision = e.at_least(v(56, 0));
        e
    }

    /// What a release tag implies; an unparsable tag (`vLOCAL_DEV`) is the newest behaviour.
    pub fn for_version(tag: &str, oss: bool) -> Edition {
        let name = if oss {
            EditionName::Oss
        } else {
            EditionName::Pro
        };
        Edition::new(name, Version::parse(tag))
    }

    pub fn name(&self) -> EditionName {
        if self.oss {
            EditionName::Oss
        } else {
            EditionName::Pro
        }
    }

    fn at_least(&self, wanted: Version) -> bool {
        self.version.is_none_or(|have| have >= wanted)
    }

    /// Token feature `advanced_permissions`: `blocked`, group managers, the EE membership diff.
    pub fn advanced_permissions(&self) -> bool {
        !self.oss
    }

    /// Token feature `sandboxes`.
    pub fn sandboxes(&self) -> bool {
        !self.oss
    }

    /// Token feature `tenants` (Pro/Enterprise; the feature arrived about v0.58, §7).
    pub fn tenants(&self) -> bool {
        !self.oss && self.at_least(v(58, 0))
    }

    /// `?skip-graph=true` on the collection graph PUT (PR #49856, Nov 2024, about v0.52;
    /// correction 2). The data graph has taken it since PR #36724 (Dec 2023), i.e. on every
    /// release the emulator supports.
    pub fn collection_skip_graph_query(&self) -> bool {
        self.at_least(v(52, 0))
    }

    /// From July to November 2024 (v0.51) the collection graph took `skip_graph` as a JSON
    /// body key (PR #45438; correction 2).
    pub fn collection_skip_graph_body(&self) -> bool {
        !self.collection_skip_graph_query() && self.at_least(v(51, 0))
    }

    /// The data-graph PUT answers only the submitted groups (metabase#44795, about v0.51);
    /// before, the whole graph.
    pub fn partial_data_answer(&self) -> bool {
        self.at_least(v(51, 0))
    }

    /// The collection graph leaves out `none` cells (PR metabase#65098, 0.56.13); before, it
    /// was the full cross product with explicit `"none"`.
    pub fn sparse_collection_graph(&self) -> bool {
        self.at_least(v(56, 13))
    }

    /// v0.57 on (correction 11): user objects carry `is_data_analyst`, `tenant_id`,
    /// `structured_attributes`; collections `is_remote_synced`, `archived_directly`,
    /// `effective_location`; the data graph `transforms`; `GET /api/user` lists internal users
    /// unless asked otherwise.
    pub fn v057_fields(&self) -> bool {
        self.at_least(v(57, 0))
    }

    /// Premium-feature 402s are JSON `{"message", "status"}` in newer releases and plain text
    /// in older ones (correction 8). The release of the switch is not confirmed; the emulator
    /// uses v0.57, the release that reworked the error middleware's whitelisted keys.
    pub fn json_premium_errors(&self) -> bool {
        self.at_least(v(57, 0))
    }

    /// The tag `GET /api/session/properties` reports when none was given: EE builds are
    /// tagged `v1.x.y`, OSS builds `v0.x.y`.
    pub fn default_tag(name: EditionName) -> String {
        let major = match name {
            EditionName::Oss => 0,
            EditionName::Pro => 1,
        };
        format!("v{major}.{}.{}", NEWEST_RELEASE.major, NEWEST_RELEASE.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_by_release() {
        // (tag, creation bump, kebab query, body key, partial answer, sparse, 0.57 fields)
        let table = [
            ("v0.50.9", false, false, false, false, false, false),
            ("v0.51.4", false, false, true, true, false, false),
            ("v0.52.0", false, true, false, true, false, false),
            ("v0.55.4", false, true, false, true, false, false),
            ("v0.56.0", true, true, false, true, false, false),
            ("v1.56.12", true, true, false, true, false, false),
            ("v1.56.13", true, true, false, true, true, false),
            ("v0.57.1", true, true, false, true, true, true),
            ("v1.64.0", true, true, false, true, true, true),
            ("vLOCAL_DEV", true, true, false, true, true, true),
        ];
        for (tag, bump, kebab, body, partial, sparse, fields) in table {
            let e = Edition::for_version(tag, false);
            assert_eq!(
                (
                    e.creation_bumps_collection_revision,
                    e.collection_skip_graph_query(),
                    e.collection_skip_graph_body(),
                    e.partial_data_answer(),
                    e.sparse_collection_graph(),
                    e.v057_fields(),
                ),
                (bump, kebab, body, partial, sparse, fields),
                "{tag}"
            );
        }
    }

    #[test]
    fn features_by_edition() {
        let oss = Edition::new(EditionName::Oss, None);
        let pro = Edition::default();
        assert!(!oss.advanced_permissions() && !oss.sandboxes() && !oss.tenants());
        assert!(pro.advanced_permissions() && pro.sandboxes() && pro.tenants());
        assert!(!Edition::for_version("v1.57.0", false).tenants());
        assert_eq!(Edition::default_tag(EditionName::Oss), "v0.64.0");
        assert_eq!(Edition::default_tag(EditionName::Pro), "v1.64.0");
    }
}
