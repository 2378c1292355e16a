//! Databases for tests and benchmarks: each gets a fresh database of its own on a server
//! they are given (`scripts/test` starts one and names it in `TERN_TEST_POSTGRES_URL`).

use crate::error::{Result, StoreError};
use tokio_postgres::NoTls;

/// The environment variable naming the server test databases are created on.
pub const SERVER_URL_VAR: &str = "TERN_TEST_POSTGRES_URL";

/// Every test database's name starts with this, unless [`PREFIX_VAR`] names another prefix
/// (a test run names its own, to drop what it created when it ends).
pub const DATABASE_PREFIX: &str = "tern_test_";

/// The environment variable naming the prefix of test databases' names.
pub const PREFIX_VAR: &str = "TERN_TEST_DATABASE_PREFIX";

fn prefix() -> Result<String> {
    let prefix = std::env::var(PREFIX_VAR).unwrap_or_else(|_| DATABASE_PREFIX.to_string());
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(StoreError::InvalidInput(format!("{PREFIX_VAR} takes lowercase letters, digits and _")));
    }
    Ok(prefix)
}

/// The server named by [`SERVER_URL_VAR`], if set.
pub fn server_url() -> Option<String> {
    std::env::var(SERVER_URL_VAR).ok().filter(|url| !url.trim().is_empty())
}

/// Creates an empty database on the server at `server_url` (a `postgres://` URL whose user may
/// create databases) and returns the URL that opens it.
pub async fn create_database(server_url: &str) -> Result<String> {
    let name = format!("{}{}", prefix()?, ulid::Ulid::new().to_string().to_lowercase());
    let (client, connection) = tokio_postgres::connect(server_url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let created = client.batch_execute(&format!("CREATE DATABASE {name}")).await;
    drop(client);
    let _ = driver.await;
    created?;
    database_url(server_url, &name)
}

/// `server_url` with its database replaced by `database`.
pub fn database_url(server_url: &str, database: &str) -> Result<String> {
    let mut url = url::Url::parse(server_url)
        .map_err(|e| StoreError::InvalidInput(format!("{SERVER_URL_VAR} is not a postgres:// URL: {e}")))?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// Drops every database named with this run's prefix ([`PREFIX_VAR`]); returns how many.
pub async fn drop_databases(server_url: &str) -> Result<usize> {
    let prefix = prefix()?;
    let (client, connection) = tokio_postgres::connect(server_url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let names: Vec<String> = client
        .query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", &[&prefix])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in &names {
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    }
    drop(client);
    let _ = driver.await;
    Ok(names.len())
}
