//! A graph-writer task that dies is restarted, and the jobs it held are retried, not lost
//! (issue 12). `MBPROV_TEST_PANIC_WRITER` (test-only) makes the named writer panic on its first
//! batch.

use crate::support::{Stack, tenant_created};

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_task_that_panics_is_restarted_and_its_jobs_complete() {
    for graph in ["collection", "data"] {
        let mut stack = Stack::start().await;
        stack
            .spawn_worker_with(&[("MBPROV_TEST_PANIC_WRITER", graph)])
            .await;
        stack.publish(&[tenant_created(1)]).await;
        stack.wait_done("tenant-1-created").await;
        // The restarted task keeps serving.
        stack.publish(&[tenant_created(2)]).await;
        stack.wait_done("tenant-2-created").await;
        let log = stack.worker_log(0);
        assert!(
            log.contains(&format!("the {graph} writer panics on purpose")),
            "{graph}: the hook fired"
        );
        assert!(
            log.contains("graph writer task panicked; restarting it"),
            "{graph}: the supervisor says so"
        );
        assert!(stack.dead_letters().await.is_empty(), "{graph}");
        stack.teardown().await;
    }
}
