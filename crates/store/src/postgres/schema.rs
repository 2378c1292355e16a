//! The PostgreSQL schema and its versioned migrations.
//!
//! The same data model as the embedded store (`sqlite/schema.rs`): one `messages` row per
//! message for its whole life, log entries referencing it. Integers are `BIGINT` (Rust `i64`),
//! flags `BOOLEAN`, bodies `BYTEA`, JSON kept as `TEXT` as the embedded store keeps it.
//! Migrations run at start under an advisory lock, so several nodes starting at once apply
//! each version exactly once.

use crate::error::Result;
use tokio_postgres::Client;

/// States below this code are unfinished (see `MessageState::code`).
pub const FIRST_TERMINAL_STATE: i64 = 3;

/// The advisory lock every node takes while it migrates (an arbitrary constant: "tern").
const MIGRATION_LOCK: i64 = 0x7465_726e;

const MIGRATIONS: &[&str] = &[r#"
CREATE SEQUENCE message_seq;
CREATE TABLE messages (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL DEFAULT nextval('message_seq'),
    state BIGINT NOT NULL,
    due_at BIGINT,
    retried BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    finished_at BIGINT,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    topic_name TEXT COLLATE "C",
    queue_name TEXT COLLATE "C",
    schedule_id TEXT COLLATE "C",
    flow_control_key TEXT COLLATE "C",
    labels TEXT,
    caller_ip TEXT,
    source_id TEXT,
    dlq_id TEXT COLLATE "C",
    dlq_at BIGINT,
    spec TEXT NOT NULL,
    body BYTEA NOT NULL,
    response_status BIGINT,
    response_headers TEXT,
    response_body BYTEA,
    response_error TEXT,
    workflow_run_id TEXT,
    workflow_run_key BIGINT
);
-- Bodies uncompressed, so that `substring` of a long one reads only the chunks it returns.
ALTER TABLE messages ALTER COLUMN body SET STORAGE EXTERNAL, ALTER COLUMN response_body SET STORAGE EXTERNAL;
CREATE INDEX messages_unfinished ON messages(seq) WHERE state < 3;
CREATE INDEX messages_dlq ON messages(user_id, dlq_at, id) WHERE dlq_id IS NOT NULL;
CREATE INDEX messages_dlq_id ON messages(dlq_id) WHERE dlq_id IS NOT NULL;
CREATE INDEX messages_finished ON messages(finished_at) WHERE finished_at IS NOT NULL AND dlq_id IS NULL;
CREATE INDEX messages_workflow_run ON messages(workflow_run_key, seq)
    WHERE workflow_run_key IS NOT NULL AND state < 3;

CREATE TABLE logs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    time BIGINT NOT NULL,
    state BIGINT NOT NULL,
    error TEXT,
    next_delivery_time BIGINT,
    response_status BIGINT,
    response_headers TEXT,
    response_body BYTEA
);
ALTER TABLE logs ALTER COLUMN response_body SET STORAGE EXTERNAL;
CREATE INDEX logs_user_time ON logs(user_id, time, seq);
CREATE INDEX logs_message ON logs(message_id);

