//! Photos by URL, with the original product's `deny-networks`: no request may reach a denied
//! address, whether the URL names it, a host name resolves to it, or a redirect leads there.
//!
//! Names are resolved by our own resolver, which refuses a name when any of its addresses is
//! denied; the client then connects only to the addresses that resolver returned, so a name
//! cannot be checked against one address and connected to another. Literal IP addresses never
//! reach a resolver, so they are checked on the URL and on every redirect hop. Proxies from the
//! environment are ignored (a proxy would resolve the name itself).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use reqwest::Url;

use crate::error::{Error, Result};

/// The original product's default `deny-networks`.
pub const DEFAULT_DENY_NETWORKS: &str = "127.0.0.0/8,192.168.0.0/16,10.0.0.0/8,::1/128,fe00::/8";

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// An entry of a network list that is not a network (the entry, quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a network such as 10.0.0.0/8 or ::1/128")]
pub struct BadNetwork(pub String);

/// Parses a comma-separated list of networks (`10.0.0.0/8,::1/128`; a bare address is one
/// host). An empty string denies nothing.
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, BadNetwork> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadNetwork(format!("{s:?}")))
        })
        .collect()
}

/// The networks no fetch may reach.
#[derive(Debug, Clone, Default)]
pub struct DenyList(Arc<Vec<IpNet>>);

impl DenyList {
    pub fn new(networks: Vec<IpNet>) -> DenyList {
        DenyList(Arc::new(networks))
    }

    /// The denied network holding `ip`, if any (an IPv4-mapped IPv6 address counts as IPv4).
    /// The unspecified address (`0.0.0.0`, `::`) is always denied, whatever the list: a
    /// connection to it reaches this host.
    pub fn denies(&self, ip: IpAddr) -> Option<IpNet> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_unspecified() {
            return Some(IpNet::from(ip));
        }
        self.0.iter().find(|net| net.contains(&ip)).copied()
    }
}

/// Why a fetch was refused before any connection: found in reqwest's error chain.
#[derive(Debug)]
struct Denied {
    host: String,
    ip: IpAddr,
    network: IpNet,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host == self.ip.to_string() {
            write!(f, "{} is in deny_networks ({})", self.ip, self.network)
        } else {
            write!(f, "{} resolves to {}, which is in deny_networks ({})", self.host, self.ip, self.network)
        }
    }
}

impl std::error::Error for Denied {}

/// A resolver that refuses names with any denied address.
struct CheckedResolver {
    deny: DenyList,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let deny = self.deny.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                if let Some(network) = deny.denies(addr.ip()) {
                    return Err(Box::new(Denied { host: host.clone(), ip: addr.ip(), network }) as _);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn check_literal(url: &Url, deny: &DenyList) -> std::result::Result<(), Denied> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    match deny.denies(ip) {
        Some(network) => Err(Denied { host: ip.to_string(), ip, network }),
        None => Ok(()),
    }
}

/// Settings of URL fetches.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub deny: DenyList,
    /// Longest URL accepted, in bytes.
    pub url_length: usize,
    /// Largest image fetched, in bytes.
    pub max_bytes: usize,
    /// The whole fetch, connection to last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

/// Fetches photos by URL.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
}

fn url_error(message: impl Into<String>) -> Error {
    Error::bad_param("url", message)
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> anyhow::Result<Fetcher> {
        let deny = config.deny.clone();
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            if !matches!(attempt.url().scheme(), "http" | "https") {
                let scheme = attempt.url().scheme().to_owned();
                return attempt.error(format!("a redirect to a {scheme}: URL"));
            }
            match check_literal(attempt.url(), &deny) {
                Ok(()) => attempt.follow(),
                Err(denied) => attempt.error(denied),
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(policy)
            .dns_resolver(Arc::new(CheckedResolver { deny: config.deny.clone() }))
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("facedb/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Fetcher { client, config })
    }

    /// The body at `url`, checked against every limit; errors are 400s on `url` saying why.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>> {
        if url.len() > self.config.url_length {
            return Err(url_error(format!(
                "the url is {} bytes long; at most {} are accepted (url_length)",
                url.len(),
                self.config.url_length
            )));
        }
        let parsed = Url::parse(url).map_err(|e| url_error(format!("not a URL: {e}")).with_value(url))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(
                url_error(format!("only http and https URLs are fetched, not {}:", parsed.scheme())).with_value(url)
            );
        }
        check_literal(&parsed, &self.config.deny).map_err(|d| refused(&d, url))?;
        let mut response = self.client.get(parsed).send().await.map_err(|e| send_error(&e, url))?;
        let status = response.status();
        if !status.is_success() {
            return Err(url_error(format!("fetching the url gave HTTP {status}")).with_value(url));
        }
        let max = self.config.max_bytes;
        let too_large = || {
            url_error(format!("the image at the url is larger than {max} bytes (body_image_length)")).with_value(url)
        };
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| send_error(&e, url))? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn refused(denied: &Denied, url: &str) -> Error {
    url_error(format!("refused to fetch the url: {denied}")).with_value(url)
}

/// A failed request as a 400: a denial found in the chain is said as such.
fn send_error(error: &reqwest::Error, url: &str) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(denied) = e.downcast_ref::<Denied>() {
            return refused(denied, url);
        }
        source = e.source();
    }
    let what = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_redirect() {
        format!("bad redirect: {}", chain(error))
    } else {
        chain(error)
    };
    url_error(format!("cannot fetch the url: {what}")).with_value(url)
}

/// An error and its causes, `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_denies_loopback_and_private_networks() {
        let deny = DenyList::new(parse_networks(DEFAULT_DENY_NETWORKS).unwrap());
        for denied in ["127.0.0.1", "127.9.9.9", "10.1.2.3", "192.168.0.1", "::1", "::ffff:127.0.0.1", "fe80::1"] {
            assert!(deny.denies(denied.parse().unwrap()).is_some(), "{denied}");
        }
        for allowed in ["8.8.8.8", "172.16.0.1", "2001:db8::1"] {
            assert!(deny.denies(allowed.parse().unwrap()).is_none(), "{allowed}");
        }
        let nothing = DenyList::new(Vec::new());
        assert!(nothing.denies("127.0.0.1".parse().unwrap()).is_none());
        for unspecified in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert!(nothing.denies(unspecified.parse().unwrap()).is_some(), "{unspecified}");
        }
    }

    #[test]
    fn networks_parse_with_clear_errors() {
        assert_eq!(parse_networks("").unwrap(), vec![]);
        assert_eq!(parse_networks(" 127.0.0.2 , ::1/128").unwrap().len(), 2);
        let err = parse_networks("10.0.0.0/8,localhost").unwrap_err().to_string();
        assert!(err.contains("\"localhost\""), "{err}");
    }

    #[test]
    fn literal_addresses_are_checked_before_any_connection() {
        let deny = DenyList::new(parse_networks("127.0.0.0/8,::1/128").unwrap());
        let url = Url::parse("http://127.0.0.1:9/x.jpg").unwrap();
        assert_eq!(check_literal(&url, &deny).unwrap_err().to_string(), "127.0.0.1 is in deny_networks (127.0.0.0/8)");
        assert!(check_literal(&Url::parse("http://[::1]/").unwrap(), &deny).is_err());
        assert!(check_literal(&Url::parse("http://example.com/").unwrap(), &deny).is_ok());
    }
}
