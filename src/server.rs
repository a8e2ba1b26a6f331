//! Running `facedb serve`: load the schema, build the engine, serve the API until a signal.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, ApiConfig};
use crate::config::ServeConfig;
use crate::schema::Schema;
use crate::store::{Engine, EngineConfig};

/// Serves until SIGINT or SIGTERM, then finishes the requests under way and returns.
/// Prints `facedb listening on http://ADDR` on stdout once the port is bound.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let schema = match &config.schema {
        Some(path) => Schema::load(path).map_err(anyhow::Error::msg)?,
        None => Schema::findface_default(),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let engine =
        Engine::new(schema, EngineConfig { facen_size: config.facen_size, max_search_limit: config.max_search_limit });
    let app = api::router(Arc::new(engine), &ApiConfig { max_body_bytes: config.max_body_bytes });
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    println!("facedb listening on http://{address}");
    tracing::info!(%address, facen_size = config.facen_size, "serving (data is kept in memory only)");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
