//! Users, roles and token-signing keys, replicated in the PD state.
//!
//! Applying these commands is pure like the rest of PD: password hashes arrive already computed
//! (argon2id PHC strings, hashed by `ringctl` so the password never leaves the admin's machine)
//! and signing keys arrive already generated (by the PD leader, outside the state machine, like
//! `now_ms`). Every node validates tokens against this state: the user must exist and the
//! token's generation must equal the user's current one, so `SetPassword` and `DeleteUser`
//! revoke every older token.

use crate::PdState;
use crate::command::Response;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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
/// Longest user or namespace name (the same as `ringkv_types::namespace::MAX_NAMESPACE_BYTES`).
pub const MAX_NAME_BYTES: usize = ringkv_types::namespace::MAX_NAMESPACE_BYTES;

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
            ringkv_types::namespace::validate_name(ns).map_err(|e| e.to_string())?;
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

/// A user-table or key command (a [`crate::Command`] variant carries it).
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

fn invalid(name: &'static str, reason: impl Into<Cow<'static, str>>) -> Error {
    Error::InvalidAuth {
        what: Cow::Borrowed(name),
        reason: reason.into(),
    }
}

fn check_name(name: &str) -> Result<()> {
    ringkv_types::namespace::validate_name(name).map_err(|e| invalid("user name", e.to_string()))
}

fn check_hash(hash: &str, allow_empty: bool) -> Result<()> {
    if hash.is_empty() && allow_empty {
        return Ok(());
    }
    if hash.len() > MAX_PASSWORD_HASH_BYTES {
        return Err(Error::TooLarge {
            what: Cow::Borrowed("password hash"),
            size: hash.len() as u64,
            max: MAX_PASSWORD_HASH_BYTES as u64,
        });
    }
    if !hash.starts_with("$argon2id$") {
        return Err(invalid("password hash", "not an argon2id PHC string"));
    }
    Ok(())
}

impl PdState {
    /// Applies a user or key command.
    pub(crate) fn apply_auth(&mut self, command: &AuthCommand, now_ms: u64) -> Result<Response> {
        self.require_bootstrapped_auth()?;
        let auth = &mut self.auth;
        match command {
            AuthCommand::AddUser {
                name,
                password_hash,
            } => {
                check_name(name)?;
                check_hash(password_hash, true)?;
                if auth.users.contains_key(name) {
                    return Err(invalid("user", format!("{name} already exists")));
                }
                if auth.users.len() >= MAX_USERS {
                    return Err(Error::TooLarge {
                        what: Cow::Borrowed("user table"),
                        size: auth.users.len() as u64 + 1,
                        max: MAX_USERS as u64,
                    });
                }
                let generation = auth.next_generation;
                auth.next_generation += 1;
                auth.users.insert(
                    name.clone(),
                    User {
                        name: name.clone(),
                        password_hash: password_hash.clone(),
                        roles: BTreeSet::new(),
                        generation,
                        created_ms: now_ms,
                    },
                );
            }
            AuthCommand::DeleteUser { name } => {
                if name == ROOT_USER {
                    return Err(invalid("user", "root cannot be deleted"));
                }
                if auth.users.remove(name).is_none() {
                    return Err(Error::UnknownUser { name: name.clone() });
                }
            }
            AuthCommand::SetPassword {
                name,
                password_hash,
            } => {
                check_hash(password_hash, false)?;
                let generation = auth.next_generation;
                if !auth.users.contains_key(name) {
                    // root exists without an entry until it gets a password.
                    if name != ROOT_USER {
                        return Err(Error::UnknownUser { name: name.clone() });
                    }
                    auth.users.insert(
                        name.clone(),
                        User {
                            name: name.clone(),
                            password_hash: String::new(),
                            roles: BTreeSet::new(),
                            generation,
                            created_ms: now_ms,
                        },
                    );
                }
                let Some(user) = auth.users.get_mut(name) else {
                    return Err(Error::UnknownUser { name: name.clone() });
                };
                user.password_hash = password_hash.clone();
                user.generation = generation;
                auth.next_generation += 1;
            }
            AuthCommand::Grant { name, role } | AuthCommand::Revoke { name, role } => {
                if let Role::Read(ns) | Role::ReadWrite(ns) = role {
                    check_name(ns)?;
                }
                let generation = auth.next_generation;
                let user = auth
                    .users
                    .get_mut(name)
                    .ok_or_else(|| Error::UnknownUser { name: name.clone() })?;
                if matches!(command, AuthCommand::Grant { .. }) {
                    if user.roles.len() >= MAX_ROLES && !user.roles.contains(role) {
                        return Err(Error::TooLarge {
                            what: Cow::Borrowed("roles"),
                            size: user.roles.len() as u64 + 1,
                            max: MAX_ROLES as u64,
                        });
                    }
                    user.roles.insert(role.clone());
                } else if user.roles.remove(role) {
                    // Tokens carry the roles they were issued with: revoke them.
                    user.generation = generation;
                    auth.next_generation += 1;
                }
            }
            AuthCommand::AddSigningKey {
                private_pkcs8,
                public,
            } => {
                if public.len() != PUBLIC_KEY_BYTES
                    || private_pkcs8.is_empty()
                    || private_pkcs8.len() > MAX_PRIVATE_KEY_BYTES
                {
                    return Err(invalid("signing key", "not an Ed25519 key pair"));
                }
                let id = auth.next_key_id;
                auth.next_key_id += 1;
                auth.signing_keys.push(SigningKey {
                    id,
                    private_pkcs8: private_pkcs8.clone(),
                    public: public.clone(),
                    created_ms: now_ms,
                });
                if auth.signing_keys.len() > MAX_SIGNING_KEYS {
                    auth.signing_keys.remove(0);
                }
            }
        }
        self.auth.version += 1;
        self.now_ms = self.now_ms.max(now_ms);
        Ok(Response::Done)
    }

