//! What committed entries mean to a group's state machine, decided with no I/O: the entries
//! of one Ready become apply steps (runs of ordinary entries, cut at session expiries and
//! splits, which apply on their own), and a run becomes the store commands, configuration,
//! descriptor and PD commands to apply in one atomic batch. The driver performs the writes
//! and answers the callers from the plan.

use super::machine::MachineKind;
use crate::log_command::LogCommand;
use ringkv_storage::Command;
use ringkv_types::raft::{ConfState, Entry, EntryPayload};
use ringkv_types::{Epoch, LogIndex, ShardDescriptor, ShardId, Term};
use tracing::warn;

/// A decoded split command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// The epoch the leader proposed against.
    pub epoch: Epoch,
    /// The new shard's id.
    pub new_shard: ShardId,
    /// Where the new shard starts.
    pub at: u64,
    /// Whether the new shard's log starts at the split entry
    /// ([`LogCommand::SplitFromEntry`]); else at index 5 (the first format, [`LogCommand::Split`]).
    pub from_entry: bool,
}

impl Split {
    /// The split `command` asks for, in either format; `None` for any other command.
    pub fn of(command: &LogCommand) -> Option<Split> {
        let (epoch, new_shard, at, from_entry) = match *command {
            LogCommand::Split {
                epoch,
                new_shard,
                at,
            } => (epoch, new_shard, at, false),
            LogCommand::SplitFromEntry {
                epoch,
                new_shard,
                at,
            } => (epoch, new_shard, at, true),
            _ => return None,
        };
        Some(Split {
            epoch,
            new_shard,
            at,
            from_entry,
        })
    }
}

/// One step of applying a Ready's committed entries, in log order.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Ordinary entries, applied in one store batch ([`plan_run`]).
    Run(Vec<Entry>),
    /// A session expiry pass (data shards).
    Expiry {
        /// The entry's index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// Log time of the pass.
        now_ms: u64,
        /// The idle limit.
        idle_ms: u64,
    },
    /// A split (data shards).
    Split {
        /// The entry's index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The command.
        split: Split,
    },
}

/// Cuts committed `entries` of a `kind` machine into steps. Only data shards have expiry and
/// split commands; on group 0 such payloads stay in runs (and are skipped as misplaced).
pub fn steps(kind: MachineKind, entries: Vec<Entry>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut run = Vec::new();
    for entry in entries {
        let special = match &entry.payload {
            EntryPayload::Normal(data) if kind == MachineKind::Data => special_command(data),
            _ => None,
        };
        let step = match special {
            Some(LogCommand::ExpireSessions { now_ms, idle_ms }) => Step::Expiry {
                index: entry.index,
                term: entry.term,
                now_ms,
                idle_ms,
            },
            Some(command) if let Some(split) = Split::of(&command) => Step::Split {
                index: entry.index,
                term: entry.term,
                split,
            },
            _ => {
                run.push(entry);
                continue;
            }
        };
        if !run.is_empty() {
            steps.push(Step::Run(std::mem::take(&mut run)));
        }
        steps.push(step);
    }
    if !run.is_empty() {
        steps.push(Step::Run(run));
    }
    steps
}

/// An expiry or split command in `data`, cheaply ruled out by its first byte first.
fn special_command(data: &[u8]) -> Option<LogCommand> {
    if !LogCommand::may_be_expiry(data) && !LogCommand::may_be_split(data) {
        return None;
    }
    match LogCommand::decode(data) {
        Ok(
            command @ (LogCommand::ExpireSessions { .. }
            | LogCommand::Split { .. }
            | LogCommand::SplitFromEntry { .. }),
        ) => Some(command),
        _ => None,
    }
}

/// What one run of ordinary entries applies, in one atomic store batch.
#[derive(Debug, Default)]
pub struct RunPlan {
    /// Index and term of the run's last entry: the new applied state.
    pub last: (LogIndex, Term),
    /// Store commands (data shards), in log order.
    pub commands: Vec<Command>,
    /// Each command's log time.
    pub stamps: Vec<u64>,
    /// Each command's entry.
    pub owners: Vec<(LogIndex, Term)>,
    /// Writes naming keys outside the shard's arc at their index: skipped, answered
    /// `KeyNotInShard`.
    pub outside: Vec<(LogIndex, Term)>,
    /// The last configuration in the run.
    pub conf: Option<ConfState>,
    /// Every configuration entry of the run.
    pub conf_entries: Vec<(LogIndex, Term)>,
    /// The descriptor after the run's configuration entries.
    pub descriptor: Option<ShardDescriptor>,
    /// PD commands (group 0).
    pub pd_entries: Vec<(LogIndex, Term, ringkv_pd::Command)>,
    /// The largest log time of the applied writes (0 for none).
    pub max_stamp_ms: u64,
    /// Whether an applied write carries a session.
    pub has_session: bool,
}

