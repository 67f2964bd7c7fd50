//! The driver's side of the request path: the caller of each request in the core, by the
//! [`RequestId`] it entered with; the core's answers go to them here.

use crate::core::replies::{Outcome, RequestId};
use ringkv_types::Response;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Callers waiting for the core's answer.
#[derive(Default)]
pub(super) struct Callers {
    next: u64,
    waiting: HashMap<RequestId, oneshot::Sender<Response>>,
}

impl Callers {
    /// Keeps `slot` under a new request id.
    pub(super) fn register(&mut self, slot: oneshot::Sender<Response>) -> RequestId {
        self.next += 1;
        let id = RequestId(self.next);
        self.waiting.insert(id, slot);
        id
    }

    /// Hands the core's answers to their callers (a caller that gave up is no error); a
    /// dropped request's slot is dropped, which its caller sees as no answer.
    pub(super) fn deliver(&mut self, replies: Vec<(RequestId, Outcome)>) {
        for (id, outcome) in replies {
            let Some(slot) = self.waiting.remove(&id) else {
                continue;
            };
            if let Outcome::Answer(response) = outcome {
                let _ = slot.send(response);
            }
        }
    }

    /// Callers still waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::WireError;

    #[test]
    fn each_answer_reaches_its_caller_once() {
        let mut callers = Callers::default();
        let (first, mut first_rx) = oneshot::channel();
        let (second, mut second_rx) = oneshot::channel();
        let a = callers.register(first);
        let b = callers.register(second);
        assert_ne!(a, b);
        callers.deliver(vec![
            (b, Outcome::Answer(Response::Error(WireError::Busy))),
            (a, Outcome::Dropped),
            // A second answer for the same id (or an unknown one) goes nowhere.
            (b, Outcome::Answer(Response::Error(WireError::Timeout))),
        ]);
        assert_eq!(
            second_rx.try_recv().unwrap(),
            Response::Error(WireError::Busy)
        );
        assert!(matches!(
            first_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(callers.len(), 0);
    }
}
