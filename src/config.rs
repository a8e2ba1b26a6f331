//! Settings of `facedb serve`, `facedb shard`, `facedb extract` and `facedb router`, and the
//! one loader they share.
//!
//! `serve`, `shard` and `extract` take defaults, a YAML file (`--config`), then command-line
//! flags, in that order of precedence (a flag wins over the file, the file over the default):
//! [`ServeSettings`] and [`ExtractSettings`] hold what each layer sets, `over` merges two
//! layers, `resolve` fills in the defaults and checks every value. `router` reads the seed's
//! YAML layout (`router::config`), whose `extract:` section is an [`ExtractSettings`] too.
//!
//! All four read their files the same way, with the pieces here:
//!
//! - [`read_yaml_file`]: the file's text as a YAML value ([`ConfigError::File`] when it cannot
//!   be read, [`ConfigError::Yaml`] when it is not YAML);
//! - [`Section`]: a mapping of the file under its dotted key (`storage-api.timeouts`,
//!   `extract`), which refuses a key it does not accept by naming it and listing those it
//!   accepts ([`ConfigError::UnknownKey`]), reads values by hand (text, whole numbers, flags,
//!   sizes with [`parse_bytes`], durations with [`parse_duration`]), or deserializes a
//!   settings struct one key at a time so that a value of the wrong type is named by its key;
//!   the keys a struct accepts are its serde fields ([`keys_of`]);
//! - [`parse_listen`] for every `listen` and `--listen`.
//!
//! Every error is a [`ConfigError`] that names the key (dotted from the top of its file, or as
//! `resolve` knows it) and the value as written; one found in a file begins with its path
//! ([`ConfigError::InFile`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Visitor};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::extract::cache::CacheConfig;
use crate::extract::fetch::{self, BadNetwork};
use crate::extract::photo::ImageLimits;
use crate::extract::ExtractConfig;
use crate::index::{IndexParams, IndexSettings};
use crate::wal::WalMode;

/// A setting that is wrong, or a settings file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value not right for its key: the key, the value as written (text in quotes), and why.
    #[error("{key}: {value} {why}")]
    Setting { key: String, value: String, why: String },
    /// A key that must be given, and is not (or is empty); `why` says what to write.
    #[error("{key}: {why}")]
    Missing { key: String, why: String },
    /// A value that YAML cannot read as its key's type; `message` is serde's.
    #[error("{key}: {message}")]
    Type { key: String, message: String },
    /// A key not accepted in its section (`section` is the dotted key of the section, empty at
    /// the top level).
    #[error("{key}: unknown key; the keys accepted {} are {}", place(section), accepted.join(", "))]
    UnknownKey { key: String, section: String, accepted: Vec<String> },
    #[error("cannot read config file {}: {error}", path.display())]
    File { path: PathBuf, error: io::Error },
    /// Text that is not YAML; `message` is the parser's.
    #[error("{}: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    /// An error in the settings of the file at `path`.
    #[error("{}: {error}", path.display())]
    InFile { path: PathBuf, error: Box<ConfigError> },
}

impl ConfigError {
    /// The error of a value: `value` as written, `why` from "is ...".
    pub fn setting(key: impl Into<String>, value: impl ToString, why: impl Into<String>) -> ConfigError {
        ConfigError::Setting { key: key.into(), value: value.to_string(), why: why.into() }
    }

    /// The same error, with its key under the section `section` (`extract`: `extract.queue`).
    pub fn under(self, section: &str) -> ConfigError {
        match self {
            ConfigError::Setting { key, value, why } => ConfigError::Setting { key: dotted(section, &key), value, why },
            ConfigError::Missing { key, why } => ConfigError::Missing { key: dotted(section, &key), why },
            ConfigError::Type { key, message } => ConfigError::Type { key: dotted(section, &key), message },
            ConfigError::UnknownKey { key, section: inner, accepted } => {
                ConfigError::UnknownKey { key: dotted(section, &key), section: dotted(section, &inner), accepted }
            }
            ConfigError::InFile { path, error } => ConfigError::InFile { path, error: Box::new(error.under(section)) },
            other => other,
        }
    }

