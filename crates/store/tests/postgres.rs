//! The PostgreSQL backend against the conformance suite. Each store opened here gets a database
//! of its own on the server named by `TERN_TEST_POSTGRES_URL` (`scripts/test` starts one and
//! sets it), dropped when the test ends.

mod conformance;

use conformance::Backend;
use std::sync::Arc;
use tern_store::Store;
use tern_store::postgres::{PostgresOptions, PostgresStore};

/// Databases for one test, on the server `TERN_TEST_POSTGRES_URL` names.
struct Postgres {
    databases: Vec<String>,
}

fn server_url() -> String {
    std::env::var("TERN_TEST_POSTGRES_URL").expect(
        "TERN_TEST_POSTGRES_URL names a PostgreSQL server to create test databases on \
         (scripts/test starts one and sets it)",
    )
}

/// `url` with its database replaced by `database`.
fn database_url(url: &str, database: &str) -> String {
    let mut url = url::Url::parse(url).expect("TERN_TEST_POSTGRES_URL is a postgres:// URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to TERN_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    client
}

impl Postgres {
    fn new() -> Self {
        Postgres { databases: Vec::new() }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions::new(database_url(&server_url(), self.databases.last().expect("a database")))
    }

    async fn drop_databases(self) {
        let admin = admin().await;
        for database in self.databases {
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await.unwrap();
        }
    }
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn open(&mut self) -> Arc<dyn Store> {
        let name = format!("tern_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        self.databases.push(name);
        Arc::new(PostgresStore::open(self.options()).await.unwrap())
    }

    async fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        store.shutdown().await.unwrap();
        drop(store);
        Arc::new(PostgresStore::open(self.options()).await.unwrap())
    }
}

macro_rules! conformance_group {
    ($name:ident, $group:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let mut backend = Postgres::new();
            $group(&mut backend).await;
            backend.drop_databases().await;
        }
    };
}

conformance_group!(messages, conformance::messages);
conformance_group!(resources, conformance::resources::run_all);
conformance_group!(url_groups, conformance::url_groups::run_all);
conformance_group!(schedules, conformance::schedules::run_all);
conformance_group!(listing, conformance::listing::run_all);
conformance_group!(workflows, conformance::workflows::run_all);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_stores_migrate_one_database_at_once() {
    let mut backend = Postgres::new();
    let first = backend.open().await;
    first.shutdown().await.unwrap();
    // A fresh database, opened by four stores together: each schema version is applied once.
    let name = format!("tern_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    backend.databases.push(name);
    let opening = (0..4).map(|_| PostgresStore::open(backend.options()));
    let stores = futures_util::future::join_all(opening).await;
    for store in stores {
        tern_store::Maintenance::shutdown(&store.expect("every node opens")).await.unwrap();
    }
    let (client, connection) = tokio_postgres::connect(&backend.options().url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let versions: Vec<i64> =
        client.query("SELECT version FROM tern_schema", &[]).await.unwrap().iter().map(|row| row.get(0)).collect();
    assert_eq!(versions, vec![1], "each version applied once");
    drop(client);
    backend.drop_databases().await;
}
