//! The YAML configuration of `facedb router`.
//!
//! The file keeps the layout of the original product's `findface-sf-api` configuration, so that
//! one written for it loads unchanged: `listen`, `extraction-api`, `storage-api` with its
//! `shards`, `limits`, `cache` and `normalized-storage`, keys spelled with dashes. A few keys of
//! our own sit beside them: `max-body-bytes`, `storage-api.max-inflight-per-shard`,
//! `normalized-storage.dir`, and `extract:`, the detection section of `facedb serve`'s file with
//! the same keys (spelled with underscores, as there) read into the same [`ExtractSettings`].
//!
//! The text is read into a YAML [`Value`] and walked by hand with [`Section`] (the settings
//! loader `facedb serve` uses too, `crate::config`) rather than deserialized into structs, so
//! that every error names the full dotted key (`storage-api.timeouts.connect`,
//! `storage-api.shards[1].master`, list positions counted from 0) and an unknown key lists the
//! keys accepted where it stands. Keys fall in three kinds:
//!
//! - used: checked, with a default when absent;
//! - documented by the seed but meaning nothing here (memcache and redis caches, WebDAV and S3
//!   image storage, replica shards): accepted with a line in [`RouterConfig::warnings`], and
//!   their values not checked beyond being YAML;
//! - anything else, typos included: an error.
//!
//! Where `limits` (or `cache.inmemory.size`) and `extract:` both set a detection setting, the
//! seed's key wins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;
use url::Url;

use crate::config::{
    describe, keys_of, parse_bytes, parse_listen, parse_yaml, read_yaml_file, ConfigError, ExtractSettings, Section,
};

/// The default listen address of `facedb router` (the seed's `findface-sf-api`).
pub const DEFAULT_ROUTER_LISTEN: &str = "127.0.0.1:18411";

const DEFAULT_MAX_IDLE_CONNS_PER_HOST: usize = 20;
const DEFAULT_MAX_INFLIGHT_PER_SHARD: usize = 64;
const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
const DEFAULT_UPLOADS_DIR: &str = "./uploads";

const TOP_KEYS: &[&str] = &[
    "listen",
    "extraction-api",
    "storage-api",
    "limits",
    "cache",
    "normalized-storage",
    "webdav",
    "max-body-bytes",
    "extract",
];
const TIMEOUT_KEYS: &[&str] = &["connect", "response_header", "overall", "idle_connection"];
const SHARDS_HINT: &str = "list the shards, such as `shards: [{master: http://127.0.0.1:8101/v2/}]`";
const CACHE_IGNORED: &str = "facedb keeps its detection cache in memory (cache.inmemory.size)";

/// The time limits of HTTP requests to one service (the `timeouts:` of `extraction-api` and
/// `storage-api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection; more than zero.
    pub connect: Duration,
    /// From the request sent to the response's headers received; more than zero.
    pub response_header: Duration,
    /// The whole request, from connecting to the response's last byte; more than zero.
    pub overall: Duration,
    /// How long an unused connection is kept for the next request; zero: not kept.
    pub idle_connection: Duration,
}

impl Default for Timeouts {
    /// The seed's: 5s, 30s, 35s, 10s.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(30),
            overall: Duration::from_secs(35),
            idle_connection: Duration::from_secs(10),
        }
    }
}

/// One entry of `storage-api.shards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardAddress {
    /// The shard's base URL, such as `http://127.0.0.1:8101/v2/`. Its path ends with `/`, so
    /// `master.join("galleries/faces")` lands under it.
    pub master: Url,
    /// A replica (`slave`), written the same way; accepted, not used yet. `''` or absent: `None`.
    pub slave: Option<Url>,
}

/// The `storage-api` section: the shards and how they are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageApi {
    pub timeouts: Timeouts,
    /// Unused connections kept open to each shard (`max-idle-conns-per-host`, default 20).
    pub max_idle_conns_per_host: usize,
    /// Requests in flight to one shard at most (`max-inflight-per-shard`, default 64, at least 1).
    pub max_inflight_per_shard: usize,
    /// At least one, in the file's order, no master twice.
    pub shards: Vec<ShardAddress>,
}

/// Where faces are detected and their feature vectors extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    /// In this process, with [`RouterConfig::extract`]'s settings: `extraction-api.extraction-api`
    /// absent or empty.
    InProcess,
    /// By the service at `extraction-api.extraction-api`.
    Remote { url: Url, timeouts: Timeouts },
}

