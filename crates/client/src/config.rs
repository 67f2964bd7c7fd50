//! Client configuration: seed endpoints, TLS material, timeouts and the retry budget.

use crate::error::{Error, Result};
use ringkv_transport::certs::TlsIdentity;
use ringkv_types::Secret;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A node's client-service address, written `<node id>@<host:port>` (e.g.
/// `1@127.0.0.11:7100` or `1@ringkv-1:7100`; a DNS name is resolved at every dial): the same
/// type as the node's `initial_cluster` entries.
pub use ringkv_transport::resolve::Endpoint;

/// A seed endpoint as a user writes it: `<node id>@<ip:port>` when the id is known, or just
/// `host:port` (an IP or a DNS name), whose node id the client learns from the certificate the
/// node presents (it must chain to the cluster CA and name `node-<id>.<cluster>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seed {
    /// A node whose id is given.
    Node(Endpoint),
    /// `host:port`, resolved when the client connects; the node id is learned.
    Address(String),
}

impl FromStr for Seed {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        if trimmed.contains('@') {
            return trimmed
                .parse()
                .map(Seed::Node)
                .map_err(|_| Error::InvalidEndpoint {
                    endpoint: text.to_string(),
                });
        }
        let invalid = || Error::InvalidEndpoint {
            endpoint: text.to_string(),
        };
        if trimmed.parse::<SocketAddr>().is_ok() {
            return Ok(Seed::Address(trimmed.to_string()));
        }
        // `host:port`: a DNS name (no brackets, no second colon) and a port.
        let (host, port) = trimmed.rsplit_once(':').ok_or_else(invalid)?;
        port.parse::<u16>().map_err(|_| invalid())?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !host_ok {
            return Err(invalid());
        }
        Ok(Seed::Address(trimmed.to_string()))
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seed::Node(endpoint) => endpoint.fmt(f),
            Seed::Address(address) => f.write_str(address),
        }
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
    /// Only the cluster CA certificate: the client presents no certificate and must use
    /// [`Credentials::Token`] or [`Credentials::Password`].
    CaOnly {
        /// The cluster CA certificate.
        ca_cert: PathBuf,
    },
}

/// Who the client acts as.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// The client certificate of [`TlsSource`] (`client-<name>` is user `<name>`;
    /// `client-ringctl` is `root`).
    #[default]
    Certificate,
    /// A bearer token (from `ringctl auth login` or [`Client::login`](crate::Client::login)),
    /// sent with every request. Needs a TLS source without a client certificate.
    Token(Secret),
    /// A user name and password: the client logs in at connect and logs in again before its
    /// token expires. Needs a TLS source without a client certificate.
    Password {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
}

/// How failed attempts are retried.
///
/// Every call has `attempts_max` attempts and the client's `request_timeout` in total, whichever
/// runs out first; with the defaults the time runs out first. Between attempts that cannot
/// reroute at once the client sleeps a jittered, doubling delay between `backoff_min` and
/// `backoff_max`; a reroute (a leader hint, the next replica) is retried at once, but at most
/// three times in a row before a backoff, so reroutes that lead nowhere (replicas naming a
/// leader that is restarting) spend the budget over time, not in a burst. Retried writes reuse
/// their sequence number, so they are applied at most once.
///
/// `backoff_max` bounds how late a call notices a new leader after an election (on average
/// about a third of it): 100 ms keeps a failover within about 100 ms of the election (which
/// takes 0.5 to 1 s with the node's default timing), at up to ten attempts per second per
/// waiting call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (default 64). At least 1.
    pub attempts_max: u32,
    /// First backoff delay (default 10 ms).
    pub backoff_min: Duration,
    /// Longest backoff delay (default 100 ms).
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 64,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        }
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Seed nodes to load the shard map from. Nodes the map names but this list lacks are
    /// learned from the cluster (`GetNodes`); listed addresses take precedence.
    pub endpoints: Vec<Endpoint>,
    /// Seed nodes given as `host:port` without a node id (see [`Seed::Address`]): at connect
    /// the client dials each, learns its id from its certificate, and uses it like an entry of
    /// `endpoints`. Nodes that do not answer then are skipped.
    pub seed_addresses: Vec<String>,
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
    /// Who the client acts as (default: its certificate).
    pub credentials: Credentials,
    /// The namespace keys are read and written in (see `ringkv_types::namespace`). `None`
    /// (the default) means the user's own namespace: the user name of the credentials or of a
    /// `client-<name>` certificate; for `root` (`client-ringctl`) and node certificates, keys
    /// are sent as given (administrators address the raw key space).
    pub namespace: Option<String>,
    /// How the client notices dead and frozen nodes and steps around them.
    pub failover: FailoverPolicy,
}

