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
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Most verified tokens kept.
pub const TOKEN_CACHE_MAX: usize = 10_000;
/// Most users whose failed logins are remembered.
pub const FAILED_LOGINS_MAX: usize = 10_000;
/// Password checks (argon2, ~tens of ms and MBs of memory each) running at once, at most;
/// more logins wait, up to a timeout.
pub const PASSWORD_CHECKS_MAX: usize = 2;
/// The delay after the first failed login; doubles with each further failure.
const FAILURE_DELAY_BASE: Duration = Duration::from_millis(200);
/// The longest delay.
const FAILURE_DELAY_MAX: Duration = Duration::from_secs(5);

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

    fn failure_delay(&self, user: &str) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(user) {
            None | Some((0, _)) => Duration::ZERO,
            Some((count, _)) => FAILURE_DELAY_BASE
                .saturating_mul(1 << (count - 1).min(10))
                .min(FAILURE_DELAY_MAX),
        }
    }

    fn record_failure(&self, user: &str, now: u64) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= FAILED_LOGINS_MAX && !failures.contains_key(user) {
            // Forget the entries untouched for the longest.
            let cutoff = failures.values().map(|(_, at)| *at).min().unwrap_or(now);
            failures.retain(|_, (_, at)| *at > cutoff);
            if failures.len() >= FAILED_LOGINS_MAX {
                failures.clear();
            }
        }
        let entry = failures.entry(user.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
    }

    /// Answers a login: checks the password (on a blocking thread: argon2 is slow on purpose,
    /// after a delay that grows with the user's recent failures) and signs a token.
    pub async fn login(
        self: Arc<Self>,
        peer: PeerIdentity,
        user: String,
        password: Secret,
    ) -> Response {
        match self.login_inner(&peer, &user, password).await {
            Ok(response) => {
                info!(target: "audit", %peer, user, "login");
                response
            }
            Err(error) => {
                warn!(target: "audit", %peer, user, %error, "login failed");
                Response::Error(error)
            }
        }
    }

    async fn login_inner(
        &self,
        _peer: &PeerIdentity,
        name: &str,
        password: Secret,
    ) -> Result<Response, WireError> {
        let delay = self.failure_delay(name);
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
            self.record_failure(name, now);
            return Err(unauthenticated("wrong user name or password"));
        };
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
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
