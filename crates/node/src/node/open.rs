//! Opening what a node has on disk: the store (and its identity checks), the applied shard map
//! or the bootstrap of the initial layout, and the local groups with their tombstones and
//! resumed removals. [`super::start`] calls these before it starts the transport and the loop.

use crate::bootstrap;
use crate::config::NodeConfig;
use crate::core::machine::MachineKind;
use crate::error::{Error, Result};
use crate::group::{Group, NodeStorage};
use crate::pd_host;
use crate::pd_records;
use crate::replica_meta;
use crate::store_identity::{self, StoreIdentity};
use ringkv_pd::PdState;
use ringkv_raft::RawNode;
use ringkv_storage::{NodeIdentity, RemovalHandle, Store, StoreConfig, WriteBatchBuilder};
use ringkv_types::raft::{ConfState, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, ShardDescriptor, ShardId, ShardMap, Term, ring};
use std::collections::BTreeMap;
use tracing::{debug, info, warn};

use super::{META_BOOTSTRAP, META_SHARD_MAP};

/// A stable 64-bit id of a cluster name, kept in the store's node identity.
pub(crate) fn cluster_id(cluster: &str) -> u64 {
    ring::position(cluster.as_bytes())
}

/// Loads the applied shard map and PD state, or bootstraps the initial layout: every local group
/// of the initial map (and of the placement driver, with its initial state in the same batch)
/// is created at [`bootstrap::INITIAL_LOG_INDEX`] with its descriptor, then the map is saved.
/// A joining node (no `initial_cluster`) creates nothing: its map comes from PD.
pub(super) fn load_or_bootstrap_map(
    store: &Store,
    config: &NodeConfig,
) -> Result<(ShardMap, Option<PdState>)> {
    let hosts_pd = config.hosts_pd();
    if let Some(bytes) = store.meta(META_SHARD_MAP)? {
        let map: ShardMap = postcard::from_bytes(&bytes).map_err(|error| Error::Corrupt {
            what: "shard map",
            reason: error.to_string(),
        })?;
        if !hosts_pd {
            return Ok((map, None));
        }
        let state = match pd_records::load(store)? {
            Some(state) => state,
            None => {
                // A data dir from before the placement driver kept its state: its group 0 only
                // ever held the bootstrap map, so the initial state is its state.
                let mut state = pd_host::initial_state(config)?;
                pd_records::save_all(store, &mut state)?;
                state
            }
        };
        return Ok((state.shard_map.clone(), Some(state)));
    }
    if !hosts_pd {
        return Ok((ShardMap::default(), None));
    }
    let state = pd_host::initial_state(config)?;
    let map = state.shard_map.clone();
    let nodes: Vec<NodeId> = config.initial_cluster.iter().map(|e| e.node).collect();
    let existing = replica_meta::load_descriptors(store)?;
    let mut descriptors = vec![bootstrap::pd_descriptor(&nodes)];
    descriptors.extend(map.shards.iter().cloned());
    // The groups go in batches of GROUPS_PER_BATCH: one durable write each, not one per group
    // (4,096 groups cost seconds of fsyncs one at a time).
    let mine = descriptors.into_iter().filter(|descriptor| {
        descriptor.replica_on(config.node_id).is_some() && !existing.contains_key(&descriptor.id)
    });
    let mut batch = WriteBatchBuilder::new();
    let mut in_batch = 0;
    for descriptor in mine {
        // A bootstrap shard starts empty: its keys' versions are its log indexes.
        add_new_group(&mut batch, &descriptor, BOOTSTRAP_START, None, true)?;
        if descriptor.id == ShardId::PD {
            // IMPORTANT: group 0 starts with its state at its initial applied index, in the
            // same batch: every PD replica starts from the same state, whoever leads first.
            for (name, value) in pd_records::all_records(&mut state.clone())? {
                batch.set_meta(ShardId::PD, &name, value);
            }
        }
        in_batch += 1;
        if in_batch == GROUPS_PER_BATCH {
            store.write(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        store.write(batch)?;
    }
    let bytes = postcard::to_stdvec(&map).map_err(|error| Error::Corrupt {
        what: "shard map (encode)",
        reason: error.to_string(),
    })?;
    store.set_meta(
        META_BOOTSTRAP,
        &encode_fields(&bootstrap::bootstrap_fields(config))?,
    )?;
    // IMPORTANT: the groups above are durable first; a crash before this line bootstraps again
    // and skips the groups that already have a descriptor.
    store.set_meta(META_SHARD_MAP, &bytes)?;
    info!(
        shards = map.shards.len(),
        "bootstrapped the initial shard map and placement driver state"
    );
    Ok((map, Some(state)))
}

/// Where a bootstrap group's log starts: index and term [`bootstrap::INITIAL_LOG_INDEX`].
pub const BOOTSTRAP_START: (LogIndex, Term) = (
    LogIndex(bootstrap::INITIAL_LOG_INDEX),
    Term(bootstrap::INITIAL_LOG_INDEX),
);

/// Creates a brand-new group durably: log, applied state and configuration start at `start`
/// (index and term: [`BOOTSTRAP_START`] at bootstrap, the split entry's for a split's new
/// shard, so the versions of its keys, log indexes, keep growing across the split), and the
/// descriptor is saved in the same batch. `hard_state` is the state an uninitialized replica
/// of the group already persisted (its term and vote are kept: a replica must never vote twice
/// in one term).
pub fn create_group_batch(
    descriptor: &ShardDescriptor,
    start: (LogIndex, Term),
    hard_state: Option<HardState>,
    versions_follow_index: bool,
) -> Result<WriteBatchBuilder> {
    let mut batch = WriteBatchBuilder::new();
    add_new_group(
        &mut batch,
        descriptor,
        start,
        hard_state,
        versions_follow_index,
    )?;
    Ok(batch)
}

/// A brand-new group's replica that is not its preferred leader waits this many election
/// timeouts longer before its first campaign (3 s at the defaults).
const BOOTSTRAP_DEFER_ELECTIONS: u64 = 6;

/// Bootstrap groups written per durable batch.
const GROUPS_PER_BATCH: usize = 512;

/// Adds what [`create_group_batch`] writes for one group to `batch`; `versions_follow_index`
/// says the group's keys' versions never exceed its log index (recorded for data shards).
fn add_new_group(
    batch: &mut WriteBatchBuilder,
    descriptor: &ShardDescriptor,
    (initial, initial_term): (LogIndex, Term),
    hard_state: Option<HardState>,
    versions_follow_index: bool,
) -> Result<()> {
    batch.initialize_group(
        descriptor.id,
        SnapshotMeta {
            index: initial,
            term: initial_term,
            conf: Group::conf_of(descriptor),
        },
    );
    batch.set_hard_state(
        descriptor.id,
        initial_hard_state((initial, initial_term), hard_state),
    );
    batch.set_meta(
        descriptor.id,
        &replica_meta::descriptor_key(descriptor.id),
        replica_meta::encode_descriptor(descriptor)?,
    );
    if versions_follow_index && MachineKind::of(descriptor.id) == MachineKind::Data {
        batch.set_meta(
            descriptor.id,
            &replica_meta::versions_follow_index_key(descriptor.id),
            Vec::new(),
        );
    }
    Ok(())
}

/// The hard state a brand-new group starting at `(initial, initial_term)` saves, given the
/// state `previous` an uninitialized replica of it already persisted: its term and vote are
/// kept when its term is not below the start's (a replica must never vote twice in one term).
pub fn initial_hard_state(
    (initial, initial_term): (LogIndex, Term),
    previous: Option<HardState>,
) -> HardState {
    let previous = previous.unwrap_or_default();
    if previous.term >= initial_term {
        HardState {
            term: previous.term,
            vote: previous.vote,
            commit: previous.commit.max(initial),
        }
    } else {
        HardState {
            term: initial_term,
            vote: NodeId::NONE,
            commit: initial,
        }
    }
}

/// Whether a group never ran: still at its initial log, term and no vote.
pub(super) fn is_brand_new(storage: &ringkv_storage::GroupStorage) -> bool {
    let hard_state = storage.hard_state();
    hard_state.term == Term(bootstrap::INITIAL_LOG_INDEX)
        && hard_state.vote == NodeId::NONE
        && storage.bounds().1 == LogIndex(bootstrap::INITIAL_LOG_INDEX)
}

/// Opens a local replica of `shard` as Raft member `member`; `descriptor` is `None` for a
/// replica created by a message (filled by a snapshot later).
pub(crate) fn open_group(
    store: &Store,
    config: &NodeConfig,
    shard: ShardId,
    member: NodeId,
    descriptor: Option<ShardDescriptor>,
) -> Result<Group> {
    let storage = store.group(shard)?;
    let applied = store.applied(shard)?;
    let mut raft_config = config.raft_config(shard, member);
    raft_config.applied = applied.index;
    let raw = RawNode::new(raft_config, NodeStorage::new(storage, ConfState::default()))?;
    let mut group = Group::new(shard, member, descriptor, raw, applied.index);
    if let Some(data) = group.machine.data_mut() {
        data.versions_follow_index = replica_meta::versions_follow_index(store, shard)?;
    }
    Ok(group)
}

/// Opens the data dir, checking (or recording) that it belongs to this node and cluster, and
/// reads (or writes, for a new store or a data dir from before store identities) its store
/// identity file.
pub(super) fn open_store(config: &NodeConfig) -> Result<(Store, StoreIdentity)> {
    let mut store_config = StoreConfig::new(&config.data_dir);
    store_config.cache_bytes = config.storage.cache_mib << 20;
    store_config.writer_queue_depth = config.storage.writer_queue_depth;
    store_config.space_reserve_bytes = config.storage.space_reserve_mib << 20;
    store_config.snapshot_bytes_max = config.storage.snapshot_max_mib << 20;
    store_config.write_buffer_bytes = config.storage.write_buffer_mib << 20;
    let store = Store::open(store_config)?;
    let expected = NodeIdentity {
        node: config.node_id,
        cluster: cluster_id(&config.cluster),
    };
    let wrong = |found: String| Error::WrongDataDir {
        path: config.data_dir.clone(),
        found,
        expected: format!(
            "node {} of cluster {}",
            config.node_id.get(),
            config.cluster
        ),
    };
    let new_store = match store.identity()? {
        None => true,
        Some(found) if found == expected => false,
        Some(found) => {
            return Err(wrong(format!(
                "node {} of cluster #{:x}",
                found.node.get(),
                found.cluster
            )));
        }
    };
    let identity = match store_identity::load(&config.data_dir)? {
        // IMPORTANT: a new store always draws a new incarnation, even over a file left behind
        // (a crash between the file and the store's identity, or a store deleted without it):
        // an empty store must never pass for the one PD recorded.
        Some(found) if !new_store => {
            if found.node != expected.node || found.cluster_id != expected.cluster {
                return Err(wrong(format!(
                    "node {} of cluster #{:x} (its {} file)",
                    found.node.get(),
                    found.cluster_id,
                    store_identity::STORE_IDENTITY_FILE
                )));
            }
            found
        }
        _ => {
            let identity = StoreIdentity::generate(expected.cluster, expected.node)?;
            store_identity::save(&config.data_dir, &identity)?;
            info!(
                incarnation = format!("{:016x}", identity.incarnation),
                new_store, "wrote the data dir's store identity"
            );
            identity
        }
    };
    if new_store {
        store.set_identity(expected)?;
    }
    Ok((store, identity))
}

/// Whether the store holds no group and no shard map: a new data dir, or one whose node never
/// ran a group. Such a node checks its store incarnation with PD before it runs any group.
pub(super) fn holds_nothing(store: &Store) -> Result<bool> {
    Ok(store.groups()?.is_empty() && store.meta(META_SHARD_MAP)?.is_none())
}

pub(super) fn encode_fields(fields: &[(String, String)]) -> Result<Vec<u8>> {
    postcard::to_stdvec(fields).map_err(|error| Error::Corrupt {
        what: "bootstrap settings (encode)",
        reason: error.to_string(),
    })
}

/// The node ids of an `initial_cluster` bootstrap field (`1@a:1,2@b:2`).
pub(super) fn initial_ids(value: &str) -> Vec<&str> {
    let mut ids: Vec<&str> = value
        .split(',')
        .filter(|entry| !entry.is_empty())
        .map(|entry| entry.split_once('@').map_or(entry, |(id, _)| id))
        .collect();
    ids.sort_unstable();
    ids
}

/// The bootstrap settings this node holds, checked against its config on a restart.
///
/// A node that created its groups recorded the settings it created them with
/// ([`META_BOOTSTRAP`]). Once the cluster exists they cannot change by config: on a restart
/// with other values, a change to `initial_cluster`'s node ids (which nodes host the placement
/// driver) is refused, and every other change (`initial_shards`, `replication_factor`, the
/// `[pd]` scheduler settings, an `initial_cluster` address) is ignored with a warning naming
/// the field and both values: the recorded `initial_shards` and `replication_factor` replace
/// the config's, the scheduler settings live in the PD state (`ringctl scheduler` changes
/// them), and addresses are only dialed. A data dir from before this record records its
/// config's values. A new data dir answers its config's values (it records them when it
/// creates its groups).
///
/// # Errors
/// [`Error::Fatal`] when the `initial_cluster` node ids changed; storage errors.
pub fn recorded_bootstrap(store: &Store, config: &mut NodeConfig) -> Result<Vec<(String, String)>> {
    let configured = bootstrap::bootstrap_fields(config);
    if !config.hosts_pd() {
        return Ok(configured);
    }
    let recorded: Vec<(String, String)> = match store.meta(META_BOOTSTRAP)? {
        Some(bytes) => postcard::from_bytes(&bytes).map_err(|error| Error::Corrupt {
            what: "bootstrap settings",
            reason: error.to_string(),
        })?,
        None if store.meta(META_SHARD_MAP)?.is_some() => {
            store.set_meta(META_BOOTSTRAP, &encode_fields(&configured)?)?;
            return Ok(configured);
        }
        None => return Ok(configured),
    };
    let value = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let (was, now) = (
        value(&recorded, "initial_cluster"),
        value(&configured, "initial_cluster"),
    );
    if initial_ids(&was) != initial_ids(&now) {
        return Err(Error::Fatal {
            reason: format!(
                "refusing to start: `initial_cluster` names other nodes than the cluster was \
                 created with (created with {was}, config says {now}); the nodes that host the \
                 placement driver cannot change by config. Restore the config's \
                 initial_cluster (docs/node.md, Bootstrap settings)"
            ),
        });
    }
    for difference in bootstrap::differences(&configured, &recorded) {
        warn!(
            %difference,
            "a bootstrap setting in the config differs from the one this node created the \
             cluster with ('here' is the config, 'there' the recorded value); the config's \
             value is ignored (docs/node.md, Bootstrap settings)"
        );
    }
    if let Ok(shards) = value(&recorded, "initial_shards").parse() {
        config.initial_shards = shards;
    }
    if let Ok(factor) = value(&recorded, "replication_factor").parse() {
        config.replication_factor = factor;
    }
    Ok(recorded)
}

/// What the node found on disk besides its groups.
pub struct LocalState {
    /// The highest removed member id per shard.
    pub tombstones: BTreeMap<ShardId, NodeId>,
    /// Replica removals resumed at start.
    pub removals: Vec<RemovalHandle>,
    /// The placement driver replica's applied state (nodes of `initial_cluster`).
    pub pd_state: Option<PdState>,
}

/// Creates the replica of every local descriptor, resuming from disk.
pub(super) fn open_groups(
    store: &Store,
    config: &NodeConfig,
) -> Result<(BTreeMap<ShardId, Group>, LocalState)> {
    let nodes: Vec<NodeId> = config.initial_cluster.iter().map(|e| e.node).collect();
    let tombstones = replica_meta::load_tombstones(store)?;
    let mut removals = store.resume_removals()?;
    let removing: Vec<ShardId> = removals.iter().map(RemovalHandle::shard).collect();
    let mut groups = BTreeMap::new();
    // Computed on the first brand-new group (a restart has none).
    let mut preferred: Option<bootstrap::PreferredLeaders> = None;
    for (shard, descriptor) in replica_meta::load_descriptors(store)? {
        let Some(member) = descriptor.replica_on(config.node_id).map(|r| r.member) else {
            warn!(%shard, "local descriptor without a replica on this node; ignoring it");
            continue;
        };
        if tombstones.get(&shard).is_some_and(|&dead| member <= dead) {
            // Removed before a crash finished the cleanup: finish it now.
            store.delete_meta(&replica_meta::descriptor_key(shard))?;
            if !removing.contains(&shard) {
                removals.push(store.remove_replica(shard, descriptor.arc)?);
            }
            continue;
        }
        let storage = store.group(shard)?;
        let brand_new = is_brand_new(&storage);
        let mut group = open_group(store, config, shard, member, Some(descriptor))?;
        let campaigns = brand_new && {
            let leaders = preferred.get_or_insert_with(|| {
                bootstrap::PreferredLeaders::new(
                    &nodes,
                    config.initial_shards,
                    config.replication_factor,
                )
            });
            leaders.of(shard) == Some(config.node_id)
        };
        if campaigns {
            // Only on a group that has never run: no leader can hold a lease yet.
            group.raw.campaign()?;
        } else if brand_new {
            // The preferred leader (on a node that may start a moment later) campaigns at its
            // start: give it that moment rather than win the shard here and leave PD to move
            // thousands of leaderships back (at 10,000 shards, minutes of transfers).
            group
                .raw
                .defer_election(BOOTSTRAP_DEFER_ELECTIONS * config.raft.election_timeout_ticks);
        }
        groups.insert(shard, group);
    }
    for shard in store.groups()? {
        if !groups.contains_key(&shard) && !removing.contains(&shard) {
            debug!(%shard, "state of a group without a descriptor here (an uninitialized replica)");
        }
    }
    Ok((
        groups,
        LocalState {
            tombstones,
            removals,
            pd_state: None,
        },
    ))
}
