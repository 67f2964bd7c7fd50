//! The database inspector (`ringctl inspect`): answers [`InspectRequest`]s from a store, for a
//! running node (the admin request [`AdminRequest::Inspect`], read off the event loop) and for
//! a stopped node's data dir ([`open_offline`], used by `ringctl inspect --data-dir`). Both
//! paths run the same code on the same store format, so their answers agree; the record and
//! log formats are decoded by their owners (`ringkv_storage`, [`LogCommand`],
//! [`replica_meta`]), never by a second copy.
//!
//! [`AdminRequest::Inspect`]: ringkv_types::AdminRequest::Inspect

use crate::error::{Error, Result};
use crate::log_command::LogCommand;
use crate::replica_meta;
use ringkv_storage::{Command, Operation, Store, StoreConfig};
use ringkv_types::inspect::{
    DataEntry, EntryKind, Excerpt, INSPECT_LIMIT_MAX, InspectRequest, InspectResult, InspectStatus,
    LogEntryView, OpView, RaftLogView, ShardData, ShardRecords,
};
use ringkv_types::raft::{Entry, EntryPayload};
use ringkv_types::{LogIndex, NodeId, ShardDescriptor, ShardId, WriteSession};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Longest `detail` text of a log entry, in characters.
const DETAIL_CHARS_MAX: usize = 512;

/// Answers `request` from `store`.
///
/// # Errors
/// Storage errors (I/O, corruption of the records the request needs); [`Error::Corrupt`] for
/// local descriptors that do not decode. A shard whose Raft records are corrupt is reported in
/// its [`ShardRecords::error`] instead, so one bad shard does not hide the others.
pub fn inspect(store: &Store, request: &InspectRequest) -> Result<InspectResult> {
    let descriptors = replica_meta::load_descriptors(store)?;
    Ok(match request {
        InspectRequest::Status => {
            let identity = store.identity()?;
            InspectResult::Status(InspectStatus {
                node: identity.map(|identity| identity.node),
                cluster_id: identity.map(|identity| identity.cluster),
                shards: all_records(store, &descriptors, None)?,
            })
        }
        InspectRequest::Meta { shard } => {
            InspectResult::Meta(all_records(store, &descriptors, *shard)?)
        }
        InspectRequest::Data { shard, limit } => {
            InspectResult::Data(data(store, &descriptors, *shard, *limit)?)
        }
        InspectRequest::Raft { shard, from, limit } => {
            InspectResult::Raft(raft(store, *shard, *from, *limit)?)
        }
    })
}

/// Opens a stopped node's data dir for [`inspect`]: the store is opened as the node opens it
/// (journal recovery included) but nothing else runs and nothing is written.
///
/// # Errors
/// [`Error::Fatal`] with an explanation when `dir` holds no store, or when a running node holds
/// the store's lock (inspect it through the node instead); storage errors otherwise.
pub fn open_offline(dir: &Path) -> Result<Store> {
    // fjall creates a missing store: check first, so a mistyped path is an error, not a new
    // empty database.
    if !dir.join("lock").is_file() {
        return Err(Error::Fatal {
            reason: format!(
                "{} is not a ringkvd data dir (no store in it)",
                dir.display()
            ),
        });
    }
    Store::open(StoreConfig::new(dir)).map_err(|error| {
        if error.is_locked() {
            Error::Fatal {
                reason: format!(
                    "{} is in use by a running ringkvd (its store is locked); stop the node, or \
                     inspect it online without --data-dir",
                    dir.display()
                ),
            }
        } else {
            Error::Storage(error)
        }
    })
}

fn capped(limit: u32) -> usize {
    limit.clamp(1, INSPECT_LIMIT_MAX) as usize
}

/// The shards to report: those with Raft records or a local descriptor (or just `only`).
fn all_records(
    store: &Store,
    descriptors: &BTreeMap<ShardId, ShardDescriptor>,
    only: Option<ShardId>,
) -> Result<Vec<ShardRecords>> {
    let tombstones = replica_meta::load_tombstones(store)?;
    let shards: BTreeSet<ShardId> = match only {
        Some(shard) => BTreeSet::from([shard]),
        None => store
            .groups()?
            .into_iter()
            .chain(descriptors.keys().copied())
            .collect(),
    };
    Ok(shards
        .into_iter()
        .map(|shard| records(store, shard, descriptors, &tombstones))
        .collect())
}

