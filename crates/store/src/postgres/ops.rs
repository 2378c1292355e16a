//! Message writes: inserts (deduplication, DLQ replacement, workflow runs), attempts'
//! outcomes, cancels and queue deletes.

use super::writer::Context;
use crate::batch::Effects;
use crate::error::Result;
use crate::model::*;
use tern_core::MessageId;
use tokio_postgres::GenericClient;

pub async fn log_attempt_started(c: &(impl GenericClient + Sync), user_id: &str, id: MessageId, at: i64) -> Result<()> {
    todo!("port")
}

pub async fn insert_messages(
    context: Context<'_>,
    messages: Vec<NewMessage>,
    effects: &mut Effects,
) -> Result<Vec<InsertOutcome>> {
    todo!("port")
}

pub async fn finish_attempt(context: Context<'_>, outcome: &AttemptOutcome, effects: &mut Effects) -> Result<()> {
    todo!("port")
}

pub async fn cancel(
    context: Context<'_>,
    user_id: &str,
    selection: CancelSelection,
    now: i64,
    effects: &mut Effects,
) -> Result<CancelOutcome> {
    todo!("port")
}

pub async fn delete_queue(context: Context<'_>, user_id: &str, name: &str, now: i64, effects: &mut Effects) -> Result<bool> {
    todo!("port")
}
