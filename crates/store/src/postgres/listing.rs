//! Pages of log entries and DLQ entries.

use crate::error::Result;
use crate::model::*;
use tern_core::Message;
use tokio_postgres::GenericClient;

pub async fn list_logs(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    filter: &MessageFilter,
    page: &PageRequest,
) -> Result<Page<LogEntry>> {
    todo!("port")
}

pub async fn list_dlq(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    filter: &MessageFilter,
    page: &PageRequest,
) -> Result<Page<Message>> {
    todo!("port")
}
