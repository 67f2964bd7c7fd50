//! The stored form of a user value in the `data` keyspace, and its version.
//!
//! ```text
//! format 1 (before versions)  envelope v1: 0x01 | len LE (4) | crc32 LE (4) | value
//! format 2 (current)                       0x02 | len LE (4) | crc32 LE (4) | version BE (8) ‖ value
//! ```
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

/// Bytes of the version inside a format-2 payload.
const VERSION_BYTES: usize = 8;

/// A stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The user value.
    pub value: Bytes,
    /// Log index of the write that stored it in its shard; 0 for a value written before
    /// versions existed.
    pub version: u64,
}

/// The stored form (format 2) of `value` written at log index `version`.
pub(crate) fn encode(value: &[u8], version: u64) -> Vec<u8> {
    let payload_len = VERSION_BYTES + value.len();
    let length = u32::try_from(payload_len).unwrap_or(u32::MAX);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&version.to_be_bytes());
    hasher.update(value);
    let mut out = Vec::with_capacity(envelope::HEADER_LEN + payload_len);
    out.push(FORMAT_VERSIONED);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&version.to_be_bytes());
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
            })
            .map_err(|reason| corrupt(reason.to_string())),
        Some(&FORMAT_VERSIONED) => {
            let header = bytes.get(..envelope::HEADER_LEN).ok_or_else(|| {
                corrupt(format!("truncated value header ({} bytes)", bytes.len()))
            })?;
            let length = u32::from_le_bytes(array4(header, 1)) as usize;
            let stored_crc = u32::from_le_bytes(array4(header, 5));
            if length as u64 > max.saturating_add(VERSION_BYTES as u64) {
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
            let (version, value) = payload
                .split_first_chunk::<VERSION_BYTES>()
                .ok_or_else(|| corrupt("versioned value shorter than its version".into()))?;
            Ok(Versioned {
                value: Bytes::copy_from_slice(value),
                version: u64::from_be_bytes(*version),
            })
        }
        Some(other) => Err(corrupt(format!(
            "unknown value format {other} (this build reads 1 and 2; a newer build wrote it?)"
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
        let current = encode(b"hello", 42);
        assert_eq!(
            decode(&current, 1024).unwrap(),
            Versioned {
                value: Bytes::from_static(b"hello"),
                version: 42
            }
        );
        // A value written before versions: the v1 envelope of the raw bytes, version 0.
        let old = envelope::encode(b"hello");
        assert_eq!(decode(&old, 1024).unwrap().version, 0);
        assert_eq!(&decode(&old, 1024).unwrap().value[..], b"hello");
        assert_eq!(decode(&encode(b"", 7), 16).unwrap().version, 7);

        let mut flipped = current.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut bad_version = current.clone();
        bad_version[envelope::HEADER_LEN] ^= 1;
        let mut unknown = current.clone();
        unknown[0] = 3;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header only", current[..5].to_vec()),
            ("truncated", current[..current.len() - 1].to_vec()),
            ("trailing", [current.clone(), vec![0]].concat()),
            ("value bit flipped", flipped),
            ("version bit flipped", bad_version),
            ("unknown format", unknown),
            ("shorter than a version", {
                let mut short = encode(b"", 1);
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
        assert!(decode(&encode(&[0; 64], 1), 16).is_err(), "over the limit");
    }
}
