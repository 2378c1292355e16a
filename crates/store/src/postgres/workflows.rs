//! Workflow reads, and the [`WorkflowStore`] capability of the PostgreSQL store.

use super::PostgresStore;
use crate::error::Result;
use crate::model::*;
use crate::workflows::*;
use async_trait::async_trait;
use tern_core::MessageId;
use tern_core::workflow::StepRecord;

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn get_run(&self, user_id: &str, run_id: &str) -> Result<Option<RunRecord>> {
        todo!("port")
    }

    async fn run_records(&self, user_id: &str, run_id: &str) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
        todo!("port")
    }

    async fn message_run(
        &self,
        user_id: &str,
        message_id: MessageId,
        wanted: WantedRecords,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
        todo!("port")
    }

    async fn end_run(&self, user_id: &str, run_id: &str, end: RunEnd, now: i64) -> Result<RunEndOutcome> {
        todo!("port")
    }

    async fn cancel_runs(&self, user_id: &str, filter: RunFilter, limit: Option<usize>, now: i64) -> Result<u64> {
        todo!("port")
    }

    async fn add_waiter(&self, waiter: NewWaiter) -> Result<WaitOutcome> {
        todo!("port")
    }

    async fn notify(&self, event: Event, now: i64, max_stored: usize, run_limits: RunLimits) -> Result<NotifyOutcome> {
        todo!("port")
    }

    async fn waiters(&self, user_id: &str, event_id: &str, limit: usize, max_bytes: usize) -> Result<Vec<WaiterView>> {
        todo!("port")
    }

    async fn expire_waiters(&self, now: i64, limit: usize, run_limits: RunLimits) -> Result<u64> {
        todo!("port")
    }

    async fn call_failure_function_again(
        &self,
        user_id: &str,
        dlq_id: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>> {
        todo!("port")
    }

    async fn failed_run(&self, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>> {
        todo!("port")
    }

    async fn next_waiter_deadline(&self) -> Result<Option<i64>> {
        todo!("port")
    }

    async fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &PageRequest) -> Result<Page<RunWithSteps>> {
        todo!("port")
    }
}
