//! `mbprov bootstrap-metabase` (CONTRACT.md §1, metabase-api.md §12): turns a fresh Metabase
//! into one the workers can call, so a compose stack needs no click in the UI.
//!
//! Idempotent: a later run that finds a working key in `METABASE_API_KEY_FILE` leaves it be.
//! The admin password and the key are never printed or logged; only what was done is.

mod key_file;
mod wait;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use crate::metabase::models::{
    ApiKeyInfo, MAGIC_ADMIN, SessionProperties, SetupPrefs, SetupRequest, SetupUser,
};
use crate::metabase::{ApiKey, Auth, ClientConfig, MetabaseClient, MetabaseError};

pub use key_file::KeyFileError;
pub use wait::{HealthWaitError, poll_delay};

/// `mbprov bootstrap-metabase` flags; each also reads the environment variable it names.
#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// Base URL of the Metabase instance.
    #[arg(long, env = "METABASE_SITE_URL")]
    pub site_url: Option<String>,
    /// Email of the first admin (created on a fresh instance, logged in as otherwise).
    #[arg(long, env = "MB_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// That admin's password; it must pass Metabase's complexity check. Prefer the variable.
    #[arg(long, env = "MB_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,
    /// First name of the admin created on a fresh instance.
    #[arg(long, env = "MB_ADMIN_FIRST_NAME", default_value = "mbprov")]
    pub admin_first_name: String,
    /// Last name of the admin created on a fresh instance.
    #[arg(long, env = "MB_ADMIN_LAST_NAME", default_value = "Admin")]
    pub admin_last_name: String,
    /// The site name set when the first admin is created.
    #[arg(long, env = "MB_SITE_NAME", default_value = "mbprov")]
    pub site_name: String,
    /// Where the workers' API key is kept (written 0600; reused when it still works).
    #[arg(long, env = "METABASE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The name of the API key created for the workers.
    #[arg(long, default_value = "mbprov workers")]
    pub api_key_name: String,
    /// How long to wait for Metabase to answer `GET /api/health` with 200.
    #[arg(long, env = "MBPROV_BOOTSTRAP_WAIT", default_value = "10m", value_parser = crate::config::parse_duration)]
    pub wait: Duration,
}

/// A password: redacted in `Debug`, without `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{var} (or --{flag}) is required")]
    Missing {
        var: &'static str,
        flag: &'static str,
    },
    #[error(transparent)]
    Health(#[from] HealthWaitError),
    #[error(
        "cannot create the first admin: {0}. MB_ADMIN_PASSWORD must pass Metabase's password check"
    )]
    Setup(MetabaseError),
    #[error("cannot log in as {email}: {source}. Check MB_ADMIN_EMAIL and MB_ADMIN_PASSWORD")]
    Login {
        email: String,
        source: MetabaseError,
    },
    #[error("cannot check the API key in {path}: {source}")]
    CheckKey {
        path: PathBuf,
        source: MetabaseError,
    },
    #[error("cannot create the API key: {0}")]
    CreateKey(MetabaseError),
    #[error("Metabase created API key {name:?} but did not return it (no unmasked_key)")]
    KeyNotReturned { name: String },
    #[error("cannot check the API key Metabase just created: {0}")]
    CheckNewKey(MetabaseError),
    #[error(
        "Metabase does not accept the API key {name:?} it just created (401); nothing was written"
    )]
    NewKeyRejected { name: String },
    #[error(transparent)]
    Metabase(#[from] MetabaseError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// Runs the bootstrap, printing one line per thing done; exit 1 with the reason otherwise.
pub async fn run(args: BootstrapArgs) -> ExitCode {
    match bootstrap(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mbprov bootstrap-metabase: {e}");
            ExitCode::from(1)
        }
    }
}

/// What the flags say, checked.
struct Settings<'a> {
    site_url: &'a str,
    email: &'a str,
    password: &'a Secret,
    key_file: &'a PathBuf,
}

fn settings(args: &BootstrapArgs) -> Result<Settings<'_>, BootstrapError> {
    let missing = |var, flag| BootstrapError::Missing { var, flag };
    Ok(Settings {
        site_url: nonblank(&args.site_url).ok_or(missing("METABASE_SITE_URL", "site-url"))?,
        email: nonblank(&args.admin_email).ok_or(missing("MB_ADMIN_EMAIL", "admin-email"))?,
        password: args
            .admin_password
            .as_ref()
            .filter(|p| !p.expose().is_empty())
            .ok_or(missing("MB_ADMIN_PASSWORD", "admin-password"))?,
        key_file: args
            .api_key_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(missing("METABASE_API_KEY_FILE", "api-key-file"))?,
    })
}