/// Everything `facedb router` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub extraction: Extraction,
    pub storage: StorageApi,
    /// The largest request body accepted (`max-body-bytes`, default 32 MiB).
    pub max_body_bytes: usize,
    /// The detection settings: the `extract:` section, with `limits` and `cache.inmemory.size`
    /// over it; not yet resolved, but every value in it checked.
    pub extract: ExtractSettings,
    /// Where normalized face images are stored (`normalized-storage.dir`, default `./uploads`);
    /// `None` when `normalized-storage.enabled` is false.
    pub uploads_dir: Option<PathBuf>,
    /// One line per key accepted but unused, naming the full dotted key.
    pub warnings: Vec<String>,
}

impl RouterConfig {
    /// Reads the configuration from YAML `text`; errors begin with `source`, the file's name,
    /// then the dotted key.
    pub fn from_yaml(text: &str, source: &str) -> Result<RouterConfig, ConfigError> {
        let path = Path::new(source);
        read_config(&parse_yaml(text, path)?).map_err(|e| e.in_file(path))
    }

    /// Reads the configuration file at `path`; errors begin with the path.
    pub fn from_yaml_file(path: &Path) -> Result<RouterConfig, ConfigError> {
        read_config(&read_yaml_file(path)?).map_err(|e| e.in_file(path))
    }
}

fn read_config(root: &Value) -> Result<RouterConfig, ConfigError> {
    let mut warnings = Vec::new();
    let top = Section::new(Some(root), String::new(), TOP_KEYS)?;
    let listen_text = top.text("listen")?.unwrap_or_else(|| DEFAULT_ROUTER_LISTEN.to_owned());
    let listen = parse_listen("listen", listen_text.trim(), DEFAULT_ROUTER_LISTEN)?;
    let extraction = read_extraction(&top.section("extraction-api", &["extraction-api", "timeouts"])?, &mut warnings)?;
    let storage = read_storage(
        &top.section("storage-api", &["timeouts", "max-idle-conns-per-host", "max-inflight-per-shard", "shards"])?,
        &mut warnings,
    )?;
    let max_body_bytes = match top.text("max-body-bytes")? {
        Some(text) => parse_bytes("max-body-bytes", &text)? as usize,
        None => DEFAULT_MAX_BODY_BYTES,
    };
    if max_body_bytes < 1024 {
        return Err(ConfigError::setting("max-body-bytes", max_body_bytes, "is too small; it must be at least 1024"));
    }
    let extract = read_extract(&top, &mut warnings)?;
    let uploads_dir = read_uploads_dir(
        &top.section("normalized-storage", &["type", "enabled", "dir", "webdav", "s3"])?,
        &mut warnings,
    )?;
    if top.has("webdav") {
        // The seed's network set-up puts `webdav: {upload-url}` at the top (its line 1395).
        warnings.push(ignored("webdav", "normalized face images are kept by the router (normalized-storage)"));
    }
    Ok(RouterConfig { listen, extraction, storage, max_body_bytes, extract, uploads_dir, warnings })
}

/// `extraction-api`: a URL makes extraction remote; its timeouts mean nothing without one.
fn read_extraction(section: &Section, warnings: &mut Vec<String>) -> Result<Extraction, ConfigError> {
    match section.text("extraction-api")?.filter(|text| !text.trim().is_empty()) {
        Some(text) => Ok(Extraction::Remote {
            url: http_url(&section.key("extraction-api"), &text)?,
            timeouts: read_timeouts(&section.section("timeouts", TIMEOUT_KEYS)?)?,
        }),
        None => {
            if section.has("timeouts") {
                warnings.push(ignored(
                    &section.key("timeouts"),
                    "extraction runs in this process (extraction-api.extraction-api is empty)",
                ));
            }
            Ok(Extraction::InProcess)
        }
    }
}

fn read_storage(section: &Section, warnings: &mut Vec<String>) -> Result<StorageApi, ConfigError> {
    let timeouts = read_timeouts(&section.section("timeouts", TIMEOUT_KEYS)?)?;
    let max_idle_conns_per_host = section.count("max-idle-conns-per-host")?.unwrap_or(DEFAULT_MAX_IDLE_CONNS_PER_HOST);
    let max_inflight_per_shard = section.count("max-inflight-per-shard")?.unwrap_or(DEFAULT_MAX_INFLIGHT_PER_SHARD);
    if max_inflight_per_shard == 0 {
        let key = section.key("max-inflight-per-shard");
        return Err(ConfigError::setting(key, 0, "is too small; it must be at least 1"));
    }
    let shards = read_shards(section, warnings)?;
    Ok(StorageApi { timeouts, max_idle_conns_per_host, max_inflight_per_shard, shards })
}

