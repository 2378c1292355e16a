//! What the scheduler needs at start: every unfinished message, and the finished queue
//! messages whose callbacks still run.

use crate::batch::Effects;
use crate::error::Result;
use tokio_postgres::GenericClient;

pub async fn scan(c: &(impl GenericClient + Sync), now: i64, effects: &mut Effects) -> Result<()> {
    todo!("port")
}
