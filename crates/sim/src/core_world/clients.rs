//! The simulated clients of a node-core run: each has a session and one operation in flight,
//! sent as a real [`KvRequest`] (shard, epoch, session sequence) to the node it believes
//! leads the key's shard, and records what it asked and heard in the [`History`] the
//! linearizability checker reads. Each client routes by its own copy of the shard map, as the
//! real client does: `EpochMismatch` replaces the shard's descriptor when only its epoch moved
//! and reloads the map (from the world's, what the placement driver knows) when its arc
//! changed (a split); `KeyNotInShard` and `ShardNotFound` reload it; the operation is then
//! sent again with the same session and sequence. `NotLeader` moves the client to the hinted
//! node and sends it again too (a few times at most, then the operation is given up: never
//! applied, unless an earlier attempt timed out). A write with no answer by its deadline is sent again once with the same session and
//! sequence (the session table applies it at most once); with no answer to that either, its
//! outcome is unknown. A read with no answer had no effect.

use super::ttl::TtlWorkload;
use crate::history::History;
use crate::kv::{Key, Op, OpResult, Value};
use bytes::Bytes;
use ringkv_raft::SplitMix64;
use ringkv_types::{
    KvOp, KvRequest, KvResult, NodeId, ReadConsistency, Response, ShardDescriptor, ShardId,
    WireError, WriteSession,
};
use std::collections::BTreeMap;

/// Ticks a client waits for an answer (in world time units: times the tick length).
pub const CLIENT_TIMEOUT_UNITS: u64 = 300;

/// The user key of the simulated key `key`.
pub fn user_key(key: Key) -> Bytes {
    Bytes::from(format!("key-{key}"))
}

/// The stored form of a simulated value.
fn encode_value(value: Value) -> Bytes {
    Bytes::copy_from_slice(&value.to_be_bytes())
}

fn decode_value(bytes: &[u8]) -> Option<Value> {
    Some(Value::from_be_bytes(bytes.try_into().ok()?))
}

/// How many times one operation is sent again (routing refusals and timeouts together).
const RETRIES_MAX: u32 = 4;

/// How many of those may follow a timeout.
const TIMEOUT_RETRIES_MAX: u32 = 1;

/// One operation of a client, as sent (and sent again).
#[derive(Clone)]
struct Attempt {
    slot: usize,
    is_read: bool,
    name: Bytes,
    op: KvOp,
    session: Option<WriteSession>,
    retries: u32,
    timeouts: u32,
}

/// An operation waiting for its answer.
struct InFlight {
    request: u64,
    attempt: Attempt,
    deadline: u64,
}

/// One client.
pub struct Client {
    id: u64,
    /// Its write session's next sequence number.
    sequence: u64,
    in_flight: Option<InFlight>,
    leader_hint: BTreeMap<ShardId, NodeId>,
    next_op_at: u64,
    /// Its copy of the shard map (empty until first loaded).
    map: Vec<ShardDescriptor>,
    /// Whether the map is to be loaded again before the next request.
    reload: bool,
    /// An operation to send again.
    retry: Option<Attempt>,
}

impl Client {
    /// Client `id` (also its session id).
    pub fn new(id: u64) -> Self {
        Self {
            id,
            sequence: 1,
            in_flight: None,
            leader_hint: BTreeMap::new(),
            next_op_at: 0,
            map: Vec::new(),
            reload: true,
            retry: None,
        }
    }
}

/// A request on its way to a node: the world delivers it as `request` under the id
/// `request_id` (unique in the run).
pub struct Outgoing {
    /// The node asked.
    pub node: NodeId,
    /// The request id (the core's `RequestId`).
    pub request_id: u64,
    /// The request.
    pub request: KvRequest,
}

/// The shard whose arc holds `key`.
pub fn shard_of(descriptors: &[ShardDescriptor], key: &[u8]) -> Option<ShardDescriptor> {
    let position = ringkv_types::ring::position(key);
    descriptors
        .iter()
        .find(|d| d.arc.contains(position))
        .cloned()
}

/// The clients and the history they write.
pub struct Clients {
    clients: Vec<Client>,
    /// Requests in flight: request id -> client position.
    pending: BTreeMap<u64, usize>,
    next_request: u64,
    /// The history of every operation.
    pub history: History,
    /// The TTL keys' side of the operations (`ttl.rs`).
    pub ttl: TtlWorkload,
}

impl Clients {
    /// `count` clients, with ids from 1.
    pub fn new(count: u64) -> Self {
        Self {
            clients: (1..=count).map(Client::new).collect(),
            pending: BTreeMap::new(),
            next_request: 1,
            history: History::default(),
            ttl: TtlWorkload::default(),
        }
    }