/// How the client detects nodes that died or froze, and for how long it avoids them.
///
/// The evidence is a liveness probe ([`ringkv_transport::probe`]): one datagram that a live
/// node's QUIC endpoint answers at once, without a handshake. A node whose port is closed is
/// refused within a round trip (ICMP); a frozen or unreachable node stays silent for
/// `probe_timeout`. Such a node is *marked down*: routing skips it (the next replica is tried
/// at once, a `NotLeader` hint naming it is not followed), and a background task re-probes it
/// every `reprobe_interval` until it answers, which clears the mark.
///
/// With the defaults, a call stuck on a node that froze fails over after about
/// `suspect_after + probe_timeout` = 500 ms instead of `attempt_timeout`, and a dial to a dead
/// node costs one refused probe (about a round trip) or `probe_timeout` (250 ms), not
/// `connect_timeout`. A node too loaded to answer its endpoint within `probe_timeout` is
/// avoided until its next answered re-probe: raise `probe_timeout` on slow or distant links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Longest wait for a probe's answer (default 250 ms). Keep it above the worst round
    /// trip to a loaded node.
    pub probe_timeout: Duration,
    /// A call without an answer for this long makes the client probe its node, then again
    /// every `suspect_after` while the call waits (default 250 ms). A slow answer from a live
    /// node is still awaited until `attempt_timeout`.
    pub suspect_after: Duration,
    /// How often a node marked down is probed again in the background (default 250 ms).
    pub reprobe_interval: Duration,
    /// How long a down mark holds without fresh evidence (default 10 s): every failed
    /// re-probe renews it, an answered one clears it.
    pub down_mark_ttl: Duration,
    /// QUIC keep-alive interval of the client's connections (default 500 ms).
    pub keep_alive: Duration,
    /// QUIC idle timeout of the client's connections (default 3 s): a connection that heard
    /// nothing for this long (keep-alives included) is dropped and redialed on next use.
    pub idle_timeout: Duration,
    /// Longest wait in [`Client::close`](crate::Client::close) for connections to drain
    /// (default 100 ms; the close frames are sent at once either way).
    pub close_linger: Duration,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            probe_timeout: Duration::from_millis(250),
            suspect_after: Duration::from_millis(250),
            reprobe_interval: Duration::from_millis(250),
            down_mark_ttl: Duration::from_secs(10),
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            close_linger: Duration::from_millis(100),
        }
    }
}

impl ClientConfig {
    /// A configuration with default timeouts and retries.
    pub fn new(endpoints: Vec<Endpoint>, cluster: impl Into<String>, tls: TlsSource) -> Self {
        Self {
            endpoints,
            seed_addresses: Vec::new(),
            cluster: cluster.into(),
            tls,
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            credentials: Credentials::Certificate,
            namespace: None,
            failover: FailoverPolicy::default(),
        }
    }

    /// Parses `<node id>@<ip:port>` strings into endpoints.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] for the first malformed string.
    pub fn parse_endpoints<S: AsRef<str>>(endpoints: &[S]) -> Result<Vec<Endpoint>> {
        endpoints
            .iter()
            .map(|s| {
                s.as_ref().parse().map_err(|_| Error::InvalidEndpoint {
                    endpoint: s.as_ref().to_string(),
                })
            })
            .collect()
    }

