//! Node identity, the data-dir lock and resuming interrupted replica removals.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use bytes::Bytes;
use common::open;
use ringkv_storage::keys::KEYSPACE_META;
use ringkv_storage::{AppliedState, Command, NodeIdentity, Operation, Store, StoreConfig};
use ringkv_types::ring::Arc;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};

#[test]
fn identity_round_trips_and_the_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.identity().unwrap(), None);
    let identity = NodeIdentity {
        node: NodeId(3),
        cluster: 0xfeed,
    };
    store.set_identity(identity).unwrap();
    // A second store on the same directory is an error, not a panic or a shared journal.
    assert!(Store::open(StoreConfig::new(dir.path())).is_err());
    drop(store);
    assert_eq!(open(dir.path()).identity().unwrap(), Some(identity));
}

#[test]
fn an_interrupted_removal_is_resumed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let operations = (0..500)
        .map(|n| Operation::Put {
            key: Bytes::from(format!("k{n}")),
            value: Bytes::from_static(b"v"),
        })
        .collect();
    let applied = AppliedState {
        index: LogIndex(1),
        term: Term(1),
    };
    store
        .apply(
            ShardId(4),
            &[Command {
                session: None,
                operations,
            }],
            applied,
            None,
        )
        .unwrap();
    drop(store);
    // The marker as `remove_replica` writes it, as if the node crashed right after.
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let meta = db
            .keyspace(KEYSPACE_META, fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut key = b"removing/".to_vec();
        key.extend_from_slice(&4u64.to_be_bytes());
        let payload = postcard::to_allocvec(&Arc::FULL).unwrap();
        meta.insert(key, ringkv_types::envelope::encode(&payload))
            .unwrap();
        db.persist(fjall::PersistMode::SyncData).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.pending_removals().unwrap(),
        vec![(ShardId(4), Arc::FULL)]
    );
    for handle in store.resume_removals().unwrap() {
        assert_eq!(handle.shard(), ShardId(4));
        assert!(handle.join().unwrap() >= 500);
    }
    assert!(store.pending_removals().unwrap().is_empty());
    assert_eq!(store.get(b"k7").unwrap(), None);
    assert!(store.groups().unwrap().is_empty());
}

#[test]
fn named_meta_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .set_meta(b"descriptor/7", b"encoded descriptor")
        .unwrap();
    store
        .set_meta(b"identity", b"not the node identity")
        .unwrap();
    assert_eq!(store.identity().unwrap(), None);
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.meta(b"descriptor/7").unwrap().as_deref(),
        Some(&b"encoded descriptor"[..])
    );
    store.delete_meta(b"descriptor/7").unwrap();
    assert_eq!(store.meta(b"descriptor/7").unwrap(), None);
    assert!(store.meta(&[0u8; 2000]).is_err());
}

#[test]
fn records_by_prefix_and_with_an_apply() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_meta(b"shard/a", b"1").unwrap();
    store.set_meta(b"shard/b", b"2").unwrap();
    store.set_meta(b"tombstone/a", b"3").unwrap();
    let applied = AppliedState {
        index: LogIndex(1),
        term: Term(1),
    };
    store
        .apply_with_meta(
            ShardId(1),
            &[],
            &[],
            &[],
            applied,
            None,
            &[(b"shard/c", b"4")],
        )
        .unwrap();
    drop(store);
    let store = open(dir.path());
    let names: Vec<(Vec<u8>, Bytes)> = store.meta_with_prefix(b"shard/").unwrap();
    assert_eq!(
        names,
        vec![
            (b"shard/a".to_vec(), Bytes::from_static(b"1")),
            (b"shard/b".to_vec(), Bytes::from_static(b"2")),
            (b"shard/c".to_vec(), Bytes::from_static(b"4")),
        ]
    );
    assert_eq!(store.applied(ShardId(1)).unwrap(), applied);
}

#[test]
fn a_new_group_starts_at_its_initial_index_with_sessions_and_descriptor() {
    use ringkv_storage::{OperationResult, SessionRecord, WriteBatchBuilder};
    use ringkv_types::raft::{ConfState, HardState, SnapshotMeta};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let shard = ShardId(5);
    let conf = ConfState::with_voters([NodeId(1), NodeId(2)]);
    let meta = SnapshotMeta {
        index: LogIndex(5),
        term: Term(5),
        conf: conf.clone(),
    };
    let mut batch = WriteBatchBuilder::new();
    batch.initialize_group(shard, meta.clone());
    batch.set_hard_state(
        shard,
        HardState {
            term: Term(7),
            vote: NodeId(2),
            commit: LogIndex(5),
        },
    );
    let record = SessionRecord {
        sequence: 3,
        result: vec![OperationResult::Put],
        last_ms: 1_700_000_000_000,
        index: 4,
    };
    batch.set_sessions(shard, vec![(9, record.clone())]);
    batch.set_meta(shard, b"shard/5", b"descriptor".to_vec());
    store.write(batch).unwrap();
    drop(store);
    let store = open(dir.path());
    let group = store.group(shard).unwrap();
    assert_eq!(group.bounds(), (LogIndex(6), LogIndex(5), Term(5)));
    assert_eq!(group.hard_state().vote, NodeId(2));
    assert_eq!(group.hard_state().term, Term(7));
    assert_eq!(
        store.applied(shard).unwrap(),
        AppliedState {
            index: LogIndex(5),
            term: Term(5)
        }
    );
    assert_eq!(store.conf_state(shard).unwrap(), Some(conf));
    assert_eq!(store.sessions(shard).unwrap(), vec![(9, record)]);
    assert_eq!(
        store.meta(b"shard/5").unwrap().as_deref(),
        Some(&b"descriptor"[..])
    );
    // A group that has applied entries cannot be initialized again.
    let mut again = WriteBatchBuilder::new();
    again.initialize_group(shard, meta);
    assert!(store.write(again).is_err());
}

#[test]
fn removing_a_replica_with_an_empty_arc_keeps_all_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let put = Command {
        session: None,
        operations: vec![Operation::Put {
            key: Bytes::from_static(b"kept"),
            value: Bytes::from_static(b"v"),
        }],
    };
    let applied = AppliedState {
        index: LogIndex(1),
        term: Term(1),
    };
    store.apply(ShardId(1), &[put], applied, None).unwrap();
    store.apply(ShardId(2), &[], applied, None).unwrap();
    let empty = Arc {
        start: 0,
        end: Some(0),
    };
    store
        .remove_replica(ShardId(2), empty)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(store.get(b"kept").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(store.groups().unwrap(), vec![ShardId(1)]);
}
