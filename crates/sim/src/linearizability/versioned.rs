//! Linearizability of one key's history with versions and TTLs: the model of ringkv's data API
//! (docs/data-model.md), checked with [`super::search`].
//!
//! What the model checks on top of values:
//! - **Versions.** A read returns the version of the write it observes (the version a put or a
//!   version compare-and-swap answered, when that write's answer is known). The versions of a
//!   key's writes strictly increase in linearization order: a write answering version `v`
//!   must come after every write and read that showed a version below `v`, and before any that
//!   showed one above it.
//! - **Compare-and-swap on the version** succeeds iff the key's version is `expected_version`
//!   (0: the key is absent); on failure it reports the current value and version, which must be
//!   the state's.
//! - **TTL expiry.** A put with a TTL sets a value that is present until its expiry instant and
//!   absent from it on. The expiry instant is `log time of the write + ttl`; the log time is the
//!   leader's clock when it proposed the write, which lies between the put's invocation and its
//!   return when the servers' clocks and the history's clock agree (one machine) to within
//!   `clock_slack`. So the checker knows the expiry only as an interval `[lo, hi]`: an
//!   operation, which takes effect at some instant of its own window `[invoked, returned]`, may
//!   see the key present iff it was invoked before `hi`, and absent (expired) iff it returned
//!   at or after `lo`. Once an operation saw it expired, it stays absent until the next write.
//!   (Narrowing `lo` when an operation sees the key present would add nothing: an operation
//!   ordered after it returns after its invocation anyway.)
//!
//! What it cannot decide (the checker accepts some histories a stricter one would refuse):
//! - The expiry instant within `[lo, hi]`, and the joint choice of instants: each operation's
//!   instant is checked against its own window, not against the instants chosen for the
//!   operations before it in the linearization (those are only known to be ordered).
//! - The versions of writes whose answer carries none (a delete, a value compare-and-swap) or
//!   never came (a timeout): such a write takes effect with an unknown version, and the first
//!   read that shows it fixes it; a later write's version must exceed only the largest version
//!   known so far.
//! - Clocks that disagree by more than `clock_slack` (a clock step between processes): that is
//!   a different contract (docs/data-model.md, "Leader changes") and not what this models.

use super::search::{Window, search};
use crate::checkers::linearizability::{KeyVerdict, STEP_BUDGET};
use crate::kv::{Key, Value};

/// A version: the log index of the key's last write in its shard.
pub type Version = u64;

/// An operation of the versioned data API on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionedOp {
    /// A read (returns [`VersionedResult::Read`], or [`VersionedResult::Value`] when it was
    /// made without asking for the version).
    Get(Key),
    /// A put without a TTL (clears any TTL), answering the new version.
    Put {
        /// Key.
        key: Key,
        /// Value written.
        value: Value,
    },
    /// A put with a time to live, in the history's time unit.
    PutTtl {
        /// Key.
        key: Key,
        /// Value written.
        value: Value,
        /// Time to live, in the unit of the history's timestamps.
        ttl: u64,
    },
    /// A delete.
    Delete(Key),
    /// Compare-and-swap on the value (`None`: absent).
    Cas {
        /// Key.
        key: Key,
        /// Expected current value.
        expected: Option<Value>,
        /// Value to write.
        new: Value,
    },
    /// Compare-and-swap on the version (0: absent).
    CasVersion {
        /// Key.
        key: Key,
        /// Expected current version.
        expected: Version,
        /// Value to write.
        new: Value,
    },
}

impl VersionedOp {
    /// The key the operation touches.
    pub fn key(&self) -> Key {
        match *self {
            VersionedOp::Get(key) | VersionedOp::Delete(key) => key,
            VersionedOp::Put { key, .. }
            | VersionedOp::PutTtl { key, .. }
            | VersionedOp::Cas { key, .. }
            | VersionedOp::CasVersion { key, .. } => key,
        }
    }
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionedResult {
    /// A read with versions: the value and its version, or absent.
    Read(Option<(Value, Version)>),
    /// A read without versions.
    Value(Option<Value>),
    /// A put: the key's new version.
    Written(Version),
    /// A delete.
    Deleted,
    /// A value compare-and-swap: whether it swapped and the value it found.
    Swapped {
        /// Whether it swapped.
        succeeded: bool,
        /// The value found (`None`: absent).
        previous: Option<Value>,
    },
    /// A version compare-and-swap.
    VersionSwapped {
        /// Whether it swapped.
        succeeded: bool,
        /// The value and version found (`None`: absent).
        previous: Option<(Value, Version)>,
        /// On success, the key's new version.
        index: Version,
    },
}

/// One operation of a versioned history.
#[derive(Clone, Debug)]
pub struct VersionedOperation {
    /// Client.
    pub client: u64,
    /// The operation.
    pub op: VersionedOp,
    /// When it was invoked.
    pub invoked_at: u64,
    /// When it returned and with what; `None` for a write whose outcome is unknown.
    pub completed: Option<(u64, VersionedResult)>,
}

/// The key's abstract state between operations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// The current value (`None`: absent).
    value: Option<Value>,
    /// Its version, when known (a write whose answer carried none leaves it unknown).
    version: Option<Version>,
    /// The largest version any linearized operation showed: the next known version exceeds it.
    floor: Version,
    /// For a value put with a TTL: bounds `[lo, hi]` on its expiry instant.
    expiry: Option<(u64, u64)>,
}