fn nonblank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn bootstrap(args: &BootstrapArgs) -> Result<(), BootstrapError> {
    let s = settings(args)?;
    let mb = MetabaseClient::new(ClientConfig::new(s.site_url, Auth::None))?;
    wait::until_healthy(s.site_url, args.wait).await?;
    let props = mb.session_properties().await?;
    println!(
        "Metabase {} at {} is healthy",
        props.version.tag.as_deref().unwrap_or("(unknown version)"),
        mb.base_url()
    );

    let Some(session) = admin_session(&mb, args, &s, &props).await? else {
        println!("reused the API key in {}", s.key_file.display());
        return Ok(());
    };
    let (name, key) = create_worker_key(&mb, session, &args.api_key_name).await?;
    key_file::write(s.key_file, &key)?;
    println!("wrote a new API key {name:?} to {}", s.key_file.display());
    Ok(())
}

/// An admin session: from creating the first admin, or from logging in. `None` when the key
/// file already holds a key Metabase accepts, so there is nothing to do.
async fn admin_session(
    mb: &MetabaseClient,
    args: &BootstrapArgs,
    s: &Settings<'_>,
    props: &SessionProperties,
) -> Result<Option<ApiKey>, BootstrapError> {
    if let FirstStep::Setup(token) = first_step(props)
        && let Some(session) = create_first_admin(mb, args, s, token).await?
    {
        return Ok(Some(session));
    }
    // An instance with users may already have given us a key: keep it, so restarting the
    // stack neither piles up keys nor needs the admin password to still be right.
    if let Some(key) = key_file::read(s.key_file)? {
        let works = key_works(mb, key)
            .await
            .map_err(|source| BootstrapError::CheckKey {
                path: s.key_file.clone(),
                source,
            })?;
        if works {
            return Ok(None);
        }
        println!(
            "the API key in {} is not accepted; creating a new one",
            s.key_file.display()
        );
    }
    let session = mb
        .login(s.email, s.password.expose())
        .await
        .map_err(|source| BootstrapError::Login {
            email: s.email.to_string(),
            source,
        })?;
    println!("logged in as {}", s.email);
    Ok(Some(ApiKey::new(session.id)))
}

/// Creates an Administrators key for the workers and checks that Metabase accepts it; returns
/// its name and the key.
async fn create_worker_key(
    mb: &MetabaseClient,
    session: ApiKey,
    wanted_name: &str,
) -> Result<(String, String), BootstrapError> {
    let admin = mb.with_auth(Auth::Session(session));
    let group_id = admin_group_id(&admin).await?;
    let name = free_key_name(wanted_name, &admin.list_api_keys().await?);
    let created = admin
        .create_api_key(&name, group_id)
        .await
        .map_err(BootstrapError::CreateKey)?;
    let key = created
        .unmasked_key
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| BootstrapError::KeyNotReturned { name: name.clone() })?;
    let works = key_works(mb, ApiKey::new(key.as_str()))
        .await
        .map_err(BootstrapError::CheckNewKey)?;
    if !works {
        return Err(BootstrapError::NewKeyRejected { name });
    }
    Ok((name, key))
}

/// What a fresh instance needs first.
#[derive(Debug, PartialEq, Eq)]
enum FirstStep<'a> {
    /// No user yet: `POST /api/setup` with this token.
    Setup(&'a str),
    /// Users exist (or no token is offered): log in.
    Login,
}

fn first_step(props: &SessionProperties) -> FirstStep<'_> {
    match (props.has_user_setup, props.setup_token.as_deref()) {
        (Some(true), _) | (_, None) => FirstStep::Login,
        (_, Some(token)) if token.trim().is_empty() => FirstStep::Login,
        (_, Some(token)) => FirstStep::Setup(token),
    }
}

