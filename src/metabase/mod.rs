//! A typed client of the Metabase REST API.

pub mod models;
