//! A buggy or hostile peer against real `ringkvd` processes: the test plays node 1 of a
//! three-node cluster (with node 1's certificate from the test CA, so it is an authenticated
//! peer and a Raft member of every shard) while nodes 2 and 3 run as processes and form the
//! quorum. It sends malformed Raft messages (terms and indexes out of range, entries that are
//! not contiguous or whose terms go down, terms newer than the message, commit far beyond the
//! log, acknowledgements of entries never sent, appends that would overwrite committed entries),
//! a snapshot stream of garbage bytes and a garbage frame on a raw peer stream. Both nodes must
//! drop all of it: the drop counter `ringkv_raft_invalid_messages_total` rises, the log says
//! "dropping an invalid Raft message", no process exits or panics, and a client still writes and
//! reads every shard afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failure is a test failure"
)]

mod common;

use bytes::Bytes;
use common::{CALL_TIMEOUT, CLUSTER, Cluster, HTTP_ADDR, Running, get, kv, put};
use ringkv_raft::validate::VALUE_MAX;
use ringkv_transport::certs::{TlsIdentity, Validity};
use ringkv_transport::{Transport, TransportConfig, node_server_name};
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody, Snapshot, SnapshotMeta};
use ringkv_types::{
    KvResult, LogIndex, NodeId, RaftBatch, ReadConsistency, Response, ShardId, Term, member_id,
};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const SHARDS: u64 = 2;

/// Node `index`'s log so far.
fn log_of(cluster: &Cluster, index: usize) -> String {
    std::fs::read_to_string(cluster.dir.path().join(format!("node-{}.log", index + 1)))
        .unwrap_or_default()
}

/// One counter of node `index`'s `/metrics` (over HTTPS with a client certificate), if it
/// answers.
fn metric(cluster: &Cluster, index: usize, name: &str) -> Option<f64> {
    let certs = cluster.dir.path().join("certs");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("client-ringctl.pem"))
        .arg("--key")
        .arg(certs.join("client-ringctl.key"))
        .arg(format!("https://{}/metrics", cluster.http_addrs[index]))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts that nodes 2 and 3 still run and never panicked.
fn assert_alive(cluster: &mut Cluster) {
    for index in [1, 2] {
        let exited = match cluster.nodes[index].as_mut() {
            Some(Running::Process(child)) => child.0.try_wait().unwrap(),
            _ => panic!("node {} is not a running process", index + 1),
        };
        let log = log_of(cluster, index);
        assert!(
            exited.is_none(),
            "node {} exited ({exited:?}); log:\n{log}",
            index + 1
        );
        assert!(
            !log.contains("panicked"),
            "node {} panicked; log:\n{log}",
            index + 1
        );
    }
}

fn message(group: ShardId, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        group,
        from: member_id(NodeId(1), 1),
        to: member_id(NodeId(to), 1),
        term: Term(term),
        body,
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::from_static(b"forged")),
    }
}

fn append(prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::Append {
        prev_index: LogIndex(prev.0),
        prev_term: Term(prev.1),
        entries,
        commit: LogIndex(commit),
    }
}

/// Messages the node boundary's shape check refuses (each counted as invalid).
fn shapeless(group: ShardId, to: u64, term: u64) -> Vec<Message> {
    let far = VALUE_MAX + 1;
    vec![
        // Terms and indexes out of range.
        message(group, to, far, append((0, 0), vec![], 0)),
        message(group, to, u64::MAX, MessageBody::TimeoutNow),
        message(group, to, term, append((far, 0), vec![], 0)),
        message(group, to, term, append((0, 0), vec![], u64::MAX)),
        message(
            group,
            to,
            term,
            MessageBody::Heartbeat {
                commit: LogIndex(u64::MAX),
                context: 1,
            },
        ),
        message(
            group,
            to,
            term,
            MessageBody::AppendResponse {
                reject: false,
                index: LogIndex(u64::MAX),
                hint_index: LogIndex(0),
                hint_term: Term(0),
            },
        ),
        message(
            group,
            to,
            term,
            MessageBody::Vote {
                last_index: LogIndex(far),
                last_term: Term(term),
                transfer: false,
            },
        ),
        // Bad entry ranges: a gap, indexes going back, terms going down.
        message(
            group,
            to,
            term,
            append((5, term), vec![entry(term, 6), entry(term, 8)], 0),
        ),
        message(
            group,
            to,
            term,
            append((5, term), vec![entry(term, 6), entry(term, 5)], 0),
        ),
        message(
            group,
            to,
            term,
            append((5, term), vec![entry(term, 6), entry(term - 1, 7)], 0),
        ),
        // Terms newer than the message: an entry, the previous entry, a vote's last entry.
        message(
            group,
            to,
            term,
            append((5, term), vec![entry(term + 9, 6)], 0),
        ),
        message(group, to, term, append((5, term + 9), vec![], 0)),
        message(
            group,
            to,
            term,
            MessageBody::PreVote {
                last_index: LogIndex(3),
                last_term: Term(term + 9),
            },
        ),
    ]
}

