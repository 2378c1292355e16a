//! tern-server: the QStash-compatible HTTP API, its configuration, and what `tern dev` and
//! `tern serve` run. [`start`] is what `main` and the tests both call.

pub mod config;
pub mod dev;
pub mod error;
mod extract;
mod query;
mod routes;
mod views;

use axum::ServiceExt;
use axum::extract::Request;
use config::Config;
use extract::Users;
use std::net::SocketAddr;
use std::sync::Arc;
use tern_engine::Engine;
use tern_engine::clock::Clock;
use tern_store::sqlite::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;

/// Settings the handlers read.
#[derive(Debug)]
pub struct ApiSettings {
    pub max_body_bytes: usize,
    pub logs_page_size: usize,
    pub dlq_page_size: usize,
    pub list_page_bytes: usize,
    pub trust_forwarded_for: bool,
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
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
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

/// Opens the store, starts the engine and serves the API on `listener`.
pub async fn start(config: &Config, listener: TcpListener, clock: Arc<dyn Clock>) -> Result<RunningServer, StartError> {
    let engine_config = config.engine_config()?;
    let store_options = SqliteOptions { data_dir: config.storage.data_dir.clone(), durable: config.storage.durable };
    let store = Arc::new(SqliteStore::open(store_options)?);
    let engine = Engine::start(store, clock, engine_config, &config.user_keys()).await?;
    let state = AppState {
        engine: engine.clone(),
        users: Arc::new(Users::new(&config.users)),
        api: Arc::new(ApiSettings {
            max_body_bytes: config.limits.max_body_bytes,
            logs_page_size: config.limits.logs_page_size,
            dlq_page_size: config.limits.dlq_page_size,
            list_page_bytes: config.limits.list_page_bytes,
            trust_forwarded_for: config.server.trust_forwarded_for,
        }),
    };
    let prefix = config.server.path_prefix.clone();
    let normalize = tower::util::MapRequestLayer::new(move |request: Request| routes::normalize_path(&prefix, request));
    let app = normalize.layer(routes::router(state));
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let serving = axum::serve(listener, ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app))
        .with_graceful_shutdown(stop.clone().cancelled_owned());
    let task = tokio::spawn(async move { serving.await });
    Ok(RunningServer { address, engine, stop, task })
}

impl RunningServer {
    /// Stops accepting requests, lets running ones finish, then shuts the engine down (which
    /// commits everything recorded).
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.stop.cancel();
        self.task.await.map_err(std::io::Error::other)??;
        self.engine.shutdown().await?;
        Ok(())
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> Result<(), StartError> {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}
