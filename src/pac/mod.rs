//! Permissions as code (CONTRACT.md §5): a desired-state document, planned against Metabase
//! and applied through the same locked, revision-fenced graph writes as the worker.

mod document;

pub use document::{DbSpec, Document, DocumentError, GroupSpec, SandboxRef, TableSpec};
