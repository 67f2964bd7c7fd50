//! Turns a connection's [`PeerIdentity`] (and a request's token) into a [`Principal`], and
//! serves logins.
//!
//! The user table and the signing keys come from the PD state this node has (its own replica,
//! or the copy its agent fetches with every heartbeat round), installed with
//! [`Authenticator::update`]; so a password change or a deleted user stops that user's tokens
//! within one PD heartbeat, without any per-request call to PD.
//!
//! Verified tokens are cached (bounded, keyed by the whole token, each entry dropped at the
//! token's expiry): a signature check costs tens of microseconds, a cache hit well under one.
//! Every use still checks the user's current generation and roles.

use super::principal::{Grant, Principal, ROOT_CERT_NAME, ROOT_USER};
use super::token::{self, Claims, VerifyingKey};
use ringkv_pd::{AuthState, Role, User};
use ringkv_types::{AdminResult, PeerIdentity, Request, Response, Secret, WireError};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Most verified tokens kept.
pub const TOKEN_CACHE_MAX: usize = 10_000;
/// Most users and source addresses whose failed logins are remembered.
pub const FAILED_LOGINS_MAX: usize = 10_000;
/// Failed logins older than this are forgotten: the delay of a user or an address starts over.
const FAILURE_WINDOW_SECS: u64 = 300;
/// Password checks (argon2, ~tens of ms and MBs of memory each) running at once, at most;
/// more logins wait, up to a timeout.
pub const PASSWORD_CHECKS_MAX: usize = 2;
/// The delay after the first failed login; doubles with each further failure.
const FAILURE_DELAY_BASE: Duration = Duration::from_millis(200);
/// The longest delay.
const FAILURE_DELAY_MAX: Duration = Duration::from_secs(5);

/// The keys a failed login is counted under: the user, and the source address if known.
fn failure_keys(user: &str, remote: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![format!("user:{user}")];
    if let Some(ip) = remote {
        keys.push(format!("addr:{ip}"));
    }
    keys
}

fn unauthenticated(reason: impl Into<String>) -> WireError {
    WireError::Unauthenticated {
        reason: reason.into(),
    }
}

/// Seconds since the Unix epoch by this node's clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What the node knows of users and keys (from PD state).
#[derive(Debug, Default)]
struct View {
    auth: AuthState,
    verifying: Vec<VerifyingKey>,
}

#[derive(Clone, Debug)]
struct CachedToken {
    user: String,
    generation: u64,
    exp: u64,
}

/// Resolves callers and serves logins; one per node, shared by the client service, the HTTP
/// API and the event loop (which installs new PD state).
#[derive(Debug)]
pub struct Authenticator {
    cluster: String,
    token_ttl: Duration,
    view: RwLock<Arc<View>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    failures: Mutex<BTreeMap<String, (u32, u64)>>,
    password_checks: Semaphore,
}

/// Turns a user's roles into the principal's.
fn principal_of(user: &User, generation: u64) -> Principal {
    let grants = user
        .roles
        .iter()
        .filter_map(|role| match role {
            Role::Admin => None,
            Role::Read(ns) => Some(Grant::Read(ns.clone())),
            Role::ReadWrite(ns) => Some(Grant::ReadWrite(ns.clone())),
        })
        .collect();
    Principal::User {
        name: user.name.clone(),
        admin: user.is_admin(),
        grants,
        token_generation: generation,
    }
}

impl Authenticator {
    /// An authenticator for the cluster named `cluster`, issuing tokens valid for `token_ttl`.
    pub fn new(cluster: impl Into<String>, token_ttl: Duration) -> Self {
        Self {
            cluster: cluster.into(),
            token_ttl,
            view: RwLock::new(Arc::new(View::default())),
            tokens: Mutex::new(HashMap::new()),
            failures: Mutex::new(BTreeMap::new()),
            password_checks: Semaphore::new(PASSWORD_CHECKS_MAX),
        }
    }

    /// The cluster name (the tokens' audience and issuer).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn view(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Installs the users and keys of the PD state this node has. Cheap when nothing changed.
    pub fn update(&self, auth: &AuthState) {
        let current = self.view();
        // The version bumps with every applied change: equal versions, equal tables.
        if current.auth.version == auth.version {
            return;
        }
        let verifying = auth.signing_keys.iter().map(VerifyingKey::of).collect();
        let view = Arc::new(View {
            auth: auth.clone(),
            verifying,
        });
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = view;
    }

