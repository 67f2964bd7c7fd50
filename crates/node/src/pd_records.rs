//! The PD replica's state on disk, one record per shard (issue 16).
//!
//! Format 1 was one record, `pd/state` = `postcard(PdState)`, rewritten whole with every applied
//! PD entry: with 4,096 shards that is ~0.5 MB per entry. Format 2 splits it:
//!
//! * `pd/v2/head`: the state without its shards (`PdState` with an empty shard list and no
//!   shard reports, encoded like format 1 so that old fields decode the same way): cluster,
//!   log time, nodes, map version, operators, settings, id counters, users and keys. Its size
//!   grows with nodes, operators and users, not with shards;
//! * `pd/v2/shard/<id, 8 bytes BE>`: one shard's descriptor and last replicated report.
//!
//! An applied entry rewrites the head and the shards it touched (a shard report: its shard and,
//! when the map changed, the neighbours a split may have changed), so its cost does not grow
//! with the number of shards. Bootstrap, a snapshot install and the first save after a start
//! write every record. The records go into the same write batch as the applied index, like the
//! format-1 record did. Loading prefers format 2 and falls back to `pd/state` (a data dir from
//! before), which is then left in place, unread. Shards are never deleted from PD's map, so
//! no shard record goes stale.

use crate::error::{Error, Result};
use crate::pd_host::{self, META_PD_STATE};
use ringkv_pd::{PdState, ShardStatus};
use ringkv_storage::Store;
use ringkv_types::{ShardDescriptor, ShardId};
use serde::{Deserialize, Serialize};

/// Name of the head record.
pub const META_PD_HEAD: &[u8] = b"pd/v2/head";
/// Name prefix of the per-shard records.
pub const META_PD_SHARD_PREFIX: &[u8] = b"pd/v2/shard/";

/// Named records to save in the meta keyspace: `(name, value)`.
pub type MetaRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// One shard's record.
#[derive(Serialize, Deserialize)]
struct ShardRecord {
    descriptor: ShardDescriptor,
    status: Option<ShardStatus>,
}

fn corrupt(what: &'static str) -> impl Fn(postcard::Error) -> Error {
    move |error| Error::Corrupt {
        what,
        reason: error.to_string(),
    }
}

/// The name of `shard`'s record.
pub fn shard_record_name(shard: ShardId) -> Vec<u8> {
    let mut name = META_PD_SHARD_PREFIX.to_vec();
    name.extend_from_slice(&shard.get().to_be_bytes());
    name
}

/// The head record of `state` (its shards are taken out for the encoding and put back).
///
/// # Errors
/// [`Error::Corrupt`] if serde fails (it does not for this type).
pub fn head_record(state: &mut PdState) -> Result<(Vec<u8>, Vec<u8>)> {
    let shards = std::mem::take(&mut state.shard_map.shards);
    let statuses = std::mem::take(&mut state.shards);
    let encoded = pd_host::encode_state(state);
    state.shard_map.shards = shards;
    state.shards = statuses;
    Ok((META_PD_HEAD.to_vec(), encoded?))
}

/// The record of `shard`, `None` if the map has no such shard.
///
/// # Errors
/// [`Error::Corrupt`] if serde fails.
pub fn shard_record(
    state: &PdState,
    shard: ShardId,
    position: u64,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let Some(descriptor) = state.descriptor_at(shard, position) else {
        return Ok(None);
    };
    encode_shard(descriptor, state.shards.get(&shard)).map(Some)
}

fn encode_shard(
    descriptor: &ShardDescriptor,
    status: Option<&ShardStatus>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    #[derive(Serialize)]
    struct Ref<'a> {
        descriptor: &'a ShardDescriptor,
        status: Option<&'a ShardStatus>,
    }
    let value = postcard::to_stdvec(&Ref { descriptor, status })
        .map_err(corrupt("placement driver shard record (encode)"))?;
    Ok((shard_record_name(descriptor.id), value))
}

/// Every record of `state`: the head and one per shard.
///
/// # Errors
/// [`Error::Corrupt`] if serde fails.
pub fn all_records(state: &mut PdState) -> Result<MetaRecords> {
    let mut records = Vec::with_capacity(state.shard_map.shards.len() + 1);
    records.push(head_record(state)?);
    for descriptor in &state.shard_map.shards {
        records.push(encode_shard(descriptor, state.shards.get(&descriptor.id))?);
    }
    Ok(records)
}

