//! Read queries: filters turned into SQL, keyset pagination, and the reads behind the traits
//! (the listings of logs and the DLQ are in `listing`).

use super::listing::PageFill;
use super::rows::{message_columns, message_from_row};
use crate::error::{Result, StoreError};
use crate::model::*;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use tern_core::{HeaderList, Message, MessageId};

/// A growing `WHERE` clause with its positional parameters.
pub struct SqlFilter {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl SqlFilter {
    pub fn new(clause: &str, param: impl Into<Value>) -> Self {
        SqlFilter { clauses: vec![clause.to_string()], params: vec![param.into()] }
    }

    pub fn push(&mut self, clause: &str, params: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_string());
        self.params.extend(params);
    }

    pub fn push_raw(&mut self, clause: &str) {
        self.clauses.push(clause.to_string());
    }

    /// `column IN (?, ?, …)` when `values` is not empty.
    pub fn push_in<T: Clone + Into<Value>>(&mut self, column: &str, values: &[T]) {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.push(&format!("{column} IN ({marks})"), values.iter().cloned().map(Into::into));
    }

    pub fn clause(&self) -> String {
        self.clauses.join(" AND ")
    }

    pub fn params(&self) -> &[Value] {
        &self.params
    }
}

/// Adds the message-level filters; `time_column` is what `fromDate`/`toDate` bound.
pub fn message_filter(sql: &mut SqlFilter, filter: &MessageFilter, alias: &str, time_column: Option<&str>) {
    sql.push_in(&format!("{alias}.id"), &filter.message_ids);
    sql.push_in(&format!("{alias}.url"), &filter.urls);
    sql.push_in(&format!("{alias}.topic_name"), &filter.topic_names);
    sql.push_in(&format!("{alias}.queue_name"), &filter.queue_names);
    sql.push_in(&format!("{alias}.schedule_id"), &filter.schedule_ids);
    sql.push_in(&format!("{alias}.flow_control_key"), &filter.flow_control_keys);
    sql.push_in(&format!("{alias}.caller_ip"), &filter.caller_ips);
    sql.push_in(&format!("{alias}.host"), &filter.hosts);
    sql.push_in(&format!("{alias}.path"), &filter.paths);
    sql.push_in(&format!("{alias}.dlq_id"), &filter.dlq_ids);
    sql.push_in(&format!("{alias}.workflow_run_id"), &filter.workflow_run_ids);
    if filter.workflow_only {
        sql.push_raw(&format!("{alias}.workflow_run_id IS NOT NULL"));
    }
    if !filter.failure_callback_states.is_empty() {
        let codes: Vec<String> = filter.failure_callback_states.iter().map(|state| state.code().to_string()).collect();
        sql.push_raw(&format!(
            "EXISTS (SELECT 1 FROM workflow_runs r INDEXED BY workflow_runs_dlq JOIN messages f ON f.id = r.failure_message_id
             WHERE r.dlq_id = {alias}.dlq_id AND r.user_id = {alias}.user_id AND f.state IN ({}))",
            codes.join(", ")
        ));
    }
    if let Some(created_at) = filter.workflow_created_at {
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM workflow_runs r INDEXED BY workflow_runs_by_id
                 WHERE r.user_id = {alias}.user_id AND r.run_id = {alias}.workflow_run_id AND r.created_at = ?)"
            ),
            [Value::Integer(created_at)],
        );
    }
    let statuses: Vec<i64> = filter.response_statuses.iter().map(|s| i64::from(*s)).collect();
    sql.push_in(&format!("{alias}.response_status"), &statuses);
    if !filter.labels.is_empty() {
        // One condition over a JSON array, however many labels: no deep OR chain.
        let labels = serde_json::to_string(&filter.labels).expect("labels serialise");
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM json_each(?) WHERE instr({alias}.labels, ',' || json_each.value || ',') > 0)"
            ),
            [Value::Text(labels)],
        );
    }
    if let Some(column) = time_column {
        if let Some(from) = filter.from_ms {
            sql.push(&format!("{column} >= ?"), [Value::Integer(from)]);
        }
        if let Some(to) = filter.to_ms {
            sql.push(&format!("{column} <= ?"), [Value::Integer(to)]);
        }
    }
}

/// A decoded cursor: `<time>-<tiebreak>` from a previous page, or a bare time (the TS SDK
/// starts log pagination with `Date.now()`).
enum Cursor {
    After(i64, Value),
    AtOrBefore(i64),
}

