//! The ringkv smart client (DESIGN.md section 9).
//!
//! [`Client::connect`] loads the shard map from a seed endpoint and caches it. Each call hashes
//! its key to a ring position, finds the owning shard in the cached map and sends the request
//! to the node believed to lead that shard (first guess: the first voter). Answers update the
//! routing: `NotLeader` moves to the hinted leader (or the next voter) and takes the descriptor
//! it carries, `EpochMismatch` replaces the shard's descriptor, an unreachable node moves to the
//! next replica, and when every replica failed or the map no longer fits (a split, an unknown
//! shard) the whole map is reloaded. Retries are bounded by the call's time budget (and an
//! attempt count), with jittered exponential backoff when no better target is known.
//!
//! A replica that names a node the client has no address for (a node that joined after the
//! client started) makes the client relearn the node list (`GetNodes`) before retrying; a
//! descriptor whose arc changed (a split) or a leader outside the cached replicas (a move)
//! reloads the whole map. Moves and splits therefore cost retries, never a failed call, until
//! the budget is spent.
//!
//! Failover ([`FailoverPolicy`]): a node that died or froze costs a call at most one short
//! probe. Every dial races a liveness probe ([`ringkv_transport::probe`]: a datagram with a
//! reserved QUIC version, which a live endpoint answers at once with Version Negotiation), and
//! a call left unanswered for `suspect_after` probes its node every `suspect_after`. A refused
//! probe (ICMP port unreachable: the process is gone) or a silent one (frozen, partitioned)
//! marks the node down, as does a lost connection. Routing skips marked nodes (the next replica
//! at once), map reloads ask them last, and a `NotLeader` hint naming one is not followed (the
//! replicas name a dead leader until they elect another; the call backs off and asks again). A
//! background task re-probes each marked node every `reprobe_interval` and clears the mark when
//! it answers; a successful call clears it too. Reroutes are retried at once only three times
//! in a row, then backed off, so the retry budget is spent over `request_timeout`, not in a
//! burst (a call used to spend 64 attempts in 478 ms following hints to a restarting leader).
//!
//! Placement-driver calls for `ringctl`: [`Client::pd_call`] sends a
//! [`ringkv_types::pd::Command`] to PD's leader, [`Client::pd_state`] reads its state and
//! [`Client::pd_plan`] asks it what its schedulers would start. The client speaks to PD through
//! the types in [`ringkv_types::pd`] only: it does not link PD's state machine (`ringkv-pd`). The client
//! caches the PD leader, follows `NotLeader` hints, and otherwise tries every node it knows,
//! within the same budget; a refused command is [`Error::Pd`].
//!
//! Exactly-once: each write borrows a session (random id) from the client's pool, takes the
//! session's next sequence number and keeps both through all its retries, so the node applies
//! it at most once. A session carries one write at a time, because the node remembers only the
//! last sequence per session and shard.
//!
//! ```no_run
//! use ringkv_client::{Client, ClientConfig, TlsSource};
//! use ringkv_types::{BatchOp, ReadConsistency};
//!
//! # async fn run() -> ringkv_client::Result<()> {
//! let endpoints = ClientConfig::parse_endpoints(&["1@127.0.0.11:7100"])?;
//! let tls = TlsSource::Files {
//!     ca_cert: "certs/ca.pem".into(),
//!     cert: "certs/client-app.pem".into(),
//!     key: "certs/client-app.key".into(),
//! };
//! let client = Client::connect(ClientConfig::new(endpoints, "local", tls)).await?;
//! client.put("k", "v1").await?;
//! let swapped = client
//!     .compare_and_swap("k", Some("v1".into()), Some("v2".into()))
//!     .await?;
//! assert!(swapped.succeeded);
//! let stale = client.get_with("k", ReadConsistency::Stale).await?;
//! println!("{stale:?}");
//! client
//!     .batch(vec![BatchOp::Delete { key: "k".into() }])
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
mod config;
mod error;
mod health;
mod routing;
mod session;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod views;

pub use client::{
    CasOutcome, Client, IssuedToken, KeyTtl, Scan, ScanEntry, ScanOptions, VersionCasOutcome,
    Versioned, Watch, WatchEvent, WatchEventType, WatchOptions,
};
pub use config::{
    ClientConfig, Credentials, Endpoint, FailoverPolicy, RetryPolicy, Seed, TlsSource,
};
pub use error::{Error, Result};
pub use ringkv_types::{BatchOp, NodeStatus, ReadConsistency, Secret, ShardMap};
