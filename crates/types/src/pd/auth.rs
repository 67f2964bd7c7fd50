//! Users, roles and token-signing keys, replicated in the PD state.
//!
//! Applying these commands is pure like the rest of PD: password hashes arrive already computed
//! (argon2id PHC strings, hashed by `ringctl` so the password never leaves the admin's machine)
//! and signing keys arrive already generated (by the PD leader, outside the state machine, like
//! `now_ms`). Every node validates tokens against this state: the user must exist and the
//! token's generation must equal the user's current one, so `SetPassword` and `DeleteUser`
//! revoke every older token.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The built-in administrator: always `admin`, never deleted.
pub const ROOT_USER: &str = "root";
/// Most users.
pub const MAX_USERS: usize = 10_000;
/// Most roles per user.
pub const MAX_ROLES: usize = 64;
/// Longest password hash (PHC string).
pub const MAX_PASSWORD_HASH_BYTES: usize = 256;
/// Signing keys kept: the newest signs, all verify. Rotating more often than this many times
/// per token lifetime invalidates tokens early.
pub const MAX_SIGNING_KEYS: usize = 4;
/// Length of a signing key's public key (Ed25519).
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Longest PKCS#8 document of a signing key.
pub const MAX_PRIVATE_KEY_BYTES: usize = 256;
/// Longest user or namespace name (the same as `crate::namespace::MAX_NAMESPACE_BYTES`).
pub const MAX_NAME_BYTES: usize = crate::namespace::MAX_NAMESPACE_BYTES;

/// A role: `admin`, or a grant on another user's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Cluster administration and all data.
    Admin,
    /// Read the namespace's keys (`read:NS`).
    Read(String),
    /// Read and write the namespace's keys (`readwrite:NS`).
    ReadWrite(String),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Read(ns) => write!(f, "read:{ns}"),
            Role::ReadWrite(ns) => write!(f, "readwrite:{ns}"),
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let role = match text.split_once(':') {
            None if text == "admin" => Role::Admin,
            Some(("read", ns)) => Role::Read(ns.into()),
            Some(("readwrite", ns)) => Role::ReadWrite(ns.into()),
            _ => {
                return Err(format!(
                    "unknown role {text:?}: use admin, read:NAMESPACE or readwrite:NAMESPACE"
                ));
            }
        };
        if let Role::Read(ns) | Role::ReadWrite(ns) = &role {
            crate::namespace::validate_name(ns).map_err(|e| e.to_string())?;
        }
        Ok(role)
    }
}

/// One user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Name (also its namespace).
    pub name: String,
    /// argon2id PHC string; empty for a user without a password (certificate only).
    pub password_hash: String,
    /// Roles.
    pub roles: BTreeSet<Role>,
    /// Tokens must carry this generation; bumped by every password change.
    pub generation: u64,
    /// Log time of creation.
    pub created_ms: u64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("generation", &self.generation)
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

impl User {
    /// Whether the user (or root) has `admin`.
    pub fn is_admin(&self) -> bool {
        self.name == ROOT_USER || self.roles.contains(&Role::Admin)
    }
}

/// A token-signing key (Ed25519).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id (the tokens' `kid`), allocated in order.
    pub id: u64,
    /// PKCS#8 document (private key). Empty in redacted copies of the state.
    #[serde(with = "serde_bytes")]
    pub private_pkcs8: Vec<u8>,
    /// The 32-byte public key.
    #[serde(with = "serde_bytes")]
    pub public: Vec<u8>,
    /// Log time of creation.
    pub created_ms: u64,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// Users and keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Signing keys, oldest first; the last one signs new tokens.
    pub signing_keys: Vec<SigningKey>,
    /// Next token generation to hand out (global, so a user deleted and added again never
    /// accepts its predecessor's tokens).
    pub next_generation: u64,
    /// Next signing key id.
    pub next_key_id: u64,
    /// Bumped by every change, so nodes notice changes cheaply.
    pub version: u64,
}

impl AuthState {
    /// The key that signs new tokens.
    pub fn current_key(&self) -> Option<&SigningKey> {
        self.signing_keys.last()
    }

    /// A copy without password hashes and private keys, for administrators' eyes.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for user in copy.users.values_mut() {
            if !user.password_hash.is_empty() {
                user.password_hash = "<redacted>".into();
            }
        }
        for key in &mut copy.signing_keys {
            key.private_pkcs8.clear();
        }
        copy
    }
}

/// A user-table or key command (a [`super::Command`] variant carries it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// Creates a user (no roles).
    AddUser {
        /// Name.
        name: String,
        /// argon2id PHC string, or empty for a certificate-only user.
        password_hash: String,
    },
    /// Deletes a user; its tokens stop working.
    DeleteUser {
        /// Name.
        name: String,
    },
    /// Replaces a user's password; its older tokens stop working.
    SetPassword {
        /// Name.
        name: String,
        /// argon2id PHC string.
        password_hash: String,
    },
    /// Adds a role.
    Grant {
        /// Name.
        name: String,
        /// Role.
        role: Role,
    },
    /// Removes a role; tokens issued before stop working.
    Revoke {
        /// Name.
        name: String,
        /// Role.
        role: Role,
    },
    /// Adds a signing key, which signs new tokens from now on; the oldest key beyond
    /// [`MAX_SIGNING_KEYS`] is dropped. `ringctl auth rotate-key` sends it with empty key
    /// bytes, which the PD leader fills in with a fresh key before proposing.
    AddSigningKey {
        /// PKCS#8 document.
        private_pkcs8: Vec<u8>,
        /// 32-byte public key.
        public: Vec<u8>,
    },
}

impl fmt::Debug for AuthCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthCommand::AddUser { name, .. } => write!(f, "AddUser {{ name: {name:?} }}"),
            AuthCommand::DeleteUser { name } => write!(f, "DeleteUser {{ name: {name:?} }}"),
            AuthCommand::SetPassword { name, .. } => {
                write!(f, "SetPassword {{ name: {name:?} }}")
            }
            AuthCommand::Grant { name, role } => {
                write!(f, "Grant {{ name: {name:?}, role: {role} }}")
            }
            AuthCommand::Revoke { name, role } => {
                write!(f, "Revoke {{ name: {name:?}, role: {role} }}")
            }
            AuthCommand::AddSigningKey { .. } => f.write_str("AddSigningKey"),
        }
    }
}
