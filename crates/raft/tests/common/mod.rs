//! A tiny synchronous cluster for scenario tests: every replica persists each Ready at once,
//! messages sit in one queue until delivered, and links can be cut one way or both.

#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use ringkv_raft::{Config, MemStorage, RawNode, ReadState, Role};
use ringkv_types::raft::{ConfState, Entry, EntryPayload, Message, MessageBody, Snapshot};
use ringkv_types::{LogIndex, NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const GROUP: ShardId = ShardId(1);

/// Decides whether a message is lost in transit.
pub type DropFilter = Box<dyn FnMut(&Message) -> bool>;

pub struct Peer {
    pub node: RawNode<MemStorage>,
    pub storage: MemStorage,
    /// Normal entries applied, in order: (index, data).
    pub applied: Vec<(LogIndex, Bytes)>,
    pub applied_index: LogIndex,
    pub read_states: Vec<ReadState>,
}

pub struct Network {
    pub peers: BTreeMap<NodeId, Peer>,
    pub queue: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub down: BTreeSet<NodeId>,
    /// Every message ever delivered, for assertions.
    pub delivered: Vec<Message>,
    /// Messages for which this returns true are dropped on delivery (lost in transit).
    pub drop_filter: Option<DropFilter>,
    /// Every message dropped by `drop_filter`, for assertions.
    pub dropped: Vec<Message>,
    pub configure: fn(&mut Config),
}

pub fn config(id: u64) -> Config {
    let mut config = Config::new(NodeId(id), GROUP);
    config.seed = 42;
    config
}

fn no_change(_: &mut Config) {}

impl Network {
    /// `voters` replicas 1..=voters with default configs.
    pub fn new(voters: u64) -> Self {
        Self::with_config(voters, no_change)
    }

    pub fn with_config(voters: u64, configure: fn(&mut Config)) -> Self {
        let conf = ConfState::with_voters((1..=voters).map(NodeId));
        let mut network = Self {
            peers: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            delivered: Vec::new(),
            drop_filter: None,
            dropped: Vec::new(),
            configure,
        };
        for id in 1..=voters {
            network.add_peer(NodeId(id), MemStorage::with_conf(conf.clone()));
        }
        network
    }

    /// Adds a replica over `storage` (empty storage: a node joining through a conf change).
    pub fn add_peer(&mut self, id: NodeId, storage: MemStorage) {
        let mut config = config(id.get());
        (self.configure)(&mut config);
        let node = RawNode::new(config, storage.clone()).unwrap();
        self.peers.insert(
            id,
            Peer {
                node,
                storage,
                applied: Vec::new(),
                applied_index: LogIndex::ZERO,
                read_states: Vec::new(),
            },
        );
    }

    pub fn peer(&self, id: u64) -> &Peer {
        &self.peers[&NodeId(id)]
    }

    pub fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        &mut self.peers.get_mut(&NodeId(id)).unwrap().node
    }

    /// Handles one Ready of `id`, persisting synchronously.
    pub fn process_ready(&mut self, id: NodeId) -> bool {
        let peer = self.peers.get_mut(&id).unwrap();
        if !peer.node.has_ready() {
            return false;
        }
        let ready = peer.node.ready().unwrap();
        self.queue.extend(ready.messages);
        if let Some(snapshot) = &ready.snapshot {
            // Installing a snapshot replaces the state machine with the snapshot's contents.
            peer.storage.apply_snapshot(snapshot.clone());
            peer.applied = decode_applied(&snapshot.data);
            peer.applied_index = snapshot.meta.index;
        }
        peer.storage.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            peer.storage.set_hard_state(hard_state);
        }
        peer.node.on_persisted(ready.number).unwrap();
        self.queue.extend(ready.persisted_messages);
        for entry in &ready.committed_entries {
            // Apply in order: no gap, no entry twice.
            assert_eq!(
                entry.index,
                peer.applied_index.next(),
                "node {id} applies {} after {}",
                entry.index,
                peer.applied_index
            );
            if let EntryPayload::Normal(data) = &entry.payload {
                peer.applied.push((entry.index, data.clone()));
            }
            peer.applied_index = entry.index;
        }
        if let Some(last) = ready.committed_entries.last() {
            peer.node.on_applied(last.index);
        }
        peer.read_states.extend(ready.read_states);
        peer.node.check_invariants();
        true
    }

    /// Delivers one queued message (or drops it on a cut link). Returns false when empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(message) = self.queue.pop_front() else {
            return false;
        };
        if self.cut.contains(&(message.from, message.to))
            || self.down.contains(&message.to)
            || self.down.contains(&message.from)
        {
            return true;
        }
        if let Some(filter) = self.drop_filter.as_mut()
            && filter(&message)
        {
            self.dropped.push(message);
            return true;
        }
        if let Some(peer) = self.peers.get_mut(&message.to) {
            self.delivered.push(message.clone());
            peer.node.step(message).unwrap();
            peer.node.check_invariants();
        }
        true
    }

    /// Runs Readies and deliveries until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.peers.keys().copied().collect();
            let mut progressed = false;
            for id in ids {
                if !self.down.contains(&id) {
                    progressed |= self.process_ready(id);
                }
            }
            while self.deliver_one() {
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
        panic!("network did not stabilize");
    }

    /// Ticks every live replica once, then stabilizes.
    pub fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for (id, peer) in self.peers.iter_mut() {
                if !self.down.contains(id) {
                    peer.node.tick().unwrap();
                }
            }
            self.stabilize();
        }
    }

    /// Makes `id` campaign and stabilizes.
    pub fn campaign(&mut self, id: u64) {
        self.node(id).campaign().unwrap();
        self.stabilize();
    }

    pub fn propose(&mut self, id: u64, data: &'static [u8]) -> LogIndex {
        let index = self.node(id).propose(Bytes::from_static(data)).unwrap();
        self.stabilize();
        index
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: u64) {
        for &other in self.peers.keys() {
            if other != NodeId(id) {
                self.cut.insert((NodeId(id), other));
                self.cut.insert((other, NodeId(id)));
            }
        }
    }

    /// Splits the cluster into two sides that cannot talk.
    pub fn partition(&mut self, side_a: &[u64], side_b: &[u64]) {
        for &a in side_a {
            for &b in side_b {
                self.cut.insert((NodeId(a), NodeId(b)));
                self.cut.insert((NodeId(b), NodeId(a)));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(id, p)| !self.down.contains(id) && p.node.status().role == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn applied_data(&self, id: u64) -> Vec<Bytes> {
        self.peer(id)
            .applied
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Restarts `id` from its storage (volatile state is lost). The state machine is rebuilt
    /// from the stored snapshot; later committed entries are applied again from the log.
    pub fn restart(&mut self, id: u64) {
        let id = NodeId(id);
        let storage = self.peers[&id].storage.clone();
        let snapshot = storage.current_snapshot();
        let applied = snapshot.meta.index;
        let mut config = config(id.get());
        (self.configure)(&mut config);
        config.applied = applied;
        let peer = self.peers.get_mut(&id).unwrap();
        peer.node = RawNode::new(config, storage).unwrap();
        peer.applied = decode_applied(&snapshot.data);
        peer.applied_index = applied;
        peer.read_states.clear();
        self.down.remove(&id);
    }

    /// Compacts `id`'s log up to its applied index: the snapshot's data encodes the applied
    /// entries, so a follower that installs it (or this peer after a restart) rebuilds them.
    /// Returns the compaction index.
    pub fn compact(&mut self, id: u64) -> LogIndex {
        let peer = &self.peers[&NodeId(id)];
        let index = peer.applied_index;
        let status = peer.node.status();
        assert!(
            status.conf_index <= index,
            "compacting at {index} below the configuration entry at {}",
            status.conf_index
        );
        let data = encode_applied(&peer.applied);
        peer.storage.compact(index, status.conf, data);
        index
    }

    /// Queued messages matching `predicate` are removed (lost) and returned.
    pub fn drop_queued(&mut self, predicate: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (dropped, kept): (Vec<Message>, Vec<Message>) =
            self.queue.drain(..).partition(|m| predicate(m));
        self.queue = kept.into();
        dropped
    }

    /// Delivered messages from `from` to `to` of `kind`.
    pub fn delivered_between(&self, from: u64, to: u64, kind: &str) -> Vec<&Message> {
        self.delivered
            .iter()
            .filter(|m| m.from == NodeId(from) && m.to == NodeId(to) && m.body.kind() == kind)
            .collect()
    }

    /// Term of `index` in a peer's log, if present.
    pub fn node_entries(&self, id: u64, index: u64) -> Option<ringkv_types::Term> {
        let index = LogIndex(index);
        self.peer(id)
            .node
            .entries(index, index.next(), u64::MAX)
            .ok()?
            .first()
            .map(|e| e.term)
    }

    /// Count of delivered messages matching `kind`.
    pub fn delivered_count(&self, kind: &str) -> usize {
        self.delivered
            .iter()
            .filter(|m| m.body.kind() == kind)
            .count()
    }
}

/// The entries of a peer's log, for comparing logs.
pub fn log_of(peer: &Peer) -> Vec<(u64, u64)> {
    let status = peer.node.status();
    peer.node
        .entries(status.first_index, status.last_index.next(), u64::MAX)
        .unwrap()
        .iter()
        .map(|e: &Entry| (e.index.get(), e.term.get()))
        .collect()
}

pub fn is_body(message: &Message, kind: &str) -> bool {
    message.body.kind() == kind
}

pub fn append_entries(message: &Message) -> usize {
    match &message.body {
        MessageBody::Append { entries, .. } => entries.len(),
        _ => 0,
    }
}

/// Encodes a state machine (the applied entries) as snapshot data: per entry, index (u64 BE),
/// length (u32 BE), bytes.
pub fn encode_applied(applied: &[(LogIndex, Bytes)]) -> Bytes {
    let mut out = Vec::new();
    for (index, data) in applied {
        out.extend_from_slice(&index.get().to_be_bytes());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(data);
    }
    Bytes::from(out)
}

/// Inverse of [`encode_applied`].
pub fn decode_applied(mut data: &[u8]) -> Vec<(LogIndex, Bytes)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (index, rest) = data.split_at(8);
        let (length, rest) = rest.split_at(4);
        let index = u64::from_be_bytes(index.try_into().unwrap());
        let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
        let (bytes, rest) = rest.split_at(length);
        out.push((LogIndex(index), Bytes::copy_from_slice(bytes)));
        data = rest;
    }
    out
}

/// The snapshot carried by an `InstallSnapshot` message.
pub fn snapshot_of(message: &Message) -> Option<&Snapshot> {
    match &message.body {
        MessageBody::InstallSnapshot { snapshot } => Some(snapshot),
        _ => None,
    }
}
