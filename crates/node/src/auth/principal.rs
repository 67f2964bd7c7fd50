//! The resolved caller of a request.

use ringkv_types::NodeId;
use std::fmt;

/// The built-in administrator. It always exists and has `admin`.
pub const ROOT_USER: &str = "root";

/// The client certificate name (`client-ringctl.<cluster>`) that acts as [`ROOT_USER`], so that
/// `ringctl local up` and the README tour work without creating users.
pub const ROOT_CERT_NAME: &str = "ringctl";

/// A namespace grant: what a user may do in a namespace other than its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// Read the namespace's keys.
    Read(String),
    /// Read and write the namespace's keys.
    ReadWrite(String),
}

/// Who a request comes from, as the node resolved it from the TLS session (and a token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A node of this cluster (its certificate).
    Node(NodeId),
    /// A user (a client certificate or a token).
    User {
        /// The user's name, which is also its own namespace.
        name: String,
        /// Whether it has the `admin` role.
        admin: bool,
        /// Namespace grants besides its own namespace.
        grants: Vec<Grant>,
        /// The token generation its credentials were checked against (0 for certificates).
        token_generation: u64,
    },
}

impl Principal {
    /// A user principal.
    pub fn user(name: impl Into<String>, admin: bool, grants: Vec<Grant>) -> Self {
        Principal::User {
            name: name.into(),
            admin,
            grants,
            token_generation: 0,
        }
    }

    /// The built-in `root` user.
    pub fn root() -> Self {
        Self::user(ROOT_USER, true, Vec::new())
    }

    /// Whether the principal may use every admin command and reach every key.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Node(_) => true,
            Principal::User { admin, .. } => *admin,
        }
    }

    /// Whether the principal may read keys of namespace `namespace`.
    pub fn may_read(&self, namespace: &[u8]) -> bool {
        match self {
            Principal::Node(_) => true,
            Principal::User {
                name,
                admin,
                grants,
                ..
            } => {
                *admin
                    || name.as_bytes() == namespace
                    || grants.iter().any(|grant| match grant {
                        Grant::Read(ns) | Grant::ReadWrite(ns) => ns.as_bytes() == namespace,
                    })
            }
        }
    }

    /// Whether the principal may write keys of namespace `namespace`.
    pub fn may_write(&self, namespace: &[u8]) -> bool {
        match self {
            Principal::Node(_) => true,
            Principal::User {
                name,
                admin,
                grants,
                ..
            } => {
                *admin
                    || name.as_bytes() == namespace
                    || grants.iter().any(|grant| match grant {
                        Grant::ReadWrite(ns) => ns.as_bytes() == namespace,
                        Grant::Read(_) => false,
                    })
            }
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Node(id) => write!(f, "node {id}"),
            Principal::User { name, .. } => write!(f, "user {name}"),
        }
    }
}
