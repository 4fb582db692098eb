//! The integration tests, in one binary: one link instead of one per file. Each module is a
//! former `tests/NAME.rs`; the shared harnesses are `support` (emulator, workers, prefixes)
//! and `queue_support` (the broker-level helpers).

mod queue_support;
mod support;

mod audit;
mod bootstrap;
mod client_contract;
mod conformance;
mod dlq_ops;
mod dlq_volume;
mod e2e_collection_snapshot;
mod e2e_graph;
mod e2e_jobs;
mod e2e_lifecycle;
mod e2e_native_tenancy;
mod e2e_retries;
mod e2e_tenant;
mod e2e_tenant_identity;
mod e2e_tenant_rename;
mod e2e_writer_supervision;
mod editions;
mod emulator_http;
mod emulator_tenants;
mod graph_writer;
mod group_commit;
mod intake;
mod lock_redis;
mod metric_names;
mod models_roundtrip;
mod ops_server;
mod queue_cli;
mod queue_intake;
mod queue_worker;
mod schemas;
mod store_redis;
mod topology_migration;
mod traces;
mod unknown_outcomes;
mod writer_support;