CREATE TABLE dedup (
    user_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX dedup_expiry ON dedup(expires_at);

CREATE TABLE queues (
    user_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    parallelism BIGINT NOT NULL,
    paused BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE flow_keys (
    user_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    parallelism BIGINT,
    rate BIGINT,
    period_secs BIGINT NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    pinned_parallelism BOOLEAN NOT NULL DEFAULT FALSE,
    pinned_rate BOOLEAN NOT NULL DEFAULT FALSE,
    window_start BIGINT,
    window_count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, key)
);

CREATE TABLE url_groups (
    user_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    default_headers TEXT,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE url_group_endpoints (
    user_id TEXT COLLATE "C" NOT NULL,
    group_name TEXT COLLATE "C" NOT NULL,
    position BIGINT NOT NULL,
    url TEXT NOT NULL,
    name TEXT COLLATE "C",
    PRIMARY KEY (user_id, group_name, position)
);

CREATE TABLE schedules (
    user_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    cron TEXT NOT NULL,
    destination TEXT NOT NULL,
    queue_name TEXT COLLATE "C",
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    caller_ip TEXT,
    created_at BIGINT NOT NULL,
    paused BOOLEAN NOT NULL,
    next_tick_at BIGINT,
    last_tick_at BIGINT,
    last_message_ids TEXT,
    error TEXT,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX schedules_due ON schedules(next_tick_at) WHERE NOT paused AND next_tick_at IS NOT NULL;
CREATE INDEX schedules_by_creation ON schedules(user_id, created_at, id);
-- The per-user schedule limit reads a kept count, not the user's rows (counting them would make
-- creating many schedules quadratic). Only rows really inserted or deleted count: an upsert that
-- updates fires no AFTER INSERT row trigger.
CREATE TABLE schedule_counts (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    count BIGINT NOT NULL
);
CREATE FUNCTION schedule_counted_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO schedule_counts VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET count = schedule_counts.count + 1;
    RETURN NULL;
END $$;
CREATE FUNCTION schedule_counted_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE schedule_counts SET count = count - 1 WHERE user_id = OLD.user_id;
    RETURN NULL;
END $$;
CREATE TRIGGER schedules_counted_in AFTER INSERT ON schedules FOR EACH ROW EXECUTE FUNCTION schedule_counted_in();
CREATE TRIGGER schedules_counted_out AFTER DELETE ON schedules FOR EACH ROW EXECUTE FUNCTION schedule_counted_out();

-- The active node's epoch: bumped by each node that becomes the active one (`node_lock`).
-- `batch`: the number of the active node's last write batch, written in its transaction, so
-- that a batch whose COMMIT got no answer can learn whether it committed.
CREATE TABLE tern_nodes (
    id BIGINT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    batch BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE signing_keys (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    current TEXT NOT NULL,
    next TEXT NOT NULL,
    configured_current TEXT NOT NULL,
    configured_next TEXT NOT NULL
);

CREATE TABLE workflow_runs (
    run_key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL,
    url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    state BIGINT NOT NULL,
    completed_at BIGINT,
    response BYTEA,
    config TEXT NOT NULL,
    labels TEXT,
    invoker TEXT,
    dlq_id TEXT COLLATE "C",
    caller_ip TEXT,
    flow_control_key TEXT COLLATE "C",
    step_count BIGINT NOT NULL DEFAULT 0,
    step_bytes BIGINT NOT NULL DEFAULT 0,
    failure_message_id TEXT,
    invoker_reply TEXT,
    invoker_run_key BIGINT,
    host TEXT,
    path TEXT,
    failed_message_id TEXT
);
CREATE INDEX workflow_runs_by_id ON workflow_runs(user_id, run_id, run_key);
CREATE UNIQUE INDEX workflow_runs_started ON workflow_runs(user_id, run_id) WHERE state = 0;
CREATE INDEX workflow_runs_by_creation ON workflow_runs(user_id, created_at, run_id);
CREATE INDEX workflow_runs_completed ON workflow_runs(completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX workflow_runs_dlq ON workflow_runs(dlq_id) WHERE dlq_id IS NOT NULL;

CREATE TABLE workflow_steps (
    run_key BIGINT NOT NULL,
    position BIGINT NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    call_type BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (run_key, position)
);
CREATE INDEX workflow_steps_message ON workflow_steps(message_id);

CREATE TABLE workflow_waiters (
    waiter_key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL,
    run_key BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    step TEXT NOT NULL,
    on_event TEXT NOT NULL,
    on_timeout TEXT NOT NULL,
    view TEXT NOT NULL,
    webhook BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX workflow_waiters_event ON workflow_waiters(user_id, event_id, waiter_key);
CREATE INDEX workflow_waiters_run ON workflow_waiters(run_key);
CREATE INDEX workflow_waiters_deadline ON workflow_waiters(deadline);

CREATE TABLE workflow_events (
    event_key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_key BIGINT NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    webhook BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX workflow_events_run ON workflow_events(run_key, event_id, event_key);
"#];

/// Brings the database to the newest schema version. Nodes starting together wait for each
/// other on an advisory lock; each version is applied in its own transaction, once.
pub async fn migrate(client: &mut Client) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = apply_missing(client).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result?;
    unlocked?;
    Ok(())
}

async fn apply_missing(client: &mut Client) -> Result<()> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS tern_schema (version BIGINT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .await?;
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM tern_schema", &[]).await?;
    let version: i64 = row.get(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let transaction = client.transaction().await?;
        transaction.batch_execute(migration).await?;
        transaction.execute("INSERT INTO tern_schema (version) VALUES ($1)", &[&(index as i64 + 1)]).await?;
        transaction.commit().await?;
        tracing::info!(version = index + 1, "database schema migrated");
    }
    Ok(())
}
