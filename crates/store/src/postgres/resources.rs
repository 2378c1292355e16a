//! Writes of users' resources: DLQ deletes, keys, queues, flow-control keys, URL groups, and
//! retention.

use crate::error::Result;
use crate::model::*;
use tern_core::HeaderList;
use tokio_postgres::GenericClient;

pub async fn delete_dlq(c: &(impl GenericClient + Sync), user_id: &str, dlq_ids: &[String]) -> Result<u64> {
    todo!("port")
}

pub async fn save_keys(c: &(impl GenericClient + Sync), user_id: &str, keys: &StoredKeys) -> Result<()> {
    todo!("port")
}

pub async fn upsert_queue(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    name: &str,
    parallelism: u32,
    paused: bool,
    now: i64,
) -> Result<()> {
    todo!("port")
}

pub async fn save_flow(c: &(impl GenericClient + Sync), user_id: &str, key: &str, settings: &FlowSettings) -> Result<()> {
    todo!("port")
}

pub async fn save_flow_windows(c: &(impl GenericClient + Sync), windows: &[FlowWindow]) -> Result<()> {
    todo!("port")
}

pub async fn forget_flows(c: &(impl GenericClient + Sync), keys: &[(String, String)]) -> Result<()> {
    todo!("port")
}

pub async fn add_endpoints(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    group: &str,
    endpoints: &[Endpoint],
    now: i64,
    limits: GroupLimits,
) -> Result<EndpointsAdded> {
    todo!("port")
}

pub async fn remove_endpoints(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    group: &str,
    endpoints: &[Endpoint],
    now: i64,
) -> Result<()> {
    todo!("port")
}

pub async fn set_group_headers(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    group: &str,
    headers: &HeaderList,
    now: i64,
) -> Result<bool> {
    todo!("port")
}

pub async fn delete_group(c: &(impl GenericClient + Sync), user_id: &str, group: &str) -> Result<bool> {
    todo!("port")
}

pub async fn purge(c: &(impl GenericClient + Sync), now: i64, retention: Retention) -> Result<PurgeStats> {
    todo!("port")
}
