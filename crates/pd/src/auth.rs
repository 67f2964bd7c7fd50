//! Applying user, role and signing-key commands ([`AuthCommand`]) to the PD state. The types
//! live in [`ringkv_types::pd::auth`], re-exported here.

pub use ringkv_types::pd::auth::*;

use crate::apply::Machine;
use crate::command::Response;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::collections::BTreeSet;

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

impl Machine<'_> {
    /// Applies a user or key command.
    pub(crate) fn apply_auth(&mut self, command: &AuthCommand, now_ms: u64) -> Result<Response> {
        self.require_bootstrapped_auth()?;
        let auth = &mut self.0.auth;
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
        self.0.auth.version += 1;
        self.0.now_ms = self.0.now_ms.max(now_ms);
        Ok(Response::Done)
    }

    fn require_bootstrapped_auth(&self) -> Result<()> {
        if self.0.cluster.is_some() {
            Ok(())
        } else {
            Err(Error::NotBootstrapped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cluster;
    use crate::{Apply, Command, PdState};

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