/// Builds a state from its records: the head and the shard records (any order).
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not records, or a record filed under another id.
pub fn decode_records<'a>(
    head: &[u8],
    shards: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<PdState> {
    let mut state = pd_host::decode_state(head)?;
    state.shard_map.shards.clear();
    state.shards.clear();
    for (name, value) in shards {
        let record: ShardRecord =
            postcard::from_bytes(value).map_err(corrupt("placement driver shard record"))?;
        if name != shard_record_name(record.descriptor.id).as_slice() {
            return Err(Error::Corrupt {
                what: "placement driver shard record",
                reason: format!("shard {} filed under another name", record.descriptor.id),
            });
        }
        if let Some(status) = record.status {
            state.shards.insert(record.descriptor.id, status);
        }
        state.shard_map.shards.push(record.descriptor);
    }
    state.shard_map.shards.sort_by_key(|d| d.arc.start);
    Ok(state)
}

/// Loads the saved PD state: format 2 if present, else the format-1 record, else `None`.
///
/// # Errors
/// [`Error::Corrupt`] for undecodable records; storage errors.
pub fn load(store: &Store) -> Result<Option<PdState>> {
    if let Some(head) = store.meta(META_PD_HEAD)? {
        let shards = store.meta_with_prefix(META_PD_SHARD_PREFIX)?;
        let state = decode_records(
            &head,
            shards
                .iter()
                .map(|(name, value)| (name.as_slice(), &value[..])),
        )?;
        return Ok(Some(state));
    }
    match store.meta(META_PD_STATE)? {
        Some(bytes) => Ok(Some(pd_host::decode_state(&bytes)?)),
        None => Ok(None),
    }
}

/// Saves every record of `state` now (outside a write batch).
///
/// # Errors
/// Storage errors.
pub fn save_all(store: &Store, state: &mut PdState) -> Result<()> {
    for (name, value) in all_records(state)? {
        store.set_meta(&name, &value)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ringkv_pd::{Apply, Command, NodeRegistration, Settings, ShardReport, ShardStats};
    use ringkv_types::{NodeId, ShardMap};
    use std::collections::BTreeMap;

    /// A bootstrapped state of 3 nodes and `shards` shards.
    pub(crate) fn state(shards: u64) -> PdState {
        let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut state = PdState::new();
        state
            .apply(&Command::Bootstrap {
                cluster_id: 7,
                cluster_name: "t".into(),
                nodes: nodes
                    .iter()
                    .map(|&id| {
                        let addr = format!("127.0.0.1:{}", 7000 + id.get());
                        let labels = BTreeMap::new();
                        (
                            id,
                            NodeRegistration {
                                addr,
                                labels,
                                capacity_bytes: 0,
                            },
                        )
                    })
                    .collect(),
                shard_map: crate::bootstrap::initial_shard_map(&nodes, shards, 3),
                settings: Settings::default(),
                now_ms: 0,
            })
            .unwrap();
        state
    }

    #[test]
    fn records_round_trip_in_any_order() {
        let mut state = state(8);
        let descriptor = state.shard_map.shards[3].clone();
        let report = ShardReport {
            leader: descriptor.replicas[0].node,
            descriptor,
            stats: ShardStats {
                size_bytes: 10,
                ..ShardStats::default()
            },
            caught_up_learners: vec![],
            split_hint: None,
            now_ms: 5,
        };
        state.apply(&Command::ShardReport(report)).unwrap();
        let mut records = all_records(&mut state).unwrap();
        assert_eq!(records.len(), 9);
        let (head_name, head) = records.remove(0);
        assert_eq!(head_name, META_PD_HEAD);
        records.reverse();
        let loaded = decode_records(
            &head,
            records.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        )
        .unwrap();
        assert_eq!(loaded, state);
        // The head does not carry the shards.
        assert!(head.len() < 400, "head of {} bytes", head.len());
        assert_eq!(ShardMap::default().shards.len(), 0);
    }

    #[test]
    fn a_record_under_another_name_is_corrupt() {
        let mut state = state(2);
        let records = all_records(&mut state).unwrap();
        let wrong = shard_record_name(ShardId(99));
        let result = decode_records(
            &records[0].1,
            std::iter::once((wrong.as_slice(), records[1].1.as_slice())),
        );
        assert!(result.is_err());
    }
}
