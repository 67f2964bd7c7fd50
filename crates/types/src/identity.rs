//! Who is calling: what the transport learned from the TLS session of a connection.
//!
//! The transport computes a [`PeerIdentity`] once per connection from the peer's certificate
//! (already verified against the cluster CA by the handshake) and hands it to the node with
//! every request on that connection. It is never a field a client fills in. The node turns it
//! into a resolved principal (with the user's grants) before authorizing the request.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity a connection's TLS session proves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerIdentity {
    /// A certificate naming `node-<id>.<cluster>` (this cluster).
    Node(NodeId),
    /// A client certificate naming `client-<name>.<cluster>` (`ringctl certs` issues them;
    /// `client-ringctl` is the built-in user `root`).
    ClientCert {
        /// The `<name>` part.
        name: String,
    },
    /// A TLS connection without a client certificate (or with one that names neither a node
    /// nor a client of this cluster): every request needs a valid token.
    Anonymous,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Node(id) => write!(f, "node {id}"),
            PeerIdentity::ClientCert { name } => write!(f, "client certificate {name}"),
            PeerIdentity::Anonymous => f.write_str("anonymous"),
        }
    }
}

impl PeerIdentity {
    /// The identity a certificate's DNS names prove in `cluster`: the first name of the form
    /// `node-<id>.<cluster>` (id > 0) or `client-<name>.<cluster>` (non-empty name); a node name
    /// wins over a client name. Anything else is [`PeerIdentity::Anonymous`].
    pub fn from_dns_names<'a>(names: impl IntoIterator<Item = &'a str>, cluster: &str) -> Self {
        let suffix = format!(".{cluster}");
        let mut client = None;
        for name in names {
            let Some(head) = name.strip_suffix(suffix.as_str()) else {
                continue;
            };
            if let Some(id) = head.strip_prefix("node-") {
                // Digits only: `u64::from_str` also takes a leading `+`.
                let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
                if let Some(id) = id.parse::<u64>().ok().filter(|&id| digits && id > 0) {
                    return PeerIdentity::Node(NodeId(id));
                }
            } else if let Some(client_name) = head.strip_prefix("client-")
                && client.is_none()
                && !client_name.is_empty()
            {
                client = Some(client_name.to_string());
            }
        }
        match client {
            Some(name) => PeerIdentity::ClientCert { name },
            None => PeerIdentity::Anonymous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_map_to_identities() {
        let cases: &[(&str, &[&str], PeerIdentity)] = &[
            ("node", &["node-3.prod"], PeerIdentity::Node(NodeId(3))),
            (
                "client",
                &["client-alice.prod"],
                PeerIdentity::ClientCert {
                    name: "alice".into(),
                },
            ),
            (
                "other cluster node",
                &["node-3.test"],
                PeerIdentity::Anonymous,
            ),
            (
                "other cluster client",
                &["client-alice.test"],
                PeerIdentity::Anonymous,
            ),
            ("node zero", &["node-0.prod"], PeerIdentity::Anonymous),
            ("plus sign", &["node-+3.prod"], PeerIdentity::Anonymous),
            ("empty client", &["client-.prod"], PeerIdentity::Anonymous),
            ("no names", &[], PeerIdentity::Anonymous),
            (
                "dotted client name",
                &["client-a.b.prod"],
                PeerIdentity::ClientCert { name: "a.b".into() },
            ),
            (
                "node wins",
                &["client-x.prod", "node-2.prod"],
                PeerIdentity::Node(NodeId(2)),
            ),
            ("suffix only", &["node-2.xprod"], PeerIdentity::Anonymous),
        ];
        for (case, names, expected) in cases {
            assert_eq!(
                &PeerIdentity::from_dns_names(names.iter().copied(), "prod"),
                expected,
                "{case}"
            );
        }
    }
}
