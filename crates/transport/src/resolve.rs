//! Addresses as written by operators: `ip:port` or `host:port` with a DNS name.
//!
//! Peers and clients keep the address *string* and resolve it at every dial, so a node whose
//! container restarted with a new IP is found again on the next reconnect (nothing caches the
//! old IP beyond one connection).

use crate::error::{Error, Result};
use ringkv_types::NodeId;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A node's address as written in configs, seeds and tool output: `<node id>@<host:port>`,
/// e.g. `1@127.0.0.11:7100` or `1@ringkv-1:7100` (a DNS name, resolved at every dial). One
/// definition for the node (`initial_cluster`) and the client (seed endpoints); the node's
/// certificate must name `node-<id>.<cluster>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The node.
    pub node: NodeId,
    /// Its advertised UDP address (one QUIC endpoint serves peers and clients): `ip:port` or
    /// `host:port`, as [`check_host_port`] accepts it.
    pub addr: String,
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parses `<node id>@<host:port>` (surrounding spaces ignored); the error says what is
    /// wrong, quoting the text.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let (id, addr) = text
            .split_once('@')
            .ok_or_else(|| format!("`{text}` is not of the form <node id>@<host:port>"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` in `{text}` is not a node id"))?;
        if id == 0 {
            return Err(format!("node id 0 in `{text}` is reserved"));
        }
        let addr = check_host_port(addr).map_err(|reason| format!("in `{text}`: {reason}"))?;
        Ok(Self {
            node: NodeId(id),
            addr,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node.get(), self.addr)
    }
}

/// Checks the shape of `text` (`ip:port`, `[v6]:port` or `host:port` with a DNS name and a
/// non-zero port) without resolving it. Returns the text trimmed.
///
/// # Errors
/// A message saying what is wrong, for config errors.
pub fn check_host_port(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_string());
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{text}` is not a port"))?;
    if port == 0 {
        return Err(format!("`{text}`: port 0 cannot be dialed"));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!(
            "`{host}` in `{text}` is neither an IP nor a DNS name"
        ));
    }
    Ok(text.to_string())
}

/// The host part of `host:port` (an IP without brackets, or a DNS name): the TLS server name
/// to use when the node's id is not known.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Resolves `addr` now (an IP literal needs no lookup): the first address the resolver gives.
///
/// # Errors
/// [`Error::Resolve`] when the name does not resolve.
pub async fn resolve(addr: &str) -> Result<SocketAddr> {
    if let Ok(socket) = addr.trim().parse::<SocketAddr>() {
        return Ok(socket);
    }
    let resolve_error = |reason: String| Error::Resolve {
        addr: addr.to_string(),
        reason,
    };
    let mut found = tokio::net::lookup_host(addr.trim())
        .await
        .map_err(|e| resolve_error(e.to_string()))?;
    found
        .next()
        .ok_or_else(|| resolve_error("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for good in [
            "127.0.0.1:7100",
            "[::1]:7100",
            "ringkv-1:7100",
            "a.b-c.svc:1",
        ] {
            assert!(check_host_port(good).is_ok(), "{good}");
        }
        for bad in [
            "ringkv-1",
            "ringkv-1:0",
            "-x:1",
            "a b:1",
            ":7100",
            "x:70000",
            "a..b:1",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(host_of("ringkv-1:7100"), "ringkv-1");
        assert_eq!(host_of("[::1]:7100"), "::1");
        assert_eq!(host_of("127.0.0.1:7100"), "127.0.0.1");
    }

    #[tokio::test]
    async fn names_resolve_at_call_time() {
        let addr = resolve("localhost:7100")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 7100);
        assert!(matches!(
            resolve("no-such-host.invalid:7100").await,
            Err(Error::Resolve { .. })
        ));
    }
}
