//! The `facedb` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use facedb::config::{ExtractServiceSettings, ExtractSettings, ServeSettings};

#[derive(Parser)]
#[command(name = "facedb", version, about = "A dedicated biometric vector database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the single-node database: the galleries API v2 over HTTP, with face detection; its
    /// faces are spread over local shards in this process.
    Serve(Box<ServeArgs>),
    /// Run one storage shard alone (the galleries API v2, no detection), for a `facedb router`.
    Shard(Box<ShardArgs>),
    /// Run the router: the galleries API v2 over the shards of a YAML config (the original's
    /// sf-api), with face detection.
    Router(Box<RouterArgs>),
    /// Run face detection and extraction alone (`POST /v2/detect`).
    Extract(Box<ExtractCommandArgs>),
}

#[derive(Args)]
struct ExtractCommandArgs {
    /// YAML file with `listen` and an `extract:` section (the same keys as `serve`'s); flags
    /// win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:18666].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Keep memory freed by dlib mapped (glibc: one arena, no trimming, no mmap below 2 GiB):
    /// CNN detection about twice as fast, but the process stays at its peak memory (about
    /// 1.3 GB after a CNN detection of a 1 MP photo).
    #[arg(long)]
    keep_buffers: bool,
    #[command(flatten)]
    extract: ExtractArgs,
}

/// The detection front-end's flags, shared by `serve` and `extract` (YAML: the `extract:`
/// section, keys without the `extract-` prefix and with underscores).
#[derive(Args)]
struct ExtractArgs {
    /// Directory holding the model files under their original names (tools/setup.sh fetches
    /// them into ./models) [default: ./models].
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Detection worker threads, each with its own models; 0 turns detection off
    /// [default: the number of cores].
    #[arg(long, value_name = "N")]
    extract_workers: Option<usize>,
    /// Photos waiting for a worker at most; more get 503 OVER_CAPACITY [default: 32].
    #[arg(long, value_name = "N")]
    extract_queue: Option<usize>,
    /// Detection runs on a copy whose longer side is at most this; boxes are given in the
    /// photo's pixels [default: 2000].
    #[arg(long, value_name = "PX")]
    detect_max_side: Option<u32>,
    /// Photos with a longer side are refused, from their header [default: 6000].
    #[arg(long, value_name = "PX")]
    max_image_side: Option<u32>,
    /// Photos with more pixels are refused, from their header [default: 40000000].
    #[arg(long, value_name = "N")]
    max_image_pixels: Option<u64>,
    /// Largest photo in a request or fetched by URL (413 past it) [default: 32M].
    #[arg(long, value_name = "BYTES")]
    body_image_length: Option<String>,
    /// Longest photo URL accepted [default: 4096].
    #[arg(long, value_name = "N")]
    url_length: Option<usize>,
    /// Networks no URL fetch may reach, checked on every resolved address and redirect
    /// [default: 127.0.0.0/8,192.168.0.0/16,10.0.0.0/8,::1/128,fe00::/8].
    #[arg(long, value_name = "CIDRS")]
    deny_networks: Option<String>,
    /// Seconds a URL fetch may take [default: 30].
    #[arg(long, value_name = "SECS")]
    fetch_timeout: Option<u64>,
    /// Let `return_facen=true` put facens in detect responses.
    #[arg(long)]
    allow_return_facen: bool,
    /// Detections kept for faces/add and faces/search by id [default: 4096].
    #[arg(long, value_name = "N")]
    detection_cache_size: Option<usize>,
    /// Seconds a detection stays usable by id [default: 3600].
    #[arg(long, value_name = "SECS")]
    detection_cache_ttl: Option<u64>,
}