    /// The principal of a request from `peer`, and the request itself (a
    /// `Request::WithToken` unwrapped).
    ///
    /// # Errors
    /// `Unauthenticated` for an anonymous connection without a valid token, a token on a
    /// connection with a certificate, or a certificate of an unknown user.
    pub fn resolve(
        &self,
        peer: &PeerIdentity,
        request: Request,
    ) -> Result<(Principal, Request), WireError> {
        match (peer, request) {
            (
                PeerIdentity::Node(_) | PeerIdentity::ClientCert { .. },
                Request::WithToken { .. },
            ) => Err(unauthenticated(
                "a token counts only on a connection without a client certificate",
            )),
            (PeerIdentity::Node(id), request) => Ok((Principal::Node(*id), request)),
            (PeerIdentity::ClientCert { name }, request) => {
                Ok((self.certificate_user(name)?, request))
            }
            (PeerIdentity::Anonymous, Request::WithToken { token, request }) => {
                Ok((self.token_user(&token, now_secs())?, *request))
            }
            (PeerIdentity::Anonymous, _) => Err(unauthenticated(
                "no client certificate and no token: log in first",
            )),
        }
    }

    fn certificate_user(&self, name: &str) -> Result<Principal, WireError> {
        if name == ROOT_CERT_NAME || name == ROOT_USER {
            return Ok(Principal::root());
        }
        let view = self.view();
        let user = view.auth.users.get(name).ok_or_else(|| {
            unauthenticated(format!(
                "the certificate names user {name}, which does not exist (ringctl user add)"
            ))
        })?;
        Ok(principal_of(user, 0))
    }