    /// Times out overdue operations and starts new ones; returns the requests to send.
    /// `clock` numbers history events (strictly increasing).
    pub fn run(
        &mut self,
        now: u64,
        rng: &mut SplitMix64,
        descriptors: &[ShardDescriptor],
        keys: u8,
        clock: &mut u64,
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for position in 0..self.clients.len() {
            let Some(client) = self.clients.get_mut(position) else {
                continue;
            };
            if client.in_flight.as_ref().is_some_and(|f| f.deadline <= now)
                && let Some(flight) = client.in_flight.take()
            {
                self.pending.remove(&flight.request);
                let mut attempt = flight.attempt;
                if let Some(operation) = self.history.operations.get_mut(attempt.slot) {
                    client.leader_hint.remove(&operation.group);
                    // A read with no answer had no effect; a write's outcome is unknown, and
                    // it is sent again with the same session and sequence.
                    operation.discarded |= attempt.is_read;
                }
                if !attempt.is_read
                    && attempt.timeouts < TIMEOUT_RETRIES_MAX
                    && attempt.retries < RETRIES_MAX
                {
                    attempt.timeouts += 1;
                    attempt.retries += 1;
                    client.retry = Some(attempt);
                }
                client.next_op_at = now + 1;
            }
            if client.in_flight.is_some() || client.next_op_at > now {
                continue;
            }
            if client.reload || client.map.is_empty() {
                client.map = descriptors.to_vec();
                client.reload = false;
            }
            if let Some(attempt) = client.retry.take() {
                let Some(descriptor) = shard_of(&client.map, &attempt.name) else {
                    continue;
                };
                if let Some(operation) = self.history.operations.get_mut(attempt.slot) {
                    operation.group = descriptor.id;
                }
                let node = pick_node(client, &descriptor, rng);
                let request_id = self.next_request;
                self.next_request += 1;
                self.ttl.retried(attempt.slot, request_id);
                out.push(Outgoing {
                    node,
                    request_id,
                    request: KvRequest {
                        shard: descriptor.id,
                        epoch: descriptor.epoch,
                        session: attempt.session,
                        timeout_ms: 0,
                        op: attempt.op.clone(),
                    },
                });
                client.in_flight = Some(InFlight {
                    request: request_id,
                    attempt,
                    deadline: now + CLIENT_TIMEOUT_UNITS,
                });
                self.pending.insert(request_id, position);
                continue;
            }
            let key = TtlWorkload::pick_key(rng, keys);
            let name = user_key(key);
            let Some(descriptor) = shard_of(&client.map, &name) else {
                continue;
            };
            *clock += 1;
            let value = *clock;
            let op = match rng.range(0, 10) {
                0..=3 => Op::Get(key),
                4..=6 => Op::Put(key, value),
                7 => Op::Delete(key),
                _ => {
                    let expected = self
                        .history
                        .operations
                        .iter()
                        .rev()
                        .find_map(|o| match o.op {
                            Op::Put(k, v) if k == key => Some(v),
                            _ => None,
                        });
                    Op::Cas {
                        key,
                        expected,
                        new: value,
                    }
                }
            };
            let op = self.ttl.shape(op);
            let ttl_ms = TtlWorkload::draw_ttl(rng, &op);
            let consistency = if rng.range(0, 4) == 0 {
                ReadConsistency::Lease
            } else {
                ReadConsistency::Linearizable
            };
            let kv_op = match op {
                Op::Get(_) => KvOp::Get {
                    key: name.clone(),
                    consistency,
                },
                Op::Put(_, value) => match ttl_ms {
                    Some(ttl_ms) => KvOp::PutWithTtl {
                        key: name.clone(),
                        value: encode_value(value),
                        ttl_ms,
                    },
                    None => KvOp::Put {
                        key: name.clone(),
                        value: encode_value(value),
                    },
                },
                Op::Delete(_) => KvOp::Delete { key: name.clone() },
                Op::Cas { expected, new, .. } => KvOp::CompareAndSwap {
                    key: name.clone(),
                    expected: expected.map(encode_value),
                    new: Some(encode_value(new)),
                },
            };
            let is_read = matches!(op, Op::Get(_));
            let session = (!is_read).then(|| {
                let sequence = client.sequence;
                client.sequence += 1;
                WriteSession {
                    session_id: client.id,
                    sequence,
                }
            });
            let node = pick_node(client, &descriptor, rng);
            *clock += 1;
            let slot = self.history.invoke(client.id, descriptor.id, op, *clock);
            let request_id = self.next_request;
            self.next_request += 1;
            self.ttl.invoked(slot, session, request_id, now);
            out.push(Outgoing {
                node,
                request_id,
                request: KvRequest {
                    shard: descriptor.id,
                    epoch: descriptor.epoch,
                    session,
                    timeout_ms: 0,
                    op: kv_op.clone(),
                },
            });
            client.in_flight = Some(InFlight {
                request: request_id,
                attempt: Attempt {
                    slot,
                    is_read,
                    name,
                    op: kv_op,
                    session,
                    retries: 0,
                    timeouts: 0,
                },
                deadline: now + CLIENT_TIMEOUT_UNITS,
            });
            self.pending.insert(request_id, position);
        }
        out
    }

