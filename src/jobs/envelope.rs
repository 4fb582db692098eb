//! Parsing and validating envelopes (CONTRACT.md §3 and §4): strict typed payloads.
//!
//! Anything malformed is an [`InvalidJob`] naming the field, which the worker dead-letters as
//! permanent before any Metabase call.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::payloads::{
    PermissionsApplied, TenantCreated, TenantDeleted, TenantUpdated, UserDeactivated, UserUpserted,
    UsersSynced,
};

/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest job id, in characters.
pub const MAX_ID: usize = 200;

/// The wire form of every message.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Idempotency key, 1 to 200 characters. Defaults to the AMQP message id, then to a hash of
    /// kind and payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Selects the handler: `tenant.created`, `tenant.updated`, `tenant.deleted`, `user.upserted`,
    /// `user.deactivated`, `users.synced`, `permissions.applied`.
    pub kind: String,
    /// The kind's payload object.
    pub payload: Value,
    /// Free-form (source, trace id, occurred_at): logged, otherwise ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// A payload, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    TenantCreated(TenantCreated),
    TenantDeleted(TenantDeleted),
    TenantUpdated(TenantUpdated),
    UserUpserted(UserUpserted),
    UserDeactivated(UserDeactivated),
    UsersSynced(UsersSynced),
    PermissionsApplied(Box<PermissionsApplied>),
}

/// Every kind the worker runs.
pub const KINDS: &[&str] = &[
    "tenant.created",
    "tenant.deleted",
    "tenant.updated",
    "user.upserted",
    "user.deactivated",
    "users.synced",
    "permissions.applied",
];

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::TenantCreated(_) => "tenant.created",
            Job::TenantDeleted(_) => "tenant.deleted",
            Job::TenantUpdated(_) => "tenant.updated",
            Job::UserUpserted(_) => "user.upserted",
            Job::UserDeactivated(_) => "user.deactivated",
            Job::UsersSynced(_) => "users.synced",
            Job::PermissionsApplied(_) => "permissions.applied",
        }
    }

    /// The tenant a job is about, for logs.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Job::TenantCreated(t) => Some(&t.tenant_id),
            Job::TenantDeleted(t) => Some(&t.tenant_id),
            Job::TenantUpdated(t) => Some(&t.tenant_id),
            Job::UserUpserted(u) => u.tenant_id.as_deref(),
            Job::UserDeactivated(u) => u.tenant_id.as_deref(),
            _ => None,
        }
    }
}

/// A validated job.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedJob {
    pub id: String,
    pub job: Job,
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// Why a message can never run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidJob {
    /// Dotted path of the offending field (`payload.admin_user.email`), or `body`.
    pub field: String,
    pub reason: String,
}

impl InvalidJob {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidJob {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parses and validates a message body.
pub fn parse(body: &[u8], message_id: Option<&str>) -> Result<ParsedJob, InvalidJob> {
    if body.len() > MAX_BODY {
        return Err(InvalidJob::new(
            "body",
            format!("{} bytes is over the 1 MiB limit", body.len()),
        ));
    }
    let envelope: Envelope = from_slice_with_path(body, "")?;
    let id = job_id(&envelope, body, message_id)?;
    let job = match envelope.kind.as_str() {
        "tenant.created" => Job::TenantCreated(payload(&envelope.payload)?),
        "tenant.deleted" => Job::TenantDeleted(payload(&envelope.payload)?),
        "tenant.updated" => Job::TenantUpdated(payload(&envelope.payload)?),
        "user.upserted" => Job::UserUpserted(payload(&envelope.payload)?),
        "user.deactivated" => Job::UserDeactivated(payload(&envelope.payload)?),
        "users.synced" => Job::UsersSynced(payload(&envelope.payload)?),
        "permissions.applied" => Job::PermissionsApplied(Box::new(payload(&envelope.payload)?)),
        other => {
            return Err(InvalidJob::new(
                "kind",
                format!("unknown kind {other:?} (known: {})", KINDS.join(", ")),
            ));
        }
    };
    Ok(ParsedJob {
        id,
        job,
        metadata: envelope.metadata,
    })
}

/// A payload whose own checks run after its shape is read.
pub trait Validate {
    /// Checks beyond the shape; `Err` names the field below `payload`.
    fn validate(&self) -> Result<(), InvalidJob>;
}

fn payload<T: DeserializeOwned + Validate>(value: &Value) -> Result<T, InvalidJob> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "payload".to_string()
        } else {
            format!("payload.{path}")
        };
        InvalidJob::new(field, e.into_inner().to_string())
    })?;
    typed.validate().map_err(|e| InvalidJob {
        field: format!("payload.{}", e.field),
        reason: e.reason,
    })?;
    Ok(typed)
}

