//! The PostgreSQL backend against the conformance suite. Each store opened here gets a database
//! of its own on the server named by `TERN_TEST_POSTGRES_URL` (`scripts/test` starts one and
//! sets it), dropped when the test ends.

mod conformance;

use conformance::Backend;
use std::sync::Arc;
use tern_store::Store;
use tern_store::postgres::{PostgresOptions, PostgresStore, testing};

/// Databases for one test (their URLs), on the server `TERN_TEST_POSTGRES_URL` names.
struct Postgres {
    databases: Vec<String>,
}

fn server_url() -> String {
    testing::server_url().expect(
        "TERN_TEST_POSTGRES_URL names a PostgreSQL server to create test databases on \
         (scripts/test starts one and sets it)",
    )
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.expect("connect to TERN_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    client
}

impl Postgres {
    fn new() -> Self {
        Postgres { databases: Vec::new() }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions::new(self.databases.last().expect("a database").clone())
    }

    async fn create(&mut self) {
        self.databases.push(testing::create_database(&server_url()).await.unwrap());
    }

    async fn drop_databases(self) {
        let admin = admin().await;
        for url in self.databases {
            let name = url::Url::parse(&url).unwrap().path().trim_start_matches('/').to_string();
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
        }
    }
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn open(&mut self) -> Arc<dyn Store> {
        self.create().await;
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
async fn nodes_starting_together_migrate_once_and_take_turns_as_the_active_one() {
    use futures_util::StreamExt;
    let mut backend = Postgres::new();
    backend.create().await;
    // Four nodes on a fresh database at once: each schema version is applied once, one node is
    // active, and each of the others becomes active when the one before it stops.
    let mut opening: futures_util::stream::FuturesUnordered<_> =
        (0..4).map(|_| PostgresStore::open(backend.options())).collect();
    let mut active = 0;
    while let Some(store) = opening.next().await {
        let store = store.expect("every node opens in turn");
        active += 1;
        tern_store::Maintenance::shutdown(&store).await.unwrap();
        drop(store);
    }
    assert_eq!(active, 4);
    let (client, connection) = tokio_postgres::connect(&backend.options().url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let versions: Vec<i64> =
        client.query("SELECT version FROM tern_schema", &[]).await.unwrap().iter().map(|row| row.get(0)).collect();
    assert_eq!(versions, vec![1], "each version applied once");
    let epoch: i64 = client.query_one("SELECT epoch FROM tern_nodes", &[]).await.unwrap().get(0);
    assert_eq!(epoch, 4, "each node became the active one once");
    drop(client);
    backend.drop_databases().await;
}
