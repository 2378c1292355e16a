//! Layered configuration: the commented defaults in `defaults.toml` → a TOML file →
//! `TERN_*` environment variables. Unknown keys anywhere are rejected.

use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_core::PublishLimits;
use tern_core::duration::parse_duration;
use tern_engine::config::EngineConfig;
use tern_engine::keys::{SigningKeys, UserKeys};
use thiserror::Error;
use toml::{Table, Value};

/// The defaults, with comments; `tern config` prints them.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// Environment variables that configure the process rather than the config tree.
const RESERVED_ENV: &[&str] = &["TERN_CONFIG"];

/// Variables of tern's own test suite (which servers it starts inherit), never configuration.
const TEST_SUITE_ENV: &str = "TERN_TEST_";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn invalid(origin: &str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid { origin: origin.to_string(), message: message.to_string() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub limits: LimitsSection,
    pub delivery: DeliverySection,
    pub retention: RetentionSection,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub path_prefix: String,
    pub trust_forwarded_for: bool,
    pub max_connections: MaxConnections,
    pub header_read_timeout: String,
    pub idle_timeout: String,
    pub request_body_timeout: String,
    pub write_timeout: String,
}

/// `server.max_connections`: a number, or `"auto"` (derived from the open-file limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConnections {
    Auto,
    Limit(usize),
}

impl<'de> Deserialize<'de> for MaxConnections {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // An environment value arrives as a string (the default is one), a file's as a number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let expected = "\"auto\" or a number of connections, at least 1";
        let limit = match Raw::deserialize(deserializer)? {
            Raw::Text(text) if text.trim().eq_ignore_ascii_case("auto") => return Ok(MaxConnections::Auto),
            Raw::Text(text) => text.trim().parse::<u64>().map_err(|_| serde::de::Error::custom(expected))?,
            Raw::Number(number) => number,
        };
        match usize::try_from(limit) {
            Ok(limit) if limit > 0 => Ok(MaxConnections::Limit(limit)),
            _ => Err(serde::de::Error::custom(expected)),
        }
    }
}

/// The server's connection deadlines, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub request_body: Duration,
    pub write: Duration,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub backend: StorageBackend,
    pub data_dir: PathBuf,
    pub durable: bool,
    pub postgres_url: String,
    pub postgres_pool_size: usize,
    pub postgres_connect_timeout: String,
}

impl std::fmt::Debug for StorageSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the database password.
        f.debug_struct("StorageSection")
            .field("backend", &self.backend)
            .field("data_dir", &self.data_dir)
            .field("durable", &self.durable)
            .field("postgres_url", &tern_core::redact::SECRET)
            .field("postgres_pool_size", &self.postgres_pool_size)
            .field("postgres_connect_timeout", &self.postgres_connect_timeout)
            .finish()
    }
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Sqlite,
    Postgres,
}

/// The most pooled connections one node opens for client reads: each holds a descriptor of
/// the reserve (`descriptors::RESERVED`) and a backend process on the database.
pub const MAX_POSTGRES_POOL_SIZE: usize = 32;

impl StorageSection {
    /// The store these settings open.
    pub fn store_config(&self) -> Result<tern_store::StorageConfig, ConfigError> {
        match self.backend {
            StorageBackend::Sqlite => Ok(tern_store::StorageConfig::sqlite(self.data_dir.clone(), self.durable)),
            StorageBackend::Postgres => {
                if self.postgres_url.trim().is_empty() {
                    return Err(invalid(
                        "storage.postgres_url",
                        "backend = \"postgres\" needs a URL (postgres://user:password@host:port/database)",
                    ));
                }
                if !(1..=MAX_POSTGRES_POOL_SIZE).contains(&self.postgres_pool_size) {
                    let why = format!("expected 1 to {MAX_POSTGRES_POOL_SIZE} connections");
                    return Err(invalid("storage.postgres_pool_size", why));
                }
                let connect_timeout = parse_duration(&self.postgres_connect_timeout)
                    .map_err(|e| invalid("storage.postgres_connect_timeout", e))?;
                let mut options = tern_store::postgres::PostgresOptions::new(self.postgres_url.trim());
                options.pool_size = self.postgres_pool_size;
                options.connect_timeout = connect_timeout;
                Ok(tern_store::StorageConfig::Postgres(options))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_messages: usize,
    pub request_body_budget: usize,
    pub max_url_bytes: usize,
    pub max_header_bytes: usize,
    pub default_retries: u32,
    pub max_retries: u32,
    pub max_delay: String,
    pub max_timeout: String,
    pub logs_page_size: usize,
    pub dlq_page_size: usize,
    pub list_page_bytes: usize,
    pub listing_budget: usize,
    pub max_queues: usize,
    pub max_queue_parallelism: u32,
    pub max_url_groups: usize,
    pub max_endpoints_per_group: usize,
    pub max_schedules: usize,
    pub max_flow_control_keys: usize,
    pub max_flow_control_key_bytes: usize,
    pub max_workflow_steps: usize,
    pub max_workflow_run_bytes: usize,
    pub max_workflow_waiters: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    pub max_concurrent: usize,
    pub user_parallelism: u32,
    pub allow_private_destinations: bool,
    pub jwt_nbf: String,
    pub workflow_body_budget: usize,
    pub shutdown_grace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub logs: String,
    pub dlq: String,
    pub finished_message_visibility: String,
    pub dedup_window: String,
    pub purge_interval: String,
}

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub id: String,
    pub token: String,
    #[serde(default)]
    pub readonly_token: Option<String>,
    pub current_signing_key: String,
    pub next_signing_key: String,
}

/// Shows the user's id; its tokens and keys are secrets, never printed.
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use tern_core::redact::SECRET;
        f.debug_struct("UserConfig")
            .field("id", &self.id)
            .field("token", &SECRET)
            .field("readonly_token", &self.readonly_token.as_ref().map(|_| SECRET))
            .field("current_signing_key", &SECRET)
            .field("next_signing_key", &SECRET)
            .finish()
    }
}

