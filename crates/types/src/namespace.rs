//! Namespaces: each user's keys live in its own namespace, encoded into the key itself.
//!
//! The wire (and stored) key of a user key `key` in namespace `ns` is
//! `len(ns) as u8 ‖ ns ‖ key`: a one-byte length, the namespace's bytes, then the key's bytes.
//! The client computes it; the ring position is the hash of the whole wire key, so routing,
//! splits, snapshots and moves carry the namespace unchanged, and alice's `x` and bob's `x` are
//! different keys on (likely) different shards. The server decodes the namespace of every key
//! of a request to authorize it ([`split`]).
//!
//! Namespace names are 1 to [`MAX_NAMESPACE_BYTES`] bytes of `[A-Za-z0-9_.-]`
//! ([`validate_name`]); user names follow the same rule, since a user's namespace is its name.

use bytes::{BufMut, Bytes, BytesMut};

/// The longest namespace (and user) name, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Why a name or a wire key is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// The name is empty, too long, or has a character outside `[A-Za-z0-9_.-]`.
    #[error(
        "invalid name {name:?}: use 1 to {MAX_NAMESPACE_BYTES} characters of A-Z a-z 0-9 _ . -"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The wire key does not start with a valid namespace.
    #[error("key is not namespaced (length byte, namespace, key)")]
    Malformed,
}

/// Checks a namespace or user name.
///
/// # Errors
/// [`NamespaceError::InvalidName`].
pub fn validate_name(name: &str) -> Result<(), NamespaceError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NamespaceError::InvalidName { name: name.into() })
    }
}

/// The wire key of `key` in `namespace`.
///
/// # Errors
/// [`NamespaceError::InvalidName`] for an invalid namespace.
pub fn encode(namespace: &str, key: &[u8]) -> Result<Bytes, NamespaceError> {
    validate_name(namespace)?;
    let mut out = BytesMut::with_capacity(1 + namespace.len() + key.len());
    // validate_name bounds the length to MAX_NAMESPACE_BYTES (< 256).
    out.put_u8(namespace.len() as u8);
    out.put_slice(namespace.as_bytes());
    out.put_slice(key);
    Ok(out.freeze())
}

/// Splits a wire key into its namespace and the user's key. Checks only the framing and the
/// length; the namespace's characters are compared, not validated.
///
/// # Errors
/// [`NamespaceError::Malformed`] for an empty key, a zero or oversized length byte, or a key
/// shorter than its namespace.
pub fn split(wire_key: &[u8]) -> Result<(&[u8], &[u8]), NamespaceError> {
    let (&len, rest) = wire_key.split_first().ok_or(NamespaceError::Malformed)?;
    let len = usize::from(len);
    if len == 0 || len > MAX_NAMESPACE_BYTES || rest.len() < len {
        return Err(NamespaceError::Malformed);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_namespaces_separate_them() {
        let alice = encode("alice", b"x").unwrap();
        let bob = encode("bob", b"x").unwrap();
        assert_ne!(alice, bob);
        assert_eq!(&alice[..], b"\x05alicex");
        assert_eq!(split(&alice).unwrap(), (&b"alice"[..], &b"x"[..]));
        assert_eq!(
            split(&encode("a", b"").unwrap()).unwrap(),
            (&b"a"[..], &b""[..])
        );
        // A namespace that is a prefix of another does not capture its keys.
        let ab = encode("ab", b"c").unwrap();
        assert_eq!(split(&ab).unwrap().0, b"ab");
    }

    #[test]
    fn malformed_keys_and_names_are_refused() {
        let cases: &[(&str, &[u8])] = &[
            ("empty", b""),
            ("zero length", b"\x00x"),
            ("too short", b"\x05ali"),
            ("too long a length", &[65u8; 70]),
        ];
        for (case, key) in cases {
            assert_eq!(split(key), Err(NamespaceError::Malformed), "{case}");
        }
        for name in ["", "a/b", "with space", "ü", &"n".repeat(65)] {
            assert!(validate_name(name).is_err(), "{name:?}");
            assert!(encode(name, b"k").is_err(), "{name:?}");
        }
        for name in ["alice", "A-b_c.9", &"n".repeat(64)] {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
        }
    }
}
