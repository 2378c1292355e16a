//! Read queries: filters turned into SQL, keyset pagination, and the reads behind the traits
//! (the listings of logs and the DLQ are in `listing`).

use super::client::GenericClient;
use super::listing::PageFill;
use super::rows::{message_columns, message_from_row};
use crate::error::{Result, StoreError};
use crate::model::*;
use tern_core::{HeaderList, Message, MessageId};
use tokio_postgres::types::ToSql;

/// A parameter of a statement built at run time.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// `value` as a [`Param`].
pub fn param(value: impl ToSql + Sync + Send + 'static) -> Param {
    Box::new(value)
}

/// A growing `WHERE` clause with its numbered parameters. Clauses are written with `?` marks,
/// numbered `$1, $2, …` as they are pushed (so a clause holds no other `?`); or a value is
/// bound first ([`SqlFilter::bind`]) and its `$n` written into a raw clause, which lets one
/// value appear twice.
pub struct SqlFilter {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl SqlFilter {
    pub fn new(clause: &str, param: impl ToSql + Sync + Send + 'static) -> Self {
        let mut sql = SqlFilter { clauses: Vec::new(), params: Vec::new() };
        sql.push(clause, [Box::new(param) as Param]);
        sql
    }

    /// Adds `clause`, its `?` marks standing for `params` in order.
    pub fn push(&mut self, clause: &str, params: impl IntoIterator<Item = Param>) {
        let first = self.params.len();
        self.params.extend(params);
        let mut number = first;
        let mut numbered = String::with_capacity(clause.len() + 8);
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                number += 1;
                numbered.push_str(&format!("${number}"));
            }
            numbered.push_str(part);
        }
        debug_assert_eq!(number, self.params.len(), "one parameter per `?` in {clause:?}");
        self.clauses.push(numbered);
    }

    /// Adds a clause without `?` marks (it may name values [`bind`](Self::bind) numbered).
    pub fn push_raw(&mut self, clause: &str) {
        debug_assert!(!clause.contains('?'), "a raw clause has no `?`: {clause:?}");
        self.clauses.push(clause.to_string());
    }

    /// Adds `value` as the next parameter and returns its mark (`$n`), for a clause added
    /// later with [`push_raw`](Self::push_raw).
    pub fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.bind_param(Box::new(value))
    }

    fn bind_param(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// `column = ANY(<values as an array>)` when `values` is not empty (`IN (…)` in SQLite).
    pub fn push_in<T: ToSql + Clone + Sync + Send + 'static>(&mut self, column: &str, values: &[T]) {
        if values.is_empty() {
            return;
        }
        let mark = self.bind(values.to_vec());
        self.push_raw(&format!("{column} = ANY({mark})"));
    }

    pub fn clause(&self) -> String {
        self.clauses.join(" AND ")
    }

    /// The parameters, as the driver's `query` takes them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|param| param.as_ref() as &(dyn ToSql + Sync)).collect()
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
            "EXISTS (SELECT 1 FROM workflow_runs r JOIN messages f ON f.id = r.failure_message_id
             WHERE r.dlq_id = {alias}.dlq_id AND r.user_id = {alias}.user_id AND f.state IN ({}))",
            codes.join(", ")
        ));
    }
    if let Some(created_at) = filter.workflow_created_at {
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM workflow_runs r
                 WHERE r.user_id = {alias}.user_id AND r.run_id = {alias}.workflow_run_id AND r.created_at = ?)"
            ),
            [param(created_at)],
        );
    }
    let statuses: Vec<i64> = filter.response_statuses.iter().map(|s| i64::from(*s)).collect();
    sql.push_in(&format!("{alias}.response_status"), &statuses);
    if !filter.labels.is_empty() {
        // One condition over an array, however many labels: no deep OR chain.
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM unnest(?::TEXT[]) AS wanted(label)
                 WHERE strpos({alias}.labels, ',' || wanted.label || ',') > 0)"
            ),
            [param(filter.labels.clone())],
        );
    }
    if let Some(column) = time_column {
        if let Some(from) = filter.from_ms {
            sql.push(&format!("{column} >= ?"), [param(from)]);
        }
        if let Some(to) = filter.to_ms {
            sql.push(&format!("{column} <= ?"), [param(to)]);
        }
    }
}

/// A decoded cursor: `<time>-<tiebreak>` from a previous page, or a bare time (the TS SDK
/// starts log pagination with `Date.now()`).
enum Cursor {
    After(i64, Param),
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
        param(tiebreak.parse::<i64>().map_err(|_| invalid())?)
    } else {
        param(tiebreak.to_string())
    };
    Ok(Some(Cursor::After(time, tiebreak)))
}

