//! Record encoding: `envelope(postcard(value))` for every record this crate writes.
//!
//! Decoding returns a plain reason string; callers wrap it in the typed error that names the
//! shard and index ([`Error::CorruptEntry`](crate::Error::CorruptEntry) and friends).

use ringkv_types::envelope;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends `envelope(postcard(value))` to `out`. `scratch` is a reusable buffer.
pub(crate) fn encode_into<T: Serialize>(value: &T, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    // Serializing our record types into a Vec cannot fail (no maps with non-string keys, no
    // custom serializers that error); a failure would be a bug in a record type.
    let payload = postcard::to_extend(value, std::mem::take(scratch))
        .expect("record types always serialize with postcard");
    envelope::encode_into(&payload, out);
    *scratch = payload;
}

/// `envelope(postcard(value))` as a new vector.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut Vec::new(), &mut out);
    out
}

/// Checks the envelope and decodes the payload. Never panics on bad bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max_payload: u64) -> Result<T, String> {
    let payload = envelope::decode(bytes, max_payload).map_err(|error| error.to_string())?;
    postcard::from_bytes(payload).map_err(|error| format!("undecodable payload: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::raft::HardState;
    use ringkv_types::{LogIndex, NodeId, Term};

    #[test]
    fn round_trip_and_rejects_every_single_byte_flip() {
        let state = HardState {
            term: Term(3),
            vote: NodeId(2),
            commit: LogIndex(9),
        };
        let bytes = encode(&state);
        assert_eq!(decode::<HardState>(&bytes, 1024).unwrap(), state);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(
                decode::<HardState>(&bad, 1024).is_err(),
                "flip at {at} accepted"
            );
        }
        for len in 0..bytes.len() {
            assert!(decode::<HardState>(&bytes[..len], 1024).is_err());
        }
    }

    /// Valid envelopes around random payloads reach the postcard decoder: it must reject or
    /// decode, never panic or allocate from a bogus length.
    #[test]
    fn random_payloads_in_valid_envelopes_never_panic() {
        use ringkv_types::raft::{Entry, SnapshotMeta};
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..5_000 {
            let len = (next() % 64) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Start from a real record so deeper decoder paths are reached.
                let entry = Entry {
                    term: Term(next() % 9),
                    index: LogIndex(next() % 1000),
                    payload: ringkv_types::raft::EntryPayload::Normal(vec![1, 2, 3].into()),
                };
                payload = postcard::to_allocvec(&entry).unwrap();
                let at = (next() as usize) % payload.len();
                payload[at] = next() as u8;
            }
            let record = ringkv_types::envelope::encode(&payload);
            let _ = decode::<Entry>(&record, 1 << 20);
            let _ = decode::<SnapshotMeta>(&record, 1 << 20);
            let _ = decode::<HardState>(&record, 1 << 20);
            let _ = decode::<crate::snapshot_chunk::Chunk>(&record, 1 << 20);
        }
    }
}