fn records(
    store: &Store,
    shard: ShardId,
    descriptors: &BTreeMap<ShardId, ShardDescriptor>,
    tombstones: &BTreeMap<ShardId, NodeId>,
) -> ShardRecords {
    let (records, error) = match store.group_records(shard) {
        Ok(records) => (records, None),
        Err(error) => (Default::default(), Some(error.to_string())),
    };
    ShardRecords {
        shard,
        descriptor: descriptors.get(&shard).cloned(),
        hard_state: records.hard_state,
        applied_index: records.applied.index,
        applied_term: records.applied.term,
        snapshot_index: records.snapshot.index,
        snapshot_term: records.snapshot.term,
        conf: records.conf,
        first_index: records.first_index,
        last_index: records.last_index,
        tombstone: tombstones.get(&shard).copied(),
        error,
    }
}

fn data(
    store: &Store,
    descriptors: &BTreeMap<ShardId, ShardDescriptor>,
    only: Option<ShardId>,
    limit: u32,
) -> Result<Vec<ShardData>> {
    let mut left = capped(limit);
    let mut shards = Vec::new();
    for descriptor in descriptors.values() {
        if only.is_some_and(|shard| shard != descriptor.id) || descriptor.id == ShardId::PD {
            continue;
        }
        let mut entries = Vec::new();
        let more = store.scan_data(descriptor.arc, left, |key, value| {
            entries.push(DataEntry {
                key: Excerpt::of(key),
                value: Excerpt::of(value),
            });
        })?;
        left = left.saturating_sub(entries.len());
        shards.push(ShardData {
            shard: descriptor.id,
            arc: descriptor.arc,
            entries,
            more,
        });
    }
    if let Some(shard) = only
        && shards.is_empty()
    {
        return Err(Error::Fatal {
            reason: format!("{shard} has no local descriptor on this node (no data here)"),
        });
    }
    Ok(shards)
}

fn raft(store: &Store, shard: ShardId, from: Option<LogIndex>, limit: u32) -> Result<RaftLogView> {
    let records = store.group_records(shard)?;
    let from = from.unwrap_or(records.first_index);
    let (entries, more) = store.log_entries(shard, from, capped(limit))?;
    Ok(RaftLogView {
        shard,
        first_index: records.first_index,
        last_index: records.last_index,
        entries: entries.iter().map(entry_view).collect(),
        more,
    })
}

/// Decodes one log entry for people: its kind, a key-value command's operations, or a
/// description of anything else.
pub fn entry_view(entry: &Entry) -> LogEntryView {
    let mut view = LogEntryView {
        index: entry.index,
        term: entry.term,
        kind: EntryKind::Noop,
        session: None,
        ops: Vec::new(),
        detail: String::new(),
    };
    match &entry.payload {
        EntryPayload::Noop => {}
        EntryPayload::Config(conf) => {
            view.kind = EntryKind::ConfChange;
            view.detail = format!("voters {:?} learners {:?}", conf.voters, conf.learners);
        }
        EntryPayload::Normal(payload) => match LogCommand::decode(payload) {
            Ok(LogCommand::Kv(command)) => kv_view(&mut view, &command),
            Ok(LogCommand::KvAt { now_ms, command }) => {
                kv_view(&mut view, &command);
                view.detail = format!("log time {now_ms} ms");
            }
            Ok(LogCommand::ExpireSessions { now_ms, idle_ms }) => {
                view.kind = EntryKind::SessionExpiry;
                view.detail =
                    format!("at log time {now_ms} ms, sessions idle {idle_ms} ms or more");
            }
            Ok(
                LogCommand::Split {
                    epoch,
                    new_shard,
                    at,
                }
                | LogCommand::SplitFromEntry {
                    epoch,
                    new_shard,
                    at,
                },
            ) => {
                view.kind = EntryKind::Split;
                view.detail = format!(
                    "split at {at:#018x} into {new_shard} (epoch {}/{})",
                    epoch.conf_ver, epoch.version
                );
            }
            Ok(LogCommand::Pd(command)) => {
                view.kind = EntryKind::Pd;
                view.detail = shorten(format!("{command:?}"));
            }
            Ok(LogCommand::SetShardMap(map)) => {
                view.kind = EntryKind::ShardMap;
                view.detail = format!(
                    "shard map version {}, {} shards",
                    map.version,
                    map.shards.len()
                );
            }
            Err(error) => {
                view.kind = EntryKind::Undecodable;
                view.detail = shorten(format!("{} payload bytes: {error}", payload.len()));
            }
        },
    }
    view
}

