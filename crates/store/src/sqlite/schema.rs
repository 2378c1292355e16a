//! The SQLite schema, connection settings and migrations.
//!
//! One `messages` row per message for its whole life: pending, finished (kept for log
//! retention) or in the DLQ (`dlq_id` set). Log entries reference messages instead of copying
//! them, so a message body is stored once however many entries it has.

use rusqlite::Connection;

/// States below this code are unfinished (see `MessageState::code`).
pub const FIRST_TERMINAL_STATE: i64 = 3;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state INTEGER NOT NULL,
    due_at INTEGER,
    retried INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    finished_at INTEGER,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    topic_name TEXT,
    queue_name TEXT,
    schedule_id TEXT,
    flow_control_key TEXT,
    labels TEXT,
    caller_ip TEXT,
    source_id TEXT,
    dlq_id TEXT,
    dlq_at INTEGER,
    spec TEXT NOT NULL,
    body BLOB NOT NULL,
    response_status INTEGER,
    response_headers TEXT,
    response_body BLOB,
    response_error TEXT
);
CREATE INDEX messages_unfinished ON messages(seq) WHERE state < 3;
CREATE INDEX messages_dlq ON messages(user_id, dlq_at, id) WHERE dlq_id IS NOT NULL;
CREATE INDEX messages_dlq_id ON messages(dlq_id) WHERE dlq_id IS NOT NULL;
CREATE INDEX messages_finished ON messages(finished_at) WHERE finished_at IS NOT NULL AND dlq_id IS NULL;

CREATE TABLE logs (
    seq INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    state INTEGER NOT NULL,
    error TEXT,
    next_delivery_time INTEGER,
    response_status INTEGER,
    response_headers TEXT,
    response_body BLOB
);
CREATE INDEX logs_user_time ON logs(user_id, time, seq);
CREATE INDEX logs_message ON logs(message_id);

