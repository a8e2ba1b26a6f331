//! The `facedb` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use facedb::config::ServeSettings;

#[derive(Parser)]
#[command(name = "facedb", version, about = "A dedicated biometric vector database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the single-node database: the galleries API v2 over HTTP.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// YAML file with the same settings (listen, data_dir, schema, facen_size, max_body_bytes,
    /// max_search_limit, wal_mode, checkpoint_interval, checkpoint_count, force_recovery,
    /// memory_limit, wal_segment_bytes, index_m, index_ef_construction, index_ef_search,
    /// index_min_faces); flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:18411].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
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
    /// Refuse adds (507) that would take the faces' estimated memory past this, e.g. 8G
    /// [default: no limit].
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
    /// Galleries get a graph from this many faces on; smaller ones are always scanned
    /// [default: 20000].
    #[arg(long, value_name = "N")]
    index_min_faces: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
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
    let file = match &args.config {
        Some(path) => ServeSettings::from_yaml_file(path).map_err(anyhow::Error::msg)?,
        None => ServeSettings::default(),
    };
    let flags = ServeSettings {
        listen: args.listen,
        data_dir: args.data_dir,
        schema: args.schema,
        facen_size: args.facen_size,
        max_body_bytes: args.max_body_bytes,
        max_search_limit: args.max_search_limit,
        wal_mode: args.wal_mode,
        checkpoint_interval: args.checkpoint_interval,
        checkpoint_count: args.checkpoint_count,
        force_recovery: args.force_recovery.then_some(true),
        memory_limit: args.memory_limit,
        wal_segment_bytes: args.wal_segment_bytes,
        index_m: args.index_m,
        index_ef_construction: args.index_ef_construction,
        index_ef_search: args.index_ef_search,
        index_min_faces: args.index_min_faces,
    };
    let config = flags.over(file).resolve().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(facedb::server::serve(config))
}
