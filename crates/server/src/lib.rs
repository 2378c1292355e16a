//! tern-server: the QStash-compatible HTTP API, its configuration, and what `tern dev` and
//! `tern serve` run. [`start`] is what `main` and the tests both call.

pub mod budget;
pub mod config;
pub mod descriptors;
pub mod dev;
pub mod error;
mod extract;
mod listener;
mod paging;
mod query;
mod routes;
mod views;
mod workflow_views;

use axum::extract::Request;
use config::Config;
use extract::Users;
use std::net::SocketAddr;
use std::sync::Arc;
use tern_engine::Engine;
use tern_engine::clock::Clock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;

/// Settings the handlers read.
#[derive(Debug)]
pub struct ApiSettings {
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub logs_page_size: usize,
    pub dlq_page_size: usize,
    pub list_page_bytes: usize,
    /// Request bodies being held (`limits.request_body_budget`).
    pub request_bodies: budget::ByteBudget,
    /// What listings read for the responses being built and sent (`limits.listing_budget`).
    pub listings: budget::ByteBudget,
    pub trust_forwarded_for: bool,
    /// How long a request body may take to arrive in whole.
    pub request_body_timeout: std::time::Duration,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    users: Arc<Users>,
    api: Arc<ApiSettings>,
}

/// A running server: its address, its engine, and a way to stop it.
pub struct RunningServer {
    pub address: SocketAddr,
    pub engine: Engine,
    api: Arc<ApiSettings>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How much of the server's byte budgets is taken now, and how many wait for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub request_bodies: budget::BudgetUsage,
    pub listings: budget::BudgetUsage,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] tern_store::StoreError),
    #[error("cannot start the engine: {0}")]
    Engine(#[from] tern_engine::EngineError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What went wrong while stopping. Whatever was not recorded is attempted again after the
/// next start, so this is worth a line in the log, not a lost message.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("could not finish serving requests: {0}")]
    Serving(#[from] std::io::Error),
    #[error("could not shut down cleanly ({0}); what was not recorded is attempted again at the next start")]
    Engine(#[from] tern_engine::EngineError),
}

/// Opens the configured store (creating or migrating its schema). On a database another node
/// is active on, this waits until that node stops: bind the listener only afterwards, so that a
/// node standing by refuses connections and a load balancer sends nothing its way.
pub async fn open_store(config: &Config) -> Result<Arc<dyn tern_store::Store>, StartError> {
    Ok(tern_store::open(&config.storage.store_config()?).await?)
}

/// Raises the open-file limit, opens the store, starts the engine and serves the API on
/// `listener`.
pub async fn start(config: &Config, listener: TcpListener, clock: Arc<dyn Clock>) -> Result<RunningServer, StartError> {
    let store = open_store(config).await?;
    start_on(config, store, listener, clock).await
}

/// [`start`] on a store already open ([`open_store`]).
pub async fn start_on(
    config: &Config,
    store: Arc<dyn tern_store::Store>,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let mut engine_config = config.engine_config()?;
    let timeouts = config.connection_timeouts()?;
    let budget = descriptors::plan(
        descriptors::raise_open_file_limit(),
        config.server.max_connections,
        engine_config.max_concurrent_deliveries,
    )
    .map_err(|message| config::ConfigError::Invalid { origin: "server.max_connections".into(), message })?;
    if let Some(warning) = &budget.lowered {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        max_connections = budget.max_connections,
        max_concurrent_deliveries = budget.max_concurrent_deliveries,
        "file descriptors shared out"
    );
    engine_config.max_concurrent_deliveries = budget.max_concurrent_deliveries;
    let engine = Engine::start(store, clock, engine_config, &config.user_keys()).await?;
    let api = Arc::new(ApiSettings {
        max_body_bytes: config.limits.max_body_bytes,
        max_batch_bytes: config.limits.max_batch_bytes,
        logs_page_size: config.limits.logs_page_size,
        dlq_page_size: config.limits.dlq_page_size,
        list_page_bytes: config.limits.list_page_bytes,
        request_bodies: budget::ByteBudget::new(config.limits.request_body_budget, config.users.len()),
        listings: budget::ByteBudget::new(config.limits.listing_budget, config.users.len()),
        trust_forwarded_for: config.server.trust_forwarded_for,
        request_body_timeout: timeouts.request_body,
    });
    let state = AppState { engine: engine.clone(), users: Arc::new(Users::new(&config.users)), api: Arc::clone(&api) };
    let prefix = config.server.path_prefix.clone();
    let normalize = tower::util::MapRequestLayer::new(move |request: Request| routes::normalize_path(&prefix, request));
    let app = normalize.layer(routes::router(state));
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let limits = listener::ConnectionLimits {
        max_connections: budget.max_connections,
        header_read_timeout: timeouts.header_read,
        idle_timeout: timeouts.idle,
        write_timeout: timeouts.write,
    };
    let task = listener::serve(listener, app, limits, stop.clone());
    Ok(RunningServer { address, engine, api, stop, task })
}

impl RunningServer {
    /// How much of the byte budgets for request bodies and listings is taken now.
    pub fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage { request_bodies: self.api.request_bodies.usage(), listings: self.api.listings.usage() }
    }

    /// Stops accepting requests, lets running ones finish, then shuts the engine down (which
    /// commits everything recorded).
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        self.stop.cancel();
        self.task.await.map_err(std::io::Error::other)?;
        self.engine.shutdown().await?;
        Ok(())
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> Result<(), ShutdownError> {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}
