//! What the store's queries run on: a connection or a transaction whose statements are
//! prepared once per connection and kept. A statement sent as text is parsed and described in a
//! round trip of its own before it runs; a kept one runs in one.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, RowStream, Statement};

/// The query methods the store uses, with statements kept per connection. (Named like the
/// driver's trait, whose methods it mirrors for SQL text.)
pub trait GenericClient: Send + Sync {
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;

    fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = Result<Row, Error>> + Send;

    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Rows as they arrive, never all held at once.
    fn query_raw(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<RowStream, Error>> + Send;
}

/// The most statements kept per connection. The store's statements are a fixed set, but a
/// listing's text follows its filters: past this many, a statement is prepared for one use.
const KEPT_STATEMENTS: usize = 512;

/// Statements prepared on one connection, by their text.
#[derive(Default)]
pub struct StatementCache(Mutex<HashMap<String, Statement>>);

impl StatementCache {
    async fn statement(
        &self,
        client: &(impl tokio_postgres::GenericClient + Sync),
        sql: &str,
    ) -> Result<Statement, Error> {
        if let Some(statement) = self.0.lock().expect("statement cache lock").get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        let mut kept = self.0.lock().expect("statement cache lock");
        if kept.len() < KEPT_STATEMENTS {
            kept.insert(sql.to_string(), statement.clone());
        }
        Ok(statement)
    }
}

/// A pooled connection's statement: kept by the pool, up to [`KEPT_STATEMENTS`].
async fn pooled_statement(client: &deadpool_postgres::ClientWrapper, sql: &str) -> Result<Statement, Error> {
    if client.statement_cache.size() < KEPT_STATEMENTS {
        client.prepare_cached(sql).await
    } else {
        client.prepare(sql).await
    }
}

/// A connection or transaction of the driver with the statement cache of its connection.
pub struct Cached<'a, C> {
    pub inner: &'a C,
    pub cache: &'a StatementCache,
}

impl<C: tokio_postgres::GenericClient + Sync> GenericClient for Cached<'_, C> {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let statement = self.cache.statement(self.inner, sql).await?;
        self.inner.query(&statement, params).await
    }

    async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let statement = self.cache.statement(self.inner, sql).await?;
        self.inner.query_one(&statement, params).await
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error> {
        let statement = self.cache.statement(self.inner, sql).await?;
        self.inner.query_opt(&statement, params).await
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let statement = self.cache.statement(self.inner, sql).await?;
        self.inner.execute(&statement, params).await
    }

    async fn query_raw(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<RowStream, Error> {
        let statement = self.cache.statement(self.inner, sql).await?;
        self.inner.query_raw(&statement, params.iter().map(|param| *param as &dyn ToSql)).await
    }
}

/// A pooled connection, with the statement cache the pool keeps for it.
impl GenericClient for deadpool_postgres::ClientWrapper {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let statement = pooled_statement(self, sql).await?;
        tokio_postgres::Client::query(self, &statement, params).await
    }

    async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let statement = pooled_statement(self, sql).await?;
        tokio_postgres::Client::query_one(self, &statement, params).await
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error> {
        let statement = pooled_statement(self, sql).await?;
        tokio_postgres::Client::query_opt(self, &statement, params).await
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let statement = pooled_statement(self, sql).await?;
        tokio_postgres::Client::execute(self, &statement, params).await
    }

    async fn query_raw(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<RowStream, Error> {
        let statement = pooled_statement(self, sql).await?;
        tokio_postgres::Client::query_raw(self, &statement, params.iter().map(|param| *param as &dyn ToSql)).await
    }
}
