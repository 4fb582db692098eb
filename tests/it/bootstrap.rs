//! `mbprov bootstrap-metabase` against the emulator: a fresh instance gets its first admin and
//! a working admin key, a second run reuses the key, bad credentials fail with exit 1, and
//! neither the password nor the key ever reaches stdout or stderr.

use crate::support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

const BIN: &str = support::BIN;
const EMULATOR_KEY: &str = "mb_emulator_control_k3y";
const PASSWORD: &str = "Sup3r-secret-passw0rd";
/// The non-fresh emulator's admin (see src/emulator/state/mod.rs).
const SEEDED_ADMIN: &str = "admin@example.com";
const SEEDED_PASSWORD: &str = "admin-password-1";

struct Emulator {
    url: String,
    http: reqwest::Client,
    _child: Child,
}

impl Emulator {
    async fn start(extra: &[&str]) -> Emulator {
        let (child, port) = support::start_emulator(
            Command::new(BIN)
                .args(["fake-metabase", "--port", "0", "--api-key", EMULATOR_KEY])
                .args(extra)
                .env_clear(),
        )
        .await;
        Emulator {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _child: child,
        }
    }

    /// GET with the emulator's own key (superuser, and the only key for `/_emulator/*`).
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .header("x-api-key", EMULATOR_KEY)
            .send()
            .await
            .expect("emulator answers")
            .json()
            .await
            .expect("JSON")
    }

    async fn set_outage(&self, on: bool) {
        let status = self
            .http
            .post(format!("{}/_emulator/faults", self.url))
            .header("x-api-key", EMULATOR_KEY)
            .json(&json!({"outage": on}))
            .send()
            .await
            .expect("emulator answers")
            .status();
        assert_eq!(status, 200);
    }

    async fn api_key_count(&self) -> usize {
        self.get("/api/api-key")
            .await
            .as_array()
            .expect("list")
            .len()
    }

    /// The status of `GET /api/user/current` with `key`.
    async fn status_with_key(&self, key: &str) -> u16 {
        self.http
            .get(format!("{}/api/user/current", self.url))
            .header("x-api-key", key)
            .send()
            .await
            .expect("emulator answers")
            .status()
            .as_u16()
    }

    async fn saw_unhealthy_poll(&self) -> bool {
        let requests = self.get("/_emulator/requests").await;
        requests
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["path"] == "/api/health" && r["status"] == 503 && r["method"] == "GET")
    }
}