fn kv_view(view: &mut LogEntryView, command: &Command) {
    view.session = command.session.map(|session| WriteSession {
        session_id: session.session,
        sequence: session.sequence,
    });
    view.ops = command
        .operations
        .iter()
        .map(|operation| match operation {
            Operation::Put { key, value } => OpView::Put {
                key: Excerpt::of(key),
                value: Excerpt::of(value),
            },
            Operation::Delete { key } => OpView::Delete {
                key: Excerpt::of(key),
            },
            Operation::CompareAndSwap { key, expected, new } => OpView::Cas {
                key: Excerpt::of(key),
                expected: expected.as_deref().map(Excerpt::of),
                new: new.as_deref().map(Excerpt::of),
            },
            Operation::CompareVersionAndSwap {
                key,
                expected_version,
                new,
            } => OpView::CasVersion {
                key: Excerpt::of(key),
                expected_version: *expected_version,
                new: new.as_deref().map(Excerpt::of),
            },
            Operation::PutWithTtl { key, value, ttl_ms } => OpView::PutTtl {
                key: Excerpt::of(key),
                value: Excerpt::of(value),
                ttl_ms: *ttl_ms,
            },
            Operation::Persist { key } => OpView::Persist {
                key: Excerpt::of(key),
            },
            Operation::Expire { key } => OpView::Expire {
                key: Excerpt::of(key),
            },
        })
        .collect();
    view.kind = match view.ops.as_slice() {
        [OpView::Put { .. } | OpView::PutTtl { .. } | OpView::Persist { .. }] => EntryKind::Put,
        [OpView::Delete { .. } | OpView::Expire { .. }] => EntryKind::Delete,
        [OpView::Cas { .. } | OpView::CasVersion { .. }] => EntryKind::Cas,
        _ => EntryKind::Batch,
    };
}

fn shorten(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(DETAIL_CHARS_MAX) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_storage::SessionRequest;
    use ringkv_types::Term;

    fn normal(command: &LogCommand) -> Entry {
        Entry {
            term: Term(2),
            index: LogIndex(9),
            payload: EntryPayload::Normal(command.encode().unwrap_or_else(|e| panic!("{e}"))),
        }
    }

    #[test]
    fn entries_decode_by_kind() {
        let put = normal(&LogCommand::Kv(Command {
            session: Some(SessionRequest {
                session: 4,
                sequence: 5,
            }),
            operations: vec![Operation::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            }],
        }));
        let view = entry_view(&put);
        assert_eq!(
            (view.kind, view.index, view.term),
            (EntryKind::Put, LogIndex(9), Term(2))
        );
        assert_eq!(
            view.session,
            Some(WriteSession {
                session_id: 4,
                sequence: 5
            })
        );
        assert_eq!(
            view.ops,
            vec![OpView::Put {
                key: Excerpt::of(b"k"),
                value: Excerpt::of(b"v")
            }]
        );
        let batch = normal(&LogCommand::Kv(Command {
            session: None,
            operations: vec![
                Operation::Delete {
                    key: Bytes::from_static(b"a"),
                },
                Operation::Delete {
                    key: Bytes::from_static(b"b"),
                },
            ],
        }));
        assert_eq!(entry_view(&batch).kind, EntryKind::Batch);
        let split = normal(&LogCommand::Split {
            epoch: ringkv_types::Epoch {
                conf_ver: 1,
                version: 2,
            },
            new_shard: ShardId(17),
            at: 1 << 63,
        });
        assert_eq!(entry_view(&split).kind, EntryKind::Split);
        let pd = normal(&LogCommand::Pd(ringkv_pd::Command::Tick { now_ms: 7 }));
        let view = entry_view(&pd);
        assert_eq!(view.kind, EntryKind::Pd);
        assert!(view.detail.contains("Tick"), "{}", view.detail);
        let garbage = Entry {
            term: Term(1),
            index: LogIndex(3),
            payload: EntryPayload::Normal(Bytes::from_static(&[200, 1, 2])),
        };
        assert_eq!(entry_view(&garbage).kind, EntryKind::Undecodable);
        let conf = Entry {
            term: Term(1),
            index: LogIndex(4),
            payload: EntryPayload::Config(ringkv_types::raft::ConfState::with_voters([NodeId(1)])),
        };
        assert_eq!(entry_view(&conf).kind, EntryKind::ConfChange);
    }

    #[test]
    fn offline_open_refuses_a_missing_store_and_a_locked_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let error = open_offline(dir.path()).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("not a ringkvd data dir")),
            "{error:?}"
        );
        assert!(
            !dir.path().join("keyspaces").exists(),
            "nothing was created"
        );
        let running = Store::open(StoreConfig::new(dir.path())).unwrap_or_else(|e| panic!("{e}"));
        let error = open_offline(dir.path()).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("running ringkvd")),
            "{error:?}"
        );
        drop(running);
        let store = open_offline(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let status = inspect(&store, &InspectRequest::Status).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            status,
            InspectResult::Status(InspectStatus { node: None, .. })
        ));
    }
}