fn from_slice_with_path<T: DeserializeOwned>(body: &[u8], prefix: &str) -> Result<T, InvalidJob> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let typed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return InvalidJob::new("body", format!("not JSON: {inner}"));
        }
        let field = if path == "." || path.is_empty() {
            if prefix.is_empty() {
                "envelope".into()
            } else {
                prefix.into()
            }
        } else {
            path
        };
        InvalidJob::new(field, inner.to_string())
    })?;
    de.end()
        .map_err(|e| InvalidJob::new("body", format!("not JSON: {e}")))?;
    Ok(typed)
}

/// The envelope's `id` when valid; otherwise the queue's rule (message id, then a content hash),
/// so that the worker, `publish` and `dlq` name a job the same way.
fn job_id(
    envelope: &Envelope,
    body: &[u8],
    message_id: Option<&str>,
) -> Result<String, InvalidJob> {
    if let Some(id) = &envelope.id {
        let n = id.chars().count();
        if n == 0 || n > MAX_ID {
            return Err(InvalidJob::new(
                "id",
                format!("must be 1 to {MAX_ID} characters, got {n}"),
            ));
        }
    }
    let message_id = message_id.filter(|m| m.chars().count() <= MAX_ID);
    Ok(crate::queue::envelope_id(body, message_id))
}

