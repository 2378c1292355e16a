//! The writer's operations on everything besides messages: DLQ removal, signing keys, queues,
//! flow-control settings, URL groups, and retention.

use super::rows::headers_json;
use crate::error::Result;
use crate::model::*;
use rusqlite::{Connection, OptionalExtension, params};
use tern_core::HeaderList;

/// The most rows one purge op deletes per table, so the writer never stalls for long.
const PURGE_CHUNK: usize = 5000;

pub fn delete_dlq(connection: &Connection, user_id: &str, dlq_ids: &[String]) -> Result<u64> {
    let mut statement = connection
        .prepare_cached("UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = ?1 AND dlq_id = ?2")?;
    let mut deleted = 0;
    for dlq_id in dlq_ids {
        deleted += statement.execute(params![user_id, dlq_id])? as u64;
    }
    Ok(deleted)
}

pub fn save_keys(connection: &Connection, user_id: &str, keys: &StoredKeys) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO signing_keys (user_id, current, next, configured_current, configured_next)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![user_id, keys.current, keys.next, keys.configured_current, keys.configured_next])?;
    Ok(())
}

pub fn upsert_queue(
    connection: &Connection,
    user_id: &str,
    name: &str,
    parallelism: u32,
    paused: bool,
    now: i64,
) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO queues (user_id, name, parallelism, paused, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (user_id, name) DO UPDATE SET
                parallelism = excluded.parallelism, paused = excluded.paused, updated_at = excluded.updated_at",
        )?
        .execute(params![user_id, name, parallelism, paused, now])?;
    Ok(())
}

/// Saves a key's settings. Its window goes through the same rule as [`save_flow_windows`]: the
/// dispatcher records windows too, and whichever write comes last, the newer window stays.
pub fn save_flow(connection: &Connection, user_id: &str, key: &str, settings: &FlowSettings) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO flow_keys (user_id, key, parallelism, rate, period_secs, paused, pinned_parallelism,
                pinned_rate) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (user_id, key) DO UPDATE SET parallelism = excluded.parallelism, rate = excluded.rate,
                period_secs = excluded.period_secs, paused = excluded.paused,
                pinned_parallelism = excluded.pinned_parallelism, pinned_rate = excluded.pinned_rate",
        )?
        .execute(params![
            user_id,
            key,
            settings.parallelism,
            settings.rate,
            settings.period_secs as i64,
            settings.paused,
            settings.pinned_parallelism,
            settings.pinned_rate,
        ])?;
    if let Some(start) = settings.window_start {
        save_window(connection, user_id, key, start, settings.window_count)?;
    }
    Ok(())
}

/// Records rate windows; one older than the stored window (a late write) changes nothing.
pub fn save_flow_windows(connection: &Connection, windows: &[FlowWindow]) -> Result<()> {
    for window in windows {
        save_window(connection, &window.user_id, &window.key, window.start, window.count)?;
    }
    Ok(())
}

/// A window replaces the stored one only if it started later, or at the same time with more
/// starts. A reset is a window of no starts opened at the reset, so it replaces every window
/// before it (one opened in the same millisecond excepted).
fn save_window(connection: &Connection, user_id: &str, key: &str, start: i64, count: u32) -> Result<()> {
    connection
        .prepare_cached(
            "UPDATE flow_keys SET window_start = ?3, window_count = ?4 WHERE user_id = ?1 AND key = ?2
                AND (window_start IS NULL OR window_start < ?3 OR (window_start = ?3 AND window_count < ?4))",
        )?
        .execute(params![user_id, key, start, count])?;
    Ok(())
}

/// Deletes idle keys; the operator's settings (a pause, a pin) keep a key. A publish racing
/// this may lose its key's row; its message still carries the limits, and recovery takes them
/// from there (the engine's scheduler), so the race costs nothing but the row.
pub fn forget_flows(connection: &Connection, keys: &[(String, String)]) -> Result<()> {
    let mut statement = connection.prepare_cached(
        "DELETE FROM flow_keys WHERE user_id = ?1 AND key = ?2
            AND paused = 0 AND pinned_parallelism = 0 AND pinned_rate = 0",
    )?;
    for (user_id, key) in keys {
        statement.execute(params![user_id, key])?;
    }
    Ok(())
}

