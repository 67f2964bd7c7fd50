//! A running hash of everything that happens in a run, to prove that one seed always produces
//! the same run.

/// FNV-1a style mixing over 64-bit words.
#[derive(Clone, Copy, Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }
}

impl Trace {
    /// Mixes one event into the hash.
    pub fn record(&mut self, words: &[u64]) {
        for &word in words {
            for byte in word.to_le_bytes() {
                self.hash ^= u64::from(byte);
                self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        self.events += 1;
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }
}