/// Well-shaped messages that only the receiver's state shows to be wrong; the Raft core must
/// drop or answer them without an assertion firing. They use the group's current term, so they
/// claim to come from a second leader of that term.
fn stateful(group: ShardId, to: u64, term: u64) -> Vec<Message> {
    let far = 1 << 40;
    vec![
        // Commit far beyond the receiver's log.
        message(
            group,
            to,
            term,
            MessageBody::Heartbeat {
                commit: LogIndex(far),
                context: 7,
            },
        ),
        message(group, to, term, append((0, 0), vec![], far)),
        // Entries far beyond the log.
        message(
            group,
            to,
            term,
            append((far, term), vec![entry(term, far + 1)], far),
        ),
        // Entries that would overwrite the committed start of the log.
        message(
            group,
            to,
            term,
            append((0, 0), vec![entry(term, 1), entry(term, 2)], 2),
        ),
        // An acknowledgement of entries never sent, and a rejection hinting beyond them.
        message(
            group,
            to,
            term,
            MessageBody::AppendResponse {
                reject: false,
                index: LogIndex(far),
                hint_index: LogIndex(0),
                hint_term: Term(0),
            },
        ),
        message(
            group,
            to,
            term,
            MessageBody::AppendResponse {
                reject: true,
                index: LogIndex(far),
                hint_index: LogIndex(far),
                hint_term: Term(term),
            },
        ),
        message(
            group,
            to,
            term,
            MessageBody::HeartbeatResponse { context: far },
        ),
        // Votes granted unasked.
        message(group, to, term, MessageBody::VoteResponse { reject: false }),
        message(
            group,
            to,
            term,
            MessageBody::PreVoteResponse { reject: false },
        ),
    ]
}

/// The highest term node 2 or 3 used towards node 1 per group, read from what they send to it.
async fn terms_seen(
    inbound: &mut ringkv_transport::Inbound,
    fake: &Transport,
) -> BTreeMap<ShardId, u64> {
    let mut terms = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = SHARDS as usize + 1;
    while terms.len() < wanted {
        assert!(
            Instant::now() < deadline,
            "nodes 2 and 3 sent nothing to node 1 for every group: {terms:?}"
        );
        // Opens the links (node 1 dials): an answer nobody asked for, dropped by the core.
        for to in [2, 3] {
            let _ = fake.send(
                NodeId(to),
                RaftBatch::new(vec![message(
                    ShardId::PD,
                    to,
                    0,
                    MessageBody::HeartbeatResponse { context: 0 },
                )]),
            );
        }
        if let Ok(Some(batch)) =
            tokio::time::timeout(Duration::from_millis(200), inbound.raft.recv()).await
        {
            for m in batch.messages {
                let term = terms.entry(m.group).or_insert(0);
                *term = (*term).max(m.term.get());
            }
        }
    }
    terms
}