/// Adds endpoints (creating the group), or renames those whose URL is already there; at a
/// limit nothing is written. The limits are checked by counting rows, never reading them.
pub fn add_endpoints(
    connection: &Connection,
    user_id: &str,
    group: &str,
    endpoints: &[Endpoint],
    now: i64,
    limits: GroupLimits,
) -> Result<EndpointsAdded> {
    let existing: i64 = connection
        .prepare_cached("SELECT count(*) FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2")?
        .query_row(params![user_id, group], |row| row.get(0))?;
    if existing == 0 {
        let group_exists = connection
            .prepare_cached("SELECT 1 FROM url_groups WHERE user_id = ?1 AND name = ?2")?
            .query_row(params![user_id, group], |_| Ok(()))
            .optional()?
            .is_some();
        let groups: i64 = connection
            .prepare_cached("SELECT count(*) FROM url_groups WHERE user_id = ?1")?
            .query_row([user_id], |row| row.get(0))?;
        if !group_exists && groups as usize >= limits.groups {
            return Ok(EndpointsAdded::GroupLimitReached);
        }
    }
    let mut new_urls: Vec<&str> = Vec::new();
    for endpoint in endpoints {
        let known = connection
            .prepare_cached("SELECT 1 FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2 AND url = ?3")?
            .query_row(params![user_id, group, endpoint.url], |_| Ok(()))
            .optional()?
            .is_some();
        if !known && !new_urls.contains(&endpoint.url.as_str()) {
            new_urls.push(&endpoint.url);
        }
    }
    if existing as usize + new_urls.len() > limits.endpoints {
        return Ok(EndpointsAdded::EndpointLimitReached);
    }
    connection
        .prepare_cached(
            "INSERT INTO url_groups (user_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (user_id, name) DO UPDATE SET updated_at = excluded.updated_at",
        )?
        .execute(params![user_id, group, now])?;
    for endpoint in endpoints {
        let renamed = connection
            .prepare_cached(
                "UPDATE url_group_endpoints SET name = ?4 WHERE user_id = ?1 AND group_name = ?2 AND url = ?3",
            )?
            .execute(params![user_id, group, endpoint.url, endpoint.name])?;
        if renamed == 0 {
            let position: i64 = connection
                .prepare_cached(
                    "SELECT coalesce(max(position) + 1, 0) FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2",
                )?
                .query_row(params![user_id, group], |row| row.get(0))?;
            connection
                .prepare_cached(
                    "INSERT INTO url_group_endpoints (user_id, group_name, position, url, name) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![user_id, group, position, endpoint.url, endpoint.name])?;
        }
    }
    Ok(EndpointsAdded::Added)
}

/// Removes endpoints matching by URL or name; a group left empty is deleted.
pub fn remove_endpoints(
    connection: &Connection,
    user_id: &str,
    group: &str,
    endpoints: &[Endpoint],
    now: i64,
) -> Result<()> {
    for endpoint in endpoints {
        connection
            .prepare_cached(
                "DELETE FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2
                    AND (url = ?3 OR (?4 IS NOT NULL AND name = ?4))",
            )?
            .execute(params![user_id, group, endpoint.url, endpoint.name])?;
    }
    let remaining: Option<i64> = connection
        .prepare_cached("SELECT 1 FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2 LIMIT 1")?
        .query_row(params![user_id, group], |row| row.get(0))
        .optional()?;
    if remaining.is_none() {
        delete_group(connection, user_id, group)?;
    } else {
        connection
            .prepare_cached("UPDATE url_groups SET updated_at = ?3 WHERE user_id = ?1 AND name = ?2")?
            .execute(params![user_id, group, now])?;
    }
    Ok(())
}

/// Replaces a group's default publish headers. Returns whether the group exists.
pub fn set_group_headers(
    connection: &Connection,
    user_id: &str,
    group: &str,
    headers: &HeaderList,
    now: i64,
) -> Result<bool> {
    let updated = connection
        .prepare_cached("UPDATE url_groups SET default_headers = ?3, updated_at = ?4 WHERE user_id = ?1 AND name = ?2")?
        .execute(params![user_id, group, headers_json(headers), now])?;
    Ok(updated > 0)
}

/// Deletes a group and its endpoints. Returns whether it existed.
pub fn delete_group(connection: &Connection, user_id: &str, group: &str) -> Result<bool> {
    connection
        .prepare_cached("DELETE FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2")?
        .execute(params![user_id, group])?;
    let deleted = connection
        .prepare_cached("DELETE FROM url_groups WHERE user_id = ?1 AND name = ?2")?
        .execute(params![user_id, group])?;
    Ok(deleted > 0)
}

pub fn purge(connection: &Connection, now: i64, retention: Retention) -> Result<PurgeStats> {
    let log_cutoff = now.saturating_sub(retention.logs.as_millis() as i64);
    let dlq_cutoff = now.saturating_sub(retention.dlq.as_millis() as i64);
    let chunk = PURGE_CHUNK as i64;
    let dlq_entries = connection.execute(
        "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE id IN
            (SELECT id FROM messages WHERE dlq_id IS NOT NULL AND dlq_at < ?1 LIMIT ?2)",
        params![dlq_cutoff, chunk],
    )? as u64;
    let messages = connection.execute(
        "DELETE FROM messages WHERE id IN
            (SELECT id FROM messages WHERE finished_at IS NOT NULL AND dlq_id IS NULL AND finished_at < ?1 LIMIT ?2)",
        params![log_cutoff, chunk],
    )? as u64;
    // Log sequence numbers grow with time, so the oldest entries are at the start of the table:
    // find the last expired one among the first chunk instead of scanning every entry.
    let last_expired: Option<i64> = connection.query_row(
        "SELECT max(seq) FROM (SELECT seq, time FROM logs ORDER BY seq LIMIT ?2) WHERE time < ?1",
        params![log_cutoff, chunk],
        |row| row.get(0),
    )?;
    let logs = match last_expired {
        Some(seq) => {
            connection.execute("DELETE FROM logs WHERE seq <= ?1 AND time < ?2", params![seq, log_cutoff])? as u64
        }
        None => 0,
    };
    let dedup_keys = connection.execute(
        "DELETE FROM dedup WHERE (user_id, key) IN (SELECT user_id, key FROM dedup WHERE expires_at <= ?1 LIMIT ?2)",
        params![now, chunk],
    )? as u64;
    // Ended runs go with their logs, unless a DLQ entry still offers to resume them; their steps
    // go with them.
    let ended_runs = "SELECT run_key FROM workflow_runs r INDEXED BY workflow_runs_completed
        WHERE r.completed_at < ?1 AND (r.dlq_id IS NULL OR NOT EXISTS (SELECT 1 FROM messages m WHERE m.dlq_id = r.dlq_id))
        LIMIT ?2";
    // A run may hold thousands of records: fewer runs per chunk.
    let run_chunk = (PURGE_CHUNK / 50).max(1) as i64;
    connection.execute(
        &format!("DELETE FROM workflow_steps WHERE run_key IN ({ended_runs})"),
        params![log_cutoff, run_chunk],
    )?;
    let runs = connection.execute(
        &format!("DELETE FROM workflow_runs WHERE run_key IN ({ended_runs})"),
        params![log_cutoff, run_chunk],
    )? as u64;
    let more = [logs, messages, dlq_entries, dedup_keys].iter().any(|count| *count >= chunk as u64)
        || runs >= run_chunk as u64;
    Ok(PurgeStats { logs, messages, dlq_entries, dedup_keys, runs, more })
}