/// Adds the keyset condition and returns the `ORDER BY` for `(time, tiebreak)` pagination.
/// A text tiebreak is compared byte by byte (`COLLATE "C"`), as SQLite compares text, whatever
/// the database's collation.
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
    let tiebreak = if integer_tiebreak { tiebreak.to_string() } else { format!("{tiebreak} COLLATE \"C\"") };
    match parse_cursor(page.cursor.as_deref(), integer_tiebreak)? {
        Some(Cursor::After(at, key)) => {
            let at = sql.bind(at);
            let key = sql.bind_param(key);
            sql.push_raw(&format!("({time} {before} {at} OR ({time} = {at} AND {tiebreak} {before} {key}))"));
        }
        Some(Cursor::AtOrBefore(at)) => sql.push(&format!("{time} {at_or} ?"), [param(at)]),
        None => {}
    }
    // Bound, not written into the text: the statement stays one the connection keeps.
    let count = sql.bind(limit(page.count.saturating_add(1)));
    Ok(format!("ORDER BY {time} {direction}, {tiebreak} {direction} LIMIT {count}"))
}

/// A row count as a `LIMIT` takes it.
pub fn limit(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A stored count that must fit a `u32`.
fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value}")))
}

pub async fn get_dlq(c: &impl GenericClient, user_id: &str, dlq_id: &str) -> Result<Option<Message>> {
    let query = format!("SELECT {} FROM messages m WHERE m.dlq_id = $1 AND m.user_id = $2", message_columns("m"));
    c.query_opt(&query, &[&dlq_id, &user_id]).await?.map(|row| message_from_row(&row, 0)).transpose()
}

pub async fn get_message(c: &impl GenericClient, user_id: &str, id: MessageId) -> Result<Option<Message>> {
    let query = format!("SELECT {} FROM messages m WHERE m.id = $1 AND m.user_id = $2", message_columns("m"));
    c.query_opt(&query, &[&id.to_string(), &user_id]).await?.map(|row| message_from_row(&row, 0)).transpose()
}

pub async fn message_bytes(c: &impl GenericClient, user_id: &str, id: MessageId) -> Result<Option<usize>> {
    let row = c
        .query_opt(
            "SELECT coalesce(octet_length(body), 0)::BIGINT + coalesce(octet_length(response_body), 0)
                + octet_length(spec) + coalesce(octet_length(response_headers), 0)
             FROM messages WHERE id = $1 AND user_id = $2",
            &[&id.to_string(), &user_id],
        )
        .await?;
    let bytes: Option<i64> = row.map(|row| row.try_get(0)).transpose()?;
    Ok(bytes.map(|bytes| bytes.max(0) as usize))
}

/// Loads claimed messages by id (any user); missing ids are skipped.
pub async fn load_messages(c: &impl GenericClient, ids: &[MessageId]) -> Result<Vec<Message>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One statement for them all, the ids as one array.
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let query = format!("SELECT {} FROM messages m WHERE m.id = ANY($1)", message_columns("m"));
    c.query(&query, &[&ids]).await?.iter().map(|row| message_from_row(row, 0)).collect()
}

pub async fn load_keys(c: &impl GenericClient, user_id: &str) -> Result<Option<StoredKeys>> {
    let row = c
        .query_opt(
            "SELECT current, next, configured_current, configured_next FROM signing_keys WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredKeys {
        current: row.try_get(0)?,
        next: row.try_get(1)?,
        configured_current: row.try_get(2)?,
        configured_next: row.try_get(3)?,
    }))
}

/// A queue from `name, parallelism, paused, created_at, updated_at` at `offset`.
fn queue_from_row(row: &tokio_postgres::Row, offset: usize) -> Result<QueueRecord> {
    Ok(QueueRecord {
        name: row.try_get(offset)?,
        parallelism: to_u32(row.try_get(offset + 1)?, "queue parallelism")?,
        paused: row.try_get(offset + 2)?,
        created_at: row.try_get(offset + 3)?,
        updated_at: row.try_get(offset + 4)?,
    })
}

/// Queues by name, byte by byte as SQLite orders text.
pub async fn list_queues(c: &impl GenericClient, user_id: &str) -> Result<Vec<QueueRecord>> {
    let rows = c
        .query(
            "SELECT name, parallelism, paused, created_at, updated_at FROM queues WHERE user_id = $1
             ORDER BY name COLLATE \"C\"",
            &[&user_id],
        )
        .await?;
    rows.iter().map(|row| queue_from_row(row, 0)).collect()
}

pub async fn get_queue(c: &impl GenericClient, user_id: &str, name: &str) -> Result<Option<QueueRecord>> {
    let row = c
        .query_opt(
            "SELECT name, parallelism, paused, created_at, updated_at FROM queues WHERE user_id = $1 AND name = $2",
            &[&user_id, &name],
        )
        .await?;
    row.map(|row| queue_from_row(&row, 0)).transpose()
}