/// `Some(session)` when this run created the first admin; `None` when another client did it
/// between our read of the properties and our setup (Metabase answers 403), so we log in.
async fn create_first_admin(
    mb: &MetabaseClient,
    args: &BootstrapArgs,
    s: &Settings<'_>,
    token: &str,
) -> Result<Option<ApiKey>, BootstrapError> {
    let req = SetupRequest {
        token: token.to_string(),
        user: SetupUser {
            first_name: args.admin_first_name.clone(),
            last_name: args.admin_last_name.clone(),
            email: s.email.to_string(),
            password: s.password.expose().to_string(),
        },
        prefs: SetupPrefs {
            site_name: args.site_name.clone(),
        },
    };
    match mb.setup(&req).await {
        Ok(session) => {
            println!("created the first admin {}", s.email);
            Ok(Some(ApiKey::new(session.id)))
        }
        Err(e) if e.status() == Some(403) => Ok(None),
        Err(e) => Err(BootstrapError::Setup(e)),
    }
}

/// Whether Metabase accepts `key`: 200 from `GET /api/user/current`, not 401. Other failures
/// are errors, not "no": a Metabase hiccup must not make us mint a second key.
async fn key_works(mb: &MetabaseClient, key: ApiKey) -> Result<bool, MetabaseError> {
    match mb.with_auth(Auth::ApiKey(key)).current_user().await {
        Ok(_) => Ok(true),
        Err(e) if e.status() == Some(401) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Administrators, found by its magic type; instances older than that field use id 2.
async fn admin_group_id(admin: &MetabaseClient) -> Result<i64, MetabaseError> {
    let groups = admin.list_groups().await?;
    Ok(groups
        .iter()
        .find(|g| g.magic_group_type.as_deref() == Some(MAGIC_ADMIN))
        .map_or(2, |g| g.id))
}

/// Metabase refuses a second key with the same name. A key of that name with no file holding
/// it (a lost volume, a crash before the write) is left alone, since someone may use it; the
/// new key gets the first free `NAME 2`, `NAME 3`, ...
fn free_key_name(wanted: &str, existing: &[ApiKeyInfo]) -> String {
    let taken = |name: &str| existing.iter().any(|k| k.name == name);
    if !taken(wanted) {
        return wanted.to_string();
    }
    (2..)
        .map(|n| format!("{wanted} {n}"))
        .find(|name| !taken(name))
        .unwrap_or_else(|| wanted.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: serde_json::Value) -> SessionProperties {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn setup_runs_only_on_an_instance_without_users() {
        let cases = [
            (
                json!({"has-user-setup": false, "setup-token": "t"}),
                FirstStep::Setup("t"),
            ),
            (json!({"setup-token": "t"}), FirstStep::Setup("t")),
            (
                json!({"has-user-setup": true, "setup-token": "t"}),
                FirstStep::Login,
            ),
            (
                json!({"has-user-setup": false, "setup-token": null}),
                FirstStep::Login,
            ),
            (
                json!({"has-user-setup": false, "setup-token": " "}),
                FirstStep::Login,
            ),
            (json!({}), FirstStep::Login),
        ];
        for (v, want) in cases {
            let p = props(v.clone());
            assert_eq!(first_step(&p), want, "{v}");
        }
    }

    #[test]
    fn key_names_avoid_the_taken_ones() {
        let key = |id, name: &str| ApiKeyInfo {
            id,
            name: name.into(),
            unmasked_key: None,
            masked_key: None,
            extra: Default::default(),
        };
        let cases: [(&[ApiKeyInfo], &str); 3] = [
            (&[], "mbprov workers"),
            (&[key(1, "mbprov workers")], "mbprov workers 2"),
            (
                &[
                    key(1, "mbprov workers"),
                    key(2, "mbprov workers 2"),
                    key(3, "other"),
                ],
                "mbprov workers 3",
            ),
        ];
        for (existing, want) in cases {
            assert_eq!(free_key_name("mbprov workers", existing), want);
        }
    }

    #[test]
    fn the_password_never_prints() {
        let s: Secret = "hunter2-Secret".parse().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn missing_settings_name_their_variable() {
        let args = BootstrapArgs {
            site_url: Some("http://mb".into()),
            admin_email: Some("a@b.test".into()),
            admin_password: None,
            admin_first_name: "mbprov".into(),
            admin_last_name: "Admin".into(),
            site_name: "mbprov".into(),
            api_key_file: Some("/tmp/k".into()),
            api_key_name: "mbprov workers".into(),
            wait: Duration::from_secs(1),
        };
        let err = settings(&args).err().unwrap().to_string();
        assert!(err.contains("MB_ADMIN_PASSWORD"), "{err}");
    }
}