impl State {
    const ABSENT: State = State {
        value: None,
        version: None,
        floor: 0,
        expiry: None,
    };

    /// The state after a write of `value` (`None`: a delete) with `version` (if known).
    fn written(&self, value: Option<Value>, version: Option<Version>) -> Option<State> {
        if version.is_some_and(|version| version <= self.floor) {
            return None;
        }
        Some(State {
            value,
            version: value.and(version),
            floor: version.unwrap_or(self.floor),
            expiry: None,
        })
    }

    /// Whether the present value may have version `version`; if so, the state knowing it.
    fn shows_version(&self, version: Version) -> Option<State> {
        match self.version {
            Some(known) => (known == version).then(|| self.clone()),
            None => (version > self.floor).then(|| State {
                version: Some(version),
                floor: version,
                ..self.clone()
            }),
        }
    }
}

/// The definite states the key may be in for an operation with `window`: present (its expiry,
/// if any, not reached yet) and/or expired (absent).
fn views(state: &State, window: Window, out: &mut Vec<State>) {
    let Some((lo, hi)) = state.expiry.filter(|_| state.value.is_some()) else {
        out.push(state.clone());
        return;
    };
    if window.invoked_at < hi {
        out.push(state.clone());
    }
    if window.returned_at.is_none_or(|returned| returned >= lo) {
        out.push(State {
            value: None,
            version: None,
            expiry: None,
            ..state.clone()
        });
    }
}

/// The successors of a definite state `s` under `op` with `result`, onto `out`.
fn apply(
    s: &State,
    op: &VersionedOp,
    window: Window,
    result: Option<VersionedResult>,
    clock_slack: u64,
    out: &mut Vec<State>,
) {
    use VersionedResult as R;
    let mut push = |state: Option<State>| {
        if let Some(state) = state
            && !out.contains(&state)
        {
            out.push(state);
        }
    };
    match (*op, result) {
        (VersionedOp::Get(_), None) => push(Some(s.clone())),
        (VersionedOp::Get(_), Some(R::Value(value))) => push((s.value == value).then(|| s.clone())),
        (VersionedOp::Get(_), Some(R::Read(None))) => push(s.value.is_none().then(|| s.clone())),
        (VersionedOp::Get(_), Some(R::Read(Some((value, version))))) => {
            push(
                (s.value == Some(value))
                    .then(|| s.shows_version(version))
                    .flatten(),
            );
        }
        (VersionedOp::Put { value, .. }, Some(R::Written(version))) => {
            push(s.written(Some(value), Some(version)));
        }
        (VersionedOp::Put { value, .. }, None) => push(s.written(Some(value), None)),
        (VersionedOp::PutTtl { value, ttl, .. }, Some(R::Written(version))) => {
            push(s.written(Some(value), Some(version)).map(|state| State {
                expiry: Some(expiry_bounds(window, ttl, clock_slack)),
                ..state
            }));
        }
        (VersionedOp::PutTtl { value, ttl, .. }, None) => {
            push(s.written(Some(value), None).map(|state| State {
                expiry: Some(expiry_bounds(window, ttl, clock_slack)),
                ..state
            }));
        }
        (VersionedOp::Delete(_), Some(R::Deleted) | None) => push(s.written(None, None)),
        (
            VersionedOp::Cas { expected, new, .. },
            Some(R::Swapped {
                succeeded,
                previous,
            }),
        ) => {
            let consistent = previous == s.value && (s.value == expected) == succeeded;
            push(
                consistent
                    .then(|| {
                        if succeeded {
                            s.written(Some(new), None)
                        } else {
                            Some(s.clone())
                        }
                    })
                    .flatten(),
            );
        }
        (VersionedOp::Cas { expected, new, .. }, None) => {
            push(if s.value == expected {
                s.written(Some(new), None)
            } else {
                Some(s.clone())
            });
        }
        (
            VersionedOp::CasVersion { expected, new, .. },
            Some(R::VersionSwapped {
                succeeded,
                previous,
                index,
            }),
        ) => {
            // What the key held, as the answer reports it (the version of an absent key is 0).
            let found = match previous {
                None => s.value.is_none().then(|| s.clone()),
                Some((value, version)) => (s.value == Some(value))
                    .then(|| s.shows_version(version))
                    .flatten(),
            };
            let found_version = previous.map_or(0, |(_, version)| version);
            push(found.and_then(|found| {
                if (found_version == expected) != succeeded {
                    None
                } else if succeeded {
                    found.written(Some(new), Some(index))
                } else {
                    Some(found)
                }
            }));
        }
        (VersionedOp::CasVersion { expected, new, .. }, None) => {
            if s.value.is_none() {
                push(if expected == 0 {
                    s.written(Some(new), None)
                } else {
                    Some(s.clone())
                });
            } else {
                // Swapped: the version was `expected`. Not swapped: it was something else.
                if expected != 0 {
                    push(
                        s.shows_version(expected)
                            .and_then(|found| found.written(Some(new), None)),
                    );
                }
                if s.version.is_none_or(|version| version != expected) {
                    push(Some(s.clone()));
                }
            }
        }
        // A result of the wrong kind is impossible in every state.
        _ => {}
    }
}

