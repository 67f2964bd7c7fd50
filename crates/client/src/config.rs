//! Client configuration: seed endpoints, TLS material, timeouts and the retry budget.

use crate::error::{Error, Result};
use ringkv_transport::certs::TlsIdentity;
use ringkv_types::NodeId;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A node's client-service address, written `<node id>@<host:port>` (e.g.
/// `1@127.0.0.11:7100` or `1@ringkv-1:7100`; a DNS name is resolved at every dial).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The node; its certificate must name `node-<id>.<cluster>`.
    pub node: NodeId,
    /// Its UDP address: `ip:port` or `host:port`.
    pub addr: String,
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::InvalidEndpoint {
            endpoint: text.to_string(),
        };
        let (node, addr) = text.trim().split_once('@').ok_or_else(invalid)?;
        let node = node.parse::<u64>().map_err(|_| invalid())?;
        if node == 0 {
            return Err(invalid());
        }
        let addr = ringkv_transport::resolve::check_host_port(addr).map_err(|_| invalid())?;
        Ok(Self {
            node: NodeId(node),
            addr,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node.get(), self.addr)
    }
}

/// Where the client's TLS identity comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files: the cluster CA certificate, the client certificate and its key.
    Files {
        /// The cluster CA certificate.
        ca_cert: PathBuf,
        /// The client certificate (chain, leaf first).
        cert: PathBuf,
        /// The client's private key.
        key: PathBuf,
    },
    /// An identity already in memory.
    Identity(TlsIdentity),
}

/// How failed attempts are retried.
///
/// Every call has `attempts_max` attempts and the client's `request_timeout` in total, whichever
/// runs out first. Between attempts that cannot reroute at once the client sleeps a jittered,
/// doubling delay between `backoff_min` and `backoff_max`. Retried writes reuse their sequence
/// number, so they are applied at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (default 16). At least 1.
    pub attempts_max: u32,
    /// First backoff delay (default 10 ms).
    pub backoff_min: Duration,
    /// Longest backoff delay (default 500 ms).
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 16,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Seed nodes to load the shard map from. Nodes the map names but this list lacks are
    /// learned from the cluster (`GetNodes`); listed addresses take precedence.
    pub endpoints: Vec<Endpoint>,
    /// The cluster name (certificates name nodes `node-<id>.<cluster>`).
    pub cluster: String,
    /// The client's TLS identity.
    pub tls: TlsSource,
    /// Total time for one call, retries included (default 5 s). Sent to the server as the
    /// request's budget.
    pub request_timeout: Duration,
    /// Longest single attempt (default 2 s), capped by what is left of `request_timeout`. An
    /// attempt to a node that died silently gives up after it and tries another replica.
    pub attempt_timeout: Duration,
    /// Time to establish a connection to a node (default 2 s).
    pub connect_timeout: Duration,
    /// The retry budget.
    pub retry: RetryPolicy,
    /// Local address to bind (default `0.0.0.0:0`; use an IPv6 one for IPv6 clusters).
    pub bind_addr: SocketAddr,
}

impl ClientConfig {
    /// A configuration with default timeouts and retries.
    pub fn new(endpoints: Vec<Endpoint>, cluster: impl Into<String>, tls: TlsSource) -> Self {
        Self {
            endpoints,
            cluster: cluster.into(),
            tls,
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Parses `<node id>@<ip:port>` strings into endpoints.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] for the first malformed string.
    pub fn parse_endpoints<S: AsRef<str>>(endpoints: &[S]) -> Result<Vec<Endpoint>> {
        endpoints.iter().map(|s| s.as_ref().parse()).collect()
    }

    /// Checks the values and their relations.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: &str| {
            Err(Error::Config {
                reason: reason.to_string(),
            })
        };
        if self.endpoints.is_empty() {
            return fail("at least one endpoint is required");
        }
        if self.cluster.is_empty() {
            return fail("cluster name is empty");
        }
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.attempt_timeout.is_zero()
        {
            return fail("timeouts must be positive");
        }
        if self.request_timeout > Duration::from_millis(u64::from(u32::MAX)) {
            return fail("request_timeout must fit in u32 milliseconds");
        }
        if self.retry.attempts_max == 0 {
            return fail("retry.attempts_max must be at least 1");
        }
        if self.retry.backoff_min > self.retry.backoff_max {
            return fail("retry.backoff_min must not exceed retry.backoff_max");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        let cases = [
            ("1@127.0.0.11:7100", Some((1, "127.0.0.11:7100"))),
            (" 12@[::1]:9 ", Some((12, "[::1]:9"))),
            ("0@127.0.0.1:1", None),
            ("127.0.0.1:1", None),
            ("x@127.0.0.1:1", None),
            ("1@localhost:1", Some((1, "localhost:1"))),
            ("1@ringkv-1.ringkv:7100", Some((1, "ringkv-1.ringkv:7100"))),
            ("1@localhost", None),
            ("1@bad name:1", None),
        ];
        for (text, expected) in cases {
            let parsed = text.parse::<Endpoint>().ok();
            let expected = expected.map(|(node, addr)| Endpoint {
                node: NodeId(node),
                addr: addr.parse().unwrap_or_else(|_| panic!("{addr}")),
            });
            assert_eq!(parsed, expected, "{text}");
        }
        let endpoint: Endpoint = "3@127.0.0.13:7100"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(endpoint.to_string(), "3@127.0.0.13:7100");
    }
}