fn bootstrap(emu: &Emulator, email: &str, password: &str, key_file: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("bootstrap-metabase")
        .env_clear()
        .env("METABASE_SITE_URL", &emu.url)
        .env("MB_ADMIN_EMAIL", email)
        .env("MB_ADMIN_PASSWORD", password)
        .env("METABASE_API_KEY_FILE", key_file)
        // Debug, so a secret in any log line would show up in the checks below.
        .env("RUST_LOG", "debug")
        .env("MBPROV_BOOTSTRAP_WAIT", "60s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("bootstrap finishes")
        .expect("bootstrap runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_secret(out: &Output, secrets: &[&str]) {
    let (stdout, stderr) = text(out);
    for s in secrets {
        assert!(!stdout.contains(s), "a secret in stdout:\n{stdout}");
        assert!(!stderr.contains(s), "a secret in stderr:\n{stderr}");
    }
}

fn key_in(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("key file")
        .trim()
        .to_string()
}

fn key_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("run/mbprov/api-key")
}

#[tokio::test]
async fn a_fresh_instance_gets_an_admin_and_one_key_that_later_runs_reuse() {
    // Still initializing at first (503), then down (503) until the bootstrap has seen it.
    let emu = Emulator::start(&["--fresh", "--init-delay-ms", "500"]).await;
    emu.set_outage(true).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = key_path(&dir);

    let first = bootstrap(&emu, "ops@example.test", PASSWORD, &file)
        .spawn()
        .expect("start bootstrap");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !emu.saw_unhealthy_poll().await {
        assert!(
            Instant::now() < deadline,
            "bootstrap never polled /api/health"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emu.set_outage(false).await;
    let out = tokio::time::timeout(Duration::from_secs(90), first.wait_with_output())
        .await
        .expect("bootstrap finishes")
        .expect("bootstrap runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("created the first admin ops@example.test"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "wrote a new API key \"mbprov workers\" to {}",
            file.display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("waiting for Metabase to be healthy"),
        "{stderr}"
    );

    let key = key_in(&file);
    assert!(!key.is_empty());
    assert_eq!(emu.status_with_key(&key).await, 200);
    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(emu.api_key_count().await, 1);
    let keys = emu.get("/api/api-key").await;
    assert_eq!(keys[0]["group"]["name"], "Administrators", "{keys}");
    assert_no_secret(&out, &[PASSWORD, &key]);

    // The state after `docker compose up` a second time: the key is kept, no new one is made.
    let out = run(bootstrap(&emu, "ops@example.test", PASSWORD, &file)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("reused the API key in {}", file.display())),
        "{stdout}"
    );
    assert_eq!(key_in(&file), key);
    assert_eq!(emu.api_key_count().await, 1);
    assert_no_secret(&out, &[PASSWORD, &key]);
}

#[tokio::test]
async fn wrong_admin_credentials_fail_with_exit_1_and_say_what_to_check() {
    let emu = Emulator::start(&[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = key_path(&dir);
    let out = run(bootstrap(&emu, SEEDED_ADMIN, PASSWORD, &file)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot log in as {SEEDED_ADMIN}")),
        "{stderr}"
    );
    assert!(stderr.contains("MB_ADMIN_PASSWORD"), "{stderr}");
    assert!(!file.exists());
    assert_eq!(emu.api_key_count().await, 0);
    assert_no_secret(&out, &[PASSWORD]);
}

#[tokio::test]
async fn a_rejected_or_lost_key_is_replaced_under_a_free_name() {
    let emu = Emulator::start(&[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = key_path(&dir);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
    std::fs::write(&file, "mb_stale_key_from_an_old_stack\n").expect("stale key");

    let out = run(bootstrap(&emu, SEEDED_ADMIN, SEEDED_PASSWORD, &file)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("is not accepted; creating a new one"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("logged in as {SEEDED_ADMIN}")),
        "{stdout}"
    );
    let first = key_in(&file);
    assert_eq!(emu.status_with_key(&first).await, 200);
    assert_no_secret(&out, &[SEEDED_PASSWORD, &first]);

    // The file is lost but the key "mbprov workers" still exists: a second name is used.
    std::fs::remove_file(&file).expect("remove");
    let out = run(bootstrap(&emu, SEEDED_ADMIN, SEEDED_PASSWORD, &file)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("wrote a new API key \"mbprov workers 2\""),
        "{stdout}"
    );
    let second = key_in(&file);
    assert_ne!(second, first);
    assert_eq!(emu.status_with_key(&second).await, 200);
    assert_eq!(emu.api_key_count().await, 2);
    assert_no_secret(&out, &[SEEDED_PASSWORD, &first, &second]);
}

#[tokio::test]
async fn a_metabase_that_never_gets_healthy_fails_after_the_wait() {
    let emu = Emulator::start(&[]).await;
    emu.set_outage(true).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = bootstrap(&emu, SEEDED_ADMIN, SEEDED_PASSWORD, &key_path(&dir));
    cmd.args(["--wait", "1s"]);
    let out = run(cmd).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was not healthy after 1s"), "{stderr}");
    assert!(
        stderr.contains("HTTP 503: Service Unavailable (emulated outage)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn missing_settings_are_named() {
    let out = run({
        let mut c = Command::new(BIN);
        c.arg("bootstrap-metabase")
            .env_clear()
            .env("METABASE_SITE_URL", "http://127.0.0.1:9")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    })
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("MB_ADMIN_EMAIL"), "{stderr}");
}