fn parse_cursor(cursor: Option<&str>, tiebreak_is_integer: bool) -> Result<Option<Cursor>, StoreError> {
    let Some(cursor) = cursor.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if let Ok(time) = cursor.parse::<i64>() {
        return Ok(Some(Cursor::AtOrBefore(time)));
    }
    let invalid = || StoreError::InvalidInput(format!("invalid cursor {cursor:?}"));
    let (time, tiebreak) = cursor.split_once('-').ok_or_else(invalid)?;
    let time = time.parse::<i64>().map_err(|_| invalid())?;
    let tiebreak = if tiebreak_is_integer {
        Value::Integer(tiebreak.parse().map_err(|_| invalid())?)
    } else {
        Value::Text(tiebreak.to_string())
    };
    Ok(Some(Cursor::After(time, tiebreak)))
}

/// Adds the keyset condition and returns the `ORDER BY` for `(time, tiebreak)` pagination.
pub fn paginate(
    sql: &mut SqlFilter,
    page: &PageRequest,
    time: &str,
    tiebreak: &str,
    integer_tiebreak: bool,
) -> Result<String> {
    let (direction, before, at_or) = match page.order {
        Order::LatestFirst => ("DESC", "<", "<="),
        Order::EarliestFirst => ("ASC", ">", ">="),
    };
    match parse_cursor(page.cursor.as_deref(), integer_tiebreak)? {
        Some(Cursor::After(at, key)) => sql.push(
            &format!("({time} {before} ? OR ({time} = ? AND {tiebreak} {before} ?))"),
            [Value::Integer(at), Value::Integer(at), key],
        ),
        Some(Cursor::AtOrBefore(at)) => sql.push(&format!("{time} {at_or} ?"), [Value::Integer(at)]),
        None => {}
    }
    Ok(format!("ORDER BY {time} {direction}, {tiebreak} {direction} LIMIT {}", page.count + 1))
}

pub fn get_dlq(connection: &Connection, user_id: &str, dlq_id: &str) -> Result<Option<Message>> {
    let query = format!("SELECT {} FROM messages m WHERE m.dlq_id = ?1 AND m.user_id = ?2", message_columns("m"));
    connection
        .prepare_cached(&query)?
        .query_row(params![dlq_id, user_id], |row| Ok(message_from_row(row, 0)))
        .optional()?
        .transpose()
}

pub fn get_message(connection: &Connection, user_id: &str, id: MessageId) -> Result<Option<Message>> {
    let query = format!("SELECT {} FROM messages m WHERE m.id = ?1 AND m.user_id = ?2", message_columns("m"));
    connection
        .prepare_cached(&query)?
        .query_row(params![id.to_string(), user_id], |row| Ok(message_from_row(row, 0)))
        .optional()?
        .transpose()
}

pub fn message_bytes(connection: &Connection, user_id: &str, id: MessageId) -> Result<Option<usize>> {
    let bytes: Option<i64> = connection
        .prepare_cached(
            "SELECT coalesce(length(body), 0) + coalesce(length(response_body), 0) + length(spec)
                + coalesce(length(response_headers), 0)
             FROM messages WHERE id = ?1 AND user_id = ?2",
        )?
        .query_row(params![id.to_string(), user_id], |row| row.get(0))
        .optional()?;
    Ok(bytes.map(|bytes| bytes.max(0) as usize))
}

/// Loads claimed messages by id (any user); missing ids are skipped.
pub fn load_messages(connection: &Connection, ids: &[MessageId]) -> Result<Vec<Message>> {
    let mut messages = Vec::with_capacity(ids.len());
    // One statement per chunk rather than per id.
    for chunk in ids.chunks(256) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let query = format!("SELECT {} FROM messages m WHERE m.id IN ({marks})", message_columns("m"));
        let mut statement = connection.prepare_cached(&query)?;
        let mut rows = statement.query(params_from_iter(chunk.iter().map(|id| id.to_string())))?;
        while let Some(row) = rows.next()? {
            messages.push(message_from_row(row, 0)?);
        }
    }
    Ok(messages)
}

pub fn load_keys(connection: &Connection, user_id: &str) -> Result<Option<StoredKeys>> {
    Ok(connection
        .prepare_cached(
            "SELECT current, next, configured_current, configured_next FROM signing_keys WHERE user_id = ?1",
        )?
        .query_row([user_id], |row| {
            Ok(StoredKeys {
                current: row.get(0)?,
                next: row.get(1)?,
                configured_current: row.get(2)?,
                configured_next: row.get(3)?,
            })
        })
        .optional()?)
}