CREATE TABLE dedup (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE INDEX dedup_expiry ON dedup(expires_at);

CREATE TABLE queues (
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    parallelism INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;

CREATE TABLE flow_keys (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    parallelism INTEGER,
    rate INTEGER,
    period_secs INTEGER NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    pinned_parallelism INTEGER NOT NULL DEFAULT 0,
    pinned_rate INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;

CREATE TABLE url_groups (
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;

CREATE TABLE url_group_endpoints (
    user_id TEXT NOT NULL,
    group_name TEXT NOT NULL,
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    name TEXT,
    PRIMARY KEY (user_id, group_name, position)
) WITHOUT ROWID;

CREATE TABLE schedules (
    user_id TEXT NOT NULL,
    id TEXT NOT NULL,
    cron TEXT NOT NULL,
    destination TEXT NOT NULL,
    queue_name TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    caller_ip TEXT,
    created_at INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    next_tick_at INTEGER,
    last_tick_at INTEGER,
    last_message_ids TEXT,
    error TEXT,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules(next_tick_at) WHERE paused = 0 AND next_tick_at IS NOT NULL;

CREATE TABLE signing_keys (
    user_id TEXT PRIMARY KEY,
    current TEXT NOT NULL,
    next TEXT NOT NULL,
    configured_current TEXT NOT NULL,
    configured_next TEXT NOT NULL
);
"#,
    r#"
-- Schedules move to a rowid table: their rows (a body each) are too wide for a WITHOUT ROWID
-- b-tree, which spent a page per row. Counting them for the per-user limit reads a kept count,
-- not the table.
CREATE TABLE schedules_rowid (
    user_id TEXT NOT NULL,
    id TEXT NOT NULL,
    cron TEXT NOT NULL,
    destination TEXT NOT NULL,
    queue_name TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    caller_ip TEXT,
    created_at INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    next_tick_at INTEGER,
    last_tick_at INTEGER,
    last_message_ids TEXT,
    error TEXT,
    PRIMARY KEY (user_id, id)
);
INSERT INTO schedules_rowid SELECT user_id, id, cron, destination, queue_name, headers, body, caller_ip,
    created_at, paused, next_tick_at, last_tick_at, last_message_ids, error FROM schedules;
DROP TABLE schedules;
ALTER TABLE schedules_rowid RENAME TO schedules;
CREATE INDEX schedules_due ON schedules(next_tick_at) WHERE paused = 0 AND next_tick_at IS NOT NULL;

CREATE TABLE schedule_counts (
    user_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO schedule_counts SELECT user_id, count(*) FROM schedules GROUP BY user_id;
-- An upsert that updates fires no INSERT trigger, so only new schedules are counted.
CREATE TRIGGER schedules_counted_in AFTER INSERT ON schedules BEGIN
    INSERT INTO schedule_counts VALUES (new.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER schedules_counted_out AFTER DELETE ON schedules BEGIN
    UPDATE schedule_counts SET count = count - 1 WHERE user_id = old.user_id;
END;
"#,
    r#"
-- A URL group's default publish headers (`PATCH /v2/topics/{name}`), a JSON header list.
ALTER TABLE url_groups ADD COLUMN default_headers TEXT;
"#,
    r#"
-- A rate-limited key's open window, so that a restart does not grant a fresh one.
ALTER TABLE flow_keys ADD COLUMN window_start INTEGER;
ALTER TABLE flow_keys ADD COLUMN window_count INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Schedules are listed in creation order, a page at a time: an index range, not a sort of
-- every row (bodies included) before the first is returned.
CREATE INDEX schedules_by_creation ON schedules(user_id, created_at, id);
"#,
    r#"
-- Workflow runs (workflow-protocol.md): a run's state and trigger configuration, and its
-- recorded messages in acceptance order (bodies kept here, as messages may be purged while a
-- run sleeps for longer than log retention). A message names its run, so that ending a run
-- finds the run's unfinished messages in an index range.
ALTER TABLE messages ADD COLUMN workflow_run_id TEXT;
ALTER TABLE messages ADD COLUMN workflow_run_key INTEGER;
CREATE INDEX messages_workflow_run ON messages(workflow_run_key, seq)
    WHERE workflow_run_key IS NOT NULL AND state < 3;

-- A run id names one started run at a time: once a run ended, a trigger with its id starts
-- another run (the SDKs' "same run id" case), so runs have a key of their own.
CREATE TABLE workflow_runs (
    run_key INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state INTEGER NOT NULL,
    completed_at INTEGER,
    response BLOB,
    config TEXT NOT NULL,
    labels TEXT,
    invoker TEXT,
    dlq_id TEXT,
    caller_ip TEXT,
    flow_control_key TEXT,
    step_count INTEGER NOT NULL DEFAULT 0,
    step_bytes INTEGER NOT NULL DEFAULT 0,
    -- The failure callback of a failed run (the message carrying the failure function's call).
    failure_message_id TEXT,
    -- What the end of an invoked run publishes to its invoker (`RunInvoker`, JSON), and the
    -- invoker's run.
    invoker_reply TEXT,
    invoker_run_key INTEGER,
    -- The host and path of the run's URL, for the `host` and `path` filters.
    host TEXT,
    path TEXT,
    -- The message whose failure failed the run (its DLQ entry may be resumed and gone).
    failed_message_id TEXT
);
CREATE INDEX workflow_runs_by_id ON workflow_runs(user_id, run_id, run_key);
CREATE UNIQUE INDEX workflow_runs_started ON workflow_runs(user_id, run_id) WHERE state = 0;
CREATE INDEX workflow_runs_by_creation ON workflow_runs(user_id, created_at, run_id);
CREATE INDEX workflow_runs_completed ON workflow_runs(completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX workflow_runs_dlq ON workflow_runs(dlq_id) WHERE dlq_id IS NOT NULL;

CREATE TABLE workflow_steps (
    run_key INTEGER NOT NULL,
    position INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    call_type INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_key, position)
);
CREATE INDEX workflow_steps_message ON workflow_steps(message_id);

-- Steps waiting for an event, with the messages the event or the deadline publishes.
CREATE TABLE workflow_waiters (
    waiter_key INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_key INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    step TEXT NOT NULL,
    on_event TEXT NOT NULL,
    on_timeout TEXT NOT NULL,
    view TEXT NOT NULL,
    -- A wait for a webhook's call (`waitForWebhook`), which webhook calls may wake.
    webhook INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workflow_waiters_event ON workflow_waiters(user_id, event_id, waiter_key);
CREATE INDEX workflow_waiters_run ON workflow_waiters(run_key);
CREATE INDEX workflow_waiters_deadline ON workflow_waiters(deadline);

-- Run-scoped events that came before their wait, each for one wait.
CREATE TABLE workflow_events (
    event_key INTEGER PRIMARY KEY,
    run_key INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    data BLOB NOT NULL,
    -- A webhook's call (no token), which only a wait for a webhook takes.
    webhook INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workflow_events_run ON workflow_events(run_key, event_id, event_key);
"#,
];

/// Settings every connection gets. `synchronous=FULL` makes each commit an fsync of the WAL:
/// an acknowledged publish survives power loss, and group commit keeps that affordable. (The
/// writer's own connection then switches to `NORMAL`: the sync thread does that fsync for it,
/// see `syncer`.)
pub fn configure(connection: &Connection, durable: bool) -> rusqlite::Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(30))?;
    // Every statement of the hot path stays compiled (the default cache holds only 16).
    connection.set_prepared_statement_cache_capacity(256);
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?;
    connection.pragma_update(None, "foreign_keys", "OFF")?;
    connection.pragma_update(None, "cache_size", -8_192)?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Brings the database to the newest schema version.
pub fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule_count(connection: &Connection, user: &str) -> i64 {
        connection.query_row("SELECT count FROM schedule_counts WHERE user_id = ?1", [user], |row| row.get(0)).unwrap()
    }

    #[test]
    fn the_schedules_migration_keeps_rows_and_counts_them() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(MIGRATIONS[0]).unwrap();
        connection.pragma_update(None, "user_version", 1).unwrap();
        let insert = "INSERT INTO schedules (user_id, id, cron, destination, headers, body, created_at, paused,
                next_tick_at) VALUES (?1, ?2, '* * * * *', 'https://example.com', '[]', x'01', 1, 0, 60000)
             ON CONFLICT (user_id, id) DO UPDATE SET cron = excluded.cron";
        for (user, id) in [("u1", "a"), ("u1", "b"), ("u2", "a")] {
            connection.execute(insert, [user, id]).unwrap();
        }

        migrate(&mut connection).unwrap();
        let rows: i64 = connection.query_row("SELECT count(*) FROM schedules", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 3);
        assert_eq!((schedule_count(&connection, "u1"), schedule_count(&connection, "u2")), (2, 1));

        // The triggers keep the count: an overwrite is not a new schedule, a delete is one less.
        connection.execute(insert, ["u1", "a"]).unwrap();
        connection.execute(insert, ["u1", "c"]).unwrap();
        assert_eq!(schedule_count(&connection, "u1"), 3);
        connection.execute("DELETE FROM schedules WHERE user_id = 'u1' AND id = 'b'", []).unwrap();
        assert_eq!(schedule_count(&connection, "u1"), 2);
        let due: i64 = connection
            .query_row(
                "SELECT count(*) FROM schedules INDEXED BY schedules_due WHERE next_tick_at > 0 AND paused = 0",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(due, 3, "u1: a and c, u2: a");
    }
}