fn read_shards(storage: &Section, warnings: &mut Vec<String>) -> Result<Vec<ShardAddress>, ConfigError> {
    let key = storage.key("shards");
    let items = match storage.get("shards") {
        None => return Err(ConfigError::Missing { key, why: format!("required; {SHARDS_HINT}") }),
        Some(Value::Sequence(items)) if items.is_empty() => {
            return Err(ConfigError::Missing { key, why: format!("empty; {SHARDS_HINT}") })
        }
        Some(Value::Sequence(items)) => items,
        Some(other) => return Err(ConfigError::setting(key, describe(other), format!("is not a list; {SHARDS_HINT}"))),
    };
    let mut shards: Vec<ShardAddress> = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let shard = Section::new(Some(item), format!("{key}[{position}]"), &["master", "slave"])?;
        let master_key = shard.key("master");
        let master = match shard.text("master")? {
            Some(text) => http_url(&master_key, &text)?,
            None => {
                let why = "required, such as http://127.0.0.1:8101/v2/".to_owned();
                return Err(ConfigError::Missing { key: master_key, why });
            }
        };
        if let Some(first) = shards.iter().position(|earlier| earlier.master == master) {
            let why = format!("is the same shard as {key}[{first}].master; list each shard once");
            return Err(ConfigError::setting(master_key, format!("{:?}", master.as_str()), why));
        }
        let slave_key = shard.key("slave");
        let slave = match shard.text("slave")?.filter(|text| !text.trim().is_empty()) {
            Some(text) => {
                warnings.push(ignored(&slave_key, "replicas are not used yet; the master serves reads and writes"));
                Some(http_url(&slave_key, &text)?)
            }
            None => None,
        };
        shards.push(ShardAddress { master, slave });
    }
    Ok(shards)
}

fn read_timeouts(section: &Section) -> Result<Timeouts, ConfigError> {
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        connect: section.duration("connect")?.unwrap_or(defaults.connect),
        response_header: section.duration("response_header")?.unwrap_or(defaults.response_header),
        overall: section.duration("overall")?.unwrap_or(defaults.overall),
        idle_connection: section.duration("idle_connection")?.unwrap_or(defaults.idle_connection),
    };
    // Zero means "no limit" to the seed's Go service but "fail at once" to our HTTP client.
    let limits =
        [("connect", timeouts.connect), ("response_header", timeouts.response_header), ("overall", timeouts.overall)];
    for (name, value) in limits {
        if value.is_zero() {
            return Err(ConfigError::setting(section.key(name), "zero", "is too short; it must be more than zero"));
        }
    }
    Ok(timeouts)
}

/// The detection settings: `extract:` as in `facedb serve`, then the seed's `limits` and
/// `cache.inmemory.size` over it, all checked by [`ExtractSettings::resolve`], whose errors
/// are given the key the value came from.
fn read_extract(top: &Section, warnings: &mut Vec<String>) -> Result<ExtractSettings, ConfigError> {
    let from_extract = top.section("extract", keys_of::<ExtractSettings>())?.settings::<ExtractSettings>(&[])?;
    let limits = top.section("limits", &["url-length", "deny-networks", "body-image-length", "allow-return-facen"])?;
    let cache = top.section("cache", &["type", "inmemory", "memcache", "redis"])?;
    let inmemory = cache.section("inmemory", &["size"])?;
    if cache.get("type").is_some_and(|kind| kind.as_str() != Some("inmemory")) {
        warnings.push(ignored(&cache.key("type"), CACHE_IGNORED));
    }
    for name in ["memcache", "redis"] {
        if cache.has(name) {
            warnings.push(ignored(&cache.key(name), CACHE_IGNORED));
        }
    }
    let from_seed = ExtractSettings {
        url_length: limits.count("url-length")?,
        deny_networks: limits.text("deny-networks")?,
        body_image_length: limits.text("body-image-length")?,
        allow_return_facen: limits.flag("allow-return-facen")?,
        detection_cache_size: inmemory.count("size")?,
        ..ExtractSettings::default()
    };
    // The field each seed key sets, as `resolve` names it in its errors.
    let seed_keys = [
        ("url_length", limits.key("url-length"), from_seed.url_length.is_some()),
        ("deny_networks", limits.key("deny-networks"), from_seed.deny_networks.is_some()),
        ("body_image_length", limits.key("body-image-length"), from_seed.body_image_length.is_some()),
        ("allow_return_facen", limits.key("allow-return-facen"), from_seed.allow_return_facen.is_some()),
        ("detection_cache_size", inmemory.key("size"), from_seed.detection_cache_size.is_some()),
    ];
    let settings = from_seed.over(from_extract);
    // `workers: 0` turns detection off and `resolve` checks nothing then; check the values anyway.
    let check = ExtractSettings { workers: Some(1), ..settings.clone() };
    match check.resolve() {
        Ok(_) => Ok(settings),
        Err(ConfigError::Setting { key, value, why }) => {
            let seed_key = seed_keys.iter().find(|(field, _, given)| *given && *field == key);
            let key =
                seed_key.map_or_else(|| crate::config::dotted(&top.key("extract"), &key), |(_, seed, _)| seed.clone());
            Err(ConfigError::Setting { key, value, why })
        }
        Err(other) => Err(other.under(&top.key("extract"))),
    }
}

