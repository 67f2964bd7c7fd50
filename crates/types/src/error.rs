//! Errors of the types crate: encoding and decoding records and wire frames.

use crate::envelope::EnvelopeError;
use thiserror::Error;

/// Why a value could not be encoded or decoded.
///
/// None of these is worth retrying with the same bytes: a frame that fails to decode is corrupt or
/// from an incompatible build, and the connection that carried it should be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The envelope (version, length, checksum) is invalid.
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The payload passed the checksum but is not a valid encoding of the expected type.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// The type being decoded.
        what: &'static str,
        /// What postcard reported.
        reason: String,
    },
    /// The payload decoded but bytes were left over.
    #[error("{extra} unexpected bytes after an encoded {what}")]
    TrailingBytes {
        /// The type being decoded.
        what: &'static str,
        /// How many bytes remained.
        extra: usize,
    },
    /// The value could not be serialized.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// The type being encoded.
        what: &'static str,
        /// What postcard reported.
        reason: String,
    },
    /// The encoded value is larger than the caller's limit.
    #[error("encoded {what} is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The type being encoded.
        what: &'static str,
        /// Encoded size.
        size: u64,
        /// Limit.
        max: u64,
    },
}

/// Result with the types crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
