//! `mbprov audit`: reads Metabase once and reports tenant isolation problems.
//!
//! Exit 0 when nothing is flagged, 2 when something is, 1 on error. The rules are in
//! [`crate::audit`]; this file only reads the snapshot and prints.

use std::collections::BTreeMap;
use std::process::ExitCode;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::audit::{AuditOptions, Finding, Snapshot, audit, tenant_groups};
use crate::config::MetabaseArgs;
use crate::metabase::models::CollectionKey;
use crate::metabase::{MetabaseClient, MetabaseError, UserQuery};

use super::instance::{Instance, metabase_client};

/// Group member lists read at once (one request per tenant group).
const MEMBER_READS: usize = 8;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub metabase: MetabaseArgs,
    /// Print one JSON object (`{"tenants", "tenant_groups", "findings"}`) instead of lines.
    #[arg(long)]
    pub json: bool,
    /// A collection every tenant may see (templates, shared dashboards): not reported.
    /// Repeatable; an id or `root`.
    #[arg(long = "shared-collection", value_name = "ID")]
    pub shared_collections: Vec<CollectionKey>,
}

pub async fn run(args: AuditArgs) -> ExitCode {
    let snapshot = match read(&args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mbprov audit: {e}");
            return ExitCode::from(1);
        }
    };
    let options = AuditOptions {
        shared_collections: args.shared_collections.iter().copied().collect(),
    };
    let findings = audit(&snapshot, &options);
    let tenants = tenant_groups(&snapshot.groups);
    let tenant_count = tenants
        .values()
        .map(|t| t.tenant_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if args.json {
        println!("{}", to_json(&findings, tenant_count, tenants.len()));
    } else if findings.is_empty() {
        println!(
            "no isolation problem found ({tenant_count} tenant(s), {} tenant group(s))",
            tenants.len()
        );
    } else {
        for f in &findings {
            println!("{f}");
        }
        println!("{} isolation problem(s) found", findings.len());
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Each finding with its human line as `message`, for scripts that forward it.
fn to_json(findings: &[Finding], tenants: usize, tenant_groups: usize) -> Value {
    let items: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut v = json!(f);
            if let Some(o) = v.as_object_mut() {
                o.insert("message".into(), json!(f.to_string()));
            }
            v
        })
        .collect();
    json!({"tenants": tenants, "tenant_groups": tenant_groups, "findings": items})
}

async fn read(args: &AuditArgs) -> Result<Snapshot, String> {
    let mb = metabase_client(&args.metabase)?;
    read_snapshot(&mb).await.map_err(|e| e.to_string())
}

/// Everything the audit looks at. Whole graphs are read: this is an operator command, run
/// rarely, not a job.
pub async fn read_snapshot(mb: &MetabaseClient) -> Result<Snapshot, MetabaseError> {
    let instance = Instance::read(mb).await?;
    let groups = mb.list_groups().await?;
    let data = mb.data_graph().await?;
    let collections = mb.collection_graph().await?;
    let tenant_ids: Vec<i64> = tenant_groups(&groups).into_keys().collect();
    let members: BTreeMap<i64, _> = futures_util::stream::iter(tenant_ids)
        .map(|id| async move {
            // A group deleted since the list was read has no members to audit.
            let members = match mb.get_group(id).await {
                Ok(group) => group.members.unwrap_or_default(),
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e),
            };
            Ok((id, members))
        })
        .buffer_unordered(MEMBER_READS)
        .try_collect()
        .await?;
    let users = mb.list_users(&UserQuery::default()).await?.data;
    Ok(Snapshot {
        features: instance.features,
        all_users: instance.builtin.all_users,
        admin: instance.builtin.admin,
        groups,
        data,
        collections,
        members,
        users,
    })
}
