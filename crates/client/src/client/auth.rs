//! Credentials: the namespace a client's keys live in, logins, and the token sent with every
//! request (refreshed before it expires when the client has a password).

use super::Client;
use crate::config::{ClientConfig, Credentials};
use crate::error::{Error, Result};
use bytes::Bytes;
use ringkv_transport::certs::TlsIdentity;
use ringkv_types::{AdminRequest, AdminResult, PeerIdentity, Request, Response, Secret, namespace};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::debug;

/// Log in again when the token has less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// A token from a login, and when it expires.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The token.
    pub token: Secret,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Decodes unpadded base64url (the JWT alphabet).
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The user a token names (its `sub` claim), read without checking the signature: only to
/// pick the default namespace; the node checks the token.
pub(crate) fn token_subject(token: &Secret) -> Option<String> {
    let payload = token.expose().split('.').nth(1)?;
    let json: serde_json::Value = serde_json::from_slice(&base64url(payload)?).ok()?;
    json.get("sub")?.as_str().map(str::to_string)
}

/// The namespace a client's keys live in: configured, else the user of the credentials or of
/// a `client-<name>` certificate; `None` (raw keys) for root and node certificates.
pub(crate) fn default_namespace(
    config: &ClientConfig,
    identity: &TlsIdentity,
) -> Result<Option<String>> {
    if let Some(namespace) = &config.namespace {
        return Ok(Some(namespace.clone()));
    }
    let user = match &config.credentials {
        Credentials::Password { user, .. } => Some(user.clone()),
        Credentials::Token(token) => {
            Some(token_subject(token).ok_or_else(|| Error::Unauthenticated {
                reason: "the token is not a JWT with a subject".into(),
            })?)
        }
        Credentials::Certificate => match identity.peer_identity(&config.cluster) {
            PeerIdentity::ClientCert { name } => Some(name),
            PeerIdentity::Node(_) | PeerIdentity::Anonymous => None,
        },
    };
    Ok(user.filter(|name| name != "ringctl" && name != "root"))
}

impl Client {
    /// The wire key of `key`: in the client's namespace, or raw without one.
    pub(crate) fn wire_key(&self, key: Bytes) -> Result<Bytes> {
        match &self.inner.namespace {
            None => Ok(key),
            Some(ns) => namespace::encode(ns, &key).map_err(|error| Error::Config {
                reason: error.to_string(),
            }),
        }
    }

    /// The token the client sends (token or password credentials), if any.
    pub async fn current_token(&self) -> Option<IssuedToken> {
        self.inner.token.lock().await.clone()
    }

    /// The namespace this client's keys live in (`None`: raw keys).
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    /// The token to send with a request, logging in again first when it is about to expire
    /// (password credentials only).
    pub(super) async fn token(&self, _deadline: Instant) -> Result<Option<Secret>> {
        if matches!(self.inner.config.credentials, Credentials::Certificate) {
            return Ok(None);
        }
        let mut slot = self.inner.token.lock().await;
        let refresh_at = slot.as_ref().map_or(0, |issued| {
            issued
                .expires_at_ms
                .saturating_sub(REFRESH_BEFORE.as_millis() as u64)
        });
        if let Credentials::Password { user, password } = &self.inner.config.credentials
            && now_ms() >= refresh_at
        {
            debug!(user, "refreshing the token");
            *slot = Some(self.login(user, password).await?);
        }
        Ok(slot.as_ref().map(|issued| issued.token.clone()))
    }

    /// Logs in as `user`: any node checks the password and signs a token (valid for the
    /// cluster's `[auth] token_ttl`). Returns the token and its expiry (ms since the epoch).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a wrong user or password, [`Error::Transport`] /
    /// [`Error::Server`] when no node answered.
    pub async fn login(&self, user: &str, password: &Secret) -> Result<IssuedToken> {
        let request = Request::Admin(AdminRequest::Login {
            user: user.to_string(),
            password: password.clone(),
        });
        let mut last = None;
        for node in self.nodes_to_ask() {
            let deadline = Instant::now() + self.inner.config.request_timeout;
            match self.call_plain(node, &request, deadline).await {
                Ok(Response::Admin(AdminResult::Token {
                    token,
                    expires_at_ms,
                })) => {
                    return Ok(IssuedToken {
                        token,
                        expires_at_ms,
                    });
                }
                Ok(Response::Error(wire)) if !wire.is_retryable() => {
                    return Err(Error::from_wire(wire));
                }
                Ok(Response::Error(wire)) => last = Some(Error::Server(wire)),
                Ok(_) => last = Some(Error::UnexpectedResponse { request: "login" }),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(Error::NoShardMap {
            reason: "no node to log in at".into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_of_a_token_is_read() {
        // {"alg":"EdDSA"} . {"sub":"alice","exp":1} . signature
        let token = Secret::new("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2ln");
        assert_eq!(token_subject(&token).as_deref(), Some("alice"));
        assert_eq!(token_subject(&Secret::new("garbage")), None);
        assert_eq!(base64url("aGk").unwrap(), b"hi");
    }
}
