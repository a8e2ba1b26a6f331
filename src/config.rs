//! Settings of `facedb serve`: defaults, a YAML file, command-line flags, in that order of
//! precedence (a flag wins over the file, the file over the default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::extract::cache::CacheConfig;
use crate::extract::photo::ImageLimits;
use crate::extract::{fetch, ExtractConfig};
use crate::index::{IndexParams, IndexSettings};
use crate::wal::WalMode;

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
    /// Local shards of a new data dir; `None`: the host's rule (`cluster::Layout::for_host`).
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
    pub fn resolve(self) -> Result<Option<ExtractConfig>, String> {
        let defaults = ExtractConfig::default();
        let workers = self.workers.unwrap_or(defaults.workers);
        if workers == 0 {
            return Ok(None);
        }
        let at_least = |name: &str, value: u64, min: u64| {
            if value < min {
                Err(format!("{name}: {value} is too small; it must be at least {min}"))
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
            Some(text) => fetch::parse_networks(&text)?,
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
    pub fn from_yaml_file(path: &Path) -> Result<ExtractServiceSettings, String> {
        read_yaml(path)
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Reads `1073741824`, `512M`, `4G` (K, M, G, T: powers of 1024; an optional `B` or `iB` after).
pub fn parse_bytes(setting: &str, text: &str) -> Result<u64, String> {
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
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{setting}: {text:?} is not a size in bytes such as 1073741824, 512M or 4G"))
}

impl ServeSettings {
    pub fn from_yaml_file(path: &Path) -> Result<ServeSettings, String> {
        read_yaml(path)
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
    pub fn resolve(self) -> Result<ServeConfig, String> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text.parse().map_err(|e| {
            format!("listen: {listen_text:?} is not an address HOST:PORT such as 127.0.0.1:18411 ({e})")
        })?;
        let facen_size = self.facen_size.unwrap_or(128);
        if !(1..=65_536).contains(&facen_size) {
            return Err(format!("facen_size: {facen_size} is out of range; it must be from 1 to 65536"));
        }
        let max_search_limit = self.max_search_limit.unwrap_or(10_000);
        if max_search_limit == 0 {
            return Err("max_search_limit: must be at least 1".to_owned());
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(32 << 20);
        if max_body_bytes < 1024 {
            return Err(format!("max_body_bytes: {max_body_bytes} is too small; it must be at least 1024"));
        }
        let wal_mode_text = self.wal_mode.unwrap_or_else(|| "fsync".to_owned());
        let wal_mode = WalMode::parse(&wal_mode_text)
            .ok_or_else(|| format!("wal_mode: {wal_mode_text:?} is not one of none, write, fsync"))?;
        let checkpoint_count = self.checkpoint_count.unwrap_or(3);
        if checkpoint_count == 0 {
            return Err("checkpoint_count: 0 is too small; it must be at least 1 (the newest snapshot is always kept)"
                .to_owned());
        }
        let memory_limit = self.memory_limit.map(|text| parse_bytes("memory_limit", &text)).transpose()?;
        let wal_segment_bytes = match self.wal_segment_bytes {
            Some(text) => parse_bytes("wal_segment_bytes", &text)?,
            None => 64 << 20,
        };
        if wal_segment_bytes < 4096 {
            return Err(format!("wal_segment_bytes: {wal_segment_bytes} is too small; it must be at least 4096"));
        }
        let defaults = IndexSettings::default();
        let params = IndexParams {
            m: self.index_m.unwrap_or(defaults.params.m),
            ef_construction: self.index_ef_construction.unwrap_or(defaults.params.ef_construction),
            ef_search: self.index_ef_search.unwrap_or(defaults.params.ef_search),
        };
        params
            .check()
            .map_err(|(name, value, range)| format!("index_{name}: {value} is out of range; it must be {range}"))?;
        let index = IndexSettings { params, min_faces: self.index_min_faces.unwrap_or(defaults.min_faces), ..defaults };
        let extract = self.extract.unwrap_or_default().resolve().map_err(|e| format!("extract.{e}"))?;
        if let Some(shards) = self.shards.filter(|n| !(1..=256).contains(n)) {
            return Err(format!("shards: {shards} is out of range; it must be from 1 to 256"));
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
        assert!(bad.resolve().unwrap_err().starts_with("listen: \"localhost\""));
        assert!(serde_yaml_ng::from_str::<ServeSettings>("lisen: x\n").unwrap_err().to_string().contains("lisen"));
        let bad = ServeSettings { wal_mode: Some("sync".into()), ..Default::default() };
        assert_eq!(bad.resolve().unwrap_err(), "wal_mode: \"sync\" is not one of none, write, fsync");
        let bad = ServeSettings { memory_limit: Some("12X".into()), ..Default::default() };
        assert!(bad.resolve().unwrap_err().starts_with("memory_limit: \"12X\""));
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
        assert!(bad.resolve().unwrap_err().starts_with("extract.deny_networks: \"10.0.0.0/33\""));
        let bad = ServeSettings {
            extract: Some(ExtractSettings { body_image_length: Some("12Q".into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(bad.resolve().unwrap_err().starts_with("extract.body_image_length"));
        assert!(serde_yaml_ng::from_str::<ServeSettings>("extract:\n  wrokers: 1\n")
            .unwrap_err()
            .to_string()
            .contains("wrokers"));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("m", "1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("m", "512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("m", "4g"), Ok(4 << 30));
        assert_eq!(parse_bytes("m", "2GiB"), Ok(2 << 30));
        assert!(parse_bytes("m", "-1").is_err());
        assert!(parse_bytes("m", "99999999999T").is_err());
    }
}
