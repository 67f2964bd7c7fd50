//! The stored form of a user value in the `data` keyspace, and its version.
//!
//! ```text
//! format 1 (before versions)  envelope v1: 0x01 | len LE (4) | crc32 LE (4) | value
//! format 2 (no expiry)                     0x02 | len LE (4) | crc32 LE (4) | version BE (8) ‖ value
//! format 3 (with a TTL)                    0x03 | len LE (4) | crc32 LE (4) | version BE (8) ‖
//!                                                                     expires_at_ms BE (8) ‖ value
//! ```
//! A value without a time-to-live is still written in format 2, so a store that never saw a TTL
//! stays readable by the build before TTLs (rolling upgrades); format 3 adds the log time
//! (milliseconds since the Unix epoch, stamped by the shard's leader) at which the key expires.
//! Format 2 has the envelope's header layout with its own first byte, so the two are told apart
//! by that byte alone (a tag inside the payload could not be: a format-1 payload is arbitrary
//! user bytes). The crc32 covers the whole payload, version included. The version is the log
//! index of the entry that last wrote the key in its shard; a value written in format 1 reads as
//! version 0 ("written before versions"), which no write ever has (Raft indexes start at 1).
//! Any other first byte is a clear [`Error::CorruptRecord`], never a guess.

use crate::error::{Error, Result};
use bytes::Bytes;
use ringkv_types::envelope;

/// First byte of a format-2 (versioned) value.
pub(crate) const FORMAT_VERSIONED: u8 = 2;

/// First byte of a format-3 (versioned, expiring) value.
pub(crate) const FORMAT_EXPIRING: u8 = 3;

/// Bytes of the version inside a format-2 payload.
const VERSION_BYTES: usize = 8;

/// Bytes of the expiry time inside a format-3 payload (after the version).
const EXPIRY_BYTES: usize = 8;

/// A stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The user value.
    pub value: Bytes,
    /// Log index of the write that stored it in its shard; 0 for a value written before
    /// versions existed.
    pub version: u64,
    /// Log time (ms since the Unix epoch) from which the key is absent; 0 = never expires.
    pub expires_at_ms: u64,
}

impl Versioned {
    /// Whether the value is still there at log time `now_ms`: it has no expiry, or its expiry
    /// lies after `now_ms`. `now_ms == 0` (unknown time: an entry written before log time
    /// existed) expires nothing.
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || now_ms == 0 || now_ms < self.expires_at_ms
    }

    /// Milliseconds left at `now_ms` before the value expires; `None` when it never does.
    pub fn remaining_ms(&self, now_ms: u64) -> Option<u64> {
        (self.expires_at_ms != 0).then(|| self.expires_at_ms.saturating_sub(now_ms))
    }
}

/// The stored form of `value` written at log index `version`, expiring at log time
/// `expires_at_ms` (0 = never): format 2 without an expiry, format 3 with one.
pub(crate) fn encode(value: &[u8], version: u64, expires_at_ms: u64) -> Vec<u8> {
    let expiry = expires_at_ms.to_be_bytes();
    let expiry: &[u8] = if expires_at_ms == 0 { &[] } else { &expiry };
    let payload_len = VERSION_BYTES + expiry.len() + value.len();
    let length = u32::try_from(payload_len).unwrap_or(u32::MAX);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&version.to_be_bytes());
    hasher.update(expiry);
    hasher.update(value);
    let mut out = Vec::with_capacity(envelope::HEADER_LEN + payload_len);
    out.push(if expiry.is_empty() {
        FORMAT_VERSIONED
    } else {
        FORMAT_EXPIRING
    });
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(expiry);
    out.extend_from_slice(value);
    out
}

/// Decodes a stored value of either format; `max` bounds the declared payload length.
///
/// # Errors
/// [`Error::CorruptRecord`] naming the reason: truncated, too large, checksum mismatch,
/// trailing bytes, or an unknown format byte.
pub(crate) fn decode(bytes: &[u8], max: u64) -> Result<Versioned> {
    let corrupt = |reason: String| Error::corrupt_record("value", None, reason);
    match bytes.first() {
        Some(&envelope::FORMAT_VERSION) => envelope::decode(bytes, max)
            .map(|value| Versioned {
                value: Bytes::copy_from_slice(value),
                version: 0,
                expires_at_ms: 0,
            })
            .map_err(|reason| corrupt(reason.to_string())),
        Some(&format @ (FORMAT_VERSIONED | FORMAT_EXPIRING)) => {
            let fixed = if format == FORMAT_EXPIRING {
                VERSION_BYTES + EXPIRY_BYTES
            } else {
                VERSION_BYTES
            };
            let header = bytes.get(..envelope::HEADER_LEN).ok_or_else(|| {
                corrupt(format!("truncated value header ({} bytes)", bytes.len()))
            })?;
            let length = u32::from_le_bytes(array4(header, 1)) as usize;
            let stored_crc = u32::from_le_bytes(array4(header, 5));
            if length as u64 > max.saturating_add(fixed as u64) {
                return Err(corrupt(format!(
                    "value of {length} bytes exceeds the limit of {max}"
                )));
            }
            let payload = bytes.get(envelope::HEADER_LEN..).unwrap_or_default();
            if payload.len() != length {
                return Err(corrupt(format!(
                    "value payload of {} bytes where the header says {length}",
                    payload.len()
                )));
            }
            let computed = crc32fast::hash(payload);
            if computed != stored_crc {
                return Err(corrupt(format!(
                    "value checksum mismatch: stored {stored_crc:#010x}, computed {computed:#010x}"
                )));
            }
            let (version, rest) = payload
                .split_first_chunk::<VERSION_BYTES>()
                .ok_or_else(|| corrupt("versioned value shorter than its version".into()))?;
            let (expires_at_ms, value) = if format == FORMAT_EXPIRING {
                let (expiry, value) = rest
                    .split_first_chunk::<EXPIRY_BYTES>()
                    .ok_or_else(|| corrupt("expiring value shorter than its expiry".into()))?;
                let expires_at_ms = u64::from_be_bytes(*expiry);
                if expires_at_ms == 0 {
                    return Err(corrupt("expiring value with expiry 0".into()));
                }
                (expires_at_ms, value)
            } else {
                (0, rest)
            };
            Ok(Versioned {
                value: Bytes::copy_from_slice(value),
                version: u64::from_be_bytes(*version),
                expires_at_ms,
            })
        }
        Some(other) => Err(corrupt(format!(
            "unknown value format {other} (this build reads 1 to 3; a newer build wrote it?)"
        ))),
        None => Err(corrupt("empty value record".into())),
    }
}

