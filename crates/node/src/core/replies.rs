//! The request path's output: client requests enter the core with a [`RequestId`] the driver
//! chose, and leave it as `(id, answer)` pairs the driver takes after each input and hands to
//! the caller it keeps under that id. No channel crosses the seam.

use ringkv_types::Response;

/// A client request's id, given by the driver when the request enters the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What becomes of a request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Its answer.
    Answer(Response),
    /// The core let it go without an answer (it was replaced); the driver drops the caller's
    /// slot, so the caller learns the node did not answer.
    Dropped,
}

/// Answers the core produced and the driver has not taken yet, in order.
#[derive(Debug, Default)]
pub struct Replies {
    out: Vec<(RequestId, Outcome)>,
}

impl Replies {
    /// No answers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `id` with `response`.
    pub fn send(&mut self, id: RequestId, response: Response) {
        self.out.push((id, Outcome::Answer(response)));
    }

    /// Lets `id` go unanswered.
    pub fn drop_request(&mut self, id: RequestId) {
        self.out.push((id, Outcome::Dropped));
    }

    /// Whether nothing waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// How many answers wait to be taken.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// The ids of the answers waiting from position `from` on (what a call answered, for a
    /// driver that notes something about each answer, like the simulator's read times).
    pub fn ids_from(&self, from: usize) -> impl Iterator<Item = RequestId> + '_ {
        self.out.iter().skip(from).map(|(id, _)| *id)
    }

    /// Takes every answer, in the order given.
    pub fn take(&mut self) -> Vec<(RequestId, Outcome)> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::WireError;

    #[test]
    fn answers_come_out_once_in_order() {
        let mut replies = Replies::new();
        replies.send(RequestId(2), Response::Error(WireError::Busy));
        replies.drop_request(RequestId(1));
        assert_eq!(
            replies.take(),
            vec![
                (
                    RequestId(2),
                    Outcome::Answer(Response::Error(WireError::Busy))
                ),
                (RequestId(1), Outcome::Dropped),
            ]
        );
        assert!(replies.is_empty());
    }
}
