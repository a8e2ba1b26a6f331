//! Running `facedb serve`: load the schema, build the engine, serve the API until a signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::detect::{FrontEnd, RemoteExtraction};
use crate::api::{self, ApiConfig};
use crate::config::{ExtractSettings, ServeConfig};
use crate::durable::cluster::{self, Layout};
use crate::durable::{Database, DurableConfig};
use crate::engine::EngineConfig;
use crate::extract::cache::DetectionCache;
use crate::extract::uploads::Uploads;
use crate::extract::{ExtractConfig, Extractor};
use crate::router::config::{Extraction, RouterConfig};
use crate::router::shard::Shard;
use crate::router::{self, Cluster, Shape};
use crate::schema::Schema;

/// The default listen address of `facedb shard`.
pub const DEFAULT_SHARD_LISTEN: &str = "127.0.0.1:8101";

/// Opens (recovers) the database in `data_dir` with `config`'s storage settings; `memory_limit`
/// is this database's part of the configured one.
async fn open_database(
    config: &ServeConfig,
    schema: Schema,
    data_dir: std::path::PathBuf,
    memory_limit: Option<u64>,
) -> anyhow::Result<Arc<Database>> {
    let engine_config = EngineConfig {
        facen_size: config.facen_size,
        max_search_limit: config.max_search_limit,
        memory_limit,
        index: config.index,
    };
    let durable = DurableConfig {
        data_dir,
        wal_mode: config.wal_mode,
        wal_segment_bytes: config.wal_segment_bytes,
        checkpoint_interval: (config.checkpoint_interval > 0)
            .then(|| std::time::Duration::from_secs(config.checkpoint_interval)),
        checkpoint_count: config.checkpoint_count,
        force_recovery: config.force_recovery,
    };
    let shown = durable.data_dir.display().to_string();
    // Recovery reads files and replays the log: blocking work, before the port is bound.
    tokio::task::spawn_blocking(move || Database::open(schema, engine_config, durable))
        .await
        .with_context(|| format!("recovery of {shown} failed"))?
        .map_err(anyhow::Error::msg)
}

fn load_schema(config: &ServeConfig) -> anyhow::Result<Schema> {
    match &config.schema {
        Some(path) => Schema::load(path).map_err(anyhow::Error::msg),
        None => Ok(Schema::findface_default()),
    }
}

/// The local shard layout of a data dir: as recorded, or chosen now (`--shards`, else the
/// host's rule) and recorded.
fn local_layout(config: &ServeConfig) -> anyhow::Result<Layout> {
    let dir = &config.data_dir;
    let recorded = cluster::read_layout(dir).map_err(anyhow::Error::msg)?;
    match (recorded, config.shards) {
        (Some(layout), Some(asked)) if asked != layout.shards => anyhow::bail!(
            "shards: the data dir {} was created with {} local shards; a data dir keeps its layout, so \
             --shards {asked} cannot apply (leave it out, or use a new data dir)",
            dir.display(),
            layout.shards
        ),
        (Some(layout), _) => Ok(layout),
        (None, asked) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let layout = match asked {
                Some(shards) => Layout { shards },
                None => Layout::for_host(cluster::host_memory_mb().unwrap_or(2000), cores),
            };
            cluster::write_layout(dir, &layout).map_err(anyhow::Error::msg)?;
            tracing::info!(shards = layout.shards, data_dir = %dir.display(), "new data dir: local shards");
            Ok(layout)
        }
    }
}

/// Serves until SIGINT or SIGTERM, then finishes the requests under way and returns.
/// Prints `facedb listening on http://ADDR` on stdout once the port is bound.
///
/// `facedb serve`: the router over local shards in this process (no HTTP between them), with
/// the detection front-end.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let schema = load_schema(&config)?;
    let layout = local_layout(&config)?;
    let limit = config.memory_limit.map(|bytes| bytes / layout.shards as u64);
    let opened = (0..layout.shards)
        .map(|k| open_database(&config, schema.clone(), layout.shard_dir(&config.data_dir, k), limit));
    let databases: Vec<Arc<Database>> = futures_util::future::try_join_all(opened).await?;
    let shards = databases
        .iter()
        .enumerate()
        .map(|(k, database)| Shard::local(format!("local shard {k}"), database.clone()))
        .collect();
    let shape = Shape::new(Arc::new(schema), config.facen_size, config.max_search_limit);
    let cluster = Arc::new(Cluster::local(shards, shape));
    let uploads_dir = config.data_dir.join("uploads");
    let uploads = Uploads::open(&uploads_dir).with_context(|| format!("cannot create {}", uploads_dir.display()))?;
    let front = Arc::new(start_front_end(config.extract.clone(), Some(uploads)).await);
    let app = router::routes(cluster, config.max_body_bytes, front);
    let address = listen(config.listen).await?;
    tracing::info!(
        address = %address.local_addr()?,
        shards = layout.shards,
        facen_size = config.facen_size,
        data_dir = %config.data_dir.display(),
        "serving"
    );
    axum::serve(address, app).with_graceful_shutdown(shutdown_signal()).await?;
    drop(databases);
    tracing::info!("stopped");
    Ok(())
}

