//! A typed client of the Metabase REST API.
//!
//! It knows HTTP and Metabase's JSON, nothing of queues. Every failure becomes one
//! [`MetabaseError`], classified once as transient or permanent. One file per API area, like
//! octocrab: `users`, `groups`, `graph`, `collections`, `tables`, `sandboxes`, `session`.

mod client;
mod collections;
mod error;
mod graph;
mod groups;
pub mod models;
mod sandboxes;
mod session;
mod tables;
pub mod tenants;
mod users;

pub use client::{ApiKey, Auth, ClientConfig, MetabaseClient, RequestGate, RequestOutcome};
pub use error::MetabaseError;
pub use graph::DataGraphPut;
pub use users::UserQuery;
