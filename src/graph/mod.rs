//! Permission-graph logic as pure functions: no I/O, table-tested.
//!
//! Metabase's two permission graphs are single objects for the whole instance. mbprov never
//! sends a whole graph: it computes *partial* bodies (only the groups and cells a job changes),
//! with explicit lowest values to revoke (omitting a key changes nothing), and checks what
//! Metabase answers against what was wanted, allowing for Metabase's own reshaping (collapsed
//! schemas, omitted least-permissive values, sparse collection cells).

pub mod access;
pub mod collection;
pub mod data;
pub mod granular;
pub mod snapshot;
pub mod snapshot_rules;
pub mod tenant_marker;

pub use access::{DataAccess, Features};
pub use collection::{CollectionOp, by_namespace, collection_body, foreign_collections};
pub use data::{DataChange, data_body, merge_changes, unsatisfied};
pub use snapshot::Snapshot;
