//! What the front door is started with ([`FrontDoorOptions`]) and the checks made before it
//! listens: where it serves, the resource URI it answers for, what it fronts, and how it
//! reaches that upstream.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{HeaderName, HeaderValue};

/// Everything `aip-proxy --serve ADDR` needs besides the policy.
#[derive(Debug)]
pub struct FrontDoorOptions {
    /// The address to listen on.
    pub serve: SocketAddr,
    /// The canonical resource URI (`--public-url`); default `http(s)://<serve>/mcp`.
    pub public_url: Option<String>,
    /// What the front door fronts.
    pub upstream: Upstream,
    /// The listener's certificate and key (required off loopback).
    pub tls: Option<TlsFiles>,
    /// Origins allowed besides the resource URI's own (`--allow-origin`).
    pub allowed_origins: Vec<String>,
}

/// The MCP server behind the front door.
#[derive(Debug)]
pub enum Upstream {
    /// A remote server over Streamable HTTP (`--upstream URL`).
    Http(HttpUpstream),
    /// A stdio server, one process per MCP session (`--target "cmd"`).
    Stdio(String),
}

/// A remote MCP server and how to reach it.
#[derive(Debug)]
pub struct HttpUpstream {
    /// Its MCP endpoint.
    pub url: String,
    /// Headers sent with every request (its credentials), values read at start.
    pub headers: Vec<UpstreamHeader>,
    /// The CA that must have issued its certificate (instead of the system roots).
    pub ca_cert: Option<PathBuf>,
}

/// A header the upstream needs (`--upstream-header NAME=file:PATH` or `NAME=env:VAR`).
#[derive(Clone, Debug)]
pub struct UpstreamHeader {
    /// The header's name.
    pub name: HeaderName,
    /// Where its value comes from.
    pub source: HeaderSource,
}

/// Where an upstream header's value is read: never from the command line, where other users
/// of the host could read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderSource {
    /// A file's content, without its final line break.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl UpstreamHeader {
    /// Parses `NAME=file:PATH` or `NAME=env:VAR`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, source) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected NAME=file:PATH or NAME=env:VAR"))?;
        let name = HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))?;
        let source = if let Some(path) = source.strip_prefix("file:") {
            HeaderSource::File(PathBuf::from(path))
        } else if let Some(var) = source.strip_prefix("env:") {
            HeaderSource::Env(var.to_owned())
        } else {
            return Err(format!(
                "{name}: the value must come from file:PATH or env:VAR, never the command line"
            ));
        };
        Ok(Self { name, source })
    }

    /// The value, marked sensitive so that it is never printed.
    pub fn value(&self) -> Result<HeaderValue, String> {
        let text = match &self.source {
            HeaderSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            HeaderSource::Env(var) => std::env::var(var).map_err(|_| format!("{var} is not set"))?,
        };
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let mut value = HeaderValue::from_str(text)
            .map_err(|_| format!("the value of {} is not a valid header value", self.name))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The listener's TLS certificate chain and key (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// The canonical resource URI: `public` when given (no query or fragment), else the listener's
/// address and `/mcp`.
pub(super) fn resource_uri(public: Option<&str>, bound: SocketAddr, tls: bool) -> Result<String, String> {
    let Some(public) = public else {
        let scheme = if tls { "https" } else { "http" };
        return Ok(format!("{scheme}://{bound}/mcp"));
    };
    let url = reqwest::Url::parse(public).map_err(|e| format!("--public-url {public:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("--public-url {public:?}: must be an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "--public-url {public:?}: a resource URI has no query, fragment or credentials (RFC 8707)"
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(format!(
            "--public-url {public:?}: clients must reach the front door over https off loopback"
        ));
    }
    Ok(public.to_owned())
}

/// Whether `url` names this host.
pub(super) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The origin (`scheme://host[:port]`) of `url`, as browsers send it in `Origin`.
pub(super) fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_come_from_files_or_the_environment_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "Bearer s3cret\n").unwrap();
        let header = UpstreamHeader::parse(&format!("Authorization=file:{}", file.display())).unwrap();
        let value = header.value().unwrap();
        assert_eq!(value, "Bearer s3cret");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cret"));
        assert!(UpstreamHeader::parse("Authorization=Bearer x").is_err());
        assert!(UpstreamHeader::parse("Bad Name=env:X").is_err());
        let missing = UpstreamHeader::parse("X-Key=env:AIP_TEST_SURELY_UNSET_VARIABLE").unwrap();
        assert!(missing.value().unwrap_err().contains("is not set"));
    }

    #[test]
    fn resource_uris_are_plain_https_urls_or_loopback() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(resource_uri(None, bound, false).unwrap(), "http://127.0.0.1:8080/mcp");
        assert_eq!(resource_uri(None, bound, true).unwrap(), "https://127.0.0.1:8080/mcp");
        assert!(resource_uri(Some("https://tools.example/mcp"), bound, false).is_ok());
        assert!(resource_uri(Some("http://tools.example/mcp"), bound, false).is_err());
        assert!(resource_uri(Some("https://tools.example/mcp?x=1"), bound, false).is_err());
        assert!(resource_uri(Some("ftp://tools.example/mcp"), bound, false).is_err());
        assert_eq!(
            origin_of("https://tools.example:443/mcp").unwrap(),
            "https://tools.example"
        );
    }
}
