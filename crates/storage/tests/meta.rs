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
