//! Addresses as written by operators: `ip:port` or `host:port` with a DNS name.
//!
//! Peers and clients keep the address *string* and resolve it at every dial, so a node whose
//! container restarted with a new IP is found again on the next reconnect (nothing caches the
//! old IP beyond one connection).

use crate::error::{Error, Result};
use std::net::SocketAddr;

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