    /// A configuration with default timeouts and retries from seeds in either form.
    pub fn from_seeds(seeds: Vec<Seed>, cluster: impl Into<String>, tls: TlsSource) -> Self {
        let mut config = Self::new(Vec::new(), cluster, tls);
        for seed in seeds {
            match seed {
                Seed::Node(endpoint) => config.endpoints.push(endpoint),
                Seed::Address(address) => config.seed_addresses.push(address),
            }
        }
        config
    }

    /// Parses seeds written `<node id>@<ip:port>` or `host:port`.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] for the first malformed string.
    pub fn parse_seeds<S: AsRef<str>>(seeds: &[S]) -> Result<Vec<Seed>> {
        seeds.iter().map(|s| s.as_ref().parse()).collect()
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
        if self.endpoints.is_empty() && self.seed_addresses.is_empty() {
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
        let failover = &self.failover;
        if failover.probe_timeout.is_zero()
            || failover.suspect_after.is_zero()
            || failover.reprobe_interval.is_zero()
            || failover.down_mark_ttl.is_zero()
        {
            return fail("failover durations must be positive");
        }
        if failover.keep_alive.is_zero() || failover.keep_alive >= failover.idle_timeout {
            return fail("failover.keep_alive must be positive and below failover.idle_timeout");
        }
        if self.retry.attempts_max == 0 {
            return fail("retry.attempts_max must be at least 1");
        }
        if self.retry.backoff_min > self.retry.backoff_max {
            return fail("retry.backoff_min must not exceed retry.backoff_max");
        }
        if let Some(Err(error)) = self
            .namespace
            .as_deref()
            .map(ringkv_types::namespace::validate_name)
        {
            return fail(&error.to_string());
        }
        let with_certificate = match &self.tls {
            TlsSource::Files { .. } => true,
            TlsSource::Identity(identity) => identity.has_certificate(),
            TlsSource::CaOnly { .. } => false,
        };
        match (&self.credentials, with_certificate) {
            (Credentials::Certificate, false) => {
                return fail("no client certificate: give a token or a user and password");
            }
            (Credentials::Token(_) | Credentials::Password { .. }, true) => {
                return fail(
                    "a token or password is used on a connection without a client certificate \
                     (TlsSource::CaOnly)",
                );
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::NodeId;

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

    #[test]
    fn seeds_parse_with_or_without_node_ids() {
        let node = |id: u64, addr: &str| {
            Some(Seed::Node(Endpoint {
                node: NodeId(id),
                addr: addr.parse().unwrap_or_else(|_| panic!("{addr}")),
            }))
        };
        let address = |text: &str| Some(Seed::Address(text.to_string()));
        let cases = [
            ("1@127.0.0.11:7100", node(1, "127.0.0.11:7100")),
            (" 12@[::1]:9 ", node(12, "[::1]:9")),
            ("127.0.0.11:7100", address("127.0.0.11:7100")),
            (" [::1]:7100 ", address("[::1]:7100")),
            ("node-1.ringkv.svc:7100", address("node-1.ringkv.svc:7100")),
            ("localhost:7100", address("localhost:7100")),
            ("0@127.0.0.1:1", None),
            ("x@127.0.0.1:1", None),
            ("1@localhost:1", node(1, "localhost:1")),
            ("127.0.0.1", None),
            ("localhost", None),
            ("localhost:", None),
            ("localhost:99999", None),
            (":7100", None),
            ("a b:7100", None),
            ("::1:7100", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Seed>().ok(), expected, "{text:?}");
        }
        let seeds = ClientConfig::parse_seeds(&["1@127.0.0.11:7100", "127.0.0.12:7100"])
            .unwrap_or_else(|e| panic!("{e}"));
        let config = ClientConfig::from_seeds(
            seeds,
            "local",
            TlsSource::Files {
                ca_cert: "ca.pem".into(),
                cert: "c.pem".into(),
                key: "c.key".into(),
            },
        );
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(config.seed_addresses, vec!["127.0.0.12:7100".to_string()]);
        assert!(config.validate().is_ok());
        assert!(ClientConfig::parse_seeds(&["127.0.0.12:7100", "nope"]).is_err());
    }
}
