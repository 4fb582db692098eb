//! What the commands that talk to Metabase share: the client from flags/environment, and the
//! instance facts read once at start-up (version, features, built-in groups).

use std::collections::BTreeSet;

use crate::config::MetabaseArgs;
use crate::graph::Features;
use crate::jobs::policy::BuiltinGroups;
use crate::metabase::models::{MAGIC_ADMIN, MAGIC_ALL_USERS, Version};
use crate::metabase::{ApiKey, Auth, ClientConfig, MetabaseClient, MetabaseError};

/// The client for `METABASE_SITE_URL` with the key from `METABASE_API_KEY` or its file.
pub fn metabase_client(args: &MetabaseArgs) -> Result<MetabaseClient, String> {
    let url = args
        .site_url
        .as_deref()
        .ok_or("METABASE_SITE_URL (or --site-url) is required")?;
    let key = api_key(args)?;
    let mut config = ClientConfig::new(url, Auth::ApiKey(key));
    config.timeout = args.http_timeout;
    MetabaseClient::new(config).map_err(|e| e.to_string())
}

fn api_key(args: &MetabaseArgs) -> Result<ApiKey, String> {
    if let Some(key) = args.api_key.as_deref().filter(|k| !k.trim().is_empty()) {
        return Ok(ApiKey::new(key));
    }
    if let Some(file) = &args.api_key_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read METABASE_API_KEY_FILE {}: {e}", file.display()))?;
        if text.trim().is_empty() {
            return Err(format!("METABASE_API_KEY_FILE {} is empty", file.display()));
        }
        return Ok(ApiKey::new(text));
    }
    Err("an API key is required: set METABASE_API_KEY or METABASE_API_KEY_FILE".into())
}

/// Facts about the instance that do not change while a worker runs.
#[derive(Clone, Debug)]
pub struct Instance {
    pub version_tag: Option<String>,
    pub version: Option<Version>,
    pub features: Features,
    pub builtin: BuiltinGroups,
}

impl Instance {
    pub async fn read(mb: &MetabaseClient) -> Result<Instance, MetabaseError> {
        let props = mb.session_properties().await?;
        let version = props.version.parsed();
        let features = Features {
            advanced_permissions: props.has_feature("advanced_permissions"),
            sandboxes: props.has_feature("sandboxes"),
            legacy_graph: version.is_some_and(|v| v < Version::DATA_PERMS_V2),
        };
        let groups = mb.list_groups().await?;
        let find = |magic: &str| {
            groups
                .iter()
                .find(|g| g.magic_group_type.as_deref() == Some(magic))
                .map(|g| g.id)
        };
        // Instances older than magic_group_type have All Users = 1 and Administrators = 2.
        let builtin = BuiltinGroups {
            all_users: find(MAGIC_ALL_USERS).unwrap_or(1),
            admin: find(MAGIC_ADMIN).unwrap_or(2),
            all: groups
                .iter()
                .filter(|g| g.is_magic())
                .map(|g| g.id)
                .chain([
                    find(MAGIC_ALL_USERS).unwrap_or(1),
                    find(MAGIC_ADMIN).unwrap_or(2),
                ])
                .collect::<BTreeSet<i64>>(),
        };
        Ok(Instance {
            version_tag: props.version.tag.clone(),
            version,
            features,
            builtin,
        })
    }
}