/// Bounds on the expiry instant of a put with `ttl` whose log time lies in `window`.
fn expiry_bounds(window: Window, ttl: u64, clock_slack: u64) -> (u64, u64) {
    let lo = window
        .invoked_at
        .saturating_add(ttl)
        .saturating_sub(clock_slack);
    let hi = window.returned_at.map_or(u64::MAX, |returned| {
        returned.saturating_add(ttl).saturating_add(clock_slack)
    });
    (lo, hi)
}

/// Checks one key's operations (all on the same key, starting absent) within `budget` steps;
/// `clock_slack` is how far the servers' log times may be from the history's clock.
pub fn check_versioned_key_within(
    operations: &[&VersionedOperation],
    clock_slack: u64,
    budget: u64,
) -> KeyVerdict {
    let windows: Vec<Window> = operations
        .iter()
        .map(|operation| Window {
            invoked_at: operation.invoked_at,
            returned_at: operation.completed.map(|(at, _)| at),
        })
        .collect();
    let mut definite = Vec::new();
    search(&windows, State::ABSENT, budget, |state, op, out| {
        let operation = operations[op];
        definite.clear();
        views(state, windows[op], &mut definite);
        for view in &definite {
            apply(
                view,
                &operation.op,
                windows[op],
                operation.completed.map(|(_, result)| result),
                clock_slack,
                out,
            );
        }
    })
}

/// [`check_versioned_key_within`], raising the budget (8x, twice) while inconclusive.
pub fn check_versioned_key(operations: &[&VersionedOperation], clock_slack: u64) -> KeyVerdict {
    let mut budget = STEP_BUDGET;
    let mut verdict = check_versioned_key_within(operations, clock_slack, budget);
    for _ in 0..2 {
        if verdict != KeyVerdict::Inconclusive {
            break;
        }
        budget = budget.saturating_mul(8);
        verdict = check_versioned_key_within(operations, clock_slack, budget);
    }
    verdict
}

/// For a history that is not linearizable: the earliest time `t` such that the history as
/// seen at `t` (operations invoked by then; a write still running at `t` made unknown; a read
/// still running left out) is already not linearizable. The operations around `t` are the
/// ones to read to see why. `None` when no prefix is a violation (a linearizable or an
/// undecided history).
pub fn first_violation(operations: &[&VersionedOperation], clock_slack: u64) -> Option<u64> {
    let prefix = |at: u64| -> Vec<VersionedOperation> {
        operations
            .iter()
            .filter(|operation| operation.invoked_at <= at)
            .filter_map(|operation| match operation.completed {
                Some((returned, _)) if returned <= at => Some((*operation).clone()),
                _ if matches!(operation.op, VersionedOp::Get(_)) => None,
                _ => Some(VersionedOperation {
                    completed: None,
                    ..(*operation).clone()
                }),
            })
            .collect()
    };
    let violates = |at: u64| {
        let ops = prefix(at);
        check_versioned_key_within(&ops.iter().collect::<Vec<_>>(), clock_slack, STEP_BUDGET)
            == KeyVerdict::Violation
    };
    let mut times: Vec<u64> = operations
        .iter()
        .filter_map(|operation| operation.completed.map(|(at, _)| at))
        .collect();
    times.sort_unstable();
    // Violation is monotonic in the prefix: a longer prefix only adds constraints.
    let last = *times.last()?;
    if !violates(last) {
        return None;
    }
    let (mut lo, mut hi) = (0, times.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if violates(times[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(times[lo])
}

#[cfg(test)]
#[path = "versioned_test.rs"]
mod tests;
