//! Wing & Gong's search for a linearization with Lowe's memoization (as in Porcupine),
//! generic over the model, for models where an operation may lead to more than one state: an
//! operation whose outcome is unknown, or one whose effect depends on a time the history only
//! bounds (a TTL's expiry), has several possible successors, and the search tries each before
//! it backtracks past the operation.
//!
//! Walk the events in time order; at a call, try to linearize that operation now (each
//! successor state in turn); at a return whose operation is not linearized yet, undo the last
//! choice and try its next successor. Operations whose return is unknown return "at infinity"
//! (after every known event, in invocation order).

use crate::checkers::linearizability::KeyVerdict;
use std::collections::HashSet;
use std::hash::Hash;

/// When one operation was invoked and when it returned (`None`: unknown, at infinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Invocation time.
    pub invoked_at: u64,
    /// Return time, if the operation returned.
    pub returned_at: Option<u64>,
}

/// A call or return in the doubly linked event list both searches walk (Wing & Gong).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub(crate) op: usize,
    pub(crate) is_call: bool,
    /// For a call: the node of its return event.
    pub(crate) matching: usize,
    pub(crate) prev: usize,
    pub(crate) next: usize,
}

/// A linearized call: where it was, the state before it, and the successors not tried yet.
struct Choice<S> {
    entry: usize,
    before: S,
    untried: Vec<S>,
}

/// Searches for a linearization of the operations with `windows`, starting from `initial`, in
/// at most `budget` steps. `successors(state, op, out)` pushes onto `out` every state the
/// operation `op` (an index into `windows`) may lead to from `state` given what it returned;
/// none when its result is impossible there.
pub fn search<S, F>(windows: &[Window], initial: S, budget: u64, mut successors: F) -> KeyVerdict
where
    S: Clone + Eq + Hash,
    F: FnMut(&S, usize, &mut Vec<S>),
{
    if windows.is_empty() {
        return KeyVerdict::Linearizable;
    }
    let count = windows.len();
    let mut timed: Vec<(u64, usize, bool)> = Vec::with_capacity(count * 2);
    for (i, window) in windows.iter().enumerate() {
        timed.push((window.invoked_at, i, true));
        let returned = window
            .returned_at
            .unwrap_or(u64::MAX - count as u64 + i as u64);
        timed.push((returned, i, false));
    }
    timed.sort_unstable();
    // Node 0 is the head sentinel; events are 1..=n; node n+1 is the tail sentinel.
    let n = timed.len();
    let mut events: Vec<Event> = Vec::with_capacity(n + 2);
    let sentinel = |prev, next| Event {
        op: usize::MAX,
        is_call: false,
        matching: 0,
        prev,
        next,
    };
    events.push(sentinel(0, 1));
    let mut return_of = vec![0usize; count];
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
    events.push(sentinel(n, n + 1));
    for node in 1..=n {
        if events[node].is_call {
            events[node].matching = return_of[events[node].op];
        }
    }
    let tail = n + 1;

    let words = count.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, S)> = HashSet::new();
    let mut stack: Vec<Choice<S>> = Vec::new();
    let mut state = initial;
    let mut entry = events[0].next;
    let mut steps = 0u64;

    while events[0].next != tail {
        steps += 1;
        if steps > budget {
            return KeyVerdict::Inconclusive;
        }
        let event = events[entry];
        if event.is_call {
            let mut candidates = Vec::new();
            successors(&state, event.op, &mut candidates);
            candidates.reverse();
            match take_new(&mut candidates, &mut linearized, &mut cache, event.op) {
                Some(next_state) => {
                    let before = std::mem::replace(&mut state, next_state);
                    stack.push(Choice {
                        entry,
                        before,
                        untried: candidates,
                    });
                    lift(&mut events, entry);
                    entry = events[0].next;
                }
                None => entry = event.next,
            }
        } else {
            // A return before its operation was linearized: undo the last choice, and try its
            // next successor if it has one.
            let Some(mut choice) = stack.pop() else {
                return KeyVerdict::Violation;
            };
            let op = events[choice.entry].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut events, choice.entry);
            state = choice.before.clone();
            match take_new(&mut choice.untried, &mut linearized, &mut cache, op) {
                Some(next_state) => {
                    state = next_state;
                    lift(&mut events, choice.entry);
                    stack.push(choice);
                    entry = events[0].next;
                }
                None => entry = events[choice.entry].next,
            }
        }
    }
    KeyVerdict::Linearizable
}

/// Pops candidates (kept reversed: the next one is last) until one gives a (linearized set,
/// state) pair not seen before; marks `op` linearized and returns that state. `None` (with
/// `op` unmarked) when every candidate was seen.
fn take_new<S: Clone + Eq + Hash>(
    candidates: &mut Vec<S>,
    linearized: &mut [u64],
    cache: &mut HashSet<(Vec<u64>, S)>,
    op: usize,
) -> Option<S> {
    linearized[op / 64] |= 1 << (op % 64);
    while let Some(candidate) = candidates.pop() {
        if cache.insert((linearized.to_vec(), candidate.clone())) {
            return Some(candidate);
        }
    }
    linearized[op / 64] &= !(1 << (op % 64));
    None
}

/// Takes a call and its return out of the doubly linked event list.
pub(crate) fn lift(events: &mut [Event], call: usize) {
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

/// Puts back what [`lift`] took out.
pub(crate) fn unlift(events: &mut [Event], call: usize) {
    let matching = events[call].matching;
    let Event { prev, next, .. } = events[matching];
    events[prev].next = matching;
    events[next].prev = matching;
    let Event { prev, next, .. } = events[call];
    events[prev].next = call;
    events[next].prev = call;
}
