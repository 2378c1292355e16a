//! Integration tests: a real tern server in-process, real HTTP destinations on 127.0.0.1, and
//! a manual clock for everything time-dependent. One test binary; one module per area.

mod auth;
mod batch;
mod callbacks;
mod cli;
mod dedup;
mod delivery;
mod dlq;
mod durability;
mod errors;
mod flow_control;
mod harness;
mod keys;
mod listing;
mod logs;
mod messages;
mod queue_order;
mod queues;
mod redaction;
mod retries;
mod routing;
mod schedule_support;
mod schedules_config;
mod schedules_create;
mod schedules_cron;
mod schedules_dst;
mod schedules_manage;
mod schedules_restart;
mod support;
mod timeline;
mod url_group_defaults;
mod url_groups;