    /// The same error, found in the file at `path` (an error that names a file already is kept).
    pub fn in_file(self, path: &Path) -> ConfigError {
        match self {
            named @ (ConfigError::File { .. } | ConfigError::Yaml { .. } | ConfigError::InFile { .. }) => named,
            error => ConfigError::InFile { path: path.to_owned(), error: Box::new(error) },
        }
    }
}

/// Where the keys of a section are, as an unknown key's message says it.
fn place(section: &str) -> String {
    if section.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in {section}")
    }
}

/// The default listen address of `facedb serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:18411";

/// Everything `facedb serve` runs with, after merging.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: the embedded default schema.
    pub schema: Option<PathBuf>,
    pub facen_size: usize,
    pub max_body_bytes: usize,
    pub max_search_limit: usize,
    pub wal_mode: WalMode,
    /// Seconds between automatic snapshots; 0: none.
    pub checkpoint_interval: u64,
    /// Snapshots kept (at least 1).
    pub checkpoint_count: usize,
    /// Skip bad log records at start instead of refusing to start.
    pub force_recovery: bool,
    pub memory_limit: Option<u64>,
    /// A log segment larger than this is closed and a new one started.
    pub wal_segment_bytes: u64,
    /// The default graph parameters of galleries, and from what size they get a graph.
    pub index: IndexSettings,
    /// The detection front-end; `None` when turned off (`extract: {workers: 0}`).
    pub extract: Option<ExtractConfig>,
    /// Local shards of a new data dir; `None`: the host's rule (`durable::cluster::Layout::for_host`).
    pub shards: Option<usize>,
}

/// The same settings as they may appear in a YAML file or as flags; absent means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub schema: Option<PathBuf>,
    pub facen_size: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_search_limit: Option<usize>,
    pub wal_mode: Option<String>,
    pub checkpoint_interval: Option<u64>,
    pub checkpoint_count: Option<usize>,
    pub force_recovery: Option<bool>,
    /// Bytes, or a number with a K, M, G or T suffix (powers of 1024).
    pub memory_limit: Option<String>,
    pub wal_segment_bytes: Option<String>,
    pub index_m: Option<usize>,
    pub index_ef_construction: Option<usize>,
    pub index_ef_search: Option<usize>,
    pub index_min_faces: Option<usize>,
    /// The detection front-end's settings (the `extract:` section).
    pub extract: Option<ExtractSettings>,
    /// Local shards when the data dir is created.
    pub shards: Option<usize>,
}

/// Settings of the detection front-end, in `serve`'s and `extract`'s `extract:` section or as
/// flags; absent means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSettings {
    pub models_dir: Option<PathBuf>,
    /// Worker threads with their own models; 0 turns detection off.
    pub workers: Option<usize>,
    pub queue: Option<usize>,
    pub detect_max_side: Option<u32>,
    pub max_image_side: Option<u32>,
    pub max_image_pixels: Option<u64>,
    /// Bytes, or a number with a K, M, G suffix.
    pub body_image_length: Option<String>,
    pub url_length: Option<usize>,
    /// Comma-separated networks (`127.0.0.0/8,::1/128`); empty denies nothing.
    pub deny_networks: Option<String>,
    /// Seconds a URL fetch may take, connection to last byte.
    pub fetch_timeout: Option<u64>,
    pub allow_return_facen: Option<bool>,
    pub detection_cache_size: Option<usize>,
    /// Seconds a detection stays usable by id.
    pub detection_cache_ttl: Option<u64>,
}

impl ExtractSettings {
    /// `self` over `base`: every setting given here wins.
    pub fn over(self, base: ExtractSettings) -> ExtractSettings {
        ExtractSettings {
            models_dir: self.models_dir.or(base.models_dir),
            workers: self.workers.or(base.workers),
            queue: self.queue.or(base.queue),
            detect_max_side: self.detect_max_side.or(base.detect_max_side),
            max_image_side: self.max_image_side.or(base.max_image_side),
            max_image_pixels: self.max_image_pixels.or(base.max_image_pixels),
            body_image_length: self.body_image_length.or(base.body_image_length),
            url_length: self.url_length.or(base.url_length),
            deny_networks: self.deny_networks.or(base.deny_networks),
            fetch_timeout: self.fetch_timeout.or(base.fetch_timeout),
            allow_return_facen: self.allow_return_facen.or(base.allow_return_facen),
            detection_cache_size: self.detection_cache_size.or(base.detection_cache_size),
            detection_cache_ttl: self.detection_cache_ttl.or(base.detection_cache_ttl),
        }
    }