fn queue_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<QueueRecord> {
    Ok(QueueRecord {
        name: row.get(0)?,
        parallelism: row.get(1)?,
        paused: row.get(2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

pub fn list_queues(connection: &Connection, user_id: &str) -> Result<Vec<QueueRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT name, parallelism, paused, created_at, updated_at FROM queues WHERE user_id = ?1 ORDER BY name",
    )?;
    let rows = statement.query_map([user_id], queue_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn get_queue(connection: &Connection, user_id: &str, name: &str) -> Result<Option<QueueRecord>> {
    Ok(connection
        .prepare_cached(
            "SELECT name, parallelism, paused, created_at, updated_at FROM queues WHERE user_id = ?1 AND name = ?2",
        )?
        .query_row(params![user_id, name], queue_from_row)
        .optional()?)
}

/// Every queue of every user, for the scheduler at start.
pub fn all_queues(connection: &Connection) -> Result<Vec<(String, QueueRecord)>> {
    let mut statement =
        connection.prepare("SELECT user_id, name, parallelism, paused, created_at, updated_at FROM queues")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get(0)?,
            QueueRecord {
                name: row.get(1)?,
                parallelism: row.get(2)?,
                paused: row.get(3)?,
                created_at: row.get(4)?,
                updated_at: row.get(5)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every flow-control key of every user with its settings.
pub fn all_flows(connection: &Connection) -> Result<Vec<(String, String, FlowSettings)>> {
    let mut statement = connection.prepare(
        "SELECT user_id, key, parallelism, rate, period_secs, paused, pinned_parallelism, pinned_rate, window_start,
            window_count FROM flow_keys",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            FlowSettings {
                parallelism: row.get(2)?,
                rate: row.get(3)?,
                period_secs: row.get::<_, i64>(4)? as u64,
                paused: row.get(5)?,
                pinned_parallelism: row.get(6)?,
                pinned_rate: row.get(7)?,
                window_start: row.get(8)?,
                window_count: row.get(9)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn get_group(connection: &Connection, user_id: &str, name: &str) -> Result<Option<UrlGroup>> {
    let group = connection
        .prepare_cached(
            "SELECT name, created_at, updated_at, default_headers FROM url_groups WHERE user_id = ?1 AND name = ?2",
        )?
        .query_row(params![user_id, name], |row| {
            let headers: Option<String> = row.get(3)?;
            let group = UrlGroup {
                name: row.get(0)?,
                created_at: row.get(1)?,
                updated_at: row.get(2)?,
                endpoints: Vec::new(),
                default_headers: HeaderList::new(),
            };
            Ok((group, headers))
        })
        .optional()?;
    let Some((mut group, headers)) = group else { return Ok(None) };
    if let Some(headers) = headers {
        group.default_headers = serde_json::from_str(&headers)?;
    }
    let mut statement = connection.prepare_cached(
        "SELECT url, name FROM url_group_endpoints WHERE user_id = ?1 AND group_name = ?2 ORDER BY position",
    )?;
    let endpoints =
        statement.query_map(params![user_id, name], |row| Ok(Endpoint { url: row.get(0)?, name: row.get(1)? }))?;
    group.endpoints = endpoints.collect::<rusqlite::Result<_>>()?;
    Ok(Some(group))
}

/// The size of the group `g` (its name, its endpoints' URLs and names, its default headers),
/// counted without reading them.
const GROUP_BYTES: &str = "coalesce(length(g.default_headers), 0) + length(g.name)
    + (SELECT coalesce(sum(length(e.url) + coalesce(length(e.name), 0)), 0) FROM url_group_endpoints e
       WHERE e.user_id = g.user_id AND e.group_name = g.name)";

/// About how many bytes [`get_group`] reads for a group; `None` when there is none.
pub fn group_bytes(connection: &Connection, user_id: &str, name: &str) -> Result<Option<usize>> {
    let bytes: Option<i64> = connection
        .prepare_cached(&format!("SELECT {GROUP_BYTES} FROM url_groups g WHERE g.user_id = ?1 AND g.name = ?2"))?
        .query_row(params![user_id, name], |row| row.get(0))
        .optional()?;
    Ok(bytes.map(|bytes| bytes.max(0) as usize))
}

/// A page of groups by name after the cursor (the last name of the previous page). Each group's
/// size (names, URLs, headers) is counted before its endpoints are read, so a page holds at
/// most its byte budget plus one group.
pub fn list_groups(connection: &Connection, user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT g.name, {GROUP_BYTES} FROM url_groups g WHERE g.user_id = ?1 AND g.name > ?2 ORDER BY g.name"
    ))?;
    let mut rows = statement.query(params![user_id, page.cursor.as_deref().unwrap_or_default()])?;
    let mut fill = PageFill::new(page);
    let mut groups: Vec<UrlGroup> = Vec::new();
    let mut cursor = None;
    while let Some(row) = rows.next()? {
        let (name, bytes): (String, i64) = (row.get(0)?, row.get(1)?);
        if !fill.take(bytes.max(0) as usize) {
            cursor = groups.last().map(|group| group.name.clone());
            break;
        }
        groups.extend(get_group(connection, user_id, &name)?);
    }
    Ok(fill.page(groups, cursor))
}