/// Binds and prints the listening line the tests and tools wait for.
async fn listen(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
    println!("facedb listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

/// `facedb shard`: one database, the galleries API v2 and the cluster record, no detection.
pub async fn serve_shard(config: ServeConfig) -> anyhow::Result<()> {
    let schema = load_schema(&config)?;
    let database = open_database(&config, schema, config.data_dir.clone(), config.memory_limit).await?;
    let reason = "a storage shard does not detect faces: send photos to the router";
    let front = Arc::new(FrontEnd::without_detection(reason, None));
    let app = api::router(database.clone(), &ApiConfig { max_body_bytes: config.max_body_bytes }, front)
        .map_err(anyhow::Error::msg)?;
    let listener = listen(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, data_dir = %config.data_dir.display(), "serving a shard");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    drop(database);
    tracing::info!("stopped");
    Ok(())
}

/// `facedb router`: the galleries API v2 over remote shards, with detection in this process.
pub async fn serve_router(config: RouterConfig) -> anyhow::Result<()> {
    let storage = &config.storage;
    let timeouts = &storage.timeouts;
    let client = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.response_header)
        .timeout(timeouts.overall)
        .pool_idle_timeout(timeouts.idle_connection)
        .pool_max_idle_per_host(storage.max_idle_conns_per_host)
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .context("cannot build the HTTP client for the shards")?;
    let shards = storage
        .shards
        .iter()
        .map(|address| {
            Shard::remote(address.master.clone(), client.clone(), storage.max_inflight_per_shard, timeouts.overall)
        })
        .collect();
    let cluster = Arc::new(Cluster::remote(shards));
    cluster.start().await.map_err(anyhow::Error::msg)?;
    let uploads = match &config.uploads_dir {
        Some(dir) => Some(Uploads::open(dir).with_context(|| format!("cannot create {}", dir.display()))?),
        None => None,
    };
    let front = match &config.extraction {
        Extraction::InProcess => {
            let extract = config.extract.clone().resolve().map_err(|e| anyhow::anyhow!("extract.{e}"))?;
            start_front_end(extract, uploads).await
        }
        Extraction::Remote { url, timeouts } => {
            // The limits and the cache of the extract settings apply here; its workers do not.
            let settings = ExtractSettings { workers: Some(1), ..config.extract.clone() };
            let limits = settings.resolve().map_err(|e| anyhow::anyhow!("extract.{e}"))?.context("no limits")?;
            let client = reqwest::Client::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.response_header)
                .timeout(timeouts.overall)
                .pool_idle_timeout(timeouts.idle_connection)
                .no_proxy()
                .build()
                .context("cannot build the HTTP client for the extraction service")?;
            let remote = RemoteExtraction {
                client,
                url: url.clone(),
                cache: DetectionCache::new(limits.cache),
                allow_return_facen: limits.allow_return_facen,
                body_image_length: limits.body_image_length,
            };
            tracing::info!(extraction_api = %url, "faces are detected by the extraction service");
            FrontEnd { remote: Some(remote), ..FrontEnd::without_detection("", uploads) }
        }
    };
    let front =
        Arc::new(FrontEnd { return_facen_setting: "limits.allow-return-facen in the router's config", ..front });
    let app = router::routes(cluster, config.max_body_bytes, front);
    let listener = listen(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, shards = storage.shards.len(), "routing");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The detection front-end of `serve`: a database without models still serves the galleries
/// API, and detect requests are told why there is no detection.
async fn start_front_end(config: Option<ExtractConfig>, uploads: Option<Uploads>) -> FrontEnd {
    let Some(config) = config else {
        return FrontEnd::without_detection("turned off (extract workers 0)", uploads);
    };
    match tokio::task::spawn_blocking(move || Extractor::start(config)).await {
        Ok(Ok(extractor)) => FrontEnd { extractor: Some(extractor), ..FrontEnd::without_detection("", uploads) },
        Ok(Err(e)) => {
            tracing::warn!("face detection is off: {e:#}");
            FrontEnd::without_detection(format!("{e:#}"), uploads)
        }
        Err(e) => FrontEnd::without_detection(format!("loading the models failed: {e}"), uploads),
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
    let front = Arc::new(FrontEnd { extractor: Some(extractor), ..FrontEnd::without_detection("", None) });
    let app = api::extract_router(front);
    let listener = self::listen(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving detection");
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
