//! Split: cut shards that are larger than `split_size_bytes` or hotter than
//! `split_load_per_sec` (writes plus reads) in two, at the leader's split hint or the midpoint.
//! Only shards with a leader report are considered (the stats come from it).

use super::View;
use crate::command::ShardStats;
use crate::operator::{OperatorKind, Step};
use crate::settings::Settings;
use ringkv_types::ShardId;

/// Whether a shard with `stats` is larger than `split_size_bytes` or hotter than
/// `split_load_per_sec`. The PD leader replicates a report whenever this changes
/// (`crate::leader_stats`), so the replicated stats always agree with the fresh ones on it.
pub(crate) fn wants_split(settings: &Settings, stats: &ShardStats) -> bool {
    let too_large = settings.split_size_bytes > 0 && stats.size_bytes > settings.split_size_bytes;
    let load = stats.writes_per_sec.saturating_add(stats.reads_per_sec);
    let too_hot = settings.split_load_per_sec > 0 && load > settings.split_load_per_sec;
    too_large || too_hot
}

pub(super) fn schedule(view: &mut View<'_>) {
    let state = view.state;
    let settings = &state.settings;
    for descriptor in &state.shard_map.shards {
        if !view.has_budget() {
            return;
        }
        let Some(status) = state.shards.get(&descriptor.id) else {
            continue;
        };
        if !wants_split(settings, &status.stats) {
            continue;
        }
        let Some(at) = super::split_position(&descriptor.arc, status.split_hint) else {
            continue;
        };
        let steps = vec![Step::Split {
            new_shard: ShardId(0),
            at,
        }];
        view.propose(descriptor.id, OperatorKind::Split, steps);
    }
}
