//! The record envelope every on-disk record and wire frame carries:
//!
//! ```text
//! +---------+-------------+-------------+------------------+
//! | version | length (LE) | crc32 (LE)  | payload          |
//! | 1 byte  | 4 bytes     | 4 bytes     | `length` bytes   |
//! +---------+-------------+-------------+------------------+
//! ```
//!
//! The crc32 (IEEE, `crc32fast`) covers the payload. Decoding never panics and never returns a
//! payload whose checksum does not match; the declared length is checked against a caller-given
//! maximum before anything is allocated.

use thiserror::Error;

/// The current format version. Bump it (and keep reading the old one) on any format change.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 9;

/// Why an envelope could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer bytes than the header, or than the header declares.
    #[error("truncated record: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// A version this build does not read.
    #[error("unsupported record format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
    },
    /// Declared payload length larger than allowed.
    #[error("record of {declared} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        declared: u64,
        /// Limit.
        max: u64,
    },
    /// Checksum mismatch.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// crc32 in the header.
        stored: u32,
        /// crc32 of the payload.
        computed: u32,
    },
    /// Bytes left over after the payload where the record should have ended.
    #[error("{extra} unexpected bytes after the record")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Appends the envelope header and `payload` to `out`.
///
/// # Panics
/// If `payload` is 4 GiB or larger, which no caller produces (frames and records are bounded far
/// below that by configuration).
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).expect("envelope payloads are below 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The envelope around `payload`, as a new vector.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(payload, &mut out);
    out
}

/// Reads the header at the start of `bytes` and returns the declared payload length, checking
/// version and limit. Used by stream readers to learn how many bytes to wait for before
/// allocating them.
pub fn peek_length(bytes: &[u8], max_payload: u64) -> Result<usize, EnvelopeError> {
    let header = bytes.get(..HEADER_LEN).ok_or(EnvelopeError::Truncated {
        needed: HEADER_LEN,
        available: bytes.len(),
    })?;
    let (version, rest) = header.split_first().ok_or(EnvelopeError::Truncated {
        needed: HEADER_LEN,
        available: 0,
    })?;
    if *version != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion { found: *version });
    }
    let length = u32::from_le_bytes(array4(rest, 0)?);
    if u64::from(length) > max_payload {
        return Err(EnvelopeError::TooLarge {
            declared: u64::from(length),
            max: max_payload,
        });
    }
    Ok(length as usize)
}

/// Decodes one envelope that must span all of `bytes` and returns the checked payload.
pub fn decode(bytes: &[u8], max_payload: u64) -> Result<&[u8], EnvelopeError> {
    let (payload, rest) = decode_prefix(bytes, max_payload)?;
    if !rest.is_empty() {
        return Err(EnvelopeError::TrailingBytes { extra: rest.len() });
    }
    Ok(payload)
}

/// Decodes one envelope at the start of `bytes`; returns the checked payload and the bytes after
/// it.
pub fn decode_prefix(bytes: &[u8], max_payload: u64) -> Result<(&[u8], &[u8]), EnvelopeError> {
    let length = peek_length(bytes, max_payload)?;
    let needed = HEADER_LEN + length;
    if bytes.len() < needed {
        return Err(EnvelopeError::Truncated {
            needed,
            available: bytes.len(),
        });
    }
    let (record, rest) = bytes.split_at(needed);
    let (header, payload) = record.split_at(HEADER_LEN);
    let stored = u32::from_le_bytes(array4(header, 5)?);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    Ok((payload, rest))
}

fn array4(bytes: &[u8], at: usize) -> Result<[u8; 4], EnvelopeError> {
    bytes
        .get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .ok_or(EnvelopeError::Truncated {
            needed: at + 4,
            available: bytes.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let record = encode(b"hello");
        assert_eq!(record.len(), HEADER_LEN + 5);
        assert_eq!(decode(&record, 1024).unwrap(), b"hello");
    }

    #[test]
    fn rejects_flipped_bit_truncation_and_oversize() {
        let mut record = encode(b"hello world");
        assert!(matches!(
            decode(&record[..12], 1024),
            Err(EnvelopeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&record, 4),
            Err(EnvelopeError::TooLarge { .. })
        ));
        let last = record.len() - 1;
        record[last] ^= 0x40;
        assert!(matches!(
            decode(&record, 1024),
            Err(EnvelopeError::Checksum { .. })
        ));
        record[0] = 9;
        assert!(matches!(
            decode(&record, 1024),
            Err(EnvelopeError::UnsupportedVersion { found: 9 })
        ));
    }

    #[test]
    fn prefix_decoding_walks_a_stream() {
        let mut stream = encode(b"one");
        encode_into(b"two", &mut stream);
        let (first, rest) = decode_prefix(&stream, 16).unwrap();
        let (second, rest) = decode_prefix(rest, 16).unwrap();
        assert_eq!((first, second, rest.len()), (&b"one"[..], &b"two"[..], 0));
        let mut trailing = encode(b"x");
        trailing.push(0);
        assert_eq!(
            decode(&trailing, 16),
            Err(EnvelopeError::TrailingBytes { extra: 1 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes, 32);
            let _ = decode_prefix(&bytes, 32);
        }
    }
}