impl ExtractArgs {
    fn settings(self) -> ExtractSettings {
        ExtractSettings {
            models_dir: self.models_dir,
            workers: self.extract_workers,
            queue: self.extract_queue,
            detect_max_side: self.detect_max_side,
            max_image_side: self.max_image_side,
            max_image_pixels: self.max_image_pixels,
            body_image_length: self.body_image_length,
            url_length: self.url_length,
            deny_networks: self.deny_networks,
            fetch_timeout: self.fetch_timeout,
            allow_return_facen: self.allow_return_facen.then_some(true),
            detection_cache_size: self.detection_cache_size,
            detection_cache_ttl: self.detection_cache_ttl,
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// YAML file with the same settings (listen, data_dir, schema, facen_size, max_body_bytes,
    /// max_search_limit, wal_mode, checkpoint_interval, checkpoint_count, force_recovery,
    /// memory_limit, wal_segment_bytes, index_m, index_ef_construction, index_ef_search,
    /// index_min_faces, shards, and an `extract:` section); flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:18411].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Local shards, when the data dir is created (it keeps its layout afterwards)
    /// [default: max(min(memory MB / 2000, cores), 1)].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    extract: ExtractArgs,
}

#[derive(Args)]
struct ShardArgs {
    /// YAML file with the storage settings of `serve` (an `extract:` section is ignored);
    /// flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8101].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    #[command(flatten)]
    storage: StorageArgs,
}

#[derive(Args)]
struct RouterArgs {
    /// YAML file in the shape of the original's sf-api config: listen, extraction-api,
    /// storage-api (timeouts, max-idle-conns-per-host, shards), limits, cache,
    /// normalized-storage (docs/operations.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address to listen on, over the file's `listen` [default: 127.0.0.1:18411].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
}

/// The storage flags of `serve` and `shard`.
#[derive(Args)]
struct StorageArgs {
    /// Directory for the database's files [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Metadata schema (YAML) [default: the embedded schema/findface-default.yaml].
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// float32 components per feature vector [default: 128].
    #[arg(long, value_name = "N")]
    facen_size: Option<usize>,
    /// Largest request body accepted, in bytes [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Largest search `limit` accepted [default: 10000].
    #[arg(long, value_name = "N")]
    max_search_limit: Option<usize>,
    /// When a write is acknowledged: `none` (memory only; snapshots still taken), `write`
    /// (written to the log: survives a crash of the process), `fsync` (synced: survives a power
    /// loss) [default: fsync].
    #[arg(long, value_name = "MODE")]
    wal_mode: Option<String>,
    /// Seconds between automatic snapshots; 0 turns them off [default: 14400].
    #[arg(long, value_name = "SECS")]
    checkpoint_interval: Option<u64>,
    /// Snapshots kept; the log is kept from the oldest of them on [default: 3].
    #[arg(long, value_name = "N")]
    checkpoint_count: Option<usize>,
    /// Start even if the log has corrupt records: skip them, count them and report them.
    #[arg(long)]
    force_recovery: bool,
    /// Refuse adds (507) that would take the faces' estimated memory past this, e.g. 8G; `serve`
    /// gives each local shard an equal part [default: no limit].
    #[arg(long, value_name = "BYTES")]
    memory_limit: Option<String>,
    /// Start a new log segment once one is larger than this [default: 64M].
    #[arg(long, value_name = "BYTES")]
    wal_segment_bytes: Option<String>,
    /// Links per node of a gallery's HNSW graph (layer 0 keeps twice as many); a gallery may set
    /// its own when created [default: 32].
    #[arg(long, value_name = "M")]
    index_m: Option<usize>,
    /// Candidates weighed when a face is linked into the graph [default: 200].
    #[arg(long, value_name = "N")]
    index_ef_construction: Option<usize>,
    /// Candidates a graph search collects before the exact re-rank; more is slower and finds
    /// more of the true neighbours [default: 128].
    #[arg(long, value_name = "N")]
    index_ef_search: Option<usize>,
    /// Galleries get a graph (on each shard) from this many faces on; smaller ones are always
    /// scanned [default: 20000].
    #[arg(long, value_name = "N")]
    index_min_faces: Option<usize>,
}

impl StorageArgs {
    fn settings(self, listen: Option<String>) -> ServeSettings {
        ServeSettings {
            listen,
            data_dir: self.data_dir,
            schema: self.schema,
            facen_size: self.facen_size,
            max_body_bytes: self.max_body_bytes,
            max_search_limit: self.max_search_limit,
            wal_mode: self.wal_mode,
            checkpoint_interval: self.checkpoint_interval,
            checkpoint_count: self.checkpoint_count,
            force_recovery: self.force_recovery.then_some(true),
            memory_limit: self.memory_limit,
            wal_segment_bytes: self.wal_segment_bytes,
            index_m: self.index_m,
            index_ef_construction: self.index_ef_construction,
            index_ef_search: self.index_ef_search,
            index_min_faces: self.index_min_faces,
            extract: None,
            shards: None,
        }
    }
}

fn settings_file(path: Option<&PathBuf>) -> anyhow::Result<ServeSettings> {
    match path {
        Some(path) => ServeSettings::from_yaml_file(path).map_err(anyhow::Error::msg),
        None => Ok(ServeSettings::default()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours only for a terminal: logs sent to a file or a journal stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Extract(args) => extract(*args),
        Command::Shard(args) => shard(*args),
        Command::Router(args) => router(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facedb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = settings_file(args.config.as_ref())?;
    let flags = ServeSettings {
        extract: Some(args.extract.settings()),
        shards: args.shards,
        ..args.storage.settings(args.listen)
    };
    let config = flags.over(file).resolve().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(facedb::server::serve(config))
}

fn shard(args: ShardArgs) -> anyhow::Result<()> {
    let mut file = settings_file(args.config.as_ref())?;
    file.extract = None;
    let listen = args.listen.or(file.listen.take()).or_else(|| Some(facedb::server::DEFAULT_SHARD_LISTEN.to_owned()));
    let config = args.storage.settings(listen).over(file).resolve().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(facedb::server::serve_shard(config))
}

fn router(args: RouterArgs) -> anyhow::Result<()> {
    let mut config = facedb::router::config::RouterConfig::from_yaml_file(&args.config).map_err(anyhow::Error::msg)?;
    if let Some(text) = args.listen {
        config.listen =
            facedb::config::parse_listen("--listen", &text, "127.0.0.1:18411").map_err(anyhow::Error::msg)?;
    }
    for warning in &config.warnings {
        tracing::warn!("{}: {warning}", args.config.display());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(facedb::server::serve_router(config))
}

fn extract(args: ExtractCommandArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ExtractServiceSettings::from_yaml_file(path).map_err(anyhow::Error::msg)?,
        None => ExtractServiceSettings::default(),
    };
    let listen_text = args.listen.or(file.listen).unwrap_or_else(|| facedb::extract::DEFAULT_EXTRACT_LISTEN.to_owned());
    let listen = facedb::config::parse_listen("listen", &listen_text, "127.0.0.1:18666").map_err(anyhow::Error::msg)?;
    if args.keep_buffers || file.keep_buffers == Some(true) {
        // Before any thread starts: threads already running may have arenas of their own.
        facedb::server::keep_freed_memory();
    }
    let settings = args.extract.settings().over(file.extract.unwrap_or_default());
    let config = settings.resolve().map_err(|e| anyhow::anyhow!("extract.{e}"))?.ok_or_else(|| {
        anyhow::anyhow!("extract.workers: 0 turns detection off, which leaves `extract` nothing to do")
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(facedb::server::serve_extract(listen, config))
}