/// Every queue of every user, for the scheduler at start.
pub async fn all_queues(c: &impl GenericClient) -> Result<Vec<(String, QueueRecord)>> {
    let rows = c.query("SELECT user_id, name, parallelism, paused, created_at, updated_at FROM queues", &[]).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, queue_from_row(row, 1)?))).collect()
}

/// Every flow-control key of every user with its settings.
pub async fn all_flows(c: &impl GenericClient) -> Result<Vec<(String, String, FlowSettings)>> {
    let rows = c
        .query(
            "SELECT user_id, key, parallelism, rate, period_secs, paused, pinned_parallelism, pinned_rate,
                window_start, window_count FROM flow_keys",
            &[],
        )
        .await?;
    let optional = |value: Option<i64>, what: &str| value.map(|value| to_u32(value, what)).transpose();
    rows.iter()
        .map(|row| {
            let period_secs: i64 = row.try_get(4)?;
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                FlowSettings {
                    parallelism: optional(row.try_get(2)?, "flow parallelism")?,
                    rate: optional(row.try_get(3)?, "flow rate")?,
                    period_secs: u64::try_from(period_secs)
                        .map_err(|_| StoreError::Corrupt(format!("flow period {period_secs}")))?,
                    paused: row.try_get(5)?,
                    pinned_parallelism: row.try_get(6)?,
                    pinned_rate: row.try_get(7)?,
                    window_start: row.try_get(8)?,
                    window_count: to_u32(row.try_get(9)?, "flow window count")?,
                },
            ))
        })
        .collect()
}

pub async fn get_group(c: &impl GenericClient, user_id: &str, name: &str) -> Result<Option<UrlGroup>> {
    let row = c
        .query_opt(
            "SELECT name, created_at, updated_at, default_headers FROM url_groups WHERE user_id = $1 AND name = $2",
            &[&user_id, &name],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let headers: Option<String> = row.try_get(3)?;
    let mut group = UrlGroup {
        name: row.try_get(0)?,
        created_at: row.try_get(1)?,
        updated_at: row.try_get(2)?,
        endpoints: Vec::new(),
        default_headers: HeaderList::new(),
    };
    if let Some(headers) = headers {
        group.default_headers = serde_json::from_str(&headers)?;
    }
    let endpoints = c
        .query(
            "SELECT url, name FROM url_group_endpoints WHERE user_id = $1 AND group_name = $2 ORDER BY position",
            &[&user_id, &name],
        )
        .await?;
    group.endpoints = endpoints
        .iter()
        .map(|row| Ok(Endpoint { url: row.try_get(0)?, name: row.try_get(1)? }))
        .collect::<Result<_>>()?;
    Ok(Some(group))
}

/// The size of the group `g` (its name, its endpoints' URLs and names, its default headers),
/// counted without reading them.
const GROUP_BYTES: &str = "(coalesce(octet_length(g.default_headers), 0)::BIGINT + octet_length(g.name)
    + (SELECT coalesce(sum(octet_length(e.url) + coalesce(octet_length(e.name), 0)), 0) FROM url_group_endpoints e
       WHERE e.user_id = g.user_id AND e.group_name = g.name))::BIGINT";

/// About how many bytes [`get_group`] reads for a group; `None` when there is none.
pub async fn group_bytes(c: &impl GenericClient, user_id: &str, name: &str) -> Result<Option<usize>> {
    let query = format!("SELECT {GROUP_BYTES} FROM url_groups g WHERE g.user_id = $1 AND g.name = $2");
    let row = c.query_opt(&query, &[&user_id, &name]).await?;
    let bytes: Option<i64> = row.map(|row| row.try_get(0)).transpose()?;
    Ok(bytes.map(|bytes| bytes.max(0) as usize))
}

/// A page of groups by name (byte by byte, as SQLite orders text) after the cursor (the last
/// name of the previous page). Each group's size (names, URLs, headers) is counted before its
/// endpoints are read, so a page holds at most its byte budget plus one group.
pub async fn list_groups(c: &impl GenericClient, user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>> {
    // A page takes at most `count` groups and looks at one more (`PageFill`): the names and
    // sizes of those are all it needs.
    let query = format!(
        "SELECT g.name, {GROUP_BYTES} FROM url_groups g WHERE g.user_id = $1 AND g.name COLLATE \"C\" > $2
         ORDER BY g.name COLLATE \"C\" LIMIT $3"
    );
    let after = page.cursor.as_deref().unwrap_or_default();
    let rows = c.query(&query, &[&user_id, &after, &limit(page.count.max(1).saturating_add(1))]).await?;
    let mut fill = PageFill::new(page);
    let mut groups: Vec<UrlGroup> = Vec::new();
    let mut cursor = None;
    for row in &rows {
        let (name, bytes): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if !fill.take(bytes.max(0) as usize) {
            cursor = groups.last().map(|group| group.name.clone());
            break;
        }
        groups.extend(get_group(c, user_id, &name).await?);
    }
    Ok(fill.page(groups, cursor))
}
