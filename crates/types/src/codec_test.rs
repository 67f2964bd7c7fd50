//! Round trips and hostile-input tests for the codec.

use crate::codec::{decode, decode_payload, encode, encode_into, encode_payload};
use crate::envelope::{EnvelopeError, HEADER_LEN};
use crate::error::Error;
use crate::raft::{ConfState, Entry, EntryPayload, Message, MessageBody, Snapshot, SnapshotMeta};
use crate::ring::Arc;
use crate::*;
use bytes::Bytes;
use proptest::prelude::*;

const MAX: u64 = 1 << 20;

fn descriptor() -> ShardDescriptor {
    ShardDescriptor {
        id: ShardId(7),
        arc: Arc {
            start: 10,
            end: Some(20),
        },
        epoch: Epoch {
            conf_ver: 3,
            version: 4,
        },
        replicas: vec![
            Replica::new(crate::ids::member_id(NodeId(1), 1), ReplicaRole::Voter),
            Replica::new(crate::ids::member_id(NodeId(2), 2), ReplicaRole::Learner),
        ],
    }
}

fn raft_batch() -> RaftBatch {
    let append = MessageBody::Append {
        prev_index: LogIndex(4),
        prev_term: Term(2),
        entries: vec![
            Entry {
                term: Term(2),
                index: LogIndex(5),
                payload: EntryPayload::Noop,
            },
            Entry {
                term: Term(2),
                index: LogIndex(6),
                payload: EntryPayload::Normal(Bytes::from_static(&[9; 100])),
            },
            Entry {
                term: Term(2),
                index: LogIndex(7),
                payload: EntryPayload::Config(ConfState::with_voters([NodeId(1), NodeId(2)])),
            },
        ],
        commit: LogIndex(5),
    };
    let snapshot = MessageBody::InstallSnapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(9),
                term: Term(3),
                conf: ConfState::default(),
            },
            data: Bytes::from_static(b"state"),
        },
    };
    let bodies = [
        append,
        MessageBody::Heartbeat {
            commit: LogIndex(5),
            context: 11,
        },
        snapshot,
        MessageBody::Quiesce {
            commit: LogIndex(5),
            last_index: LogIndex(5),
            last_term: Term(2),
            context: 4,
        },
        MessageBody::Wake,
        MessageBody::NodeAlive,
    ];
    RaftBatch::new(
        bodies
            .into_iter()
            .map(|body| Message {
                group: ShardId(3),
                from: NodeId(1),
                to: NodeId(2),
                term: Term(2),
                body,
            })
            .collect(),
    )
}

fn requests() -> Vec<Request> {
    let kv = |op| {
        Request::Kv(KvRequest {
            shard: ShardId(7),
            epoch: Epoch {
                conf_ver: 1,
                version: 2,
            },
            session: Some(WriteSession {
                session_id: 99,
                sequence: 3,
            }),
            timeout_ms: 500,
            op,
        })
    };
    vec![
        kv(KvOp::Get {
            key: Bytes::from_static(b"k"),
            consistency: ReadConsistency::Stale,
        }),
        kv(KvOp::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        }),
        kv(KvOp::Delete {
            key: Bytes::from_static(b"k"),
        }),
        kv(KvOp::CompareAndSwap {
            key: Bytes::from_static(b"k"),
            expected: None,
            new: Some(Bytes::from_static(b"v")),
        }),
        kv(KvOp::Batch {
            ops: vec![
                BatchOp::Put {
                    key: Bytes::from_static(b"a"),
                    value: Bytes::new(),
                },
                BatchOp::Delete {
                    key: Bytes::from_static(b"b"),
                },
            ],
        }),
        kv(KvOp::Exists {
            key: Bytes::from_static(b"k"),
            consistency: ReadConsistency::Lease,
        }),
        Request::Admin(AdminRequest::GetShardMap),
        Request::Admin(AdminRequest::Inspect(
            crate::inspect::InspectRequest::Raft {
                shard: ShardId(3),
                from: Some(LogIndex(9)),
                limit: 20,
            },
        )),
        Request::Admin(AdminRequest::GetShard { shard: ShardId(2) }),
        Request::Admin(AdminRequest::NodeStatus),
        Request::Admin(AdminRequest::GetNodes),
        Request::Admin(AdminRequest::SetFaults {
            cut: vec![NodeId(2), NodeId(3)],
        }),
        Request::Admin(AdminRequest::PdPlan { balancing: true }),
    ]
}

