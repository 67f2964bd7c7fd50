//! Linearizability of the client history (Herlihy & Wing 1990), checked per key: operations on
//! different keys commute, so a history is linearizable iff each key's sub-history is
//! (linearizability is compositional, H&W §3.3). The search is Wing & Gong's, with Lowe's
//! memoization of (linearized set, state) as in Porcupine: walk the events in time order; at a
//! call, try to linearize that operation now; at a return whose operation is not linearized
//! yet, backtrack.
//!
//! Writes whose outcome is unknown (the client timed out) return "at infinity": they may take
//! effect at any point after their invocation, or never (linearized after everything).
//!
//! Such pending writes are what makes the search expensive: each may or may not be linearized
//! before each later completed operation, so a key with twenty of them has millions of
//! (linearized set, state) pairs to visit before a read's return refutes a branch. A history
//! without some of its pending operations is a completion the definition allows (H&W §2: a
//! completion may drop pending invocations), so a linearization found without them is one of the
//! whole history. [`check_key_within`] therefore first searches without any pending operation,
//! then with only those whose written value some completed operation may have observed, and only
//! when both find none (the answer is then almost always a violation) searches the whole history;
//! only that last search may report a violation. That search stops once every completed
//! operation is linearized (the pending ones left go last), and its memo skips a pair whose
//! linearized set only adds pending operations to a visited one in the same state ([`Visited`]),
//! which decides a refused key with twenty-one pending writes in a few million steps.

use crate::history::Operation;
use crate::kv::{Op, OpResult, Value};
use crate::linearizability::search::{Event, lift, unlift};
use std::collections::{HashMap, HashSet};

/// Outcome of checking one key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Violation,
    /// The search hit its step budget without an answer.
    Inconclusive,
}

/// Steps of the search before giving up on one key (the first try; see [`check_key`]).
pub const STEP_BUDGET: u64 = 2_000_000;

/// The budget is multiplied by this factor on each retry of an inconclusive key.
const BUDGET_GROWTH: u64 = 8;

/// Retries of an inconclusive key with a larger budget before it stays inconclusive (the last
/// budget is `STEP_BUDGET * BUDGET_GROWTH^BUDGET_RETRIES`, 128 million steps).
const BUDGET_RETRIES: u32 = 2;

/// Applies `op` with observed `result` to `state`; `None` when the result is impossible there.
fn step(state: Option<Value>, op: &Op, result: Option<OpResult>) -> Option<Option<Value>> {
    match (*op, result) {
        (Op::Get(_), Some(OpResult::Value(value))) => (value == state).then_some(state),
        (Op::Get(_), _) => None,
        (Op::Put(_, value), _) => Some(Some(value)),
        (Op::Delete(_), _) => Some(None),
        (Op::Cas { expected, new, .. }, Some(OpResult::Swapped(true))) => {
            (state == expected).then_some(Some(new))
        }
        (Op::Cas { expected, .. }, Some(OpResult::Swapped(false))) => {
            (state != expected).then_some(state)
        }
        (Op::Cas { expected, new, .. }, _) => {
            Some(if state == expected { Some(new) } else { state })
        }
    }
}

/// Checks one key's operations (all on the same key), starting from an absent value, raising
/// the step budget while the verdict is inconclusive; `Inconclusive` only when even the largest
/// budget did not decide.
pub fn check_key(operations: &[&Operation]) -> KeyVerdict {
    let mut budget = STEP_BUDGET;
    let mut verdict = check_key_within(operations, budget);
    for _ in 0..BUDGET_RETRIES {
        if verdict != KeyVerdict::Inconclusive {
            break;
        }
        budget = budget.saturating_mul(BUDGET_GROWTH);
        verdict = check_key_within(operations, budget);
    }
    verdict
}

/// Checks one key's operations like [`check_key`], each search in at most `budget` steps:
/// first without the pending operations, then with those that may have been observed (see
/// [`observable_pending`]), then all of them. A linearization of a subset that only leaves out
/// pending operations is one of the whole history; a violation is only reported by the search
/// of the whole history.
pub fn check_key_within(operations: &[&Operation], budget: u64) -> KeyVerdict {
    let completed: Vec<&Operation> = operations
        .iter()
        .copied()
        .filter(|o| o.completed.is_some())
        .collect();
    if completed.len() == operations.len() {
        return search_key(operations, budget);
    }
    if search_key(&completed, budget) == KeyVerdict::Linearizable {
        return KeyVerdict::Linearizable;
    }
    let observable = observable_pending(operations);
    if observable.len() > completed.len()
        && observable.len() < operations.len()
        && search_key(&observable, budget) == KeyVerdict::Linearizable
    {
        return KeyVerdict::Linearizable;
    }
    search_key(operations, budget)
}