/// `normalized-storage`: a local directory stands in for the seed's WebDAV and S3 stores.
fn read_uploads_dir(section: &Section, warnings: &mut Vec<String>) -> Result<Option<PathBuf>, ConfigError> {
    let enabled = section.flag("enabled")?.unwrap_or(true);
    let dir = section.text("dir")?.unwrap_or_else(|| DEFAULT_UPLOADS_DIR.to_owned());
    if enabled && dir.trim().is_empty() {
        let why =
            format!("empty; name a directory such as {DEFAULT_UPLOADS_DIR}, or set {}: false", section.key("enabled"));
        return Err(ConfigError::Missing { key: section.key("dir"), why });
    }
    let reason = if enabled {
        format!("normalized face images are stored in the local directory {dir} ({})", section.key("dir"))
    } else {
        format!("{} is false", section.key("enabled"))
    };
    let unused: &[&str] = if enabled { &["type", "webdav", "s3"] } else { &["type", "dir", "webdav", "s3"] };
    for name in unused {
        if section.has(name) {
            warnings.push(ignored(&section.key(name), &reason));
        }
    }
    Ok(enabled.then(|| PathBuf::from(dir)))
}

fn ignored(key: &str, reason: &str) -> String {
    format!("{key}: accepted and ignored: {reason}")
}

