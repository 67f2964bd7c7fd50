//! Workload definitions for the `ringkv-bench` load generator: operation mixes, key choice
//! (uniform or Zipfian, as in YCSB) and a small seeded random generator. No I/O.

use std::fmt;
use std::str::FromStr;

/// Which operations a workload issues and how it picks keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Puts only, uniform keys.
    Put,
    /// Gets only, uniform keys (the keys are loaded first).
    Get,
    /// 80 % gets, 20 % puts, uniform keys.
    Mixed,
    /// YCSB A: 50 % reads, 50 % updates, Zipfian keys.
    YcsbA,
    /// YCSB B: 95 % reads, 5 % updates, Zipfian keys.
    YcsbB,
    /// YCSB C: reads only, Zipfian keys.
    YcsbC,
}

impl Workload {
    /// All workloads, for help texts.
    pub const NAMES: &'static str = "put, get, mixed, ycsb-a, ycsb-b, ycsb-c";

    /// Percentage of reads.
    pub fn read_percent(self) -> u64 {
        match self {
            Workload::Put => 0,
            Workload::Get | Workload::YcsbC => 100,
            Workload::Mixed => 80,
            Workload::YcsbA => 50,
            Workload::YcsbB => 95,
        }
    }

    /// Whether keys follow a Zipfian distribution (else uniform).
    pub fn zipfian(self) -> bool {
        matches!(self, Workload::YcsbA | Workload::YcsbB | Workload::YcsbC)
    }

    /// Whether reads are issued, so the key space should be loaded first.
    pub fn needs_preload(self) -> bool {
        self.read_percent() > 0
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "put" | "write" => Workload::Put,
            "get" | "read" => Workload::Get,
            "mixed" => Workload::Mixed,
            "ycsb-a" | "a" => Workload::YcsbA,
            "ycsb-b" | "b" => Workload::YcsbB,
            "ycsb-c" | "c" => Workload::YcsbC,
            other => return Err(format!("unknown workload {other:?} ({})", Self::NAMES)),
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
        })
    }
}

/// SplitMix64: fast, seeded, good enough for load generation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, bound)`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// Zipfian ranks over `[0, n)` with skew `theta` (YCSB uses 0.99), after Gray et al., "Quickly
/// generating billion-record synthetic databases" (SIGMOD 1994). Setup is O(n).
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    /// The distribution over `n` items (at least 1) with skew `theta` in `(0, 1)`.
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zeta = |count: u64| {
            (1..=count)
                .map(|i| 1.0 / (i as f64).powf(theta))
                .sum::<f64>()
        };
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        let alpha = 1.0 / (1.0 - theta);
        let eta = if n > 1 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            0.0
        };
        Self {
            n,
            theta,
            alpha,
            zeta_n,
            eta,
        }
    }

    /// A rank in `[0, n)`; small ranks are the popular ones.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

/// Picks keys for a workload: uniform or Zipfian ranks, scattered over the key space (so the
/// popular keys do not all land on one shard) and formatted as `key-<n>`.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    keys: u64,
    zipfian: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser over `keys` keys (at least 1).
    pub fn new(keys: u64, zipfian: bool) -> Self {
        let keys = keys.max(1);
        Self {
            keys,
            zipfian: zipfian.then(|| Zipfian::new(keys, 0.99)),
        }
    }

    /// The next key index in `[0, keys)`.
    pub fn next_index(&self, rng: &mut Rng) -> u64 {
        match &self.zipfian {
            // Scatter ranks with a multiplicative hash so rank order is not key order.
            Some(zipfian) => zipfian.sample(rng).wrapping_mul(0x9e37_79b9_7f4a_7c15) % self.keys,
            None => rng.below(self.keys),
        }
    }

    /// The key with index `index`.
    pub fn key(index: u64) -> String {
        format!("key-{index:010}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_and_mix() {
        let cases = [
            ("put", 0, false),
            ("get", 100, false),
            ("mixed", 80, false),
            ("ycsb-a", 50, true),
            ("YCSB-B", 95, true),
            ("c", 100, true),
        ];
        for (name, reads, zipfian) in cases {
            let workload: Workload = name.parse().unwrap_or(Workload::Put);
            assert_eq!(workload.read_percent(), reads, "{name}");
            assert_eq!(workload.zipfian(), zipfian, "{name}");
        }
        assert!("scan".parse::<Workload>().is_err());
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let zipfian = Zipfian::new(1000, 0.99);
        let mut rng = Rng::new(42);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            let rank = zipfian.sample(&mut rng);
            assert!(rank < 1000);
            if let Some(count) = counts.get_mut(rank as usize) {
                *count += 1;
            }
        }
        // Rank 0 is the most popular by far; the tail is still reached.
        let first = counts.first().copied().unwrap_or(0);
        assert!(first > 10_000, "{first}");
        assert!(counts.iter().skip(500).any(|c| *c > 0));
    }

    #[test]
    fn uniform_keys_cover_the_space() {
        let chooser = KeyChooser::new(10, false);
        let mut rng = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            if let Some(slot) = seen.get_mut(chooser.next_index(&mut rng) as usize) {
                *slot = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(KeyChooser::key(7), "key-0000000007");
    }
}