    /// The answer to request `request_id`; `pause` is how long the client waits before its
    /// next operation. A late answer (after the timeout) is ignored, as a real client would.
    pub fn answer(
        &mut self,
        request_id: u64,
        response: Response,
        now: u64,
        clock: &mut u64,
        pause: u64,
    ) {
        let Some(position) = self.pending.remove(&request_id) else {
            return;
        };
        let Some(client) = self.clients.get_mut(position) else {
            return;
        };
        let Some(flight) = client.in_flight.take() else {
            return;
        };
        let attempt = flight.attempt;
        client.next_op_at = now + pause;
        let reroute = match &response {
            Response::Error(WireError::EpochMismatch { descriptor }) => {
                take_descriptor(&mut client.map, descriptor);
                true
            }
            Response::Error(WireError::KeyNotInShard { .. } | WireError::ShardNotFound { .. }) => {
                client.reload = true;
                true
            }
            Response::Error(WireError::NotLeader { leader_hint, .. }) => {
                let group = self
                    .history
                    .operations
                    .get(attempt.slot)
                    .map(|operation| operation.group);
                if let Some(group) = group {
                    match leader_hint {
                        Some(node) => client.leader_hint.insert(group, *node),
                        None => client.leader_hint.remove(&group),
                    };
                }
                true
            }
            _ => false,
        };
        if reroute && attempt.retries < RETRIES_MAX {
            // Refused before it was proposed (or skipped as outside the shard when applied, or
            // a replaced proposal): sent again to the shard the key lives in now, at the
            // leader the answer named.
            client.retry = Some(Attempt {
                retries: attempt.retries + 1,
                ..attempt
            });
            return;
        }
        self.ttl.answered(attempt.slot, &response, now);
        let Some(operation) = self.history.operations.get_mut(attempt.slot) else {
            return;
        };
        *clock += 1;
        let result = match response {
            Response::Kv(KvResult::Value { value, .. }) => {
                Some(OpResult::Value(value.as_deref().and_then(decode_value)))
            }
            Response::Kv(KvResult::Written { .. }) => Some(OpResult::Done),
            Response::Kv(KvResult::Swapped { succeeded, .. }) => Some(OpResult::Swapped(succeeded)),
            Response::Error(WireError::NotLeader { leader_hint, .. }) => {
                match leader_hint {
                    Some(node) => client.leader_hint.insert(operation.group, node),
                    None => client.leader_hint.remove(&operation.group),
                };
                None
            }
            _ => None,
        };
        match result {
            Some(result) => operation.completed = Some((*clock, result)),
            // An earlier attempt timed out: it may have taken effect (outcome unknown).
            None if attempt.timeouts > 0 => {}
            // Refused (not leader, busy, a replaced proposal): it never took effect.
            None => operation.discarded = true,
        }
    }

    /// Operations whose outcome was heard.
    pub fn completed(&self) -> u64 {
        self.history
            .operations
            .iter()
            .filter(|o| o.completed.is_some())
            .count() as u64
    }
}

/// The node a client sends a request for `descriptor`'s shard to: its leader guess (mostly),
/// else a random replica.
fn pick_node(client: &Client, descriptor: &ShardDescriptor, rng: &mut SplitMix64) -> NodeId {
    let hosts: Vec<NodeId> = descriptor.replicas.iter().map(|r| r.node).collect();
    match client.leader_hint.get(&descriptor.id) {
        Some(node) if rng.range(0, 10) > 0 => *node,
        _ => {
            let pick = rng.range(0, hosts.len() as u64) as usize;
            hosts.get(pick).copied().unwrap_or(NodeId(1))
        }
    }
}

/// An `EpochMismatch` answer's `descriptor` in a client's `map`, as the real client takes it
/// (`routing.rs`): kept when only the epoch moved forward; when the arc changed (a split) or
/// the shard is unknown, the whole map is loaded again (the map is emptied).
fn take_descriptor(map: &mut Vec<ShardDescriptor>, descriptor: &ShardDescriptor) {
    match map.iter_mut().find(|d| d.id == descriptor.id) {
        Some(slot) if descriptor.epoch.is_stale_against(&slot.epoch) => {}
        Some(slot) if slot.arc == descriptor.arc => *slot = descriptor.clone(),
        _ => map.clear(),
    }
}
