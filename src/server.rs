//! Running `facedb serve`: load the schema, build the engine, serve the API until a signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::detect::FrontEnd;
use crate::api::{self, ApiConfig};
use crate::config::ServeConfig;
use crate::durable::{Database, DurableConfig};
use crate::extract::uploads::Uploads;
use crate::extract::{ExtractConfig, Extractor};
use crate::schema::Schema;
use crate::store::EngineConfig;

/// Serves until SIGINT or SIGTERM, then finishes the requests under way and returns.
/// Prints `facedb listening on http://ADDR` on stdout once the port is bound.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let schema = match &config.schema {
        Some(path) => Schema::load(path).map_err(anyhow::Error::msg)?,
        None => Schema::findface_default(),
    };
    let engine_config = EngineConfig {
        facen_size: config.facen_size,
        max_search_limit: config.max_search_limit,
        memory_limit: config.memory_limit,
        index: config.index,
    };
    let durable = DurableConfig {
        data_dir: config.data_dir.clone(),
        wal_mode: config.wal_mode,
        wal_segment_bytes: config.wal_segment_bytes,
        checkpoint_interval: (config.checkpoint_interval > 0)
            .then(|| std::time::Duration::from_secs(config.checkpoint_interval)),
        checkpoint_count: config.checkpoint_count,
        force_recovery: config.force_recovery,
    };
    // Recovery reads files and replays the log: blocking work, before the port is bound.
    let database = tokio::task::spawn_blocking(move || Database::open(schema, engine_config, durable))
        .await
        .context("recovery failed")?
        .map_err(anyhow::Error::msg)?;
    let uploads_dir = config.data_dir.join("uploads");
    let uploads = Uploads::open(&uploads_dir).with_context(|| format!("cannot create {}", uploads_dir.display()))?;
    let front = Arc::new(start_front_end(config.extract.clone(), Some(uploads)).await);
    let app = api::router(database.clone(), &ApiConfig { max_body_bytes: config.max_body_bytes }, front);
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    println!("facedb listening on http://{address}");
    tracing::info!(%address, facen_size = config.facen_size, data_dir = %config.data_dir.display(), "serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    drop(database);
    tracing::info!("stopped");
    Ok(())
}

/// The detection front-end of `serve`: a database without models still serves the galleries
/// API, and detect requests are told why there is no detection.
async fn start_front_end(config: Option<ExtractConfig>, uploads: Option<Uploads>) -> FrontEnd {
    let Some(config) = config else {
        let reason = "turned off (extract workers 0)".to_owned();
        return FrontEnd { extractor: None, reason, uploads };
    };
    match tokio::task::spawn_blocking(move || Extractor::start(config)).await {
        Ok(Ok(extractor)) => FrontEnd { extractor: Some(extractor), reason: String::new(), uploads },
        Ok(Err(e)) => {
            tracing::warn!("face detection is off: {e:#}");
            FrontEnd { extractor: None, reason: format!("{e:#}"), uploads }
        }
        Err(e) => FrontEnd { extractor: None, reason: format!("loading the models failed: {e}"), uploads },
    }
}

/// glibc's malloc gives dlib's large per-photo buffers back to the system after every photo and
/// faults them in again on the next: half of a CNN detection's time (docs/benchmarks.md,
/// "Detection and extraction"). `facedb extract --keep-buffers` keeps them instead: one arena
/// (the workers' own arenas would give theirs back), no trimming, and no `mmap` below 2 GiB (a
/// CNN detection's buffers are larger than glibc's highest dynamic threshold, 32 MiB; with that
/// they measured no faster). The process then stays at its peak memory (1.3 GB after a CNN
/// detection of a 1 MP photo), so it is not the default, and `facedb serve` never does it (a
/// database that drops a big gallery should return the memory). Call it before any thread
/// starts: threads already running may have arenas of their own.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes malloc's tuning; a refused value leaves the default in place.
    let set = |param, value| unsafe { libc::mallopt(param, value) } == 1;
    let applied = [
        ("arena_max", set(libc::M_ARENA_MAX, 1)),
        ("trim_threshold", set(libc::M_TRIM_THRESHOLD, i32::MAX)),
        ("mmap_threshold", set(libc::M_MMAP_THRESHOLD, i32::MAX)),
    ];
    for (name, ok) in applied {
        if !ok {
            tracing::warn!("malloc refused {name}: CNN detection may be slower");
        }
    }
}

/// Runs `facedb extract`: detection alone, until SIGINT or SIGTERM. Models that do not load
/// fail the start. Prints `facedb listening on http://ADDR` once the port is bound.
pub async fn serve_extract(listen: SocketAddr, config: ExtractConfig) -> anyhow::Result<()> {
    let extractor = tokio::task::spawn_blocking(move || Extractor::start(config)).await??;
    let front = Arc::new(FrontEnd { extractor: Some(extractor), reason: String::new(), uploads: None });
    let app = api::extract_router(front);
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    println!("facedb listening on http://{address}");
    tracing::info!(%address, "serving detection");
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
