//! Follower handling: AppendEntries (Raft §5.3), heartbeats, InstallSnapshot (Raft §7) and
//! leader transfer (thesis §3.10).

use crate::error::Result;
use crate::raft::Raft;
use crate::storage::Storage;
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody, Snapshot};
use ringkv_types::{LogIndex, NodeId, Term};

impl<S: Storage> Raft<S> {
    pub(crate) fn step_follower(&mut self, message: Message) -> Result<()> {
        let from = message.from;
        let term = message.term;
        match message.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.heard_from_leader(from);
                self.handle_append(from, term, prev_index, prev_term, &entries, commit)
            }
            MessageBody::Heartbeat { commit, context } => {
                if commit > self.log.last_index()? {
                    // A leader sends at most what it knows we have: this one is broken.
                    self.stats.invalid_messages_dropped += 1;
                    return Ok(());
                }
                self.heard_from_leader(from);
                self.log.commit_to(commit);
                self.send(from, self.term, MessageBody::HeartbeatResponse { context });
                Ok(())
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.heard_from_leader(from);
                self.handle_snapshot(from, snapshot)
            }
            MessageBody::Quiesce {
                commit,
                last_index,
                last_term,
                context,
            } => self.handle_quiesce(from, commit, (last_index, last_term), context),
            MessageBody::TimeoutNow => self.campaign(true),
            _ => Ok(()),
        }
    }

    pub(crate) fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader = leader;
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        _term: Term,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
        commit: LogIndex,
    ) -> Result<()> {
        if prev_index < self.log.committed {
            // Everything up to our commit index matches any leader's log (Raft §5.4): tell the
            // leader where to continue.
            let index = self.log.committed;
            self.send(from, self.term, accept(index));
            return Ok(());
        }
        // The planted bug appends entries without comparing the term at `prev_index`: any
        // entry there "matches".
        #[cfg(feature = "planted-bugs")]
        let prev_term = match self.log.term(prev_index) {
            Ok(ours)
                if self.config.planted_bugs.append_without_prev_term_check
                    && !entries.is_empty() =>
            {
                ours
            }
            _ => prev_term,
        };
        let conflict = self.log.find_conflict(entries);
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries)
        {
            Some(last_new) => {
                if let Some(conflict) = conflict {
                    self.after_append(conflict, entries)?;
                }
                self.send(from, self.term, accept(last_new));
            }
            None => {
                let last_index = self.log.last_index()?;
                let (hint_index, hint_term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(last_index), prev_term);
                self.send(
                    from,
                    self.term,
                    MessageBody::AppendResponse {
                        reject: true,
                        index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
        Ok(())
    }

    /// Keeps the configuration in step with the log after entries from `first_new` on were
    /// appended (thesis §4.1: the latest configuration in the log is the one in force, and a
    /// truncated configuration entry takes its configuration with it).
    pub(crate) fn after_append(&mut self, first_new: LogIndex, entries: &[Entry]) -> Result<()> {
        if first_new <= self.conf_index {
            return self.rescan_conf();
        }
        for entry in entries.iter().filter(|e| e.index >= first_new) {
            if let EntryPayload::Config(conf) = &entry.payload {
                self.set_conf(conf.clone(), entry.index);
            }
        }
        Ok(())
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) -> Result<()> {
        let meta = &snapshot.meta;
        if meta.index <= self.log.committed {
            let index = self.log.committed;
            self.send(from, self.term, accept(index));
            return Ok(());
        }
        if self.log.match_term(meta.index, meta.term) {
            // We already have the entries the snapshot covers: just learn they are committed.
            self.log.commit_to(meta.index);
            let index = self.log.committed;
            self.send(from, self.term, accept(index));
            return Ok(());
        }
        let index = meta.index;
        self.set_conf(meta.conf.clone(), index);
        self.log.restore(snapshot);
        self.stats.snapshots_installed += 1;
        // Sent only after the snapshot is persisted (acknowledgements wait for the Ready).
        self.send(from, self.term, accept(index));
        Ok(())
    }
}

fn accept(index: LogIndex) -> MessageBody {
    MessageBody::AppendResponse {
        reject: false,
        index,
        hint_index: LogIndex::ZERO,
        hint_term: Term::ZERO,
    }
}
