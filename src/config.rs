//! Settings of `facedb serve`: defaults, a YAML file, command-line flags, in that order of
//! precedence (a flag wins over the file, the file over the default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
}

impl ServeSettings {
    pub fn from_yaml_file(path: &Path) -> Result<ServeSettings, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
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
        Ok(ServeConfig {
            listen,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            schema: self.schema,
            facen_size,
            max_body_bytes,
            max_search_limit,
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
    }
}