/// `tenant_id`: a string of 1 to 100 characters; an integer is read as its decimal string.
pub fn tenant_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or an integer, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(v: Value) -> String {
        parse(v.to_string().as_bytes(), None)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    fn tenant(extra: Value) -> Value {
        let mut p = json!({"tenant_id": 42, "tenant_name": "Acme", "database_id": 3,
                           "admin_user": {"email": "ada@acme.test"}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        json!({"kind": "tenant.created", "payload": p})
    }

    #[test]
    fn ids_follow_the_contract() {
        let body = tenant(json!({})).to_string();
        let hashed = parse(body.as_bytes(), None).unwrap();
        assert_eq!(hashed.id.len(), 64, "a content hash when no id is given");
        assert_eq!(parse(body.as_bytes(), Some("mid-1")).unwrap().id, "mid-1");
        let mut with_id = tenant(json!({}));
        with_id["id"] = json!("t-42");
        assert_eq!(
            parse(with_id.to_string().as_bytes(), Some("mid-1"))
                .unwrap()
                .id,
            "t-42"
        );
        match parse(body.as_bytes(), None).unwrap().job {
            Job::TenantCreated(t) => {
                assert_eq!(t.tenant_id, "42", "integers read as decimal strings")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_names_its_field() {
        let cases = [
            (
                json!({"kind": "tenant.created"}),
                "envelope: missing field `payload`",
            ),
            (
                json!({"id": "", "kind": "user.deactivated", "payload": {"email": "a@b.test"}}),
                "id: must be 1 to 200 characters",
            ),
            (
                json!({"kind": "user.deactivated", "payload": {"email": "a@b.test"}, "extra": 1}),
                "unknown field `extra`",
            ),
            (
                tenant(json!({"database_id": 0})),
                "payload.database_id: must be a positive id",
            ),
            (
                tenant(json!({"tenant_id": true})),
                "payload.tenant_id: expected a string or an integer",
            ),
            (
                tenant(json!({"tenant_id": ""})),
                "payload.tenant_id: must be 1 to 100 characters",
            ),
            (
                tenant(json!({"data_access": "everything"})),
                "payload.data_access: unknown variant `everything`",
            ),
            (
                tenant(json!({"sandbox": {"tables": []}})),
                "payload.sandbox: only allowed when data_access is \"sandboxed\"",
            ),
            (
                tenant(json!({"data_access": "sandboxed", "sandbox": {"tables": []}})),
                "payload.sandbox.tables: must list at least one table",
            ),
            (
                json!({"kind": "user.upserted", "payload": {"email": "a@b.test", "login_attributes": {"@tenant": "x"}}}),
                "payload.login_attributes.@tenant",
            ),
            (
                json!({"kind": "user.upserted", "payload": {"email": "a@b.test", "groups": ["all users"]}}),
                "payload.groups[0]: \"all users\" is a built-in group",
            ),
            (
                json!({"kind": "user.upserted", "payload": {"email": "a@b.test", "groups": ["ALL USERS"]}}),
                "payload.groups[0]: \"ALL USERS\" is a built-in group",
            ),
            (
                json!({"kind": "user.upserted", "payload": {"email": "a@b.test", "groups": ["Ok", "Administrators\u{200B}"]}}),
                "payload.groups[1]: contains U+200B, a control or invisible character",
            ),
            (
                json!({"kind": "users.synced", "payload": {"managed_groups": ["\u{0410}dministrators"], "users": []}}),
                "payload.managed_groups[0]: \"Аdministrators\" looks like the built-in group \"Administrators\"",
            ),
            (
                json!({"kind": "users.synced", "payload": {"managed_groups": ["A"], "users": [
                {"email": "a@b.test", "groups": ["All  Users"]}]}}),
                "payload.users[0].groups[0]: \"All  Users\" looks like the built-in group \"All Users\"",
            ),
            (
                json!({"kind": "permissions.applied", "payload": {"document": {"version": 1, "groups": {
                "\u{FF21}ll Users": {}}}}}),
                "payload.document.groups.Ａll Users: \"Ａll Users\" looks like the built-in group",
            ),
            (
                tenant(json!({"tenant_id": "42\u{200D}"})),
                "payload.tenant_id: names the tenant's group, which contains U+200D",
            ),
            (
                json!({"kind": "users.synced", "payload": {"managed_groups": ["A"], "users": [
                {"email": "a@b.test"}, {"email": "A@b.test"}]}}),
                "payload.users[1].email: listed twice",
            ),
            (
                json!({"kind": "users.synced", "payload": {"managed_groups": ["A"], "users": [
                {"email": "a@b.test", "groups": ["B"]}]}}),
                "payload.users[0].groups[0]: \"B\" is not in managed_groups",
            ),
            (
                json!({"kind": "users.synced", "payload": {"managed_groups": ["A"], "users": [
                {"email": "nope"}]}}),
                "payload.users[0].email: \"nope\" is not a valid email address",
            ),
        ];
        for (input, want) in cases {
            let got = error(input.clone());
            assert!(got.contains(want), "{input}\n  got:  {got}\n  want: {want}");
        }
    }

    #[test]
    fn emails_are_checked_the_way_metabase_would() {
        use super::super::payloads::check_email;
        for ok in ["ada@acme.test", "a.b+c@sub.example.co"] {
            assert!(check_email("e", ok).is_ok(), "{ok}");
        }
        for bad in [
            "ada",
            "@acme.test",
            "ada@acme",
            "ada@acme..test",
            "a da@acme.test",
            "ada@ac_me.test",
        ] {
            assert!(check_email("e", bad).is_err(), "{bad}");
        }
    }
}
