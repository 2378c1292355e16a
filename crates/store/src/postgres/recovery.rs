//! What the scheduler needs at start: every unfinished message, and the finished queue
//! messages whose callbacks still run. Cancels that waited for an attempt cut off by a crash
//! are finished here.

use super::client::GenericClient;
use super::rows::parse_id;
use crate::batch::Effects;
use crate::error::Result;
use crate::model::*;
use futures_util::TryStreamExt;
use tern_core::{FlowControl, LogState, MessageSpec, MessageState};

pub async fn scan(c: &impl GenericClient, now: i64, effects: &mut Effects) -> Result<()> {
    let started = std::time::Instant::now();
    let waiting =
        c.query("SELECT id, user_id FROM messages WHERE state = $1", &[&MessageState::CancelRequested.code()]).await?;
    for row in waiting {
        let (id, user_id): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        c.execute(
            "UPDATE messages SET state = $2, finished_at = $3, due_at = NULL WHERE id = $1",
            &[&id, &MessageState::Canceled.code(), &now],
        )
        .await?;
        c.execute(
            "INSERT INTO logs (user_id, message_id, time, state) VALUES ($1, $2, $3, $4)",
            &[&user_id, &id, &now, &LogState::Canceled.code()],
        )
        .await?;
    }

    // A finished queue message keeps its place while one of its callbacks is unfinished.
    let settling = c
        .query(
            "SELECT DISTINCT s.id, s.user_id, s.queue_name, s.seq FROM messages c JOIN messages s ON s.id = c.source_id
             WHERE c.state < 3 AND c.source_id IS NOT NULL AND s.state >= 3 AND s.queue_name IS NOT NULL",
            &[],
        )
        .await?;
    for row in settling {
        let id: String = row.try_get(0)?;
        effects.changes.push(Change::Settling {
            id: parse_id(&id)?,
            user_id: row.try_get(1)?,
            queue_name: row.try_get(2)?,
            seq: row.try_get::<_, i64>(3)? as u64,
        });
    }

    // Sized once (the partial index counts them cheaply): the list grows to a million
    // entries and more after a long outage, and growing it step by step copies it each time.
    let count: i64 = c.query_one("SELECT count(*) FROM messages WHERE state < 3", &[]).await?.try_get(0)?;
    effects.changes.reserve(count as usize);
    scan_unfinished(c, effects).await?;
    tracing::info!(changes = effects.changes.len(), micros = started.elapsed().as_micros() as u64, "recovery scan");
    Ok(())
}

/// Every unfinished message that waits for an attempt, in enqueue order. The rows are streamed,
/// never all held at once.
async fn scan_unfinished(c: &impl GenericClient, effects: &mut Effects) -> Result<()> {
    let rows = c
        .query_raw(
            "SELECT id, user_id, due_at, seq, queue_name, source_id, flow_control_key, spec FROM messages
             WHERE state < 3 AND due_at IS NOT NULL ORDER BY seq",
            &[],
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await? {
        let id: String = row.try_get(0)?;
        let source: Option<String> = row.try_get(5)?;
        let flow_key: Option<String> = row.try_get(6)?;
        let flow_control: Option<FlowControl> = match flow_key {
            Some(_) => serde_json::from_str::<MessageSpec>(&row.try_get::<_, String>(7)?)?.flow_control,
            None => None,
        };
        effects.changes.push(Change::Scheduled(Scheduled {
            id: parse_id(&id)?,
            user_id: row.try_get(1)?,
            due_at: row.try_get(2)?,
            seq: row.try_get::<_, i64>(3)? as u64,
            queue_name: row.try_get(4)?,
            source: source.as_deref().map(parse_id).transpose()?,
            flow_control,
            is_new: false,
            message: None,
        }));
    }
    Ok(())
}
