//! Writes of users' resources: DLQ deletes, keys, queues, flow-control keys, URL groups, and
//! retention.

use super::client::GenericClient;
use super::rows::headers_json;
use crate::error::Result;
use crate::model::*;
use tern_core::HeaderList;

/// The most rows one purge op deletes per table, so the writer never stalls for long.
const PURGE_CHUNK: usize = 5000;

/// Removes DLQ entries (the messages stay, as finished messages, until log retention); returns
/// how many of `dlq_ids` were the user's entries.
pub async fn delete_dlq(c: &impl GenericClient, user_id: &str, dlq_ids: &[String]) -> Result<u64> {
    if dlq_ids.is_empty() {
        return Ok(0);
    }
    // One statement for every id; an id named twice is an entry removed once, as one statement
    // per id would count it.
    Ok(c.execute(
        "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = $1 AND dlq_id = ANY($2)",
        &[&user_id, &dlq_ids],
    )
    .await?)
}

pub async fn save_keys(c: &impl GenericClient, user_id: &str, keys: &StoredKeys) -> Result<()> {
    c.execute(
        "INSERT INTO signing_keys (user_id, current, next, configured_current, configured_next)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE SET current = excluded.current, next = excluded.next,
            configured_current = excluded.configured_current, configured_next = excluded.configured_next",
        &[&user_id, &keys.current, &keys.next, &keys.configured_current, &keys.configured_next],
    )
    .await?;
    Ok(())
}

pub async fn upsert_queue(
    c: &impl GenericClient,
    user_id: &str,
    name: &str,
    parallelism: u32,
    paused: bool,
    now: i64,
) -> Result<()> {
    c.execute(
        "INSERT INTO queues (user_id, name, parallelism, paused, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
         ON CONFLICT (user_id, name) DO UPDATE SET
            parallelism = excluded.parallelism, paused = excluded.paused, updated_at = excluded.updated_at",
        &[&user_id, &name, &(parallelism as i64), &paused, &now],
    )
    .await?;
    Ok(())
}

/// Saves a key's settings. Its window goes through the same rule as [`save_flow_windows`]: the
/// dispatcher records windows too, and whichever write comes last, the newer window stays.
pub async fn save_flow(c: &impl GenericClient, user_id: &str, key: &str, settings: &FlowSettings) -> Result<()> {
    c.execute(
        "INSERT INTO flow_keys (user_id, key, parallelism, rate, period_secs, paused, pinned_parallelism,
            pinned_rate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (user_id, key) DO UPDATE SET parallelism = excluded.parallelism, rate = excluded.rate,
            period_secs = excluded.period_secs, paused = excluded.paused,
            pinned_parallelism = excluded.pinned_parallelism, pinned_rate = excluded.pinned_rate",
        &[
            &user_id,
            &key,
            &settings.parallelism.map(i64::from),
            &settings.rate.map(i64::from),
            &(settings.period_secs as i64),
            &settings.paused,
            &settings.pinned_parallelism,
            &settings.pinned_rate,
        ],
    )
    .await?;
    if let Some(start) = settings.window_start {
        save_window(c, user_id, key, start, settings.window_count).await?;
    }
    Ok(())
}

/// Records rate windows; one older than the stored window (a late write) changes nothing.
/// One statement for them all: per key, only the newest window of the list can win (the
/// windows of one key applied one by one leave the greatest `(start, count)`), and it then
/// goes through [`save_window`]'s rule.
pub async fn save_flow_windows(c: &impl GenericClient, windows: &[FlowWindow]) -> Result<()> {
    if windows.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = windows.iter().map(|window| window.user_id.as_str()).collect();
    let keys: Vec<&str> = windows.iter().map(|window| window.key.as_str()).collect();
    let starts: Vec<i64> = windows.iter().map(|window| window.start).collect();
    let counts: Vec<i64> = windows.iter().map(|window| i64::from(window.count)).collect();
    c.execute(
        "UPDATE flow_keys f SET window_start = w.start, window_count = w.count
         FROM (SELECT DISTINCT ON (user_id, key) user_id, key, start, count
               FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[]) AS u(user_id, key, start, count)
               ORDER BY user_id, key, start DESC, count DESC) w
         WHERE f.user_id = w.user_id AND f.key = w.key
            AND (f.window_start IS NULL OR f.window_start < w.start
                OR (f.window_start = w.start AND f.window_count < w.count))",
        &[&users, &keys, &starts, &counts],
    )
    .await?;
    Ok(())
}