    /// Fills in defaults and checks every value; `None` when `workers` is 0.
    pub fn resolve(self) -> Result<Option<ExtractConfig>, ConfigError> {
        let defaults = ExtractConfig::default();
        let workers = self.workers.unwrap_or(defaults.workers);
        if workers == 0 {
            return Ok(None);
        }
        let at_least = |name: &str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::setting(name, value, format!("is too small; it must be at least {min}")))
            } else {
                Ok(())
            }
        };
        let queue = self.queue.unwrap_or(defaults.queue);
        at_least("queue", queue as u64, 1)?;
        let detect_max_side = self.detect_max_side.unwrap_or(defaults.detect_max_side);
        at_least("detect_max_side", u64::from(detect_max_side), 64)?;
        let image_limits = ImageLimits {
            max_side: self.max_image_side.unwrap_or(defaults.image_limits.max_side),
            max_pixels: self.max_image_pixels.unwrap_or(defaults.image_limits.max_pixels),
        };
        at_least("max_image_side", u64::from(image_limits.max_side), 1)?;
        at_least("max_image_pixels", image_limits.max_pixels, 1)?;
        let body_image_length = match self.body_image_length {
            Some(text) => parse_bytes("body_image_length", &text)? as usize,
            None => defaults.body_image_length,
        };
        at_least("body_image_length", body_image_length as u64, 1024)?;
        let url_length = self.url_length.unwrap_or(defaults.url_length);
        at_least("url_length", url_length as u64, 16)?;
        let deny_networks = match self.deny_networks {
            Some(text) => fetch::parse_networks(&text).map_err(|BadNetwork(entry)| {
                ConfigError::setting("deny_networks", entry, "is not a network such as 10.0.0.0/8 or ::1/128")
            })?,
            None => defaults.deny_networks,
        };
        let fetch_timeout = self.fetch_timeout.map_or(defaults.fetch_timeout, std::time::Duration::from_secs);
        at_least("fetch_timeout", fetch_timeout.as_secs(), 1)?;
        let cache = CacheConfig {
            entries: self.detection_cache_size.unwrap_or(defaults.cache.entries),
            ttl: self.detection_cache_ttl.map_or(defaults.cache.ttl, std::time::Duration::from_secs),
        };
        at_least("detection_cache_size", cache.entries as u64, 1)?;
        Ok(Some(ExtractConfig {
            models_dir: self.models_dir.unwrap_or(defaults.models_dir),
            workers,
            queue,
            detect_max_side,
            image_limits,
            body_image_length,
            url_length,
            deny_networks,
            fetch_timeout,
            allow_return_facen: self.allow_return_facen.unwrap_or(false),
            cache,
        }))
    }
}

/// The YAML file of `facedb extract --config`: its address and the `extract:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractServiceSettings {
    pub listen: Option<String>,
    /// `--keep-buffers`.
    pub keep_buffers: Option<bool>,
    pub extract: Option<ExtractSettings>,
}

impl ExtractServiceSettings {
    pub fn from_yaml_file(path: &Path) -> Result<ExtractServiceSettings, ConfigError> {
        read_settings_file(path)
    }
}

/// Reads the settings file of `serve`, `shard` or `extract` into `T` (its keys, and an
/// `extract:` section of [`ExtractSettings`]).
fn read_settings_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let root = read_yaml_file(path)?;
    let read = || {
        let top = Section::new(Some(&root), String::new(), keys_of::<T>())?;
        top.section("extract", keys_of::<ExtractSettings>())?.settings::<ExtractSettings>(&[])?;
        top.settings::<T>(&["extract"])
    };
    read().map_err(|e| e.in_file(path))
}

/// The text of a YAML file as a YAML value (`Null` when it holds nothing).
pub fn read_yaml_file(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File { path: path.to_owned(), error })?;
    parse_yaml(&text, path)
}

