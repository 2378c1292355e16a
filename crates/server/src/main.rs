//! The `tern` binary: `tern dev` (a drop-in for `qstash dev`), `tern serve` (production) and
//! `tern config` (print the commented defaults). Parsing and wiring only; the work is in
//! `tern_server::start`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tern_engine::clock::SystemClock;
use tern_server::config::{Config, DEFAULTS};
use tern_server::dev::{self, Quota, banner, dev_config};

// Many small, short-lived allocations on the message path (headers, ids, JSON): mimalloc
// serves them with less time in the allocator than the system one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tern", version, about = "A self-hosted, durable server for the Upstash QStash API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local development server with the well-known QStash dev users.
    Dev {
        /// Port to listen on.
        #[arg(long, short, env = "QSTASH_DEV_PORT", default_value_t = 8080)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Where to keep data; messages survive restarts.
        #[arg(long, default_value = ".tern-dev")]
        data_dir: PathBuf,
        /// Keep data in a temporary directory removed on exit, without fsync.
        #[arg(long, conflicts_with = "data_dir")]
        in_memory: bool,
        /// Plan limits to mirror.
        #[arg(long, env = "QSTASH_DEV_QUOTA", value_enum, default_value_t = Quota::Payg)]
        quota: Quota,
        /// Keep data in this PostgreSQL database instead of the embedded store
        /// (postgres://user:password@host:port/database).
        #[arg(long, conflicts_with = "in_memory")]
        postgres_url: Option<String>,
    },
    /// Run the production server from layered configuration.
    Serve {
        /// A TOML configuration file (see `tern config`).
        #[arg(long, env = "TERN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the configuration defaults, with comments.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tern: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tern: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let (config, announce, _temporary) = match command {
        Command::Config => {
            print!("{DEFAULTS}");
            return Ok(());
        }
        Command::Dev { port, host, data_dir, in_memory, quota, postgres_url } => {
            let temporary = in_memory.then(tempfile::TempDir::new).transpose()?;
            let (data_dir, mut storage) = match &temporary {
                Some(directory) => {
                    (directory.path().to_path_buf(), "in memory (a temporary directory, removed on exit)".to_string())
                }
                None => (data_dir.clone(), format!("{} (durable)", data_dir.display())),
            };
            let mut config = dev_config(&host, port, data_dir, !in_memory, quota);
            if let Some(url) = postgres_url {
                storage = "PostgreSQL (--postgres-url)".to_string();
                config.storage.backend = tern_server::config::StorageBackend::Postgres;
                config.storage.postgres_url = url;
            }
            (config, Some(storage), temporary)
        }
        Command::Serve { config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            if config.users.is_empty() {
                return Err("no users are configured: add at least one [[users]] entry (see `tern config`)".into());
            }
            (config, None, None)
        }
    };
    // A node standing by for another on the same database waits here, not listening yet.
    let store = tern_server::open_store(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let server = tern_server::start_on(&config, store, listener, Arc::new(SystemClock)).await?;
    match announce {
        Some(storage) => {
            let address = server.address;
            let host = if address.ip().is_unspecified() { "127.0.0.1".to_string() } else { address.ip().to_string() };
            let url = format!("http://{host}:{}{}", address.port(), config.server.path_prefix.trim_end_matches('/'));
            dev::announce(&mut std::io::stdout().lock(), &banner(&url, &storage));
        }
        None => {
            tracing::info!(address = %server.address, users = config.users.len(), "tern is running")
        }
    }
    server.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
