//! Failover report: per-key gaps without a completed operation, matched to fault events.
//!
//! In `ringkv-bench --failover-report EVENTS`, each worker owns one key and runs a closed loop
//! of reads and writes on it, recording every gap between two completed operations (or
//! between the start and the first one) longer than [`GAP_RECORD_MIN_MS`]. A script
//! (`bench/failover-bench.sh`) injects faults meanwhile and appends one line per fault to the
//! events file: `<unix ms> <kind> <node>` (`kill`, `stop`, ...), and `end` when done.
//!
//! For each event the outage is the longest gap of any key that overlaps the window from the
//! event to [`EVENT_WINDOW_MS`] later. Keys the faulty node did not lead are included, so the
//! figure is an upper bound of "the longest interval in which a key that node led sees no
//! completed operation" (other keys' gaps stay at a few milliseconds and never win).

use std::fmt::Write as _;

/// Gaps shorter than this are not recorded (normal latency).
pub const GAP_RECORD_MIN_MS: u64 = 50;
/// How long after an event a gap may start and still count against it.
pub const EVENT_WINDOW_MS: u64 = 10_000;

/// One interval of one key without a completed operation, in unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The worker's key index.
    pub key: u64,
    /// The last completion before the gap.
    pub from_ms: u64,
    /// The first completion after it.
    pub to_ms: u64,
}

impl Gap {
    /// Its length.
    pub fn len_ms(&self) -> u64 {
        self.to_ms.saturating_sub(self.from_ms)
    }
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, in unix milliseconds.
    pub at_ms: u64,
    /// `kill`, `stop`, ...
    pub kind: String,
    /// The node (as the script wrote it).
    pub node: String,
}

/// Parses the events file; returns the events and whether `end` was written.
///
/// # Errors
/// A message naming the first malformed line.
pub fn parse_events(text: &str) -> Result<(Vec<Event>, bool), String> {
    let mut events = Vec::new();
    let mut ended = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "end" {
            ended = true;
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(at), Some(kind), node) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!(
                "line {}: expected `<unix ms> <kind> <node>`",
                number + 1
            ));
        };
        let at_ms = at
            .parse()
            .map_err(|_| format!("line {}: `{at}` is not a unix time in ms", number + 1))?;
        events.push(Event {
            at_ms,
            kind: kind.to_string(),
            node: node.unwrap_or("").to_string(),
        });
    }
    Ok((events, ended))
}

/// The outage of `event`: the longest gap overlapping `[at, at + EVENT_WINDOW_MS]`, if any.
pub fn outage_ms(event: &Event, gaps: &[Gap]) -> u64 {
    let window_end = event.at_ms.saturating_add(EVENT_WINDOW_MS);
    gaps.iter()
        .filter(|gap| gap.to_ms >= event.at_ms && gap.from_ms <= window_end)
        .map(Gap::len_ms)
        .max()
        .unwrap_or(0)
}

/// The value at `quantile` (nearest rank) of sorted `values`.
pub fn quantile(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or(0)
}

/// The report: one line per event, then per kind the count, p50, p99 and max outage.
pub fn report(events: &[Event], gaps: &[Gap]) -> String {
    let mut text = String::new();
    let mut kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for event in events {
        let _ = writeln!(
            text,
            "event at={} kind={} node={} outage_ms={}",
            event.at_ms,
            event.kind,
            event.node,
            outage_ms(event, gaps)
        );
    }
    for kind in kinds {
        let mut outages: Vec<u64> = events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| outage_ms(e, gaps))
            .collect();
        outages.sort_unstable();
        let _ = writeln!(
            text,
            "failover kind={kind} events={} outage_p50_ms={} outage_p99_ms={} outage_max_ms={}",
            outages.len(),
            quantile(&outages, 0.5),
            quantile(&outages, 0.99),
            outages.last().copied().unwrap_or(0),
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(key: u64, from_ms: u64, to_ms: u64) -> Gap {
        Gap {
            key,
            from_ms,
            to_ms,
        }
    }

    #[test]
    fn events_parse_and_end() {
        let (events, ended) =
            parse_events("# kills\n1000 kill 2\n\n2000 stop 3\nend\n").unwrap_or_default();
        assert!(ended);
        assert_eq!(events.len(), 2);
        assert_eq!(events.get(1).map(|e| e.kind.as_str()), Some("stop"));
        assert!(parse_events("soon kill 1").is_err());
        assert!(parse_events("1000").is_err());
    }

    #[test]
    fn the_outage_is_the_longest_overlapping_gap() {
        let event = Event {
            at_ms: 10_000,
            kind: "kill".into(),
            node: "1".into(),
        };
        let gaps = [
            gap(1, 9_000, 9_500),   // before the event: ignored
            gap(2, 9_900, 11_200),  // spans it: 1300
            gap(3, 10_100, 10_900), // inside: 800
            gap(4, 30_000, 35_000), // far later: ignored
        ];
        assert_eq!(outage_ms(&event, &gaps), 1_300);
        let text = report(std::slice::from_ref(&event), &gaps);
        assert!(text.contains("outage_ms=1300"), "{text}");
        assert!(
            text.contains("kind=kill events=1 outage_p50_ms=1300"),
            "{text}"
        );
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=20).collect();
        assert_eq!(quantile(&values, 0.5), 10);
        assert_eq!(quantile(&values, 0.99), 20);
        assert_eq!(quantile(&[], 0.99), 0);
    }
}