/// YAML `text`, read from the file `path` (only named in errors).
pub fn parse_yaml(text: &str, path: &Path) -> Result<Value, ConfigError> {
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml { path: path.to_owned(), message: e.to_string() })
}

/// Reads an address to listen on, an IP and a port such as `example`; `key` names the setting
/// or the flag.
pub fn parse_listen(key: &str, text: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|e| {
        ConfigError::setting(
            key,
            format!("{text:?}"),
            format!("is not an address HOST:PORT with an IP, such as {example} ({e})"),
        )
    })
}

/// Reads `1073741824`, `512M`, `4G` (K, M, G, T: powers of 1024; an optional `B` or `iB` after).
pub fn parse_bytes(setting: &str, text: &str) -> Result<u64, ConfigError> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let number = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, scale) = match number.chars().last() {
        Some('K') => (&number[..number.len() - 1], 1u64 << 10),
        Some('M') => (&number[..number.len() - 1], 1 << 20),
        Some('G') => (&number[..number.len() - 1], 1 << 30),
        Some('T') => (&number[..number.len() - 1], 1 << 40),
        _ => (number, 1),
    };
    digits.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).ok_or_else(|| {
        ConfigError::setting(setting, format!("{text:?}"), "is not a size in bytes such as 1073741824, 512M or 4G")
    })
}

impl ServeSettings {
    pub fn from_yaml_file(path: &Path) -> Result<ServeSettings, ConfigError> {
        read_settings_file(path)
    }

    /// `self` over `base`: every setting given here wins.
    pub fn over(self, base: ServeSettings) -> ServeSettings {
        ServeSettings {
            listen: self.listen.or(base.listen),
            data_dir: self.data_dir.or(base.data_dir),
            schema: self.schema.or(base.schema),
            facen_size: self.facen_size.or(base.facen_size),
            max_body_bytes: self.max_body_bytes.or(base.max_body_bytes),
            max_search_limit: self.max_search_limit.or(base.max_search_limit),
            wal_mode: self.wal_mode.or(base.wal_mode),
            checkpoint_interval: self.checkpoint_interval.or(base.checkpoint_interval),
            checkpoint_count: self.checkpoint_count.or(base.checkpoint_count),
            force_recovery: self.force_recovery.or(base.force_recovery),
            memory_limit: self.memory_limit.or(base.memory_limit),
            wal_segment_bytes: self.wal_segment_bytes.or(base.wal_segment_bytes),
            index_m: self.index_m.or(base.index_m),
            index_ef_construction: self.index_ef_construction.or(base.index_ef_construction),
            index_ef_search: self.index_ef_search.or(base.index_ef_search),
            index_min_faces: self.index_min_faces.or(base.index_min_faces),
            extract: match (self.extract, base.extract) {
                (Some(top), Some(bottom)) => Some(top.over(bottom)),
                (top, bottom) => top.or(bottom),
            },
            shards: self.shards.or(base.shards),
        }
    }