/// The value an operation leaves the key holding when it takes effect (a CAS: when it swaps).
fn written(op: &Op) -> Option<Option<Value>> {
    match *op {
        Op::Get(_) => None,
        Op::Put(_, value) | Op::Cas { new: value, .. } => Some(Some(value)),
        Op::Delete(_) => Some(None),
    }
}

/// The completed operations and the pending ones whose effect a completed read or successful
/// CAS may have observed: a pending write is kept when the value it writes was read or expected
/// by a kept operation, and a kept pending CAS makes its own expected value observed (it needs a
/// write of it to swap), to a fixpoint. A heuristic only: which pending operations are left out
/// decides how fast a linearization is found, never whether one found is sound.
fn observable_pending<'a>(operations: &[&'a Operation]) -> Vec<&'a Operation> {
    let mut observed: HashSet<Option<Value>> = HashSet::new();
    for operation in operations {
        match (operation.op, operation.completed.map(|c| c.1)) {
            (Op::Get(_), Some(OpResult::Value(value))) => {
                observed.insert(value);
            }
            (Op::Cas { expected, .. }, Some(OpResult::Swapped(true))) => {
                observed.insert(expected);
            }
            _ => {}
        }
    }
    let mut kept: Vec<bool> = operations.iter().map(|o| o.completed.is_some()).collect();
    loop {
        let mut grew = false;
        for (i, operation) in operations.iter().enumerate() {
            if kept[i] || !written(&operation.op).is_some_and(|w| observed.contains(&w)) {
                continue;
            }
            kept[i] = true;
            grew = true;
            if let Op::Cas { expected, .. } = operation.op {
                observed.insert(expected);
            }
        }
        if !grew {
            break;
        }
    }
    operations
        .iter()
        .zip(kept)
        .filter_map(|(o, keep)| keep.then_some(*o))
        .collect()
}

/// One Wing & Gong search over exactly `operations`, in at most `budget` steps.
fn search_key(operations: &[&Operation], budget: u64) -> KeyVerdict {
    if operations.is_empty() {
        return KeyVerdict::Linearizable;
    }
    // Events in time order; unknown returns go last, in invocation order.
    let mut timed: Vec<(u64, usize, bool)> = Vec::with_capacity(operations.len() * 2);
    for (i, operation) in operations.iter().enumerate() {
        timed.push((operation.invoked_at, i, true));
        let returned = operation
            .completed
            .map_or(u64::MAX - operations.len() as u64 + i as u64, |c| c.0);
        timed.push((returned, i, false));
    }
    timed.sort_unstable();
    // Node 0 is the head sentinel; events are 1..=n; node n+1 is the tail sentinel.
    let n = timed.len();
    let mut events: Vec<Event> = Vec::with_capacity(n + 2);
    events.push(Event {
        op: usize::MAX,
        is_call: false,
        matching: 0,
        prev: 0,
        next: 1,
    });
    let mut return_of = vec![0usize; operations.len()];
    for (position, &(_, op, is_call)) in timed.iter().enumerate() {
        let node = position + 1;
        events.push(Event {
            op,
            is_call,
            matching: 0,
            prev: node - 1,
            next: node + 1,
        });
        if !is_call {
            return_of[op] = node;
        }
    }
    events.push(Event {
        op: usize::MAX,
        is_call: false,
        matching: 0,
        prev: n,
        next: n + 1,
    });
    for node in 1..=n {
        if events[node].is_call {
            events[node].matching = return_of[events[node].op];
        }
    }
    let words = operations.len().div_ceil(64);
    let mut pending = vec![0u64; words];
    for (i, operation) in operations.iter().enumerate() {
        if operation.completed.is_none() {
            pending[i / 64] |= 1 << (i % 64);
        }
    }
    let mut unlinearized_completed = operations.iter().filter(|o| o.completed.is_some()).count();
    let mut linearized = vec![0u64; words];
    let mut cache = Visited::default();
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut state: Option<Value> = None;
    let mut entry = events[0].next;
    let mut steps = 0u64;

    // Pending operations left over once every completed one is linearized go last (or are
    // dropped: a completion may), so the search is done then.
    while unlinearized_completed > 0 {
        steps += 1;
        if steps > budget {
            return KeyVerdict::Inconclusive;
        }
        let event = events[entry];
        if event.is_call {
            let operation = operations[event.op];
            let result = operation.completed.map(|c| c.1);
            let mut advanced = false;
            if let Some(next_state) = step(state, &operation.op, result) {
                linearized[event.op / 64] |= 1 << (event.op % 64);
                if cache.insert(&linearized, &pending, next_state) {
                    stack.push((entry, state));
                    state = next_state;
                    lift(&mut events, entry);
                    entry = events[0].next;
                    advanced = true;
                    unlinearized_completed -= usize::from(operation.completed.is_some());
                } else {
                    linearized[event.op / 64] &= !(1 << (event.op % 64));
                }
            }
            if !advanced {
                entry = event.next;
            }
        } else {
            // A return before its operation was linearized: undo the last choice.
            let Some((undo, previous_state)) = stack.pop() else {
                return KeyVerdict::Violation;
            };
            state = previous_state;
            let op = events[undo].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlinearized_completed += usize::from(operations[op].completed.is_some());
            unlift(&mut events, undo);
            entry = events[undo].next;
        }
    }
    KeyVerdict::Linearizable
}

