//! Password hashes: argon2id PHC strings, compared in constant time by the `argon2` crate.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use ringkv_types::Secret;

/// A hash to verify against when the user does not exist (or has no password), so a wrong
/// user name costs as much time as a wrong password (no user enumeration by timing).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZHVtbXlzYWx0ZHVtbXk$W5nyRsSrVpXQjJdBxJZ1Q+IxbxxBUWsbcwOLw+u/YSw";

/// Whether `password` matches `hash` (`None`: no such user; always false, same cost).
pub fn verify(password: &Secret, hash: Option<&str>) -> bool {
    let (hash, real) = match hash {
        Some(hash) => (hash, true),
        None => (DUMMY_HASH, false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// An argon2id hash of `password` with a random salt (default parameters: 19 MiB, 2 passes).
///
/// # Errors
/// A description when hashing fails.
pub fn hash(password: &Secret) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let right = Secret::new("correct horse");
        let hashed = hash(&right).unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        assert!(verify(&right, Some(&hashed)));
        assert!(!verify(&Secret::new("correct hors"), Some(&hashed)));
        assert!(!verify(&right, None));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify(&right, Some("not a hash")));
    }
}