/// A committed entry this node cannot decode: written by a newer ringkv (a command this
/// version does not know) or damaged. Skipping it would make this replica diverge from replicas
/// that apply it, so the node must stop instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// The entry's shard.
    pub shard: ShardId,
    /// The entry's index.
    pub index: LogIndex,
    /// The decoder's message.
    pub error: String,
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "committed entry {} of shard {} cannot be decoded ({}): it was written by a newer \
             ringkv or is damaged; this node stops rather than skip it (its replica would \
             diverge). Run the same ringkv version on every node, then restart this one",
            self.index, self.shard, self.error
        )
    }
}

/// Decodes a run of ordinary committed entries of `shard` (a `kind` machine whose descriptor
/// is `current`) into what to apply. `Ok(None)` for an empty run. Every replica decides alike:
/// misplaced commands (a data command in the PD group, or the reverse) are skipped by all; an
/// entry this version cannot decode is an error, never skipped (a newer replica applies it).
pub fn plan_run(
    kind: MachineKind,
    shard: ShardId,
    current: &ShardDescriptor,
    entries: Vec<Entry>,
) -> Result<Option<RunPlan>, Undecodable> {
    let Some(last) = entries.last().map(|e| (e.index, e.term)) else {
        return Ok(None);
    };
    let mut plan = RunPlan {
        last,
        ..RunPlan::default()
    };
    for entry in entries {
        match entry.payload {
            EntryPayload::Noop => {}
            EntryPayload::Config(entry_conf) => {
                // The descriptor follows the configuration, deterministically on every replica
                // (thesis §4.1: the entry itself is the change).
                let next = plan
                    .descriptor
                    .as_ref()
                    .unwrap_or(current)
                    .with_conf(&entry_conf);
                plan.descriptor = Some(next);
                plan.conf_entries.push((entry.index, entry.term));
                plan.conf = Some(entry_conf);
            }
            EntryPayload::Normal(data) => {
                match LogCommand::decode(&data).map(LogCommand::into_kv) {
                    Ok(Ok((stamp, command))) if kind == MachineKind::Data => {
                        // Checked again at apply: a write proposed before a split but applied
                        // after it may name keys the shard no longer owns. Every replica has
                        // the same descriptor at this index, so all skip it alike.
                        let arc = plan.descriptor.as_ref().unwrap_or(current).arc;
                        if command.operations.iter().all(|operation| {
                            arc.contains(ringkv_types::ring::position(operation.key()))
                        }) {
                            plan.max_stamp_ms = plan.max_stamp_ms.max(stamp);
                            plan.has_session |= command.session.is_some();
                            plan.commands.push(command);
                            plan.stamps.push(stamp);
                            plan.owners.push((entry.index, entry.term));
                        } else {
                            plan.outside.push((entry.index, entry.term));
                        }
                    }
                    Ok(Err(LogCommand::Pd(command))) if kind == MachineKind::Pd => {
                        plan.pd_entries.push((entry.index, entry.term, command));
                    }
                    // Every replica skips the same entries, so the state machines agree.
                    Ok(_) => warn!(%shard, index = %entry.index, "skipping a misplaced command"),
                    Err(error) => {
                        return Err(Undecodable {
                            shard,
                            index: entry.index,
                            error: error.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_storage::Operation;
    use ringkv_types::ring::Arc;

    fn entry(index: u64, command: &LogCommand) -> Entry {
        Entry {
            term: Term(2),
            index: LogIndex(index),
            payload: EntryPayload::Normal(command.encode().unwrap()),
        }
    }

    fn put(key: &'static [u8]) -> LogCommand {
        LogCommand::KvAt {
            now_ms: 7,
            command: Command {
                session: None,
                operations: vec![Operation::Put {
                    key: Bytes::from_static(key),
                    value: Bytes::from_static(b"v"),
                }],
            },
        }
    }

    fn descriptor(arc: Arc) -> ShardDescriptor {
        ShardDescriptor {
            id: ShardId(3),
            arc,
            epoch: Epoch::default(),
            replicas: Vec::new(),
        }
    }

    #[test]
    fn runs_are_cut_at_expiries_and_splits_of_data_shards_only() {
        let split = LogCommand::Split {
            epoch: Epoch::default(),
            new_shard: ShardId(9),
            at: 1 << 40,
        };
        let expire = LogCommand::ExpireSessions {
            now_ms: 5,
            idle_ms: 60_000,
        };
        let entries = vec![
            entry(6, &put(b"a")),
            entry(7, &split),
            entry(8, &put(b"b")),
            entry(9, &put(b"c")),
            entry(10, &expire),
        ];
        let steps_data = steps(MachineKind::Data, entries.clone());
        assert_eq!(steps_data.len(), 4);
        assert!(matches!(&steps_data[0], Step::Run(run) if run.len() == 1));
        assert!(matches!(
            steps_data[1],
            Step::Split {
                index: LogIndex(7),
                ..
            }
        ));
        assert!(matches!(&steps_data[2], Step::Run(run) if run.len() == 2));
        assert!(matches!(
            steps_data[3],
            Step::Expiry {
                index: LogIndex(10),
                now_ms: 5,
                idle_ms: 60_000,
                ..
            }
        ));
        // Group 0 has no splits: one run, whose misplaced commands every replica skips.
        let steps_pd = steps(MachineKind::Pd, entries.clone());
        assert!(matches!(&steps_pd[..], [Step::Run(run)] if run.len() == 5));
        let plan = plan_run(
            MachineKind::Pd,
            ShardId::PD,
            &descriptor(Arc::FULL),
            entries,
        )
        .unwrap()
        .unwrap();
        assert!(plan.commands.is_empty() && plan.pd_entries.is_empty());
        assert_eq!(plan.last, (LogIndex(10), Term(2)));
    }

    #[test]
    fn both_split_formats_become_split_steps_that_say_where_the_new_log_starts() {
        let (epoch, new_shard, at) = (Epoch::default(), ShardId(9), 1 << 40);
        let old = LogCommand::Split {
            epoch,
            new_shard,
            at,
        };
        let new = LogCommand::SplitFromEntry {
            epoch,
            new_shard,
            at,
        };
        let steps_data = steps(
            MachineKind::Data,
            vec![entry(7, &old), entry(8, &put(b"a")), entry(9, &new)],
        );
        let from_entry: Vec<(LogIndex, bool)> = steps_data
            .iter()
            .filter_map(|step| match step {
                Step::Split { index, split, .. } => {
                    assert_eq!(
                        (split.epoch, split.new_shard, split.at),
                        (epoch, new_shard, at)
                    );
                    Some((*index, split.from_entry))
                }
                _ => None,
            })
            .collect();
        assert_eq!(from_entry, [(LogIndex(7), false), (LogIndex(9), true)]);
        assert_eq!(steps_data.len(), 3);
    }

    #[test]
    fn writes_outside_the_arc_are_skipped_alike() {
        let inside_key = b"a";
        let position = ringkv_types::ring::position(inside_key);
        // An arc holding exactly `a`'s position.
        let arc = Arc {
            start: position,
            end: position.checked_add(1),
        };
        let plan = plan_run(
            MachineKind::Data,
            ShardId(3),
            &descriptor(arc),
            vec![entry(6, &put(b"a")), entry(7, &put(b"zzz-elsewhere"))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.owners, [(LogIndex(6), Term(2))]);
        assert_eq!(plan.outside, [(LogIndex(7), Term(2))]);
        assert_eq!(plan.max_stamp_ms, 7);
        assert!(!plan.has_session);
        assert!(
            plan_run(MachineKind::Data, ShardId(3), &descriptor(arc), Vec::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_undecodable_entry_stops_the_run_instead_of_being_skipped() {
        // A command tag this version does not know (as a newer node would write).
        let unknown = Entry {
            index: LogIndex(8),
            term: Term(2),
            payload: EntryPayload::Normal(vec![0xEE, 1, 2, 3].into()),
        };
        let error = plan_run(
            MachineKind::Data,
            ShardId(3),
            &descriptor(Arc::FULL),
            vec![entry(7, &put(b"a")), unknown],
        )
        .unwrap_err();
        assert_eq!((error.shard, error.index), (ShardId(3), LogIndex(8)));
        assert!(error.to_string().contains("same ringkv version"), "{error}");
    }
}