    /// Fills in defaults and checks every value; errors name the setting and the value.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = parse_listen("listen", &listen_text, DEFAULT_LISTEN)?;
        let facen_size = self.facen_size.unwrap_or(128);
        if !(1..=65_536).contains(&facen_size) {
            return Err(ConfigError::setting("facen_size", facen_size, "is out of range; it must be from 1 to 65536"));
        }
        let max_search_limit = self.max_search_limit.unwrap_or(10_000);
        if max_search_limit == 0 {
            return Err(ConfigError::setting("max_search_limit", 0, "is too small; it must be at least 1"));
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(32 << 20);
        if max_body_bytes < 1024 {
            return Err(ConfigError::setting(
                "max_body_bytes",
                max_body_bytes,
                "is too small; it must be at least 1024",
            ));
        }
        let wal_mode_text = self.wal_mode.unwrap_or_else(|| "fsync".to_owned());
        let wal_mode = WalMode::parse(&wal_mode_text).ok_or_else(|| {
            ConfigError::setting("wal_mode", format!("{wal_mode_text:?}"), "is not one of none, write, fsync")
        })?;
        let checkpoint_count = self.checkpoint_count.unwrap_or(3);
        if checkpoint_count == 0 {
            return Err(ConfigError::setting(
                "checkpoint_count",
                0,
                "is too small; it must be at least 1 (the newest snapshot is always kept)",
            ));
        }
        let memory_limit = self.memory_limit.map(|text| parse_bytes("memory_limit", &text)).transpose()?;
        let wal_segment_bytes = match self.wal_segment_bytes {
            Some(text) => parse_bytes("wal_segment_bytes", &text)?,
            None => 64 << 20,
        };
        if wal_segment_bytes < 4096 {
            return Err(ConfigError::setting(
                "wal_segment_bytes",
                wal_segment_bytes,
                "is too small; it must be at least 4096",
            ));
        }
        let defaults = IndexSettings::default();
        let params = IndexParams {
            m: self.index_m.unwrap_or(defaults.params.m),
            ef_construction: self.index_ef_construction.unwrap_or(defaults.params.ef_construction),
            ef_search: self.index_ef_search.unwrap_or(defaults.params.ef_search),
        };
        params.check().map_err(|(name, value, range)| {
            ConfigError::setting(format!("index_{name}"), value, format!("is out of range; it must be {range}"))
        })?;
        let index = IndexSettings { params, min_faces: self.index_min_faces.unwrap_or(defaults.min_faces), ..defaults };
        let extract = self.extract.unwrap_or_default().resolve().map_err(|e| e.under("extract"))?;
        if let Some(shards) = self.shards.filter(|n| !(1..=256).contains(n)) {
            return Err(ConfigError::setting("shards", shards, "is out of range; it must be from 1 to 256"));
        }
        Ok(ServeConfig {
            shards: self.shards,
            listen,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            schema: self.schema,
            facen_size,
            max_body_bytes,
            max_search_limit,
            wal_mode,
            checkpoint_interval: self.checkpoint_interval.unwrap_or(14_400),
            checkpoint_count,
            force_recovery: self.force_recovery.unwrap_or(false),
            memory_limit,
            wal_segment_bytes,
            index,
            extract,
        })
    }
}

/// A mapping of a settings file and the dotted key that leads to it (empty at the top); its
/// keys are known to be among those accepted there.
pub struct Section<'a> {
    path: String,
    /// `None` when the section is absent or written with no value.
    mapping: Option<&'a Mapping>,
}

