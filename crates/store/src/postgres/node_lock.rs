//! Which node writes: one node at a time is active on a database. It holds a session advisory
//! lock on its writer connection, so that PostgreSQL itself releases the lock when the node
//! dies or its connection drops, and the next node waiting for it takes over.
//!
//! Becoming active bumps `tern_nodes.epoch`. A node whose connection dropped takes the lock
//! again on reconnect only if the epoch is still its own: nobody was active meanwhile, so its
//! scheduler still knows everything. Otherwise another node has taken over (and may have
//! changed anything); this node refuses writes until it is restarted and loads the database
//! afresh — as the embedded store does after a failed fsync.

use crate::error::{Result, StoreError};
use tokio_postgres::Client;

/// The advisory lock of the active node (an arbitrary constant: "tern" + 1).
const ACTIVE_LOCK: i64 = 0x7465_726e + 1;

/// Waits until this connection holds the active node's lock, then bumps and returns the epoch.
pub async fn become_active(client: &Client) -> Result<i64> {
    watch_the_peer(client).await?;
    let announced = !try_lock(client).await?;
    if announced {
        tracing::warn!("another tern node is active on this database; standing by until it stops");
        // Granted the moment the active node's session ends (it stopped, died, or lost its
        // connection).
        client.execute("SELECT pg_advisory_lock($1)", &[&ACTIVE_LOCK]).await?;
    }
    let row = client
        .query_one(
            "INSERT INTO tern_nodes (id, epoch) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET epoch = tern_nodes.epoch + 1 RETURNING epoch",
            &[],
        )
        .await?;
    let epoch: i64 = row.try_get(0)?;
    if announced {
        tracing::info!(epoch, "this node is now the active one");
    }
    Ok(epoch)
}

/// How long a reconnecting node waits for its lock: the database still holds it for the old
/// session until it notices that session is gone (at once for a closed socket, within about
/// half a minute for a silent one, see [`watch_the_peer`]).
const RESUME_WAIT: &str = "60s";

/// Takes the lock again on a new connection of the node that was active at `epoch`. An
/// [`StoreError::Unavailable`] if another node has been active since; an
/// [`StoreError::Unreachable`] (try again) if the old session still holds the lock.
pub async fn resume(client: &Client, epoch: i64) -> Result<()> {
    watch_the_peer(client).await?;
    let taken_over = || {
        StoreError::Unavailable(
            "another tern node became active on the database while this node's connection was down".into(),
        )
    };
    let current_epoch = || async {
        let row = client.query_one("SELECT epoch FROM tern_nodes WHERE id = 1", &[]).await?;
        Ok::<i64, StoreError>(row.try_get(0)?)
    };
    if current_epoch().await? != epoch {
        return Err(taken_over());
    }
    client.batch_execute(&format!("SET lock_timeout = '{RESUME_WAIT}'")).await?;
    let locked = client.execute("SELECT pg_advisory_lock($1)", &[&ACTIVE_LOCK]).await;
    client.batch_execute("SET lock_timeout = 0").await?;
    if let Err(error) = locked {
        if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return Err(StoreError::Unreachable(
                "the database still holds this node's previous session; writes resume once it ends".into(),
            ));
        }
        return Err(error.into());
    }
    // Whoever held the lock meanwhile (a standby that took over) bumped the epoch.
    if current_epoch().await? != epoch {
        return Err(taken_over());
    }
    Ok(())
}

async fn try_lock(client: &Client) -> Result<bool> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&ACTIVE_LOCK]).await?;
    Ok(row.try_get(0)?)
}

/// Has the database end this session (releasing the lock) within about half a minute of the
/// node's host going silent, instead of the system's default of hours: keepalives probe an idle
/// connection that no closed socket told about.
async fn watch_the_peer(client: &Client) -> Result<()> {
    client
        .batch_execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
        .await?;
    Ok(())
}