/// A window replaces the stored one only if it started later, or at the same time with more
/// starts. A reset is a window of no starts opened at the reset, so it replaces every window
/// before it (one opened in the same millisecond excepted).
async fn save_window(c: &impl GenericClient, user_id: &str, key: &str, start: i64, count: u32) -> Result<()> {
    c.execute(
        "UPDATE flow_keys SET window_start = $3, window_count = $4 WHERE user_id = $1 AND key = $2
            AND (window_start IS NULL OR window_start < $3 OR (window_start = $3 AND window_count < $4))",
        &[&user_id, &key, &start, &i64::from(count)],
    )
    .await?;
    Ok(())
}

/// Deletes idle keys; the operator's settings (a pause, a pin) keep a key. A publish racing
/// this may lose its key's row; its message still carries the limits, and recovery takes them
/// from there (the engine's scheduler), so the race costs nothing but the row.
pub async fn forget_flows(c: &impl GenericClient, keys: &[(String, String)]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let (users, names): (Vec<&str>, Vec<&str>) = keys.iter().map(|(user, key)| (user.as_str(), key.as_str())).unzip();
    c.execute(
        "DELETE FROM flow_keys f USING unnest($1::TEXT[], $2::TEXT[]) AS k(user_id, key)
         WHERE f.user_id = k.user_id AND f.key = k.key
            AND NOT f.paused AND NOT f.pinned_parallelism AND NOT f.pinned_rate",
        &[&users, &names],
    )
    .await?;
    Ok(())
}