impl<'a> Section<'a> {
    /// The section `value` at the dotted key `path`, refusing a key not in `accepted`.
    pub fn new(value: Option<&'a Value>, path: String, accepted: &[&str]) -> Result<Section<'a>, ConfigError> {
        let mapping = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(mapping)) => Some(mapping),
            Some(other) => {
                let place = if path.is_empty() { "the top level".to_owned() } else { path.clone() };
                let why = format!("is not a mapping of keys such as {}", accepted.join(", "));
                return Err(ConfigError::setting(place, describe(other), why));
            }
        };
        for key in mapping.into_iter().flat_map(Mapping::keys) {
            let name = key_name(key);
            if !accepted.contains(&name.as_str()) {
                return Err(ConfigError::UnknownKey {
                    key: dotted(&path, &name),
                    section: path,
                    accepted: accepted.iter().map(|&key| key.to_owned()).collect(),
                });
            }
        }
        Ok(Section { path, mapping })
    }

    /// The dotted key of `name` in this section.
    pub fn key(&self, name: &str) -> String {
        dotted(&self.path, name)
    }

    /// Whether `name` is written at all, even with no value.
    pub fn has(&self, name: &str) -> bool {
        self.mapping.is_some_and(|mapping| mapping.contains_key(name))
    }

    /// The value of `name`; `None` when absent or written with no value (`name:`).
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.mapping.and_then(|mapping| mapping.get(name)).filter(|value| !value.is_null())
    }

    /// The section `name` in this one, which accepts the keys `accepted`.
    pub fn section(&self, name: &str, accepted: &[&str]) -> Result<Section<'a>, ConfigError> {
        Section::new(self.get(name), self.key(name), accepted)
    }

    /// A single value as text: a string as written, a number or a boolean as YAML reads it.
    pub fn text(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(Value::Bool(flag)) => Ok(Some(flag.to_string())),
            Some(other) => Err(ConfigError::setting(self.key(name), describe(other), "is not a single value")),
        }
    }

    pub fn count(&self, name: &str) -> Result<Option<usize>, ConfigError> {
        let Some(text) = self.text(name)? else { return Ok(None) };
        let count = text
            .trim()
            .parse()
            .map_err(|_| ConfigError::setting(self.key(name), format!("{text:?}"), "is not a whole number"))?;
        Ok(Some(count))
    }

    pub fn flag(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(ConfigError::setting(self.key(name), describe(other), "is not true or false")),
        }
    }

    /// A duration as [`parse_duration`] reads it.
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.text(name)? else { return Ok(None) };
        let duration = parse_duration(&text).ok_or_else(|| {
            ConfigError::setting(
                self.key(name),
                format!("{text:?}"),
                "is not a duration (e.g. 5s, 100ms, 1m, or seconds as a number)",
            )
        })?;
        Ok(Some(duration))
    }

    /// The section deserialized into the settings `T`, each key first on its own, so that a
    /// value of the wrong type is named by its dotted key. The keys in `nested` are sections
    /// already read on their own, whose errors name their own keys.
    pub fn settings<T: DeserializeOwned>(&self, nested: &[&str]) -> Result<T, ConfigError> {
        for (name, value) in self.mapping.into_iter().flatten() {
            let name = key_name(name);
            if nested.contains(&name.as_str()) {
                continue;
            }
            let one = Mapping::from_iter([(Value::String(name.clone()), value.clone())]);
            serde_yaml_ng::from_value::<T>(Value::Mapping(one))
                .map_err(|e| ConfigError::Type { key: self.key(&name), message: e.to_string() })?;
        }
        let whole = self.mapping.map_or(Value::Null, |mapping| Value::Mapping(mapping.clone()));
        let key = if self.path.is_empty() { "the top level".to_owned() } else { self.path.clone() };
        serde_yaml_ng::from_value(whole).map_err(|e| ConfigError::Type { key, message: e.to_string() })
    }
}

