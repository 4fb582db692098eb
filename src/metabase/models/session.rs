use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;

/// The public subset of `GET /api/session/properties` that mbprov reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionProperties {
    #[serde(default)]
    pub version: VersionInfo,
    /// Premium features of the instance's token (`sandboxes`, `advanced_permissions`, ...).
    #[serde(default, rename = "token-features")]
    pub token_features: BTreeMap<String, Value>,
    #[serde(default, rename = "setup-token")]
    pub setup_token: Option<String>,
    #[serde(default, rename = "has-user-setup")]
    pub has_user_setup: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl SessionProperties {
    pub fn has_feature(&self, name: &str) -> bool {
        matches!(self.token_features.get(name), Some(Value::Bool(true)))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A parsed Metabase version. EE tags are `v1.x.y` and OSS `v0.x.y`; both mean release `x.y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// The first release with the `view-data`/`create-queries` graph format.
    pub const DATA_PERMS_V2: Version = Version {
        major: 50,
        minor: 0,
    };
    /// The first release (assumed; see the README) whose data-graph PUT answers with only the
    /// submitted groups (metabase#44795).
    pub const PARTIAL_GRAPH_ANSWER: Version = Version {
        major: 51,
        minor: 0,
    };

    /// The first release (assumed; metabase#59727 was merged in June 2025) in which creating a
    /// collection bumps the collection-graph revision, so that every change of that graph is
    /// fenced by its revision. See the README.
    pub const COLLECTION_CREATION_BUMPS: Version = Version {
        major: 56,
        minor: 0,
    };

    /// Reads `v0.56.3`, `v1.56.3`, `v0.50.0-RC1`; `None` for `vLOCAL_DEV` and the like.
    pub fn parse(tag: &str) -> Option<Version> {
        let mut parts = tag.trim_start_matches('v').split(['.', '-']);
        let _edition: u32 = parts.next()?.parse().ok()?;
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some(Version { major, minor })
    }
}

impl VersionInfo {
    pub fn parsed(&self) -> Option<Version> {
        self.tag.as_deref().and_then(Version::parse)
    }
}

/// `GET /api/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/setup` (first admin of a fresh instance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetupRequest {
    pub token: String,
    pub user: SetupUser,
    pub prefs: SetupPrefs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetupUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub password: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetupPrefs {
    pub site_name: String,
}

/// `POST /api/session`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// The session id returned by `/api/setup` and `/api/session`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionId {
    pub id: String,
}

/// `POST /api/api-key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewApiKey {
    pub name: String,
    pub group_id: i64,
}

/// An API key as `GET /api/api-key` lists it; `unmasked_key` only in the create response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmasked_key: Option<String>,
    #[serde(default)]
    pub masked_key: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}
