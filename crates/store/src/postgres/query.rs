//! Point reads and small listings.

use crate::error::Result;
use crate::model::*;
use tern_core::{Message, MessageId};
use tokio_postgres::GenericClient;

pub async fn get_dlq(c: &(impl GenericClient + Sync), user_id: &str, dlq_id: &str) -> Result<Option<Message>> {
    todo!("port")
}

pub async fn get_message(c: &(impl GenericClient + Sync), user_id: &str, id: MessageId) -> Result<Option<Message>> {
    todo!("port")
}

pub async fn message_bytes(c: &(impl GenericClient + Sync), user_id: &str, id: MessageId) -> Result<Option<usize>> {
    todo!("port")
}

pub async fn load_messages(c: &(impl GenericClient + Sync), ids: &[MessageId]) -> Result<Vec<Message>> {
    todo!("port")
}

pub async fn load_keys(c: &(impl GenericClient + Sync), user_id: &str) -> Result<Option<StoredKeys>> {
    todo!("port")
}

pub async fn list_queues(c: &(impl GenericClient + Sync), user_id: &str) -> Result<Vec<QueueRecord>> {
    todo!("port")
}

pub async fn get_queue(c: &(impl GenericClient + Sync), user_id: &str, name: &str) -> Result<Option<QueueRecord>> {
    todo!("port")
}

pub async fn all_queues(c: &(impl GenericClient + Sync)) -> Result<Vec<(String, QueueRecord)>> {
    todo!("port")
}

pub async fn all_flows(c: &(impl GenericClient + Sync)) -> Result<Vec<(String, String, FlowSettings)>> {
    todo!("port")
}

pub async fn get_group(c: &(impl GenericClient + Sync), user_id: &str, name: &str) -> Result<Option<UrlGroup>> {
    todo!("port")
}

pub async fn group_bytes(c: &(impl GenericClient + Sync), user_id: &str, name: &str) -> Result<Option<usize>> {
    todo!("port")
}

pub async fn list_groups(c: &(impl GenericClient + Sync), user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>> {
    todo!("port")
}