/// The search's memo: the (linearized set, state) pairs visited, where a pair is also skipped
/// when a visited one has the same state and linearized set except for fewer pending
/// operations. That is complete: the pending operations are never forced (their returns are at
/// infinity) and never refused (a pending write or CAS applies in any state), so whatever
/// order of the remaining operations completes from the larger set also completes from the
/// smaller one, with the extra pending operations placed last. Kept per (completed part, state)
/// as the minimal pending parts seen.
#[derive(Default)]
struct Visited {
    minimal: HashMap<VisitedKey, Vec<Vec<u64>>>,
}

/// The completed operations linearized (bits) and the state.
type VisitedKey = (Vec<u64>, Option<Value>);

impl Visited {
    /// Records a visit of `linearized` (bits of operations) in `state`; false when it, or a
    /// pair that covers it, was visited before.
    fn insert(&mut self, linearized: &[u64], pending: &[u64], state: Option<Value>) -> bool {
        let completed_part: Vec<u64> = linearized
            .iter()
            .zip(pending)
            .map(|(l, p)| l & !p)
            .collect();
        let pending_part: Vec<u64> = linearized.iter().zip(pending).map(|(l, p)| l & p).collect();
        let seen = self.minimal.entry((completed_part, state)).or_default();
        let subset =
            |small: &[u64], large: &[u64]| small.iter().zip(large).all(|(s, l)| s & !l == 0);
        if seen.iter().any(|earlier| subset(earlier, &pending_part)) {
            return false;
        }
        seen.retain(|later| !subset(&pending_part, later));
        seen.push(pending_part);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::ShardId;

    fn op(op: Op, invoked_at: u64, completed: Option<(u64, OpResult)>) -> Operation {
        Operation {
            client: 0,
            group: ShardId(1),
            op,
            invoked_at,
            completed,
            discarded: false,
        }
    }

    fn check(ops: &[Operation]) -> KeyVerdict {
        check_key_within(&ops.iter().collect::<Vec<_>>(), STEP_BUDGET)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = [
            op(Op::Put(0, 1), 1, Some((2, OpResult::Done))),
            op(Op::Get(0), 3, Some((4, OpResult::Value(Some(1))))),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(1),
                    new: 2,
                },
                5,
                Some((6, OpResult::Swapped(true))),
            ),
            op(Op::Get(0), 7, Some((8, OpResult::Value(Some(2))))),
        ];
        assert_eq!(check(&ops), KeyVerdict::Linearizable);
    }

    #[test]
    fn stale_read_after_write_completed_is_a_violation() {
        let ops = [
            op(Op::Put(0, 1), 1, Some((2, OpResult::Done))),
            op(Op::Put(0, 2), 3, Some((4, OpResult::Done))),
            op(Op::Get(0), 5, Some((6, OpResult::Value(Some(1))))),
        ];
        assert_eq!(check(&ops), KeyVerdict::Violation);
    }

    #[test]
    fn concurrent_operations_may_reorder() {
        // The read overlaps the second write, so it may see either value.
        let ops = [
            op(Op::Put(0, 1), 1, Some((2, OpResult::Done))),
            op(Op::Put(0, 2), 3, Some((6, OpResult::Done))),
            op(Op::Get(0), 4, Some((5, OpResult::Value(Some(1))))),
        ];
        assert_eq!(check(&ops), KeyVerdict::Linearizable);
    }

    #[test]
    fn unknown_write_may_or_may_not_take_effect() {
        let took_effect = [
            op(Op::Put(0, 1), 1, None),
            op(Op::Get(0), 3, Some((4, OpResult::Value(Some(1))))),
        ];
        assert_eq!(check(&took_effect), KeyVerdict::Linearizable);
        let did_not = [
            op(Op::Put(0, 1), 1, None),
            op(Op::Get(0), 3, Some((4, OpResult::Value(None)))),
        ];
        assert_eq!(check(&did_not), KeyVerdict::Linearizable);
        // But once observed, it cannot be un-observed.
        let flicker = [
            op(Op::Put(0, 1), 1, None),
            op(Op::Get(0), 3, Some((4, OpResult::Value(Some(1))))),
            op(Op::Get(0), 5, Some((6, OpResult::Value(None)))),
        ];
        assert_eq!(check(&flicker), KeyVerdict::Violation);
    }

    #[test]
    fn a_small_budget_is_inconclusive_and_a_larger_one_decides() {
        let ops = [
            op(Op::Put(0, 1), 1, Some((4, OpResult::Done))),
            op(Op::Put(0, 2), 2, Some((5, OpResult::Done))),
            op(Op::Get(0), 3, Some((6, OpResult::Value(Some(1))))),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(check_key_within(&refs, 1), KeyVerdict::Inconclusive);
        assert_eq!(check_key(&refs), KeyVerdict::Linearizable);
    }

    #[test]
    fn failed_cas_must_see_a_different_value() {
        let ops = [
            op(Op::Put(0, 1), 1, Some((2, OpResult::Done))),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(1),
                    new: 5,
                },
                3,
                Some((4, OpResult::Swapped(false))),
            ),
        ];
        assert_eq!(check(&ops), KeyVerdict::Violation);
    }
    /// The key of seed 21580 (group s2 key 0) that the whole-history search could not decide
    /// in 128 million steps: 21 writes that never returned, then a read of the value written
    /// before all of them.
    fn seed_21580_key() -> Vec<Operation> {
        vec![
            op(Op::Delete(0), 89, None),
            op(Op::Put(0, 165), 166, Some((169, OpResult::Done))),
            op(Op::Get(0), 168, Some((172, OpResult::Value(Some(165))))),
            op(Op::Get(0), 175, Some((176, OpResult::Value(Some(165))))),
            op(Op::Get(0), 181, Some((182, OpResult::Value(Some(165))))),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(165),
                    new: 188,
                },
                189,
                Some((191, OpResult::Swapped(true))),
            ),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(165),
                    new: 192,
                },
                193,
                Some((197, OpResult::Swapped(false))),
            ),
            op(Op::Get(0), 202, Some((208, OpResult::Value(Some(188))))),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(203),
                    new: 206,
                },
                207,
                Some((209, OpResult::Swapped(false))),
            ),
            op(Op::Put(0, 210), 211, Some((216, OpResult::Done))),
            op(Op::Get(0), 215, Some((217, OpResult::Value(Some(210))))),
            op(Op::Put(0, 224), 225, None),
            op(Op::Put(0, 233), 234, None),
            op(Op::Put(0, 237), 238, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(241),
                    new: 244,
                },
                245,
                None,
            ),
            op(Op::Put(0, 258), 259, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(279),
                    new: 283,
                },
                284,
                None,
            ),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(279),
                    new: 289,
                },
                290,
                None,
            ),
            op(Op::Put(0, 348), 349, None),
            op(Op::Put(0, 350), 351, None),
            op(Op::Put(0, 366), 367, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(366),
                    new: 375,
                },
                376,
                None,
            ),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(366),
                    new: 380,
                },
                381,
                None,
            ),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(366),
                    new: 395,
                },
                396,
                None,
            ),
            op(Op::Put(0, 400), 401, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(411),
                    new: 422,
                },
                423,
                None,
            ),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(411),
                    new: 513,
                },
                514,
                None,
            ),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(517),
                    new: 532,
                },
                533,
                None,
            ),
            op(Op::Put(0, 559), 560, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(559),
                    new: 564,
                },
                565,
                None,
            ),
            op(Op::Delete(0), 567, None),
            op(Op::Put(0, 571), 572, Some((602, OpResult::Done))),
            op(Op::Put(0, 578), 579, Some((601, OpResult::Done))),
            op(Op::Get(0), 581, Some((588, OpResult::Value(Some(210))))),
        ]
    }

    #[test]
    fn many_pending_writes_nobody_observed_are_decided_quickly() {
        let ops = seed_21580_key();
        let refs: Vec<&Operation> = ops.iter().collect();
        // The search without the pending writes decides it in a few steps...
        assert_eq!(check_key_within(&refs, 100), KeyVerdict::Linearizable);
        // ...and so does the search of the whole history, which skips a linearized set that
        // only adds pending writes to one visited in the same state.
        assert_eq!(search_key(&refs, 16_000_000), KeyVerdict::Linearizable);
    }

    #[test]
    fn a_violation_behind_many_pending_writes_is_decided() {
        // Seed 21580's key with a last read of 165, which the completed CAS and put
        // overwrote and none of the 21 pending writes wrote again: only the search of the
        // whole history can refuse it, and it must not give up.
        let mut ops = seed_21580_key();
        let last = ops.len() - 1;
        ops[last].completed = Some((588, OpResult::Value(Some(165))));
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(check_key(&refs), KeyVerdict::Violation);
        // A read of 564 needs the pending put of 559 and then the pending CAS from 559.
        ops[last].completed = Some((588, OpResult::Value(Some(564))));
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(check_key(&refs), KeyVerdict::Linearizable);
        // A read of 532 needs a write of 517, which nobody made.
        ops[last].completed = Some((588, OpResult::Value(Some(532))));
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(check_key(&refs), KeyVerdict::Violation);
    }

    #[test]
    fn a_stale_read_behind_pending_writes_is_still_refused() {
        // The shape of seed 21580 with six of its pending writes, and a last read of 165,
        // which the completed CAS and put overwrote and no pending write wrote again.
        let mut ops: Vec<Operation> = seed_21580_key()
            .into_iter()
            .filter(|o| o.completed.is_some() || (225..=290).contains(&o.invoked_at))
            .collect();
        let last = ops.len() - 1;
        ops[last].completed = Some((588, OpResult::Value(Some(165))));
        assert_eq!(check(&ops), KeyVerdict::Violation);
        // A read of what one of the pending writes wrote is fine.
        ops[last].completed = Some((588, OpResult::Value(Some(258))));
        assert_eq!(check(&ops), KeyVerdict::Linearizable);
    }

    #[test]
    fn a_pending_write_of_a_repeated_value_cannot_be_observed_twice() {
        // Values are not unique: the pending put of 1 explains the first read of 1, but then
        // nothing writes 2 again for the second read.
        let ops = [
            op(Op::Put(0, 1), 1, Some((2, OpResult::Done))),
            op(Op::Put(0, 2), 3, Some((4, OpResult::Done))),
            op(Op::Put(0, 1), 5, None),
            op(Op::Get(0), 6, Some((7, OpResult::Value(Some(1))))),
            op(Op::Get(0), 8, Some((9, OpResult::Value(Some(2))))),
        ];
        assert_eq!(check(&ops), KeyVerdict::Violation);
    }

    #[test]
    fn a_read_may_observe_a_chain_of_pending_writes() {
        // The read of 6 needs the pending CAS, which needs the pending put of 5; twenty pending
        // puts nobody read are left out of the search that finds it.
        let mut ops = vec![
            op(Op::Put(0, 5), 1, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(5),
                    new: 6,
                },
                2,
                None,
            ),
        ];
        for i in 0..20 {
            ops.push(op(Op::Put(0, 100 + i), 3 + i, None));
        }
        ops.push(op(Op::Get(0), 30, Some((31, OpResult::Value(Some(6))))));
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(observable_pending(&refs).len(), 3);
        assert_eq!(check_key_within(&refs, 1_000), KeyVerdict::Linearizable);
        // Without the put of 5 the CAS cannot swap: refused.
        ops.remove(0);
        ops.truncate(ops.len() - 1 - 14);
        ops.push(op(Op::Get(0), 30, Some((31, OpResult::Value(Some(6))))));
        assert_eq!(check(&ops), KeyVerdict::Violation);
    }

    #[test]
    fn a_failed_cas_may_observe_a_pending_write() {
        // The CAS expected 1 and failed: only the pending put of 2 can explain it.
        let mut ops = vec![
            op(Op::Put(0, 1), 1, Some((2, OpResult::Done))),
            op(Op::Put(0, 2), 3, None),
            op(
                Op::Cas {
                    key: 0,
                    expected: Some(1),
                    new: 9,
                },
                4,
                Some((5, OpResult::Swapped(false))),
            ),
        ];
        assert_eq!(check(&ops), KeyVerdict::Linearizable);
        ops.remove(1);
        assert_eq!(check(&ops), KeyVerdict::Violation);
    }
}