/// The keys a settings struct accepts: the field names its `Deserialize` derive hands to
/// `deserialize_struct`, caught by a deserializer that reads nothing.
pub fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("only the field names are read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the fields are all it reads.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// `name` under the dotted key `path` (`name` itself at the top).
pub fn dotted(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn key_name(key: &Value) -> String {
    key.as_str().map_or_else(|| describe(key), str::to_owned)
}

/// A YAML value as an error message shows it.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => format!("{text:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// Reads `5s`, `100ms`, `1.5s`, `1m30s`, `2h` (units ns, us, ms, s, m, h, as the seed's Go
/// service reads them), or a plain number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return nanoseconds(seconds, 1e9);
    }
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total = total.checked_add(nanoseconds(number, unit_nanos)?)?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// `number` units of `unit_nanos` nanoseconds, rounded to the nanosecond (`0.3s` is 300ms).
fn nanoseconds(number: f64, unit_nanos: f64) -> Option<Duration> {
    let nanos = (number * unit_nanos).round();
    (nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64).then(|| Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: ServeSettings = serde_yaml_ng::from_str("listen: 127.0.0.1:9000\nfacen_size: 4\n").unwrap();
        let flags = ServeSettings { facen_size: Some(8), ..Default::default() };
        let config = flags.over(file).resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.facen_size, 8);
        assert_eq!(config.max_search_limit, 10_000);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = ServeSettings { listen: Some("localhost".into()), ..Default::default() };
        assert!(bad.resolve().unwrap_err().to_string().starts_with("listen: \"localhost\""));
        assert!(serde_yaml_ng::from_str::<ServeSettings>("lisen: x\n").unwrap_err().to_string().contains("lisen"));
        let bad = ServeSettings { wal_mode: Some("sync".into()), ..Default::default() };
        assert_eq!(bad.resolve().unwrap_err().to_string(), "wal_mode: \"sync\" is not one of none, write, fsync");
        let bad = ServeSettings { memory_limit: Some("12X".into()), ..Default::default() };
        assert!(bad.resolve().unwrap_err().to_string().starts_with("memory_limit: \"12X\""));
    }

    #[test]
    fn the_extract_section_merges_and_checks_its_values() {
        let file: ServeSettings =
            serde_yaml_ng::from_str("extract:\n  workers: 3\n  deny_networks: 10.0.0.0/8\n  url_length: 100\n")
                .unwrap();
        let flags = ServeSettings {
            extract: Some(ExtractSettings { url_length: Some(200), ..Default::default() }),
            ..Default::default()
        };
        let extract = flags.over(file).resolve().unwrap().extract.unwrap();
        assert_eq!((extract.workers, extract.url_length, extract.deny_networks.len()), (3, 200, 1));
        assert_eq!(extract.body_image_length, 32 << 20);
        let off = ServeSettings {
            extract: Some(ExtractSettings { workers: Some(0), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(off.resolve().unwrap().extract, None);
        let bad = ServeSettings {
            extract: Some(ExtractSettings { deny_networks: Some("10.0.0.0/33".into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().starts_with("extract.deny_networks: \"10.0.0.0/33\""));
        let bad = ServeSettings {
            extract: Some(ExtractSettings { body_image_length: Some("12Q".into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().starts_with("extract.body_image_length"));
        assert!(serde_yaml_ng::from_str::<ServeSettings>("extract:\n  wrokers: 1\n")
            .unwrap_err()
            .to_string()
            .contains("wrokers"));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("m", "1073741824").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("m", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("m", "4g").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("m", "2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("m", "-1").is_err());
        assert!(parse_bytes("m", "99999999999T").is_err());
    }

    #[test]
    fn a_settings_file_names_the_file_and_the_key() {
        let dir = crate::test_dir::TestDir::new("config-file");
        let path = dir.0.join("facedb.yaml");
        let error = |text: &str| {
            std::fs::write(&path, text).unwrap();
            ServeSettings::from_yaml_file(&path).unwrap_err().to_string()
        };
        let at = path.display();
        assert_eq!(
            error("facen_size: 4\nlisen: x\n"),
            format!(
                "{at}: lisen: unknown key; the keys accepted at the top level are listen, data_dir, schema, \
                 facen_size, max_body_bytes, max_search_limit, wal_mode, checkpoint_interval, checkpoint_count, \
                 force_recovery, memory_limit, wal_segment_bytes, index_m, index_ef_construction, index_ef_search, \
                 index_min_faces, extract, shards"
            )
        );
        assert!(
            error("extract:\n  wrokers: 1\n").starts_with(&format!(
                "{at}: extract.wrokers: unknown key; the keys accepted in extract are models_dir"
            )),
            "{}",
            error("extract:\n  wrokers: 1\n")
        );
        assert_eq!(
            error("facen_size: four\n"),
            format!("{at}: facen_size: invalid type: string \"four\", expected usize")
        );
        assert_eq!(
            error("extract:\n  workers: many\n"),
            format!("{at}: extract.workers: invalid type: string \"many\", expected usize")
        );
        assert_eq!(
            error("[1]\n"),
            format!(
                "{at}: the top level: a list is not a mapping of keys such as {}",
                keys_of::<ServeSettings>().join(", ")
            )
        );
        assert!(error("listen: [\n").starts_with(&format!("{at}: ")));
        std::fs::write(&path, "facen_size: 4\nextract: {workers: 2}\n").unwrap();
        let settings = ServeSettings::from_yaml_file(&path).unwrap();
        assert_eq!((settings.facen_size, settings.extract.unwrap().workers), (Some(4), Some(2)));
        std::fs::write(&path, "").unwrap();
        assert_eq!(ServeSettings::from_yaml_file(&path).unwrap(), ServeSettings::default());
        let missing = dir.0.join("missing.yaml");
        assert!(ServeSettings::from_yaml_file(&missing)
            .unwrap_err()
            .to_string()
            .starts_with(&format!("cannot read config file {}: ", missing.display())));
    }

    #[test]
    fn the_keys_of_a_settings_struct_are_its_fields() {
        assert_eq!(keys_of::<ExtractServiceSettings>(), ["listen", "keep_buffers", "extract"]);
        assert_eq!(keys_of::<ExtractSettings>().len(), 13);
    }
}
