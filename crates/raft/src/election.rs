//! Elections: pre-vote, vote, and counting (Raft §5.2, §5.4.1; thesis §9.6 pre-vote, §3.10
//! leader transfer).

use crate::error::Result;
use crate::quorum::{VoteResult, vote_result};
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use ringkv_types::NodeId;
use ringkv_types::raft::{Message, MessageBody};

/// How an election starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    /// Ask first whether we could win, without bumping the term.
    PreVote,
    /// A real election.
    Election,
    /// A real election asked for by the leader: voters drop their leader stickiness.
    Transfer,
}

impl<S: Storage> Raft<S> {
    /// Starts an election from a timeout: a pre-vote round first when pre-vote is on.
    pub(crate) fn campaign(&mut self, transfer: bool) -> Result<()> {
        let kind = if transfer {
            Campaign::Transfer
        } else if self.config.pre_vote {
            Campaign::PreVote
        } else {
            Campaign::Election
        };
        self.campaign_as(kind)
    }

    fn campaign_as(&mut self, kind: Campaign) -> Result<()> {
        if !self.promotable() {
            return Ok(());
        }
        let campaign_term = if kind == Campaign::PreVote {
            self.become_pre_candidate();
            self.term.next()
        } else {
            self.become_candidate();
            self.term
        };
        // Vote for ourselves first: a single-voter group wins at once.
        if self.record_vote(self.id, true)? {
            return Ok(());
        }
        let last_index = self.log.last_index()?;
        let last_term = self.log.last_term()?;
        let voters = self.conf.voters.clone();
        for voter in voters {
            if voter == self.id {
                continue;
            }
            let body = match kind {
                Campaign::PreVote => MessageBody::PreVote {
                    last_index,
                    last_term,
                },
                Campaign::Election => MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: false,
                },
                Campaign::Transfer => MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: true,
                },
            };
            self.send(voter, campaign_term, body);
        }
        Ok(())
    }

    /// Records a vote and acts on the outcome. Returns whether the election was decided.
    fn record_vote(&mut self, from: NodeId, granted: bool) -> Result<bool> {
        if !self.conf.is_voter(from) {
            return Ok(false);
        }
        self.votes.entry(from).or_insert(granted);
        let granted_count = self.votes.values().filter(|&&g| g).count();
        let rejected_count = self.votes.len() - granted_count;
        match vote_result(self.conf.voters.len(), granted_count, rejected_count) {
            VoteResult::Pending => Ok(false),
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    // The pre-vote says we could win: now the real election, bumping the term.
                    self.campaign_as(Campaign::Election)?;
                } else {
                    self.become_leader()?;
                }
                Ok(true)
            }
            VoteResult::Lost => {
                self.become_follower(self.term, NodeId::NONE);
                Ok(true)
            }
        }
    }

    /// Handles `PreVote` and `Vote` at a term at least ours (the caller already moved to a
    /// higher term for a real vote).
    pub(crate) fn handle_vote_request(&mut self, message: Message) -> Result<()> {
        let (last_index, last_term, pre_vote) = match message.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => (last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => (last_index, last_term, false),
            _ => return Ok(()),
        };
        // Raft §5.2: one vote per term. A pre-vote for a future term commits to nothing.
        let can_vote = self.vote == message.from
            || (self.vote == NodeId::NONE && self.leader == NodeId::NONE)
            || (pre_vote && message.term > self.term);
        // The planted bug lets a follower vote again in a term it already voted in (a
        // candidate keeps its vote for itself: the core asserts that separately).
        #[cfg(feature = "planted-bugs")]
        let can_vote = can_vote
            || (!pre_vote
                && self.role == Role::Follower
                && self.config.planted_bugs.vote_twice_in_a_term);
        let up_to_date = self.log.is_up_to_date(last_index, last_term)?;
        #[cfg(feature = "planted-bugs")]
        let up_to_date = up_to_date || self.config.planted_bugs.vote_without_log_check;
        let mut grant = can_vote && up_to_date;
        if pre_vote && grant && self.role == Role::PreCandidate {
            // Two replicas that timed out within one message delay of each other would grant
            // each other's pre-votes, both campaign in the same term, each vote for itself and
            // split the vote: nobody wins until another randomized timeout (0.5 to 1 s in
            // ringkvd). Break the tie instead: the replica with the more up-to-date log, or with
            // an equal log the higher tie rank, goes on; the other grants and gives way (a
            // fresh election timer, as a follower of no leader). Pre-votes decide nothing about
            // safety: the real vote still checks terms, votes and logs as before.
            let ours = (self.log.last_term()?, self.log.last_index()?);
            let theirs = (last_term, last_index);
            let campaign_term = self.term.next().get();
            let our_rank = tie_rank(self.group.get(), campaign_term, self.id.get());
            let their_rank = tie_rank(self.group.get(), message.term.get(), message.from.get());
            if theirs == ours && (their_rank, message.from) < (our_rank, self.id) {
                grant = false;
            } else {
                self.become_follower(self.term, NodeId::NONE);
            }
        }
        if pre_vote {
            let term = if grant { message.term } else { self.term };
            self.send(
                message.from,
                term,
                MessageBody::PreVoteResponse { reject: !grant },
            );
        } else {
            if grant {
                self.vote = message.from;
                self.election_elapsed = 0;
            }
            self.send(
                message.from,
                self.term,
                MessageBody::VoteResponse { reject: !grant },
            );
        }
        Ok(())
    }

    /// Candidate and pre-candidate handling of everything but vote requests.
    pub(crate) fn step_candidate(&mut self, message: Message) -> Result<()> {
        match message.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader exists for this term.
                self.become_follower(message.term, message.from);
                self.step_follower(message)
            }
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => {
                if message.term == self.term.next() || reject {
                    self.record_vote(message.from, !reject)?;
                }
                Ok(())
            }
            MessageBody::VoteResponse { reject } if self.role == Role::Candidate => {
                self.record_vote(message.from, !reject)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The tie-break between two pre-candidates with equal logs: a hash of the group, the term
/// campaigned for and the replica, so both sides agree on the winner without favouring one
/// node in every group and term (a plain id order would make the highest id win every
/// simultaneous election, and so lead most groups after a cluster starts).
fn tie_rank(group: u64, term: u64, id: u64) -> u64 {
    let mut x = group
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(term.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        ^ id;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
