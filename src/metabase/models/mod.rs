//! Metabase's JSON, typed. Shared by the client and the emulator (the only code they share).
//!
//! Every struct tolerates unknown fields and keeps them in `extra`, so a newer Metabase that adds
//! keys round-trips through these types without loss. Permission values are enums with an
//! `Other` arm for the same reason.

mod collection;
mod graph;
mod group;
mod session;
mod table;
mod tenant;
mod user;

pub use collection::*;
pub use graph::*;
pub use group::*;
pub use session::*;
pub use table::*;
pub use tenant::*;
pub use user::*;

/// Keys a struct does not declare, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;