    fn require_bootstrapped_auth(&self) -> Result<()> {
        if self.cluster.is_some() {
            Ok(())
        } else {
            Err(Error::NotBootstrapped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::test_support::cluster;

    fn bootstrapped() -> PdState {
        cluster(3, 4, 3)
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    fn auth(state: &mut PdState, command: AuthCommand) -> Result<Response> {
        let result = state.apply(&Command::Auth { command, now_ms: 1 });
        state.check_invariants();
        result
    }

    #[test]
    fn user_commands_change_the_table_and_bump_generations() {
        let mut state = bootstrapped();
        let add = |name: &str| AuthCommand::AddUser {
            name: name.into(),
            password_hash: HASH.into(),
        };
        auth(&mut state, add("alice")).unwrap();
        auth(&mut state, add("bob")).unwrap();
        let alice0 = state.auth.users["alice"].generation;
        assert_ne!(alice0, state.auth.users["bob"].generation);
        let cases: Vec<(&str, AuthCommand)> = vec![
            ("duplicate", add("alice")),
            ("bad name", add("a/b")),
            (
                "bad hash",
                AuthCommand::AddUser {
                    name: "carol".into(),
                    password_hash: "plaintext".into(),
                },
            ),
            (
                "unknown user",
                AuthCommand::DeleteUser {
                    name: "carol".into(),
                },
            ),
            (
                "delete root",
                AuthCommand::DeleteUser {
                    name: ROOT_USER.into(),
                },
            ),
            (
                "empty password",
                AuthCommand::SetPassword {
                    name: "alice".into(),
                    password_hash: String::new(),
                },
            ),
            (
                "short key",
                AuthCommand::AddSigningKey {
                    private_pkcs8: vec![1],
                    public: vec![2; 31],
                },
            ),
        ];
        for (case, command) in cases {
            let before = state.clone();
            assert!(auth(&mut state, command).is_err(), "{case}");
            assert_eq!(state, before, "{case} changed the state");
        }
        let grant = AuthCommand::Grant {
            name: "bob".into(),
            role: Role::Read("alice".into()),
        };
        auth(&mut state, grant).unwrap();
        assert!(
            state.auth.users["bob"]
                .roles
                .contains(&Role::Read("alice".into()))
        );
        auth(
            &mut state,
            AuthCommand::SetPassword {
                name: "alice".into(),
                password_hash: HASH.into(),
            },
        )
        .unwrap();
        assert!(state.auth.users["alice"].generation > alice0);
        let bob0 = state.auth.users["bob"].generation;
        auth(
            &mut state,
            AuthCommand::Revoke {
                name: "bob".into(),
                role: Role::Read("alice".into()),
            },
        )
        .unwrap();
        assert!(state.auth.users["bob"].roles.is_empty());
        assert!(state.auth.users["bob"].generation > bob0);
        auth(
            &mut state,
            AuthCommand::DeleteUser {
                name: "alice".into(),
            },
        )
        .unwrap();
        auth(&mut state, add("alice")).unwrap();
        assert!(state.auth.users["alice"].generation > alice0 + 1);
        // root gets an entry with its first password.
        auth(
            &mut state,
            AuthCommand::SetPassword {
                name: ROOT_USER.into(),
                password_hash: HASH.into(),
            },
        )
        .unwrap();
        assert!(state.auth.users[ROOT_USER].is_admin());
    }

    #[test]
    fn signing_keys_rotate_and_redaction_hides_secrets() {
        let mut state = bootstrapped();
        for i in 0..(MAX_SIGNING_KEYS as u8 + 2) {
            auth(
                &mut state,
                AuthCommand::AddSigningKey {
                    private_pkcs8: vec![i; 48],
                    public: vec![i; 32],
                },
            )
            .unwrap();
        }
        let ids: Vec<u64> = state.auth.signing_keys.iter().map(|k| k.id).collect();
        assert_eq!(ids, vec![2, 3, 4, 5]);
        assert_eq!(state.auth.current_key().unwrap().id, 5);
        auth(
            &mut state,
            AuthCommand::AddUser {
                name: "alice".into(),
                password_hash: HASH.into(),
            },
        )
        .unwrap();
        let redacted = state.auth.redacted();
        assert!(
            redacted
                .signing_keys
                .iter()
                .all(|k| k.private_pkcs8.is_empty())
        );
        assert_ne!(redacted.users["alice"].password_hash, HASH);
        assert!(!format!("{:?}", state.auth).contains(HASH));
    }

    #[test]
    fn roles_parse_and_print() {
        for text in ["admin", "read:alice", "readwrite:bob"] {
            assert_eq!(text.parse::<Role>().unwrap().to_string(), text);
        }
        for text in ["root", "read:", "write:alice", "read:a/b"] {
            assert!(text.parse::<Role>().is_err(), "{text}");
        }
    }
}
