//! Steps waiting for events: waits, notifies, timeouts.

use super::writer::Context;
use crate::batch::Effects;
use crate::error::Result;
use crate::workflows::{Event, NewWaiter, NotifyOutcome, RunLimits, WaitOutcome};

pub async fn add_waiter(context: Context<'_>, waiter: &NewWaiter, effects: &mut Effects) -> Result<WaitOutcome> {
    todo!("port")
}

pub async fn notify(
    context: Context<'_>,
    event: &Event,
    now: i64,
    max_stored: usize,
    run_limits: RunLimits,
    effects: &mut Effects,
) -> Result<NotifyOutcome> {
    todo!("port")
}

pub async fn expire(
    context: Context<'_>,
    now: i64,
    limit: usize,
    run_limits: RunLimits,
    effects: &mut Effects,
) -> Result<u64> {
    todo!("port")
}
