//! mbprov: provisions Metabase users, groups and permissions from a RabbitMQ queue.
//!
//! Data flows one way: `queue` (AMQP) -> `jobs` (envelopes, handlers) -> `graph` (pure
//! permission-graph logic), `lock` (Redis) and `metabase` (typed HTTP client). The `emulator`
//! is a separate program behind `mbprov fake-metabase` that shares only `metabase::models`.

pub mod asyncapi;
pub mod audit;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod error;
pub mod graph;
pub mod graph_writer;
pub mod intake;
pub mod jobs;
pub mod lock;
pub mod metabase;
pub mod ops;
pub mod pac;
pub mod queue;
pub mod schema;
pub mod store;
pub mod telemetry;
pub mod trace;
