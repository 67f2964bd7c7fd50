//! The one wire and record codec: postcard inside the record [`crate::envelope`].
//!
//! ```text
//! frame = envelope(version, length, crc32, postcard(value))
//! ```
//!
//! postcard has a documented, stable format but no schema evolution: adding or reordering fields
//! or enum variants is a format change that needs a new envelope version (and a new ALPN on the
//! wire). Decoding checks the declared length against the caller's maximum before allocating, and
//! never panics on arbitrary input.

use crate::envelope::{self, HEADER_LEN};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default limit on one frame's payload: 64 MiB. Snapshot chunks and Raft batches are bounded far
/// below this by configuration; the limit only stops a corrupt or hostile length from allocating.
pub const MAX_FRAME_PAYLOAD_DEFAULT: u64 = 64 * 1024 * 1024;

/// Appends one frame holding `value` to `out`.
///
/// # Errors
/// [`Error::Encode`] if serde fails, [`Error::TooLarge`] if the payload exceeds `max_payload`
/// (then `out` is left as it was).
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>, max_payload: u64) -> Result<()> {
    let what = std::any::type_name::<T>();
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let out_taken = std::mem::take(out);
    match postcard::to_extend(value, out_taken) {
        Ok(filled) => *out = filled,
        Err(error) => {
            return Err(Error::Encode {
                what,
                reason: error.to_string(),
            });
        }
    }
    let payload_len = (out.len() - start - HEADER_LEN) as u64;
    if payload_len > max_payload || payload_len > u64::from(u32::MAX) {
        out.truncate(start);
        return Err(Error::TooLarge {
            what,
            size: payload_len,
            max: max_payload,
        });
    }
    let (payload_crc, length) = match out.get(start + HEADER_LEN..) {
        Some(payload) => (crc32fast::hash(payload), payload_len as u32),
        None => {
            return Err(Error::Encode {
                what,
                reason: "buffer shrank".into(),
            });
        }
    };
    let mut header = [0u8; HEADER_LEN];
    header[0] = envelope::FORMAT_VERSION;
    header[1..5].copy_from_slice(&length.to_le_bytes());
    header[5..9].copy_from_slice(&payload_crc.to_le_bytes());
    if let Some(slot) = out.get_mut(start..start + HEADER_LEN) {
        slot.copy_from_slice(&header);
    }
    Ok(())
}

/// One frame holding `value`, as a new vector.
///
/// # Errors
/// As [`encode_into`].
pub fn encode<T: Serialize>(value: &T, max_payload: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out, max_payload)?;
    Ok(out)
}

/// Decodes a frame that spans all of `bytes`.
///
/// # Errors
/// [`Error::Envelope`] for a bad header, length, checksum or trailing bytes; [`Error::Decode`] or
/// [`Error::TrailingBytes`] when the payload is not exactly one `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max_payload: u64) -> Result<T> {
    let payload = envelope::decode(bytes, max_payload)?;
    decode_payload(payload)
}

/// Decodes a payload already taken out of its envelope (checksum verified).
///
/// # Errors
/// [`Error::Decode`] or [`Error::TrailingBytes`] when `payload` is not exactly one `T`.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let what = std::any::type_name::<T>();
    let (value, rest) = postcard::take_from_bytes::<T>(payload).map_err(|error| Error::Decode {
        what,
        reason: error.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// Encodes `value` as a bare postcard payload (no envelope), for callers that frame it
/// themselves.
///
/// # Errors
/// [`Error::Encode`] if serde fails.
pub fn encode_payload<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|error| Error::Encode {
        what: std::any::type_name::<T>(),
        reason: error.to_string(),
    })
}
