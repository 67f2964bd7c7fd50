//! Bearer tokens: JWTs signed with the cluster's Ed25519 key (kept in PD state).
//!
//! Header `{"alg":"EdDSA","typ":"JWT","kid":"<key id>"}`; claims: `sub` (user), `aud` and
//! `iss` (both the cluster name), `iat`, `exp` (seconds), `gen` (the user's token generation
//! when issued), `admin` and `grants` (the user's roles when issued, informational: the node
//! authorizes with the user's current roles). Verification pins `EdDSA` (so `alg: none` and
//! every other algorithm are refused), checks the signature with the key the `kid` names,
//! then `exp`, `aud` and `iss`. Whether the user still exists with the same generation is
//! checked by the caller against the current user table.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ringkv_pd::SigningKey;
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Audience: the cluster name.
    pub aud: String,
    /// Issuer: the cluster name.
    pub iss: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// The user's token generation when issued.
    #[serde(rename = "gen")]
    pub generation: u64,
    /// Whether the user had `admin` when issued.
    pub admin: bool,
    /// The user's roles when issued (`read:NS`, `readwrite:NS`, `admin`).
    pub grants: Vec<String>,
}

/// A verification key: its id and public key.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The `kid`.
    pub id: u64,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.id)
    }
}

impl VerifyingKey {
    /// The public half of `key`.
    pub fn of(key: &SigningKey) -> Self {
        Self {
            id: key.id,
            key: DecodingKey::from_ed_der(&key.public),
        }
    }
}

/// Signs `claims` with `key`.
///
/// # Errors
/// A description when the key is unusable.
pub fn issue(key: &SigningKey, claims: &Claims) -> Result<String, String> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.id.to_string());
    let encoding = EncodingKey::from_ed_der(&key.private_pkcs8);
    jsonwebtoken::encode(&header, claims, &encoding).map_err(|error| error.to_string())
}

/// Checks `token`'s algorithm, signature, expiry (at `now_secs`), audience and issuer.
///
/// # Errors
/// Why the token is refused (never the token itself).
pub fn verify(
    token: &str,
    keys: &[VerifyingKey],
    cluster: &str,
    now_secs: u64,
) -> Result<Claims, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|error| format!("malformed token: {error}"))?;
    if header.alg != Algorithm::EdDSA {
        return Err(format!("token algorithm {:?} is not EdDSA", header.alg));
    }
    let kid: u64 = header
        .kid
        .as_deref()
        .and_then(|kid| kid.parse().ok())
        .ok_or("token without a key id")?;
    let key = keys
        .iter()
        .find(|key| key.id == kid)
        .ok_or_else(|| format!("token signed with unknown key {kid}"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.algorithms = vec![Algorithm::EdDSA];
    validation.set_audience(&[cluster]);
    validation.set_issuer(&[cluster]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = LEEWAY_SECS;
    // Expiry is checked below against the caller's clock (testable); the library's check
    // reads the system clock.
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|error| format!("invalid token: {error}"))?;
    let claims = data.claims;
    if claims.exp.saturating_add(LEEWAY_SECS) <= now_secs {
        return Err("token expired".into());
    }
    Ok(claims)
}
