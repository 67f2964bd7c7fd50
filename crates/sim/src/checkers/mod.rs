//! Safety checkers, one per file, each citing the property it checks.

pub mod commit_monotonicity;
pub mod election_safety;
pub mod leader_completeness;
pub mod leader_liveness;
pub mod linearizability;
pub mod log_matching;
pub mod state_machine_safety;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which checker found it.
    pub check: &'static str,
    /// What exactly.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

/// Hash of an entry payload, so checkers can compare entries cheaply.
pub fn payload_hash(payload: &ringkv_types::raft::EntryPayload) -> u64 {
    use ringkv_types::raft::EntryPayload;
    let mut trace = crate::trace::Trace::default();
    match payload {
        EntryPayload::Noop => trace.record(&[0]),
        EntryPayload::Normal(data) => {
            trace.record(&[1]);
            for chunk in data.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                trace.record(&[u64::from_le_bytes(word)]);
            }
        }
        EntryPayload::Config(conf) => {
            trace.record(&[2]);
            let ids: Vec<u64> = conf.voters.iter().map(|v| v.get()).collect();
            trace.record(&ids);
            trace.record(&[u64::MAX]);
            let ids: Vec<u64> = conf.learners.iter().map(|v| v.get()).collect();
            trace.record(&ids);
        }
    }
    trace.hash()
}
