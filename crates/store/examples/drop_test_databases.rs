//! Drops the test databases of one test run (`scripts/test` calls it when the run ends): those
//! named with `TERN_TEST_DATABASE_PREFIX` on the server `TERN_TEST_POSTGRES_URL` names.

use tern_store::postgres::testing;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(server) = testing::server_url() else { return Ok(()) };
    let dropped = testing::drop_databases(&server).await?;
    if dropped > 0 {
        eprintln!("dropped {dropped} test databases");
    }
    Ok(())
}