impl Config {
    /// The defaults alone.
    pub fn defaults() -> Config {
        Self::from_table(defaults_table(), "defaults").expect("the embedded defaults are valid")
    }

    /// Defaults, then `file` (if any), then `TERN_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = defaults_table();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            let origin = path.display().to_string();
            let overlay: Table = text.parse().map_err(|e| invalid(&origin, e))?;
            merge(&mut table, overlay);
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("TERN_") else {
                continue;
            };
            if RESERVED_ENV.contains(&name.as_str()) || name.starts_with(TEST_SUITE_ENV) || key.is_empty() {
                continue;
            }
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &path, env_value(&value)).map_err(|message| invalid(&name, message))?;
        }
        Self::from_table(table, "configuration")
    }

    fn from_table(table: Table, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = Value::Table(table).try_into().map_err(|e| invalid(origin, e))?;
        config.engine_config()?;
        config.connection_timeouts()?;
        config.validate_users()?;
        Ok(config)
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        for user in &self.users {
            let origin = format!("users.{}", user.id);
            if user.id.trim().is_empty() {
                return Err(invalid("users", "every user needs a non-empty id"));
            }
            if !ids.insert(user.id.as_str()) {
                return Err(invalid(&origin, "duplicate user id"));
            }
            for token in std::iter::once(&user.token).chain(user.readonly_token.as_ref()) {
                if token.trim().is_empty() {
                    return Err(invalid(&origin, "tokens must not be empty"));
                }
                if !tokens.insert(token.as_str()) {
                    return Err(invalid(&origin, "a token may belong to one user only"));
                }
            }
            if user.current_signing_key.trim().is_empty() || user.next_signing_key.trim().is_empty() {
                return Err(invalid(&origin, "current_signing_key and next_signing_key are required"));
            }
        }
        // A workflow webhook URL names its user by the `UserID` in its token or by its id: two
        // users must never answer to one name.
        let mut names = std::collections::HashMap::new();
        for user in &self.users {
            for name in std::iter::once(user.id.clone()).chain(crate::extract::token_user_id(&user.token)) {
                if names.insert(name.clone(), user.id.as_str()).is_some_and(|other| other != user.id) {
                    let why =
                        format!("{name:?} names two users (an id, or the UserID in a token), as webhooks name them");
                    return Err(invalid(&format!("users.{}", user.id), why));
                }
            }
        }
        Ok(())
    }

    /// The engine's settings, with every duration parsed.
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        let duration = |key: &str, value: &str| parse_duration(value).map_err(|e| invalid(key, e));
        let nbf_is_iat = match self.delivery.jwt_nbf.as_str() {
            "zero" => false,
            "iat" => true,
            other => {
                return Err(invalid("delivery.jwt_nbf", format!("expected \"zero\" or \"iat\", got {other:?}")));
            }
        };
        if self.limits.logs_page_size == 0 || self.limits.dlq_page_size == 0 || self.limits.list_page_bytes == 0 {
            return Err(invalid("limits", "page sizes must be at least 1"));
        }
        if self.limits.request_body_budget == 0 || self.limits.listing_budget == 0 {
            return Err(invalid("limits", "request_body_budget and listing_budget must be at least 1"));
        }
        if self.delivery.max_concurrent == 0 || self.delivery.user_parallelism == 0 {
            return Err(invalid("delivery", "max_concurrent and user_parallelism must be at least 1"));
        }
        Ok(EngineConfig {
            limits: PublishLimits {
                default_retries: self.limits.default_retries.min(self.limits.max_retries),
                max_retries: self.limits.max_retries,
                max_delay: duration("limits.max_delay", &self.limits.max_delay)?,
                max_timeout: duration("limits.max_timeout", &self.limits.max_timeout)?,
                max_url_bytes: self.limits.max_url_bytes,
                max_flow_control_key_bytes: self.limits.max_flow_control_key_bytes,
                max_header_bytes: self.limits.max_header_bytes,
            },
            max_body_bytes: self.limits.max_body_bytes,
            max_concurrent_deliveries: self.delivery.max_concurrent,
            user_parallelism: self.delivery.user_parallelism,
            max_queues: self.limits.max_queues,
            max_queue_parallelism: self.limits.max_queue_parallelism,
            max_url_groups: self.limits.max_url_groups,
            max_endpoints_per_group: self.limits.max_endpoints_per_group,
            max_schedules: self.limits.max_schedules,
            max_flow_control_keys: self.limits.max_flow_control_keys,
            max_batch_messages: self.limits.max_batch_messages,
            max_workflow_steps: self.limits.max_workflow_steps,
            max_workflow_run_bytes: self.limits.max_workflow_run_bytes,
            max_workflow_waiters: self.limits.max_workflow_waiters,
            workflow_body_budget: self.delivery.workflow_body_budget,
            payload_cache_bytes: 64 << 20,
            dedup_window: duration("retention.dedup_window", &self.retention.dedup_window)?,
            finished_message_visibility: duration(
                "retention.finished_message_visibility",
                &self.retention.finished_message_visibility,
            )?,
            retention: tern_store::Retention {
                logs: duration("retention.logs", &self.retention.logs)?,
                dlq: duration("retention.dlq", &self.retention.dlq)?,
            },
            purge_interval: duration("retention.purge_interval", &self.retention.purge_interval)?
                .max(Duration::from_secs(1)),
            jwt_nbf_is_iat: nbf_is_iat,
            allow_private_destinations: self.delivery.allow_private_destinations,
            shutdown_grace: duration("delivery.shutdown_grace", &self.delivery.shutdown_grace)?,
        })
    }

    /// The server's connection deadlines; each must be longer than zero.
    pub fn connection_timeouts(&self) -> Result<ConnectionTimeouts, ConfigError> {
        let duration = |key: &str, value: &str| {
            let origin = format!("server.{key}");
            match parse_duration(value) {
                Ok(duration) if !duration.is_zero() => Ok(duration),
                Ok(_) => Err(invalid(&origin, "must be longer than zero")),
                Err(error) => Err(invalid(&origin, error)),
            }
        };
        let server = &self.server;
        Ok(ConnectionTimeouts {
            header_read: duration("header_read_timeout", &server.header_read_timeout)?,
            idle: duration("idle_timeout", &server.idle_timeout)?,
            request_body: duration("request_body_timeout", &server.request_body_timeout)?,
            write: duration("write_timeout", &server.write_timeout)?,
        })
    }

    /// The users as the engine needs them (ids and configured keys).
    pub fn user_keys(&self) -> Vec<UserKeys> {
        self.users
            .iter()
            .map(|user| UserKeys {
                user_id: user.id.clone(),
                keys: SigningKeys { current: user.current_signing_key.clone(), next: user.next_signing_key.clone() },
            })
            .collect()
    }
}

