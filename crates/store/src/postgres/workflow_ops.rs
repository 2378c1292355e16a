//! Workflow writes: ending and cancelling runs, failing them, calling the failure function
//! again.

use super::writer::Context;
use crate::batch::Effects;
use crate::error::Result;
use crate::workflows::{RunEnd, RunEndOutcome, RunFilter};

pub async fn end_run(
    context: Context<'_>,
    user_id: &str,
    run_id: &str,
    end: RunEnd,
    now: i64,
    effects: &mut Effects,
) -> Result<RunEndOutcome> {
    todo!("port")
}

pub async fn cancel_runs(
    context: Context<'_>,
    user_id: &str,
    filter: &RunFilter,
    limit: Option<usize>,
    now: i64,
    effects: &mut Effects,
) -> Result<u64> {
    todo!("port")
}

pub async fn call_failure_function_again(
    context: Context<'_>,
    user_id: &str,
    dlq_id: &str,
    now: i64,
    effects: &mut Effects,
) -> Result<Option<(String, i64)>> {
    todo!("port")
}
