//! What each job means: from a validated envelope to Metabase changes.
//!
//! Handlers know neither wire: they take a [`Context`] (Metabase client, Redis store, graph
//! writer) and return `Ok` or a classified [`JobError`]. [`JobRunner`] is the bridge the queue
//! calls: it de-duplicates by job id, opens the job's span and records metrics.

pub mod deadline;
mod directory;
pub mod envelope;
mod error;
pub mod group_names;
pub mod native;
pub mod payloads;
pub mod policy;
mod runner;
mod tenant_created;
mod tenant_deleted;
mod tenant_updated;
mod user_upserted;
mod users_synced;

use std::time::Duration;

pub use directory::Directory;
pub use error::JobError;
pub use runner::JobRunner;

use crate::graph::Features;
use crate::graph_writer::GraphWriter;
use crate::metabase::MetabaseClient;
use crate::store::JobStore;
use policy::BuiltinGroups;

/// Everything a handler may use.
#[derive(Clone)]
pub struct Context {
    pub mb: MetabaseClient,
    pub store: JobStore,
    pub writer: GraphWriter,
    pub features: Features,
    pub builtin: BuiltinGroups,
    /// Short per-entity and per-job locks.
    pub entity_lock_ttl: Duration,
    pub entity_lock_wait: Duration,
    /// `Some` in native tenancy (`MBPROV_TENANCY=native`).
    pub native: Option<native::NativeTenancy>,
}

impl Context {
    pub fn directory(&self) -> Directory<'_> {
        Directory::new(self)
    }
}

/// Runs one validated job.
pub async fn run(ctx: &Context, job: &envelope::Job) -> Result<(), JobError> {
    use envelope::Job;
    if let Some(n) = ctx.native
        && let Some(result) = native::run(ctx, n, job).await
    {
        return result;
    }
    match job {
        Job::TenantCreated(t) => {
            tenant_created::run(ctx, t).await?;
            native::join_extra_groups(ctx, t).await
        }
        Job::TenantUpdated(t) => tenant_updated::run(ctx, t).await,
        Job::TenantDeleted(t) => tenant_deleted::run(ctx, t).await,
        Job::UserUpserted(u) => user_upserted::upsert(ctx, u).await,
        Job::UserDeactivated(u) => user_upserted::deactivate(ctx, u).await,
        Job::UsersSynced(s) => users_synced::run(ctx, s).await,
        Job::PermissionsApplied(p) => crate::pac::apply_from_message(ctx, &p.document).await,
    }
}
