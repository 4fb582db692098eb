//! The integration tests, in one binary: one link instead of one per file. Each module is a
//! former `tests/NAME.rs`; the shared harnesses are `support` (emulator, workers, prefixes)
//! and `queue_support` (the broker-level helpers).

mod queue_support;
mod support;

mod audit;
mod bootstrap;
mod client_contract;
mod conformance;
mod e2e_collection_snapshot;
mod e2e_graph;
mod e2e_jobs;
mod e2e_lifecycle;
mod e2e_retries;
mod e2e_tenant;
mod editions;
mod emulator_http;
mod graph_writer;
mod lock_redis;
mod models_roundtrip;
mod ops_server;
mod queue_cli;
mod queue_worker;
mod schemas;
mod store_redis;
