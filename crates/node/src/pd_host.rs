//! The placement driver as hosted by `ringkvd`: group 0's replicated state ([`PdState`]) and the
//! pieces of the PD service that need no event loop (initial state, encoding, time stamps).
//!
//! Group 0 runs on every node of `initial_cluster`. Its log holds `LogCommand::Pd(Command)`
//! entries; every PD replica applies them with [`PdState::apply`] in log order and saves the
//! resulting state in the store's meta keyspace ([`META_PD_STATE`]) in the same atomic batch
//! as the applied index, so a restart resumes from a state that matches its applied index.
//! Snapshots of group 0 carry the state instead of data (see `event_loop/snapshot.rs`).

use crate::bootstrap;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use ringkv_pd::{Apply, Command, NodeRegistration, PdState};
use ringkv_types::NodeId;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The arc group 0's snapshots are taken over: empty, so they carry no shard data (the PD
/// descriptor's full-ring arc is nominal; group 0 owns no key).
pub const PD_SNAPSHOT_ARC: ringkv_types::ring::Arc = ringkv_types::ring::Arc {
    start: 0,
    end: Some(0),
};

/// Name of the meta record holding the PD replica's applied state, `postcard(PdState)`.
pub const META_PD_STATE: &[u8] = b"pd/state";

/// The `Bootstrap` command every initial node derives from its config alone: cluster id and
/// name, the `initial_cluster` nodes with their addresses, the initial shard map (the real
/// descriptors, with member ids) and the `[pd]` settings, at log time 0.
pub fn bootstrap_command(config: &NodeConfig) -> Command {
    let nodes: Vec<NodeId> = config.initial_cluster.iter().map(|e| e.node).collect();
    let shard_map =
        bootstrap::initial_shard_map(&nodes, config.initial_shards, config.replication_factor);
    Command::Bootstrap {
        cluster_id: crate::node::cluster_id(&config.cluster),
        cluster_name: config.cluster.clone(),
        nodes: config
            .initial_cluster
            .iter()
            .map(|endpoint| {
                (
                    endpoint.node,
                    NodeRegistration {
                        addr: endpoint.addr.to_string(),
                        labels: BTreeMap::new(),
                        capacity_bytes: 0,
                    },
                )
            })
            .collect(),
        shard_map,
        settings: config.pd_settings(),
        now_ms: 0,
    }
}

/// The initial PD state: the bootstrap command applied to an empty state. Deterministic, so
/// every initial node starts group 0 from the same state whoever is elected first.
///
/// # Errors
/// [`Error::ConfigInvalid`] when PD refuses the bootstrap (e.g. settings out of range).
pub fn initial_state(config: &NodeConfig) -> Result<PdState> {
    let mut state = PdState::new();
    state
        .apply(&bootstrap_command(config))
        .map_err(|error| Error::ConfigInvalid {
            field: "pd",
            reason: format!("the placement driver refuses the initial cluster: {error}"),
        })?;
    Ok(state)
}

/// Encodes a state for [`META_PD_STATE`] or a snapshot.
///
/// # Errors
/// [`Error::Corrupt`] if serde fails (it does not for this type).
pub fn encode_state(state: &PdState) -> Result<Vec<u8>> {
    postcard::to_stdvec(state).map_err(|error| Error::Corrupt {
        what: "placement driver state (encode)",
        reason: error.to_string(),
    })
}

/// Decodes a state from [`META_PD_STATE`] or a snapshot.
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not a state.
pub fn decode_state(bytes: &[u8]) -> Result<PdState> {
    let corrupt = |error: postcard::Error| Error::Corrupt {
        what: "placement driver state",
        reason: error.to_string(),
    };
    // postcard concatenates fields, so a state saved before a field was appended ends where
    // that field begins: read it with the defaults of the missing trailing fields, newest
    // first (`space_alarms`, `store_incarnations`, then `auth`).
    let defaults = [
        postcard::to_stdvec(&BTreeMap::<NodeId, ringkv_types::SpaceAlarm>::new())
            .map_err(corrupt)?,
        postcard::to_stdvec(&BTreeMap::<NodeId, u64>::new()).map_err(corrupt)?,
        postcard::to_stdvec(&ringkv_pd::AuthState::default()).map_err(corrupt)?,
    ];
    let mut suffix: Vec<u8> = Vec::new();
    let mut extended = bytes.to_vec();
    for default in defaults.iter() {
        match postcard::from_bytes(&extended) {
            Ok(state) => return Ok(state),
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                // One more missing field: its default goes before the ones already added.
                let mut next = default.clone();
                next.extend_from_slice(&suffix);
                suffix = next;
                extended = bytes.to_vec();
                extended.extend_from_slice(&suffix);
            }
            Err(error) => return Err(corrupt(error)),
        }
    }
    postcard::from_bytes(&extended).map_err(corrupt)
}