fn responses() -> Vec<Response> {
    vec![
        Response::Kv(KvResult::Value {
            value: Some(Bytes::from_static(b"v")),
            applied: LogIndex(3),
        }),
        Response::Kv(KvResult::Written { index: LogIndex(4) }),
        Response::Kv(KvResult::Exists {
            exists: true,
            applied: LogIndex(6),
        }),
        Response::Kv(KvResult::Swapped {
            succeeded: false,
            previous: None,
            index: LogIndex(5),
        }),
        Response::Admin(AdminResult::ShardMap(ShardMap {
            version: 2,
            shards: vec![descriptor()],
        })),
        Response::Admin(AdminResult::Shard(None)),
        Response::Admin(AdminResult::Faults { cut: vec![] }),
        Response::Admin(AdminResult::Nodes(vec![crate::NodeAddress {
            node: NodeId(2),
            addr: "127.0.0.12:7100".parse().unwrap(),
        }])),
        Response::Admin(AdminResult::NodeStatus(NodeStatus {
            node: NodeId(1),
            cluster: "c".into(),
            uptime_secs: 5,
            replicas: vec![ReplicaStatus {
                shard: ShardId(1),
                role: ReplicaRole::Voter,
                is_leader: true,
                leader: Some(NodeId(1)),
                term: Term(2),
                commit: LogIndex(3),
                applied: LogIndex(3),
            }],
            space_alarm: Some(crate::SpaceAlarm {
                free_bytes: 1 << 20,
                reserve_bytes: 256 << 20,
            }),
        })),
        Response::Error(WireError::NotLeader {
            leader_hint: Some(NodeId(2)),
            descriptor: Some(descriptor()),
        }),
        Response::Error(WireError::EpochMismatch {
            descriptor: descriptor(),
        }),
        Response::Error(WireError::Busy),
        Response::Error(WireError::NoSpace {
            node: NodeId(2),
            free_bytes: 1,
            reserve_bytes: 2,
        }),
        Response::Error(WireError::RequestTooLarge { size: 9, max: 8 }),
        Response::Error(WireError::KeyTooLarge {
            size: 5000,
            max: 4096,
        }),
        Response::Error(WireError::ValueTooLarge {
            size: 5000,
            max: 4096,
        }),
        Response::Error(WireError::Timeout),
        Response::Error(WireError::Internal {
            reason: "disk".into(),
        }),
    ]
}

#[test]
fn raft_batch_round_trips() {
    let batch = raft_batch();
    let frame = encode(&batch, MAX).unwrap();
    assert_eq!(decode::<RaftBatch>(&frame, MAX).unwrap(), batch);
    assert!(batch.is_between(NodeId(1), NodeId(2)));
    assert!(!batch.is_between(NodeId(2), NodeId(1)));
}

/// Postcard numbers enum variants by position: the kinds a peer of an older version knows must
/// keep their numbers, and the quiescence kinds come after them.
#[test]
fn raft_message_kinds_keep_their_wire_numbers() {
    let tag = |body: MessageBody| postcard::to_allocvec(&body).unwrap()[0];
    assert_eq!(tag(MessageBody::TimeoutNow), 9);
    assert_eq!(tag(MessageBody::ReplicaRemoved), 10);
    let quiesce = MessageBody::Quiesce {
        commit: LogIndex(5),
        last_index: LogIndex(5),
        last_term: Term(2),
        context: 4,
    };
    assert_eq!(tag(quiesce), 11);
    assert_eq!(tag(MessageBody::Wake), 12);
    assert_eq!(tag(MessageBody::NodeAlive), 13);
}

#[test]
fn every_request_and_response_round_trips() {
    for request in requests() {
        let frame = encode(&request, MAX).unwrap();
        assert_eq!(decode::<Request>(&frame, MAX).unwrap(), request);
    }
    for response in responses() {
        let frame = encode(&response, MAX).unwrap();
        assert_eq!(decode::<Response>(&frame, MAX).unwrap(), response);
    }
}

#[test]
fn frames_append_to_a_lent_buffer() {
    let mut out = b"prefix".to_vec();
    encode_into(&Request::Admin(AdminRequest::NodeStatus), &mut out, MAX).unwrap();
    let frame = out.get(6..).unwrap();
    assert_eq!(
        decode::<Request>(frame, MAX).unwrap(),
        Request::Admin(AdminRequest::NodeStatus)
    );
}

