//! Permissions as code (CONTRACT.md §5): a desired-state document, planned against Metabase
//! and applied through the same locked, revision-fenced graph writes as the worker.

mod apply;
mod document;
pub mod plan;

pub use apply::{LoadError, apply, apply_from_message, load, plan_live, read_state};
pub use document::{DbSpec, Document, DocumentError, GroupSpec, SandboxRef, TableSpec};
pub use plan::{CurrentState, Plan, PlanLine};