/// Writes and reads one key per shard through the client protocol at its leader, retrying
/// (bounded) while elections settle.
async fn write_and_read_every_shard(cluster: &mut Cluster, round: u32) {
    let map = cluster.shard_map(1).await;
    for descriptor in &map.shards {
        // A key of this shard's arc.
        let key = (0u32..)
            .map(|n| format!("after-{round}-{n}"))
            .find(|key| {
                descriptor
                    .arc
                    .contains(ringkv_types::ring::position(key.as_bytes()))
            })
            .expect("some key falls in the arc");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leader = cluster.leader_of(descriptor.id).await;
            let request = kv(descriptor, None, put(&key, "v"));
            match cluster.try_call(leader, &request).await {
                Some(Response::Kv(KvResult::Written { .. })) => break,
                other => {
                    assert!(Instant::now() < deadline, "write {key}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        loop {
            let leader = cluster.leader_of(descriptor.id).await;
            let request = kv(descriptor, None, get(&key, ReadConsistency::Linearizable));
            match cluster.try_call(leader, &request).await {
                Some(Response::Kv(KvResult::Value { value, .. })) => {
                    assert_eq!(value.as_deref(), Some(&b"v"[..]), "read {key}");
                    break;
                }
                other => {
                    assert!(Instant::now() < deadline, "read {key}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_raft_messages_from_a_peer_are_dropped_and_the_nodes_keep_serving() {
    let extra = format!("http_addr = \"{HTTP_ADDR}\"\n");
    let mut cluster = Cluster::prepare(3, SHARDS, &extra, true);
    cluster
        .ca
        .issue_client("ringctl", Validity::days_from_now(1))
        .unwrap()
        .write(&cluster.dir.path().join("certs"), "client-ringctl")
        .unwrap();
    // Nodes 2 and 3 are a quorum of the initial nodes: they create the cluster. Node 1 is the
    // test.
    cluster.start_node(1).await;
    cluster.start_node(2).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(60))
        .await;
    write_and_read_every_shard(&mut cluster, 0).await;

    let identity = TlsIdentity::from_pem(
        cluster.ca.cert_pem(),
        &cluster
            .ca
            .issue_node(
                NodeId(1),
                &["127.0.0.1".parse().unwrap()],
                Validity::days_from_now(1),
            )
            .unwrap(),
    )
    .unwrap();
    let config = TransportConfig::new(NodeId(1), CLUSTER, "127.0.0.1:0".parse().unwrap());
    let (fake, mut inbound) = Transport::builder(config, identity.clone())
        .start()
        .unwrap();
    for index in [1, 2] {
        fake.add_peer(NodeId(index as u64 + 1), cluster.addrs[index]);
    }
    let terms = terms_seen(&mut inbound, &fake).await;
    println!("current terms: {terms:?}");
    let before: Vec<f64> = [1, 2]
        .iter()
        .map(|&i| metric(&cluster, i, "ringkv_raft_invalid_messages_total").unwrap())
        .collect();

    // Malformed messages, in batches as a peer sends them, to both nodes and every group.
    let mut sent = 0;
    for (&group, &term) in &terms {
        let term = term.max(2);
        for to in [2, 3] {
            let mut messages = shapeless(group, to, term);
            sent += messages.len();
            messages.extend(stateful(group, to, term));
            for chunk in messages.chunks(4) {
                let _ = fake.send(NodeId(to), RaftBatch::new(chunk.to_vec()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // A snapshot whose stream is garbage, for a data shard.
    for to in [2, 3] {
        let offer = message(
            ShardId(1),
            to,
            terms.get(&ShardId(1)).copied().unwrap_or(1),
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(1 << 20),
                        term: Term(1),
                        conf: Default::default(),
                    },
                    data: Bytes::new(),
                },
            },
        );
        let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
        let result = tokio::time::timeout(
            CALL_TIMEOUT,
            fake.send_snapshot(NodeId(to), offer, &garbage[..]),
        )
        .await;
        println!("garbage snapshot to node {to}: {result:?}");
    }
    // A garbage frame after a valid stream header, on a raw connection with node 1's
    // certificate: the node closes that connection (protocol error).
    for index in [1, 2] {
        let to = NodeId(index as u64 + 1);
        let endpoint = raw_peer_endpoint(&identity);
        let connection = endpoint
            .connect(cluster.addrs[index], &node_server_name(to, CLUSTER))
            .unwrap()
            .await
            .unwrap();
        let mut stream = connection.open_uni().await.unwrap();
        let header = StreamHeader {
            kind: StreamKind::Control,
            from: NodeId(1),
            to,
            cluster: CLUSTER.into(),
        };
        stream
            .write_all(&ringkv_types::codec::encode(&header, 1024).unwrap())
            .await
            .unwrap();
        stream
            .write_all(&ringkv_types::envelope::encode(&[0xee; 64]))
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
            .await
            .expect("the node closes a connection that sent garbage");
        println!("garbage frame to node {to}: {closed}");
    }

    // Dropped and counted on both nodes, with a log line.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts: Vec<Option<f64>> = [1, 2]
            .iter()
            .map(|&i| metric(&cluster, i, "ringkv_raft_invalid_messages_total"))
            .collect();
        let rose = counts
            .iter()
            .zip(&before)
            .all(|(now, before)| now.is_some_and(|now| now > *before));
        if rose {
            println!("invalid messages counted: before {before:?}, after {counts:?} ({sent} sent)");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "invalid messages not counted: before {before:?}, now {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for index in [1, 2] {
        let log = log_of(&cluster, index);
        assert!(
            log.contains("dropping an invalid Raft message"),
            "node {}: no log line; log:\n{log}",
            index + 1
        );
        assert!(
            log.contains("discarding a bad snapshot"),
            "node {}: the garbage snapshot was not refused; log:\n{log}",
            index + 1
        );
    }
    assert_alive(&mut cluster);

    // Still serving clients, every shard, and still alive after that.
    write_and_read_every_shard(&mut cluster, 1).await;
    assert_alive(&mut cluster);
    fake.shutdown().await;
}

/// Mirrors the transport's private peer stream header (its wire layout is pinned by the
/// transport's own hostile-peer test).
#[derive(serde::Serialize)]
enum StreamKind {
    Control,
}

#[derive(serde::Serialize)]
struct StreamHeader {
    kind: StreamKind,
    from: NodeId,
    to: NodeId,
    cluster: String,
}

/// A bare QUIC client endpoint presenting `identity` (a node certificate), for sending bytes
/// the transport would never send.
fn raw_peer_endpoint(identity: &TlsIdentity) -> quinn::Endpoint {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in identity.trust_roots() {
        roots.add(ca.clone()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![ringkv_transport::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}