/// Adds endpoints (creating the group), or renames those whose URL is already there; at a
/// limit nothing is written. The limits are checked by counting rows, never reading them.
pub async fn add_endpoints(
    c: &impl GenericClient,
    user_id: &str,
    group: &str,
    endpoints: &[Endpoint],
    now: i64,
    limits: GroupLimits,
) -> Result<EndpointsAdded> {
    let existing: i64 = c
        .query_one(
            "SELECT count(*) FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2",
            &[&user_id, &group],
        )
        .await?
        .try_get(0)?;
    if existing == 0 {
        let group_exists = c
            .query_opt("SELECT 1 FROM url_groups WHERE user_id = $1 AND name = $2", &[&user_id, &group])
            .await?
            .is_some();
        let groups: i64 =
            c.query_one("SELECT count(*) FROM url_groups WHERE user_id = $1", &[&user_id]).await?.try_get(0)?;
        if !group_exists && groups as usize >= limits.groups {
            return Ok(EndpointsAdded::GroupLimitReached);
        }
    }
    // The URLs already in the group, read in one statement (only the ones asked about).
    let urls: Vec<&str> = endpoints.iter().map(|endpoint| endpoint.url.as_str()).collect();
    let known: Vec<String> = c
        .query(
            "SELECT url FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2 AND url = ANY($3)",
            &[&user_id, &group, &urls],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut new_urls: Vec<&str> = Vec::new();
    for url in urls {
        if !known.iter().any(|known| known == url) && !new_urls.contains(&url) {
            new_urls.push(url);
        }
    }
    if existing as usize + new_urls.len() > limits.endpoints {
        return Ok(EndpointsAdded::EndpointLimitReached);
    }
    c.execute(
        "INSERT INTO url_groups (user_id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (user_id, name) DO UPDATE SET updated_at = excluded.updated_at",
        &[&user_id, &group, &now],
    )
    .await?;
    for endpoint in endpoints {
        let renamed = c
            .execute(
                "UPDATE url_group_endpoints SET name = $4 WHERE user_id = $1 AND group_name = $2 AND url = $3",
                &[&user_id, &group, &endpoint.url, &endpoint.name],
            )
            .await?;
        if renamed == 0 {
            // Appended after the group's last endpoint, so that endpoints keep insertion order.
            c.execute(
                "INSERT INTO url_group_endpoints (user_id, group_name, position, url, name)
                 SELECT $1::TEXT, $2::TEXT, coalesce(max(position) + 1, 0), $3::TEXT, $4::TEXT
                 FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2",
                &[&user_id, &group, &endpoint.url, &endpoint.name],
            )
            .await?;
        }
    }
    Ok(EndpointsAdded::Added)
}

/// Removes endpoints matching by URL or name; a group left empty is deleted.
pub async fn remove_endpoints(
    c: &impl GenericClient,
    user_id: &str,
    group: &str,
    endpoints: &[Endpoint],
    now: i64,
) -> Result<()> {
    for endpoint in endpoints {
        c.execute(
            "DELETE FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2
                AND (url = $3 OR ($4::TEXT IS NOT NULL AND name = $4))",
            &[&user_id, &group, &endpoint.url, &endpoint.name],
        )
        .await?;
    }
    let remaining = c
        .query_opt(
            "SELECT 1 FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2 LIMIT 1",
            &[&user_id, &group],
        )
        .await?;
    if remaining.is_none() {
        delete_group(c, user_id, group).await?;
    } else {
        c.execute("UPDATE url_groups SET updated_at = $3 WHERE user_id = $1 AND name = $2", &[&user_id, &group, &now])
            .await?;
    }
    Ok(())
}

/// Replaces a group's default publish headers. Returns whether the group exists.
pub async fn set_group_headers(
    c: &impl GenericClient,
    user_id: &str,
    group: &str,
    headers: &HeaderList,
    now: i64,
) -> Result<bool> {
    let updated = c
        .execute(
            "UPDATE url_groups SET default_headers = $3, updated_at = $4 WHERE user_id = $1 AND name = $2",
            &[&user_id, &group, &headers_json(headers), &now],
        )
        .await?;
    Ok(updated > 0)
}

/// Deletes a group and its endpoints. Returns whether it existed.
pub async fn delete_group(c: &impl GenericClient, user_id: &str, group: &str) -> Result<bool> {
    c.execute("DELETE FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2", &[&user_id, &group]).await?;
    let deleted = c.execute("DELETE FROM url_groups WHERE user_id = $1 AND name = $2", &[&user_id, &group]).await?;
    Ok(deleted > 0)
}

pub async fn purge(c: &impl GenericClient, now: i64, retention: Retention) -> Result<PurgeStats> {
    let log_cutoff = now.saturating_sub(retention.logs.as_millis() as i64);
    let dlq_cutoff = now.saturating_sub(retention.dlq.as_millis() as i64);
    let chunk = PURGE_CHUNK as i64;
    let dlq_entries = c
        .execute(
            "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE id IN
                (SELECT id FROM messages WHERE dlq_id IS NOT NULL AND dlq_at < $1 LIMIT $2)",
            &[&dlq_cutoff, &chunk],
        )
        .await?;
    let messages = c
        .execute(
            "DELETE FROM messages WHERE id IN
                (SELECT id FROM messages WHERE finished_at IS NOT NULL AND dlq_id IS NULL AND finished_at < $1 LIMIT $2)",
            &[&log_cutoff, &chunk],
        )
        .await?;
    // Log sequence numbers grow with time, so the oldest entries are at the start of the table:
    // find the last expired one among the first chunk instead of scanning every entry.
    let last_expired: Option<i64> = c
        .query_one(
            "SELECT max(seq) FROM (SELECT seq, time FROM logs ORDER BY seq LIMIT $2) first WHERE time < $1",
            &[&log_cutoff, &chunk],
        )
        .await?
        .try_get(0)?;
    let logs = match last_expired {
        Some(seq) => c.execute("DELETE FROM logs WHERE seq <= $1 AND time < $2", &[&seq, &log_cutoff]).await?,
        None => 0,
    };
    let dedup_keys = c
        .execute(
            "DELETE FROM dedup WHERE (user_id, key) IN
                (SELECT user_id, key FROM dedup WHERE expires_at <= $1 LIMIT $2)",
            &[&now, &chunk],
        )
        .await?;
    // Ended runs go with their logs, unless a DLQ entry still offers to resume them; their steps
    // go with them, in the same statement, so that the steps deleted are those of the runs
    // deleted (two statements with a `LIMIT` each could pick different runs).
    // A run may hold thousands of records: fewer runs per chunk.
    let run_chunk = (PURGE_CHUNK / 50).max(1) as i64;
    let runs: i64 = c
        .query_one(
            "WITH runs AS (
                DELETE FROM workflow_runs WHERE run_key IN (
                    SELECT run_key FROM workflow_runs r
                    WHERE r.completed_at < $1
                        AND (r.dlq_id IS NULL OR NOT EXISTS (SELECT 1 FROM messages m WHERE m.dlq_id = r.dlq_id))
                    LIMIT $2)
                RETURNING run_key),
             steps AS (DELETE FROM workflow_steps WHERE run_key IN (SELECT run_key FROM runs))
             SELECT count(*) FROM runs",
            &[&log_cutoff, &run_chunk],
        )
        .await?
        .try_get(0)?;
    let runs = runs.max(0) as u64;
    let more = [logs, messages, dlq_entries, dedup_keys].iter().any(|count| *count >= chunk as u64)
        || runs >= run_chunk as u64;
    Ok(PurgeStats { logs, messages, dlq_entries, dedup_keys, runs, more })
}