#[test]
fn oversized_values_are_refused_on_both_sides() {
    let big = Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: None,
        timeout_ms: 0,
        op: KvOp::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0u8; 1000]),
        },
    });
    let mut out = b"keep".to_vec();
    assert!(matches!(
        encode_into(&big, &mut out, 100),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(out, b"keep");
    let frame = encode(&big, MAX).unwrap();
    assert!(matches!(
        decode::<Request>(&frame, 100),
        Err(Error::Envelope(EnvelopeError::TooLarge { .. }))
    ));
}

#[test]
fn a_huge_declared_length_is_rejected_from_the_header_alone() {
    // Header claims 4 GiB - 1; only the header is present. Must fail on the limit, not allocate.
    let mut header = vec![crate::envelope::FORMAT_VERSION];
    header.extend_from_slice(&u32::MAX.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(header.len(), HEADER_LEN);
    assert!(matches!(
        decode::<RaftBatch>(&header, MAX),
        Err(Error::Envelope(EnvelopeError::TooLarge { .. }))
    ));
}

#[test]
fn a_payload_of_the_wrong_type_or_with_trailing_bytes_is_an_error() {
    let mut payload = encode_payload(&Request::Admin(AdminRequest::GetShardMap)).unwrap();
    payload.push(0);
    assert!(matches!(
        decode_payload::<Request>(&payload),
        Err(Error::TrailingBytes { extra: 1, .. })
    ));
    assert!(matches!(
        decode_payload::<Request>(&[200]),
        Err(Error::Decode { .. })
    ));
    // A length prefix far beyond the input must fail without allocating it.
    let hostile = [0u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(decode_payload::<RaftBatch>(&hostile).is_err());
}

#[test]
fn retryable_errors_are_told_apart() {
    assert!(WireError::Busy.is_retryable());
    assert!(
        WireError::EpochMismatch {
            descriptor: descriptor()
        }
        .is_retryable()
    );
    assert!(!WireError::KeyTooLarge { size: 1, max: 0 }.is_retryable());
    assert!(!WireError::InvalidRequest { reason: "x".into() }.is_retryable());
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<RaftBatch>(&bytes, MAX);
        let _ = decode::<Request>(&bytes, MAX);
        let _ = decode::<Response>(&bytes, MAX);
    }

    /// The checksum stops most garbage before postcard; feed postcard directly too.
    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload::<RaftBatch>(&bytes);
        let _ = decode_payload::<Request>(&bytes);
        let _ = decode_payload::<Response>(&bytes);
        let _ = decode_payload::<ShardDescriptor>(&bytes);
    }

    /// Mutating one byte of a valid payload (a near-miss, the interesting case) never panics.
    #[test]
    fn mutated_valid_payloads_never_panic(index in 0usize..4096, byte in any::<u8>()) {
        for value in responses() {
            let mut payload = encode_payload(&value).unwrap();
            let at = index % payload.len();
            if let Some(slot) = payload.get_mut(at) { *slot = byte; }
            let _ = decode_payload::<Response>(&payload);
        }
        let mut payload = encode_payload(&raft_batch()).unwrap();
        let at = index % payload.len();
        if let Some(slot) = payload.get_mut(at) { *slot = byte; }
        let _ = decode_payload::<RaftBatch>(&payload);
    }

    #[test]
    fn puts_round_trip(key in proptest::collection::vec(any::<u8>(), 0..64),
                       value in proptest::collection::vec(any::<u8>(), 0..512),
                       session_id in any::<u64>(), sequence in any::<u64>()) {
        let request = Request::Kv(KvRequest {
            shard: ShardId(session_id % 100),
            epoch: Epoch { conf_ver: sequence, version: session_id },
            session: Some(WriteSession { session_id, sequence }),
            timeout_ms: 1,
            op: KvOp::Put { key: Bytes::from(key), value: Bytes::from(value) },
        });
        let frame = encode(&request, MAX).unwrap();
        prop_assert_eq!(decode::<Request>(&frame, MAX).unwrap(), request);
    }
}

/// `PdPlan` was appended after every older admin request: the old ones keep their encoding (an
/// old node decodes what a new client sends them) and the new one decodes on a new node.
#[test]
fn pd_plan_is_appended_after_the_older_admin_requests() {
    let old = postcard::to_stdvec(&AdminRequest::StartState).unwrap();
    let new = postcard::to_stdvec(&AdminRequest::PdPlan { balancing: false }).unwrap();
    let tag = |bytes: &[u8]| bytes.first().copied().unwrap();
    assert_eq!(tag(&new), tag(&old) + 1, "PdPlan must be the last variant");
    assert_eq!(
        postcard::from_bytes::<AdminRequest>(&new).unwrap(),
        AdminRequest::PdPlan { balancing: false }
    );
}
