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

/// Terminates the sessions of `application_name` on the database at `url` (as an operator's
/// `pg_terminate_backend` or a database restart would).
async fn terminate_sessions(url: &str, application_name: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await
        .unwrap();
    rows.len() as u64
}

fn named(url: &str, application_name: &str) -> PostgresOptions {
    let separator = if url.contains('?') { '&' } else { '?' };
    PostgresOptions::new(format!("{url}{separator}application_name={application_name}"))
}

async fn insert(store: &dyn Store) -> tern_store::Result<Vec<tern_store::InsertOutcome>> {
    let message = conformance::new_message("alice", "http://127.0.0.1:1/", 0, 0, &[]);
    store.insert_messages(vec![message]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_after_the_database_dropped_the_connection() {
    let mut backend = Postgres::new();
    backend.create().await;
    let url = backend.options().url;
    let store = PostgresStore::open(named(&url, "node_a")).await.unwrap();
    insert(&store).await.unwrap();
    assert!(terminate_sessions(&url, "node_a").await >= 1);
    // The write that finds the connection gone fails as "unreachable"; the next reconnects,
    // finds this node still the active one, and goes on.
    let mut answers = Vec::new();
    loop {
        let answer = insert(&store).await;
        let done = answer.is_ok();
        answers.push(answer);
        if done || answers.len() == 3 {
            break;
        }
    }
    let last = answers.last().unwrap();
    assert!(last.is_ok(), "writes did not resume: {answers:?}");
    for failed in answers.iter().filter_map(|answer| answer.as_ref().err()) {
        assert!(matches!(failed, tern_store::StoreError::Unreachable(_)), "{failed:?}");
    }
    tern_store::Maintenance::shutdown(&store).await.unwrap();
    backend.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_another_node_took_over_from_refuses_writes() {
    let mut backend = Postgres::new();
    backend.create().await;
    let url = backend.options().url;
    let first = PostgresStore::open(named(&url, "node_a")).await.unwrap();
    insert(&first).await.unwrap();
    let second = tokio::spawn(PostgresStore::open(named(&url, "node_b")));
    // The second node waits for the lock; the first one's sessions end (terminated until the
    // second holds the lock, so that the first cannot take it back); the second takes over.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let second = loop {
        terminate_sessions(&url, "node_a").await;
        if second.is_finished() {
            break second.await.unwrap().expect("the second node becomes active");
        }
        assert!(tokio::time::Instant::now() < deadline, "the second node never became active");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    insert(&second).await.expect("the active node writes");
    for _ in 0..2 {
        let refused = insert(&first).await.expect_err("the first node must not write any more");
        assert!(
            matches!(refused, tern_store::StoreError::Unavailable(_) | tern_store::StoreError::Unreachable(_)),
            "{refused:?}"
        );
    }
    let refused = insert(&first).await.expect_err("still refused");
    assert!(matches!(refused, tern_store::StoreError::Unavailable(_)), "{refused:?}");
    tern_store::Maintenance::shutdown(&second).await.unwrap();
    backend.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_postgresql_cannot_store_fails_only_its_own_write() {
    let mut backend = Postgres::new();
    let store = backend.open().await;
    insert(&*store).await.unwrap();
    // A NUL character in a client's value (PostgreSQL's text cannot hold one), beside publishes.
    let refused = store.delete_dlq("alice", vec!["x\0y".into()]);
    let (refused, published) = tokio::join!(refused, insert(&*store));
    assert!(matches!(refused, Err(tern_store::StoreError::InvalidInput(_))), "{refused:?}");
    assert_eq!(published.unwrap(), vec![tern_store::InsertOutcome::Created]);
    let read = store.get_dlq("alice", "x\0y").await;
    assert!(matches!(read, Err(tern_store::StoreError::InvalidInput(_))), "{read:?}");
    store.shutdown().await.unwrap();
    drop(store);
    backend.drop_databases().await;
}