/// An `http://` or `https://` URL with a host and no query or fragment, its path ending with
/// `/` so that paths joined to it land under it.
fn http_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let invalid = |why: &str| {
        ConfigError::setting(key, format!("{text:?}"), format!("is not an http:// or https:// URL with a host ({why})"))
    };
    let mut url = Url::parse(text.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(&format!("its scheme is {}", url.scheme())));
    }
    if url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("paths are joined to it, so it cannot have a query or a fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_duration;

    /// The seed's `findface-sf-api` example, as it ships.
    const SEED_EXAMPLE: &str = "\
listen: 127.0.0.1:18411
extraction-api:
  timeouts:
    connect: 5s
    response_header: 30s
    overall: 35s
    idle_connection: 10s
  extraction-api: http://127.0.0.1:18666
storage-api:
  timeouts:
    connect: 5s
    response_header: 30s
    overall: 35s
    idle_connection: 10s
  max-idle-conns-per-host: 20
  shards:
  - master: http://127.0.0.1:8101/v2/
    slave: ''
  - master: http://127.0.0.1:8102/v2/
    slave: ''
  - master: http://127.0.0.1:8103/v2/
    slave: ''
  - master: http://127.0.0.1:8104/v2/
    slave: ''
  - master: http://127.0.0.1:8105/v2/
    slave: ''
  - master: http://127.0.0.1:8106/v2/
    slave: ''
  - master: http://127.0.0.1:8107/v2/
    slave: ''
  - master: http://127.0.0.1:8108/v2/
    slave: ''
limits:
  url-length: 4096
  deny-networks: 127.0.0.0/8,192.168.0.0/16,10.0.0.0/8,::1/128,fe00::/8
  body-image-length: 33554432
  allow-return-facen: false
cache:
  type: memcache
  inmemory:
    size: 16384
  memcache:
    nodes:
    - 127.0.0.1:11211
    timeout: 100ms
  redis:
    network: tcp
    addr: localhost:6379
    password: ''
    db: 0
    timeout: 5s
normalized-storage:
  type: webdav
  enabled: true
  webdav:
    upload-url: http://127.0.0.1:3333/uploads/
    timeouts:
      connect: 5s
      response_header: 30s
      overall: 35s
      idle_connection: 10s
  s3:
    endpoint: ''
    bucket-name: ''
    access-key: ''
    secret-access-key: ''
    secure: true
    region: ''
    public-url: ''
    operation-timeout: 30
";

    /// The least a file may say.
    const ONE_SHARD: &str = "storage-api:\n  shards:\n  - master: http://127.0.0.1:8101/v2/\n";

    fn parse(text: &str) -> RouterConfig {
        RouterConfig::from_yaml(text, "router.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match RouterConfig::from_yaml(text, "router.yaml") {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn the_seeds_example_parses_with_a_warning_per_unused_key() {
        let config = parse(SEED_EXAMPLE);
        assert_eq!(config.listen, "127.0.0.1:18411".parse::<SocketAddr>().unwrap());
        assert_eq!(
            config.extraction,
            Extraction::Remote { url: url("http://127.0.0.1:18666/"), timeouts: Timeouts::default() }
        );
        assert_eq!(config.storage.timeouts, Timeouts::default());
        assert_eq!((config.storage.max_idle_conns_per_host, config.storage.max_inflight_per_shard), (20, 64));
        assert_eq!(config.storage.shards.len(), 8);
        assert_eq!(config.storage.shards[7], ShardAddress { master: url("http://127.0.0.1:8108/v2/"), slave: None });
        assert_eq!(config.max_body_bytes, 32 << 20);
        assert_eq!(
            config.extract,
            ExtractSettings {
                url_length: Some(4096),
                deny_networks: Some("127.0.0.0/8,192.168.0.0/16,10.0.0.0/8,::1/128,fe00::/8".into()),
                body_image_length: Some("33554432".into()),
                allow_return_facen: Some(false),
                detection_cache_size: Some(16384),
                ..ExtractSettings::default()
            }
        );
        assert_eq!(config.uploads_dir, Some(PathBuf::from("./uploads")));
        let local = "normalized face images are stored in the local directory ./uploads (normalized-storage.dir)";
        assert_eq!(
            config.warnings,
            [
                format!("cache.type: accepted and ignored: {CACHE_IGNORED}"),
                format!("cache.memcache: accepted and ignored: {CACHE_IGNORED}"),
                format!("cache.redis: accepted and ignored: {CACHE_IGNORED}"),
                format!("normalized-storage.type: accepted and ignored: {local}"),
                format!("normalized-storage.webdav: accepted and ignored: {local}"),
                format!("normalized-storage.s3: accepted and ignored: {local}"),
            ]
        );
    }

    #[test]
    fn a_file_with_one_shard_takes_the_defaults() {
        let config = parse(ONE_SHARD);
        assert_eq!(
            config,
            RouterConfig {
                listen: DEFAULT_ROUTER_LISTEN.parse().unwrap(),
                extraction: Extraction::InProcess,
                storage: StorageApi {
                    timeouts: Timeouts {
                        connect: Duration::from_secs(5),
                        response_header: Duration::from_secs(30),
                        overall: Duration::from_secs(35),
                        idle_connection: Duration::from_secs(10),
                    },
                    max_idle_conns_per_host: 20,
                    max_inflight_per_shard: 64,
                    shards: vec![ShardAddress { master: url("http://127.0.0.1:8101/v2/"), slave: None }],
                },
                max_body_bytes: 33_554_432,
                extract: ExtractSettings::default(),
                uploads_dir: Some(PathBuf::from("./uploads")),
                warnings: vec![],
            }
        );
    }

    #[test]
    fn our_own_keys_are_read() {
        let config = parse(&format!(
            "max-body-bytes: 64M\nnormalized-storage: {{dir: /srv/uploads}}\n{ONE_SHARD}  max-inflight-per-shard: 8\n"
        ));
        assert_eq!(config.max_body_bytes, 64 << 20);
        assert_eq!(config.uploads_dir, Some(PathBuf::from("/srv/uploads")));
        assert_eq!(config.storage.max_inflight_per_shard, 8);
        assert_eq!(
            error(&format!("{ONE_SHARD}  max-inflight-per-shard: 0\n")),
            "router.yaml: storage-api.max-inflight-per-shard: 0 is too small; it must be at least 1"
        );
        assert_eq!(
            error(&format!("max-body-bytes: 12Q\n{ONE_SHARD}")),
            "router.yaml: max-body-bytes: \"12Q\" is not a size in bytes such as 1073741824, 512M or 4G"
        );
        assert_eq!(
            error(&format!("{ONE_SHARD}  max-idle-conns-per-host: many\n")),
            "router.yaml: storage-api.max-idle-conns-per-host: \"many\" is not a whole number"
        );
    }

    #[test]
    fn an_empty_file_or_one_without_storage_api_needs_shards() {
        let required = format!("router.yaml: storage-api.shards: required; {SHARDS_HINT}");
        assert_eq!(error(""), required);
        assert_eq!(error("# nothing yet\n"), required);
        assert_eq!(error("listen: 127.0.0.1:18411\n"), required);
        assert_eq!(error("storage-api:\n  max-idle-conns-per-host: 4\n"), required);
    }

    #[test]
    fn an_empty_shard_list_is_an_error() {
        assert_eq!(
            error("storage-api:\n  shards: []\n"),
            format!("router.yaml: storage-api.shards: empty; {SHARDS_HINT}")
        );
        assert_eq!(
            error("storage-api:\n  shards: http://127.0.0.1:8101/v2/\n"),
            format!("router.yaml: storage-api.shards: \"http://127.0.0.1:8101/v2/\" is not a list; {SHARDS_HINT}")
        );
        assert_eq!(
            error("storage-api:\n  shards:\n  - slave: http://127.0.0.1:8201/v2/\n"),
            "router.yaml: storage-api.shards[0].master: required, such as http://127.0.0.1:8101/v2/"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_keys_accepted_there() {
        assert_eq!(
            error(&format!("lisen: 127.0.0.1:18411\n{ONE_SHARD}")),
            "router.yaml: lisen: unknown key; the keys accepted at the top level are listen, extraction-api, \
             storage-api, limits, cache, normalized-storage, webdav, max-body-bytes, extract"
        );
        assert_eq!(
            error("storage-api:\n  shard:\n  - master: http://127.0.0.1:8101/v2/\n"),
            "router.yaml: storage-api.shard: unknown key; the keys accepted in storage-api are timeouts, \
             max-idle-conns-per-host, max-inflight-per-shard, shards"
        );
        assert_eq!(
            error(&format!("{ONE_SHARD}  timeouts: {{conect: 5s}}\n")),
            "router.yaml: storage-api.timeouts.conect: unknown key; the keys accepted in storage-api.timeouts are \
             connect, response_header, overall, idle_connection"
        );
        assert_eq!(
            error("storage-api: {shards: [{master: http://127.0.0.1:8101/v2/}, {mastr: http://127.0.0.1:8102/v2/}]}"),
            "router.yaml: storage-api.shards[1].mastr: unknown key; the keys accepted in storage-api.shards[1] are \
             master, slave"
        );
        assert_eq!(
            error(&format!("cache: {{inmemory: {{size: 10, ttl: 5}}}}\n{ONE_SHARD}")),
            "router.yaml: cache.inmemory.ttl: unknown key; the keys accepted in cache.inmemory are size"
        );
        assert!(error(&format!("extract: {{wrokers: 1}}\n{ONE_SHARD}"))
            .starts_with("router.yaml: extract.wrokers: unknown key; the keys accepted in extract are models_dir, "));
        assert_eq!(
            error("storage-api: [1]\n"),
            "router.yaml: storage-api: a list is not a mapping of keys such as timeouts, max-idle-conns-per-host, \
             max-inflight-per-shard, shards"
        );
    }

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.3s"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("0.25"), Some(Duration::from_millis(250)));
        for bad in ["", "5x", "s", "-1s", "-5", "1.2.3s", "inf", "NaN", "5 s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        let config = parse(&format!("{ONE_SHARD}  timeouts: {{connect: 1.5, overall: 2m, idle_connection: 0}}\n"));
        let timeouts = config.storage.timeouts;
        assert_eq!((timeouts.connect, timeouts.overall), (Duration::from_millis(1500), Duration::from_secs(120)));
        assert_eq!((timeouts.response_header, timeouts.idle_connection), (Duration::from_secs(30), Duration::ZERO));
    }

    #[test]
    fn a_bad_or_zero_duration_is_named() {
        assert_eq!(
            error(&format!("{ONE_SHARD}  timeouts: {{connect: 5x}}\n")),
            "router.yaml: storage-api.timeouts.connect: \"5x\" is not a duration (e.g. 5s, 100ms, 1m, or seconds \
             as a number)"
        );
        assert_eq!(
            error(&format!("{ONE_SHARD}  timeouts: {{connect: 0s}}\n")),
            "router.yaml: storage-api.timeouts.connect: zero is too short; it must be more than zero"
        );
        assert_eq!(
            error(&format!("{ONE_SHARD}  timeouts: {{response_header: 0ms}}\n")),
            "router.yaml: storage-api.timeouts.response_header: zero is too short; it must be more than zero"
        );
        assert_eq!(
            error(&format!(
                "extraction-api: {{extraction-api: http://x:18666, timeouts: {{overall: 0}}}}\n{ONE_SHARD}"
            )),
            "router.yaml: extraction-api.timeouts.overall: zero is too short; it must be more than zero"
        );
    }

    #[test]
    fn shard_urls_are_checked_and_end_with_a_slash() {
        let config = parse(
            "storage-api:\n  shards:\n  - master: http://10.0.0.1:8101/v2\n  - master: https://shard-2.example/\n",
        );
        let masters: Vec<&str> = config.storage.shards.iter().map(|shard| shard.master.as_str()).collect();
        assert_eq!(masters, ["http://10.0.0.1:8101/v2/", "https://shard-2.example/"]);
        let galleries = config.storage.shards[0].master.join("galleries/faces").unwrap();
        assert_eq!(galleries.as_str(), "http://10.0.0.1:8101/v2/galleries/faces");
        let two = "storage-api:\n  shards:\n  - master: http://127.0.0.1:8101/v2/\n  - master: ";
        assert_eq!(
            error(&format!("{two}ftp://127.0.0.1:8102/v2/\n")),
            "router.yaml: storage-api.shards[1].master: \"ftp://127.0.0.1:8102/v2/\" is not an http:// or https:// \
             URL with a host (its scheme is ftp)"
        );
        assert_eq!(
            error(&format!("{two}127.0.0.1:8102\n")),
            "router.yaml: storage-api.shards[1].master: \"127.0.0.1:8102\" is not an http:// or https:// URL with \
             a host (relative URL without a base)"
        );
        assert_eq!(
            error(&format!("{two}http://127.0.0.1:8102/v2/?x=1\n")),
            "router.yaml: storage-api.shards[1].master: \"http://127.0.0.1:8102/v2/?x=1\" is not an http:// or \
             https:// URL with a host (paths are joined to it, so it cannot have a query or a fragment)"
        );
        assert_eq!(
            error("extraction-api: {extraction-api: 'localhost'}\nstorage-api: {shards: [{master: http://a/}]}\n"),
            "router.yaml: extraction-api.extraction-api: \"localhost\" is not an http:// or https:// URL with a host \
             (relative URL without a base)"
        );
    }

    #[test]
    fn the_same_master_twice_names_both_positions() {
        let text = "\
storage-api:
  shards:
  - master: http://127.0.0.1:8101/v2/
  - master: http://127.0.0.1:8102/v2/
  - master: http://127.0.0.1:8101/v2
";
        assert_eq!(
            error(text),
            "router.yaml: storage-api.shards[2].master: \"http://127.0.0.1:8101/v2/\" is the same shard as \
             storage-api.shards[0].master; list each shard once"
        );
    }

    #[test]
    fn the_seeds_top_level_webdav_is_accepted_with_a_warning() {
        let config = parse(
            "webdav:\n  upload-url: http://127.0.0.1:3333/uploads/\nstorage-api:\n  shards:\n  - master: http://127.0.0.1:8101/v2/\n",
        );
        assert_eq!(
            config.warnings,
            ["webdav: accepted and ignored: normalized face images are kept by the router (normalized-storage)"]
        );
    }

    #[test]
    fn a_replica_is_accepted_with_a_warning() {
        let config = parse(
            "storage-api:\n  shards:\n  - master: http://127.0.0.1:8101/v2/\n    slave: http://127.0.0.1:8201/v2\n",
        );
        assert_eq!(config.storage.shards[0].slave, Some(url("http://127.0.0.1:8201/v2/")));
        assert_eq!(
            config.warnings,
            ["storage-api.shards[0].slave: accepted and ignored: replicas are not used yet; the master serves reads \
              and writes"]
        );
        assert_eq!(
            error("storage-api:\n  shards:\n  - master: http://127.0.0.1:8101/v2/\n    slave: 8201\n"),
            "router.yaml: storage-api.shards[0].slave: \"8201\" is not an http:// or https:// URL with a host \
             (relative URL without a base)"
        );
    }

    #[test]
    fn listen_must_be_an_ip_and_port() {
        assert_eq!(parse(&format!("listen: '[::1]:9000'\n{ONE_SHARD}")).listen, "[::1]:9000".parse().unwrap());
        assert_eq!(
            error(&format!("listen: localhost:18411\n{ONE_SHARD}")),
            "router.yaml: listen: \"localhost:18411\" is not an address HOST:PORT with an IP, such as \
             127.0.0.1:18411 (invalid socket address syntax)"
        );
        assert_eq!(
            error(&format!("listen: 18411\n{ONE_SHARD}")),
            "router.yaml: listen: \"18411\" is not an address HOST:PORT with an IP, such as 127.0.0.1:18411 \
             (invalid socket address syntax)"
        );
    }

    #[test]
    fn extraction_is_in_process_unless_a_url_is_given() {
        let config =
            parse(&format!("extraction-api:\n  extraction-api: ''\n  timeouts: {{connect: whenever}}\n{ONE_SHARD}"));
        assert_eq!(config.extraction, Extraction::InProcess);
        assert_eq!(
            config.warnings,
            ["extraction-api.timeouts: accepted and ignored: extraction runs in this process \
              (extraction-api.extraction-api is empty)"]
        );
        let config = parse(&format!(
            "extraction-api:\n  extraction-api: http://10.0.0.9:18666\n  timeouts: {{overall: 1m}}\n{ONE_SHARD}"
        ));
        let Extraction::Remote { url: remote, timeouts } = config.extraction else { panic!("{:?}", config.extraction) };
        assert_eq!((remote.as_str(), timeouts.overall), ("http://10.0.0.9:18666/", Duration::from_secs(60)));
    }

    #[test]
    fn the_extract_section_takes_the_keys_of_serve() {
        let config = parse(&format!(
            "\
extract:
  workers: 2
  models_dir: /opt/models
  body_image_length: 8M
  detection_cache_ttl: 60
{ONE_SHARD}"
        ));
        assert_eq!(
            config.extract,
            ExtractSettings {
                workers: Some(2),
                models_dir: Some(PathBuf::from("/opt/models")),
                body_image_length: Some("8M".into()),
                detection_cache_ttl: Some(60),
                ..ExtractSettings::default()
            }
        );
        assert_eq!(
            error(&format!("extract:\n  workers: many\n{ONE_SHARD}")),
            "router.yaml: extract.workers: invalid type: string \"many\", expected usize"
        );
        assert_eq!(
            error(&format!("extract:\n  url_length: 5\n{ONE_SHARD}")),
            "router.yaml: extract.url_length: 5 is too small; it must be at least 16"
        );
        assert_eq!(
            error(&format!("extract:\n  workers: 0\n  queue: 0\n{ONE_SHARD}")),
            "router.yaml: extract.queue: 0 is too small; it must be at least 1"
        );
    }

    #[test]
    fn limits_and_the_cache_size_map_over_the_extract_section() {
        let config = parse(&format!(
            "extract:\n  url_length: 100\n  deny_networks: 10.0.0.0/8\n  detection_cache_size: 5\n  workers: 3\n\
             limits:\n  url-length: 200\n  allow-return-facen: true\n\
             cache:\n  type: inmemory\n  inmemory: {{size: 50}}\n{ONE_SHARD}"
        ));
        assert_eq!(
            config.extract,
            ExtractSettings {
                workers: Some(3),
                url_length: Some(200),
                deny_networks: Some("10.0.0.0/8".into()),
                allow_return_facen: Some(true),
                detection_cache_size: Some(50),
                ..ExtractSettings::default()
            }
        );
        assert_eq!(config.warnings, Vec::<String>::new());
        let limit = |text: &str| error(&format!("limits:\n  {text}\n{ONE_SHARD}"));
        assert_eq!(
            limit("deny-networks: 10.0.0.0/33"),
            "router.yaml: limits.deny-networks: \"10.0.0.0/33\" is not a network such as 10.0.0.0/8 or ::1/128"
        );
        assert_eq!(limit("url-length: 5"), "router.yaml: limits.url-length: 5 is too small; it must be at least 16");
        assert_eq!(limit("url-length: long"), "router.yaml: limits.url-length: \"long\" is not a whole number");
        assert_eq!(
            limit("body-image-length: 12Q"),
            "router.yaml: limits.body-image-length: \"12Q\" is not a size in bytes such as 1073741824, 512M or 4G"
        );
        assert_eq!(
            limit("allow-return-facen: 'no'"),
            "router.yaml: limits.allow-return-facen: \"no\" is not true or false"
        );
        assert_eq!(
            error(&format!("cache: {{inmemory: {{size: 0}}}}\n{ONE_SHARD}")),
            "router.yaml: cache.inmemory.size: 0 is too small; it must be at least 1"
        );
    }

    #[test]
    fn normalized_images_go_to_a_local_directory_or_nowhere() {
        let config = parse(&format!("normalized-storage: {{type: s3, dir: /srv/faces}}\n{ONE_SHARD}"));
        assert_eq!(config.uploads_dir, Some(PathBuf::from("/srv/faces")));
        assert_eq!(
            config.warnings,
            ["normalized-storage.type: accepted and ignored: normalized face images are stored in the local \
              directory /srv/faces (normalized-storage.dir)"]
        );
        let config = parse(&format!("normalized-storage: {{enabled: false, dir: /srv/faces}}\n{ONE_SHARD}"));
        assert_eq!(config.uploads_dir, None);
        assert_eq!(
            config.warnings,
            ["normalized-storage.dir: accepted and ignored: normalized-storage.enabled is false"]
        );
        assert_eq!(
            error(&format!("normalized-storage: {{dir: ''}}\n{ONE_SHARD}")),
            "router.yaml: normalized-storage.dir: empty; name a directory such as ./uploads, or set \
             normalized-storage.enabled: false"
        );
    }

    #[test]
    fn a_file_is_named_in_its_errors() {
        let dir = crate::test_dir::TestDir::new("router-config");
        let path = dir.0.join("router.yaml");
        std::fs::write(&path, ONE_SHARD).unwrap();
        assert_eq!(RouterConfig::from_yaml_file(&path).unwrap().storage.shards.len(), 1);
        std::fs::write(&path, "listen: [\n").unwrap();
        assert!(RouterConfig::from_yaml_file(&path)
            .unwrap_err()
            .to_string()
            .starts_with(&format!("{}: ", path.display())));
        let missing = dir.0.join("missing.yaml");
        assert!(RouterConfig::from_yaml_file(&missing)
            .unwrap_err()
            .to_string()
            .starts_with(&format!("cannot read config file {}: ", missing.display())));
    }
}
