//! Linearizability of the client history (Herlihy & Wing 1990), checked per key: operations on
//! different keys commute, so a history is linearizable iff each key's sub-history is
//! (linearizability is compositional, H&W §3.3). The search is Wing & Gong's, with Lowe's
//! memoization of (linearized set, state) as in Porcupine: walk the events in time order; at a
//! call, try to linearize that operation now; at a return whose operation is not linearized
//! yet, backtrack.
//!
//! Writes whose outcome is unknown (the client timed out) return "at infinity": they may take
//! effect at any point after their invocation, or never (linearized after everything).

use crate::history::Operation;
use crate::kv::{Op, OpResult, Value};
use std::collections::HashSet;

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

#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: index of its return event.
    matching: usize,
    prev: usize,
    next: usize,
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

/// Checks one key's operations like [`check_key`], in at most `budget` search steps.
pub fn check_key_within(operations: &[&Operation], budget: u64) -> KeyVerdict {
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
    let tail = n + 1;

    let words = operations.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut state: Option<Value> = None;
    let mut entry = events[0].next;
    let mut steps = 0u64;

    while events[0].next != tail {
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
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    lift(&mut events, entry);
                    entry = events[0].next;
                    advanced = true;
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
            unlift(&mut events, undo);
            entry = events[undo].next;
        }
    }
    KeyVerdict::Linearizable
}

fn lift(events: &mut [Event], call: usize) {
    let Event {
        prev,
        next,
        matching,
        ..
    } = events[call];
    events[prev].next = next;
    events[next].prev = prev;
    let Event { prev, next, .. } = events[matching];
    events[prev].next = next;
    events[next].prev = prev;
}

fn unlift(events: &mut [Event], call: usize) {
    let matching = events[call].matching;
    let Event { prev, next, .. } = events[matching];
    events[prev].next = matching;
    events[next].prev = matching;
    let Event { prev, next, .. } = events[call];
    events[prev].next = call;
    events[next].prev = call;
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
}