    /// The user a token names, if the token is valid at `now` and the user still has the
    /// generation the token was issued for.
    ///
    /// # Errors
    /// `Unauthenticated` with the reason.
    pub fn token_user(&self, token: &Secret, now: u64) -> Result<Principal, WireError> {
        let view = self.view();
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token.expose())
            .cloned();
        let cached = match cached {
            Some(entry) => entry,
            None => {
                let claims = token::verify(token.expose(), &view.verifying, &self.cluster, now)
                    .map_err(unauthenticated)?;
                let entry = CachedToken {
                    user: claims.sub,
                    generation: claims.generation,
                    exp: claims.exp,
                };
                self.remember(token, entry.clone(), now);
                entry
            }
        };
        if cached.exp.saturating_add(token::LEEWAY_SECS) <= now {
            return Err(unauthenticated("token expired"));
        }
        let user = view
            .auth
            .users
            .get(&cached.user)
            .filter(|user| user.generation == cached.generation)
            .ok_or_else(|| {
                unauthenticated("token revoked (user deleted, password or roles changed)")
            })?;
        Ok(principal_of(user, cached.generation))
    }

    fn remember(&self, token: &Secret, entry: CachedToken, now: u64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.retain(|_, cached| cached.exp.saturating_add(token::LEEWAY_SECS) > now);
            if tokens.len() >= TOKEN_CACHE_MAX {
                tokens.clear();
            }
        }
        tokens.insert(token.expose().to_string(), entry);
    }

    /// The delay before checking a password: the longer of the user's and the source
    /// address's, each doubling with its recent failures (so guessing one user's password from
    /// many addresses, or many users' passwords from one address, is slowed alike).
    pub fn failure_delay(&self, user: &str, remote: Option<IpAddr>, now: u64) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failure_keys(user, remote)
            .iter()
            .map(|key| match failures.get(key) {
                Some((count, at))
                    if *count > 0 && now.saturating_sub(*at) <= FAILURE_WINDOW_SECS =>
                {
                    FAILURE_DELAY_BASE
                        .saturating_mul(1 << (count - 1).min(10))
                        .min(FAILURE_DELAY_MAX)
                }
                _ => Duration::ZERO,
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Counts a failed login against the user and the source address.
    pub fn record_failure(&self, user: &str, remote: Option<IpAddr>, now: u64) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for key in failure_keys(user, remote) {
            if failures.len() >= FAILED_LOGINS_MAX && !failures.contains_key(&key) {
                // Forget the entries untouched for the longest.
                let cutoff = failures.values().map(|(_, at)| *at).min().unwrap_or(now);
                failures.retain(|_, (_, at)| *at > cutoff);
                if failures.len() >= FAILED_LOGINS_MAX {
                    failures.clear();
                }
            }
            let entry = failures.entry(key).or_insert((0, now));
            if now.saturating_sub(entry.1) > FAILURE_WINDOW_SECS {
                entry.0 = 0;
            }
            entry.0 = entry.0.saturating_add(1);
            entry.1 = now;
        }
    }

    /// Answers a login: checks the password (on a blocking thread: argon2 is slow on purpose,
    /// after a delay that grows with the user's recent failures) and signs a token.
    /// `remote` is the caller's address, when the surface knows it: failures are counted
    /// per user and per address.
    pub async fn login(
        self: Arc<Self>,
        peer: PeerIdentity,
        remote: Option<IpAddr>,
        user: String,
        password: Secret,
    ) -> Response {
        let from = remote.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        match self.login_inner(remote, &user, password).await {
            Ok(response) => {
                info!(target: "audit", %peer, from, user, "login");
                response
            }
            Err(error) => {
                warn!(target: "audit", %peer, from, user, %error, "login failed");
                Response::Error(error)
            }
        }
    }

    async fn login_inner(
        &self,
        remote: Option<IpAddr>,
        name: &str,
        password: Secret,
    ) -> Result<Response, WireError> {
        let delay = self.failure_delay(name, remote, now_secs());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let view = self.view();
        let user = view.auth.users.get(name).cloned();
        let hash = user
            .as_ref()
            .map(|user| user.password_hash.clone())
            .filter(|hash| !hash.is_empty());
        let permit = self
            .password_checks
            .acquire()
            .await
            .map_err(|_| WireError::Unavailable)?;
        let matches = tokio::task::spawn_blocking(move || {
            super::password::verify(&password, hash.as_deref())
        })
        .await
        .map_err(|error| WireError::Internal {
            reason: format!("password check failed: {error}"),
        })?;
        drop(permit);
        let now = now_secs();
        let Some(user) = user.filter(|_| matches) else {
            self.record_failure(name, remote, now);
            return Err(unauthenticated("wrong user name or password"));
        };
        // The user's count starts over; the address's does not (one valid account must not
        // reset the delay of guesses at other users' passwords from the same address).
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&failure_keys(name, None)[0]);
        let key = view.auth.current_key().ok_or(WireError::Unavailable)?;
        let exp = now.saturating_add(self.token_ttl.as_secs());
        let claims = Claims {
            sub: user.name.clone(),
            aud: self.cluster.clone(),
            iss: self.cluster.clone(),
            iat: now,
            exp,
            generation: user.generation,
            admin: user.is_admin(),
            grants: user.roles.iter().map(ToString::to_string).collect(),
        };
        let token = token::issue(key, &claims).map_err(|reason| WireError::Internal { reason })?;
        Ok(Response::Admin(AdminResult::Token {
            token: Secret::new(token),
            expires_at_ms: exp.saturating_mul(1000),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    #[test]
    fn failed_logins_slow_down_per_user_and_per_source_address() {
        let auth = Authenticator::new("c", Duration::from_secs(60));
        let now = 1_000;
        let (mallory, elsewhere) = (ip("10.9.9.9"), ip("10.1.1.1"));
        assert_eq!(auth.failure_delay("alice", mallory, now), Duration::ZERO);

        // Guesses at many users' passwords from one address slow that address down...
        for user in ["alice", "bob", "carol"] {
            auth.record_failure(user, mallory, now);
        }
        let address_delay = auth.failure_delay("dave", mallory, now);
        assert_eq!(address_delay, FAILURE_DELAY_BASE * 4);
        // ...but not dave from another address.
        assert_eq!(auth.failure_delay("dave", elsewhere, now), Duration::ZERO);
        // Guesses at one user from many addresses slow that user down everywhere.
        auth.record_failure("erin", ip("10.0.0.1"), now);
        auth.record_failure("erin", ip("10.0.0.2"), now);
        assert_eq!(
            auth.failure_delay("erin", ip("10.0.0.3"), now),
            FAILURE_DELAY_BASE * 2
        );
        // Without an address only the user counts.
        assert_eq!(auth.failure_delay("frank", None, now), Duration::ZERO);
        // The delay is capped, and forgotten once the failures are old.
        for _ in 0..20 {
            auth.record_failure("alice", mallory, now);
        }
        assert_eq!(auth.failure_delay("alice", None, now), FAILURE_DELAY_MAX);
        let later = now + FAILURE_WINDOW_SECS + 1;
        assert_eq!(auth.failure_delay("alice", mallory, later), Duration::ZERO);
        auth.record_failure("alice", mallory, later);
        assert_eq!(auth.failure_delay("alice", None, later), FAILURE_DELAY_BASE);
    }
}
