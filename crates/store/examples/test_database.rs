//! Prints the URL of a fresh test database on the server `TERN_TEST_POSTGRES_URL` names; with a
//! directory argument, the database is made once and its URL kept in `<directory>/postgres-url`,
//! so that a process restarted on that directory finds its data again. `scripts/tern-on-postgres`
//! uses it to run the official SDK suites on PostgreSQL.

use tern_store::postgres::testing;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = testing::server_url().ok_or("TERN_TEST_POSTGRES_URL is not set")?;
    let kept = std::env::args().nth(1).map(|directory| std::path::PathBuf::from(directory).join("postgres-url"));
    if let Some(kept) = &kept
        && let Ok(url) = std::fs::read_to_string(kept)
    {
        println!("{}", url.trim());
        return Ok(());
    }
    let url = testing::create_database(&server).await?;
    if let Some(kept) = &kept {
        if let Some(directory) = kept.parent() {
            std::fs::create_dir_all(directory)?;
        }
        std::fs::write(kept, &url)?;
    }
    println!("{url}");
    Ok(())
}