/// Milliseconds since the Unix epoch by this node's clock (0 if the clock is before 1970).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Sets the `now_ms` of every command that carries one. The PD leader calls it with its clock
/// (never below the log time already applied) right before proposing: replicas only ever see
/// the time written in the log.
pub fn stamp(command: &mut Command, now: u64) {
    match command {
        Command::Bootstrap { now_ms, .. }
        | Command::RegisterNode { now_ms, .. }
        | Command::RegisterNodeAs { now_ms, .. }
        | Command::NodeHeartbeat { now_ms, .. }
        | Command::Tick { now_ms }
        | Command::LeaderTick { now_ms, .. }
        | Command::SetNodeState { now_ms, .. }
        | Command::AddOperator { now_ms, .. }
        | Command::CancelOperator { now_ms, .. }
        | Command::Auth { now_ms, .. } => *now_ms = now,
        Command::ShardReport(report) => report.now_ms = now,
        Command::StoreHeartbeat(heartbeat) => heartbeat.now_ms = now,
        Command::SetScheduler { .. }
        | Command::SetSettings(_)
        | Command::AllocIds { .. }
        | Command::ReportStore { .. }
        | Command::SpaceAlarm { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(node: u64) -> NodeConfig {
        let text = format!(
            r#"node_id = {node}
cluster = "local"
listen_addr = "127.0.0.1:700{node}"
data_dir = "d"
initial_cluster = ["3@127.0.0.1:7003", "1@127.0.0.1:7001", "2@127.0.0.1:7002"]
initial_shards = 4
[tls]
ca_cert = "c"
cert = "c"
key = "k"
[pd]
max_down_time_ms = 60000
balance_leaders = false
"#
        );
        NodeConfig::parse(&text, Path::new("/")).unwrap()
    }

    #[test]
    fn every_initial_node_builds_the_same_state() {
        let states: Vec<PdState> = (1..=3)
            .map(|node| initial_state(&config(node)).unwrap())
            .collect();
        assert!(states.windows(2).all(|pair| pair[0] == pair[1]));
        let state = &states[0];
        state.check_invariants();
        assert_eq!(state.now_ms, 0);
        assert_eq!(state.nodes.len(), 3);
        assert_eq!(state.shard_map.shards.len(), 4);
        assert_eq!(state.settings.max_down_time_ms, 60_000);
        assert!(!state.settings.balance_leaders);
        assert_eq!(state.ids.next_node, 4);
        assert_eq!(state.ids.next_shard, 5);
        let bytes = encode_state(state).unwrap();
        assert_eq!(&decode_state(&bytes).unwrap(), state);
        assert!(decode_state(&bytes[..bytes.len() / 2]).is_err());
    }

    /// The saved state (and so a PD snapshot, which carries it) keeps users, roles, password
    /// hashes, generations and signing keys.
    #[test]
    fn the_saved_state_carries_users_and_keys() {
        use ringkv_pd::{AuthCommand, Role};
        let mut state = initial_state(&config(1)).unwrap();
        let auth = |command| Command::Auth { command, now_ms: 1 };
        for command in [
            AuthCommand::AddUser {
                name: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            },
            AuthCommand::Grant {
                name: "alice".into(),
                role: Role::ReadWrite("shared".into()),
            },
            AuthCommand::AddSigningKey {
                private_pkcs8: vec![3; 83],
                public: vec![4; 32],
            },
        ] {
            state.apply(&auth(command)).unwrap();
        }
        let decoded = decode_state(&encode_state(&state).unwrap()).unwrap();
        assert_eq!(decoded.auth, state.auth);
        // A state saved before store incarnations existed (no trailing map) still loads, and
        // so does one saved before users existed (no trailing `auth` either).
        let bytes = encode_state(&state).unwrap();
        assert!(state.store_incarnations.is_empty());
        let old = decode_state(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(old, state);
        let mut legacy = state.clone();
        legacy.auth = ringkv_pd::AuthState::default();
        let bytes = encode_state(&legacy).unwrap();
        let auth_len = postcard::to_stdvec(&legacy.auth).unwrap().len();
        let old = decode_state(&bytes[..bytes.len() - auth_len - 1]).unwrap();
        assert_eq!(old, legacy);
        // A state with incarnations keeps them.
        let mut reported = state.clone();
        reported
            .apply(&Command::ReportStore {
                node: NodeId(2),
                incarnation: 0x1234,
            })
            .unwrap();
        let decoded = decode_state(&encode_state(&reported).unwrap()).unwrap();
        assert_eq!(decoded.store_incarnations.get(&NodeId(2)), Some(&0x1234));
        assert_eq!(decoded.auth.users["alice"].roles.len(), 1);
        assert_eq!(decoded.auth.signing_keys.len(), 1);
    }

    #[test]
    fn stamping_sets_log_time_only_where_there_is_one() {
        let mut tick = Command::Tick { now_ms: 0 };
        stamp(&mut tick, 42);
        assert_eq!(tick, Command::Tick { now_ms: 42 });
        let mut scheduler = Command::SetScheduler {
            scheduler: ringkv_pd::SchedulerKind::Split,
            enabled: false,
        };
        let before = scheduler.clone();
        stamp(&mut scheduler, 42);
        assert_eq!(scheduler, before);
    }
}