fn array4(header: &[u8], at: usize) -> [u8; 4] {
    header
        .get(at..at + 4)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_decode_and_garbage_is_refused() {
        let current = encode(b"hello", 42, 0);
        assert_eq!(current[0], FORMAT_VERSIONED, "no expiry: still format 2");
        assert_eq!(
            decode(&current, 1024).unwrap(),
            Versioned {
                value: Bytes::from_static(b"hello"),
                version: 42,
                expires_at_ms: 0,
            }
        );
        // A value written before versions: the v1 envelope of the raw bytes, version 0.
        let old = envelope::encode(b"hello");
        assert_eq!(decode(&old, 1024).unwrap().version, 0);
        assert_eq!(&decode(&old, 1024).unwrap().value[..], b"hello");
        assert_eq!(decode(&encode(b"", 7, 0), 16).unwrap().version, 7);

        let mut flipped = current.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut bad_version = current.clone();
        bad_version[envelope::HEADER_LEN] ^= 1;
        let mut unknown = current.clone();
        unknown[0] = 4;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header only", current[..5].to_vec()),
            ("truncated", current[..current.len() - 1].to_vec()),
            ("trailing", [current.clone(), vec![0]].concat()),
            ("value bit flipped", flipped),
            ("version bit flipped", bad_version),
            ("unknown format", unknown),
            ("shorter than a version", {
                let mut short = encode(b"", 1, 0);
                short.truncate(envelope::HEADER_LEN + 4);
                short[1..5].copy_from_slice(&4u32.to_le_bytes());
                short
            }),
        ];
        for (case, bytes) in cases {
            assert!(
                matches!(decode(&bytes, 1024), Err(Error::CorruptRecord { .. })),
                "{case}"
            );
        }
        assert!(
            decode(&encode(&[0; 64], 1, 0), 16).is_err(),
            "over the limit"
        );
    }

    #[test]
    fn expiring_values_round_trip_and_are_checked() {
        let expiring = encode(b"hello", 42, 1_800_000_000_000);
        assert_eq!(expiring[0], FORMAT_EXPIRING);
        let decoded = decode(&expiring, 1024).unwrap();
        assert_eq!(
            decoded,
            Versioned {
                value: Bytes::from_static(b"hello"),
                version: 42,
                expires_at_ms: 1_800_000_000_000,
            }
        );
        assert!(decoded.live_at(1_799_999_999_999));
        assert!(!decoded.live_at(1_800_000_000_000));
        assert!(decoded.live_at(0), "unknown log time expires nothing");
        assert_eq!(decoded.remaining_ms(1_799_999_999_000), Some(1_000));
        assert_eq!(decoded.remaining_ms(1_900_000_000_000), Some(0));
        assert_eq!(
            decode(&encode(b"", 1, 0), 16).unwrap().remaining_ms(5),
            None
        );
        // The expiry is inside the checksum.
        let mut flipped = expiring.clone();
        flipped[envelope::HEADER_LEN + VERSION_BYTES] ^= 1;
        assert!(matches!(
            decode(&flipped, 1024),
            Err(Error::CorruptRecord { .. })
        ));
        // Shorter than version + expiry.
        let mut short = encode(b"", 1, 9);
        short.truncate(envelope::HEADER_LEN + 12);
        short[1..5].copy_from_slice(&12u32.to_le_bytes());
        let crc = crc32fast::hash(&short[envelope::HEADER_LEN..]);
        short[5..9].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&short, 1024),
            Err(Error::CorruptRecord { .. })
        ));
        // The limit counts the value, not the fixed fields.
        assert!(decode(&encode(&[0; 16], 1, 9), 16).is_ok());
        assert!(decode(&encode(&[0; 17], 1, 9), 16).is_err());
    }
}