fn defaults_table() -> Table {
    DEFAULTS.parse().expect("the embedded defaults parse")
}

/// Overlays `overlay` onto `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// An environment value as TOML when it parses as a TOML value, else as a string.
fn env_value(raw: &str) -> Value {
    format!("value = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current.entry(part.clone()).or_insert_with(|| Value::Table(Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("{part} is not a section"))?;
    }
    // Keep strings strings: a value like `8080` for a string setting must not become a number.
    let value = match (current.get(last), value) {
        (Some(Value::String(_)), Value::Integer(n)) => Value::String(n.to_string()),
        (Some(Value::String(_)), Value::Float(f)) => Value::String(f.to_string()),
        (Some(Value::String(_)), Value::Boolean(b)) => Value::String(b.to_string()),
        (_, value) => value,
    };
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = Config::defaults();
        assert_eq!(config.server.listen, "0.0.0.0:8080");
        assert!(config.storage.durable);
        assert!(config.users.is_empty());
        let engine = config.engine_config().unwrap();
        assert_eq!(engine.limits.default_retries, 3);
        assert_eq!(engine.dedup_window, Duration::from_secs(600));
        assert_eq!(config.server.max_connections, MaxConnections::Auto);
        let timeouts = config.connection_timeouts().unwrap();
        assert_eq!(timeouts.header_read, Duration::from_secs(30));
        assert_eq!(timeouts.idle, Duration::from_secs(120));
    }

    #[test]
    fn max_connections_is_auto_or_a_positive_number() {
        let load = |value: &str| Config::load(None, env(&[("TERN_SERVER__MAX_CONNECTIONS", value)]));
        assert_eq!(load("500").unwrap().server.max_connections, MaxConnections::Limit(500));
        assert_eq!(load("AUTO").unwrap().server.max_connections, MaxConnections::Auto);
        for bad in ["0", "-1", "many", "1.5"] {
            assert!(load(bad).is_err(), "{bad}");
        }
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("tern.toml");
        std::fs::write(&file, "[server]\nmax_connections = 64\n").unwrap();
        let config = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(config.server.max_connections, MaxConnections::Limit(64));
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("tern.toml");
        std::fs::write(
            &file,
            r#"
            [server]
            listen = "127.0.0.1:9000"
            [limits]
            max_retries = 10
            [[users]]
            id = "acme"
            token = "t1"
            current_signing_key = "sig_a"
            next_signing_key = "sig_b"
            "#,
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("TERN_LIMITS__MAX_RETRIES", "20"),
                ("TERN_RETENTION__LOGS", "14d"),
                ("TERN_SERVER__PATH_PREFIX", "/q"),
                ("TERN_CONFIG", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9000");
        assert_eq!(config.server.path_prefix, "/q");
        assert_eq!(config.limits.max_retries, 20);
        assert_eq!(config.retention.logs, "14d");
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.users[0].readonly_token, None);
    }

    #[test]
    fn users_can_come_from_the_environment() {
        let config = Config::load(
            None,
            env(&[(
                "TERN_USERS",
                r#"[{id = "a", token = "ta", readonly_token = "ra", current_signing_key = "sig_1", next_signing_key = "sig_2"}]"#,
            )]),
        )
        .unwrap();
        assert_eq!(config.users[0].readonly_token.as_deref(), Some("ra"));
    }

    #[test]
    fn debug_output_hides_tokens_and_keys() {
        let users = r#"[{id = "acme", token = "tokenSecret", readonly_token = "readonlySecret",
                         current_signing_key = "sig_currentSecret", next_signing_key = "sig_nextSecret"}]"#;
        let config = Config::load(None, env(&[("TERN_USERS", users)])).unwrap();
        let printed = format!("{config:?} {config:#?} {:?}", config.user_keys());
        assert!(printed.contains("acme"), "{printed}");
        assert!(!printed.contains("Secret"), "{printed}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        for bad in [
            vec![("TERN_SERVER__LISTNE", "x")],
            vec![("TERN_NOPE", "1")],
            vec![("TERN_LIMITS__MAX_DELAY", "soon")],
            vec![("TERN_DELIVERY__JWT_NBF", "never")],
            vec![("TERN_LIMITS__MAX_RETRIES", "many")],
            vec![("TERN_SERVER__IDLE_TIMEOUT", "0s")],
            vec![("TERN_SERVER__HEADER_READ_TIMEOUT", "soon")],
        ] {
            let error = Config::load(None, env(&bad)).unwrap_err();
            assert!(!error.to_string().is_empty(), "{bad:?}");
        }
        let duplicate = r#"[{id = "a", token = "t", current_signing_key = "s", next_signing_key = "n"},
                            {id = "b", token = "t", current_signing_key = "s", next_signing_key = "n"}]"#;
        assert!(Config::load(None, env(&[("TERN_USERS", duplicate)])).is_err());
        // base64 of {"UserID":"a"}: the second user's token names the first in webhook URLs.
        let named_twice = r#"[{id = "a", token = "t1", current_signing_key = "s", next_signing_key = "n"},
            {id = "b", token = "eyJVc2VySUQiOiJhIn0=", current_signing_key = "s", next_signing_key = "n"}]"#;
        let error = Config::load(None, env(&[("TERN_USERS", named_twice)])).unwrap_err();
        assert!(error.to_string().contains("names two users"), "{error}");
    }
}
