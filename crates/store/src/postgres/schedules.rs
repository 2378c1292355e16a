//! Schedules: writes, reads and ticks.

use super::writer::Context;
use crate::batch::Effects;
use crate::error::Result;
use crate::model::*;
use tokio_postgres::GenericClient;

pub async fn upsert(
    c: &(impl GenericClient + Sync),
    schedule: &ScheduleRecord,
    limit: usize,
    dedup: Option<&DedupClaim>,
) -> Result<ScheduleUpsert> {
    todo!("port")
}

pub async fn delete(c: &(impl GenericClient + Sync), user_id: &str, id: &str) -> Result<bool> {
    todo!("port")
}

pub async fn set_paused(
    c: &(impl GenericClient + Sync),
    user_id: &str,
    id: &str,
    paused: bool,
    next_tick_at: Option<i64>,
) -> Result<bool> {
    todo!("port")
}

pub async fn fire(context: Context<'_>, fires: Vec<ScheduleFire>, effects: &mut Effects) -> Result<Vec<bool>> {
    todo!("port")
}

pub async fn get(c: &(impl GenericClient + Sync), user_id: &str, id: &str) -> Result<Option<ScheduleWithStates>> {
    todo!("port")
}

pub async fn bytes(c: &(impl GenericClient + Sync), user_id: &str, id: &str) -> Result<Option<usize>> {
    todo!("port")
}

pub async fn list(c: &(impl GenericClient + Sync), user_id: &str, page: &PageRequest) -> Result<Page<ScheduleWithStates>> {
    todo!("port")
}

pub async fn due(c: &(impl GenericClient + Sync), now: i64, limit: usize) -> Result<Vec<ScheduleRecord>> {
    todo!("port")
}

pub async fn next_tick(c: &(impl GenericClient + Sync)) -> Result<Option<i64>> {
    todo!("port")
}
