//! Crash test: a child process appends with durability and is killed with SIGKILL at random
//! moments; after each kill every acknowledged entry must be on disk and no batch half applied.
//!
//! The test binary re-executes itself: with `RINGKV_CRASH_CHILD` set, the test body acts as the
//! child (an endless writer that prints `ack <last index>` after each ticket completes).
//!
//! SIGKILL alone leaves every write in the kernel's page cache, so it cannot see a missing
//! fsync; the power-cut test runs the same child on `powerfs` (crates/powerfs), which throws
//! away everything not fsync'd when the power is cut.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "test")]

mod common;

use bytes::Bytes;
use common::{Rng, open};
use ringkv_raft::Storage;
use ringkv_storage::{AppliedState, Command, Operation, Store, WriteBatchBuilder};
use ringkv_types::raft::{Entry, EntryPayload, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::io::{BufRead, Read};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "RINGKV_CRASH_CHILD";
const SEED_ENV: &str = "RINGKV_CRASH_SEED";
const SHARDS: [ShardId; 4] = [ShardId(1), ShardId(2), ShardId(17), ShardId(1000)];

fn payload(shard: ShardId, index: u64, term: u64) -> Bytes {
    let mut bytes = format!("{shard}/{index}/{term}/").into_bytes();
    bytes.resize(100, b'.');
    Bytes::from(bytes)
}

/// Every batch writes the same index range to every shard, plus a hard state whose commit is
/// that batch's last index, so a half-applied batch shows up as groups that disagree.
fn child(dir: &str, seed: u64) -> ! {
    let store = open(std::path::Path::new(dir));
    let mut rng = Rng(seed);
    let group = store.group(SHARDS[0]).unwrap();
    let mut last = group.last_index().unwrap().get();
    let mut term = group.term(LogIndex(last)).unwrap().get().max(1);
    let mut applied = store.applied(SHARDS[0]).unwrap().index.get();
    drop(group);
    loop {
        let (start, count) = if last > 3 && rng.below(8) == 0 {
            term += 1;
            (last - 2, 1 + rng.below(2))
        } else {
            (last + 1, 1 + rng.below(16))
        };
        let end = start + count - 1;
        let mut batch = WriteBatchBuilder::new();
        // Now and then compact every group to 30 entries behind the end, in the same batch.
        // Tail rewrites shorten the log, so that point may already be compacted: skip then.
        let first_index = store.group(SHARDS[0]).unwrap().first_index().unwrap().get();
        if last > 40 && last - 30 >= first_index && rng.below(16) == 0 {
            let group = store.group(SHARDS[0]).unwrap();
            let index = LogIndex(last - 30);
            let meta = SnapshotMeta {
                index,
                term: group.term(index).unwrap(),
                conf: Default::default(),
            };
            for shard in SHARDS {
                batch.set_snapshot_meta(shard, meta.clone());
            }
        }
        for shard in SHARDS {
            let entries: Vec<Entry> = (start..=end)
                .map(|index| Entry {
                    term: Term(term),
                    index: LogIndex(index),
                    payload: EntryPayload::Normal(payload(shard, index, term)),
                })
                .collect();
            batch.append(shard, &entries).unwrap();
            batch.set_hard_state(
                shard,
                HardState {
                    term: Term(term),
                    vote: NodeId(1),
                    commit: LogIndex(end),
                },
            );
        }
        store.submit(batch).unwrap().wait().unwrap();
        println!("ack {end} {term}");
        last = end;
        // The state machine counter and the applied index move in one atomic apply batch.
        applied += 1;
        let command = Command {
            session: None,
            operations: vec![Operation::Put {
                key: Bytes::from_static(b"counter"),
                value: Bytes::from(applied.to_string()),
            }],
        };
        store
            .apply(
                SHARDS[0],
                &[command],
                AppliedState {
                    index: LogIndex(applied),
                    term: Term(1),
                },
                None,
            )
            .unwrap();
    }
}

/// `acknowledged` is `(term, last index)` of the last acknowledged batch. Later batches either
/// extend the log in the same term or rewrite its tail in a higher term, so the recovered
/// `(term, last index)` is at least the acknowledged one, lexicographically.
fn verify(store: &Store, acknowledged: (u64, u64), round: usize) {
    let first = store.group(SHARDS[0]).unwrap();
    let last = first.last_index().unwrap();
    let recovered = (first.hard_state().term.get(), last.get());
    assert!(
        recovered >= acknowledged,
        "round {round}: {recovered:?} < {acknowledged:?}"
    );
    if recovered.0 == acknowledged.0 && acknowledged.1 > 0 {
        assert_eq!(
            first.term(LogIndex(acknowledged.1)).unwrap(),
            Term(acknowledged.0)
        );
    }
    for shard in SHARDS {
        let group = store.group(shard).unwrap();
        assert_eq!(
            group.last_index().unwrap(),
            last,
            "round {round}: {shard} disagrees"
        );
        assert_eq!(
            group.hard_state().commit,
            last,
            "round {round}: {shard} hard state"
        );
        let first_index = group.first_index().unwrap();
        assert_eq!(
            first_index,
            first.first_index().unwrap(),
            "round {round}: {shard} compaction"
        );
        let entries = group.entries(first_index, last.next(), u64::MAX).unwrap();
        assert_eq!(entries.len() as u64, last.next().distance_from(first_index));
        let mut previous_term = Term(0);
        for entry in entries {
            assert!(
                entry.term >= previous_term,
                "round {round}: terms go down in {shard}"
            );
            previous_term = entry.term;
            let expected = payload(shard, entry.index.get(), entry.term.get());
            assert_eq!(entry.payload, EntryPayload::Normal(expected));
        }
    }
    let applied = store.applied(SHARDS[0]).unwrap().index.get();
    let counter = store.get(b"counter").unwrap();
    let counter = counter.map_or(0, |value| {
        std::str::from_utf8(&value).unwrap().parse().unwrap()
    });
    assert_eq!(
        applied, counter,
        "round {round}: applied index and data disagree"
    );
}

#[test]
fn sigkill_during_appends_loses_no_acknowledged_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        child(&dir, seed);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xc4a5);
    let mut acknowledged = (0u64, 0u64);
    let mut acknowledged_rounds = 0;
    for round in 0..8 {
        let mut process = Process::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_during_appends_loses_no_acknowledged_entry",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env(SEED_ENV, rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the child's first acknowledgement (it appends until killed; a child that
        // fails exits and ends its output), so a slow start on a loaded machine does not leave
        // the round without one; then kill it at a random point of its appends.
        let mut stdout = std::io::BufReader::new(process.stdout.take().unwrap());
        let mut output = String::new();
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            let acked = line.starts_with("ack ");
            output.push_str(&line);
            line.clear();
            if acked {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        // SIGKILL on Unix.
        process.kill().unwrap();
        stdout.read_to_string(&mut output).unwrap();
        process.wait().unwrap();
        // A line cut by the kill has no newline and is not an acknowledgement.
        let complete = output.rsplit_once('\n').map_or("", |(done, _)| done);
        let last_ack = complete
            .lines()
            .filter_map(|line| line.strip_prefix("ack "))
            .next_back();
        if let Some(ack) = last_ack {
            let (end, term) = ack.split_once(' ').unwrap();
            acknowledged = (term.parse().unwrap(), end.parse().unwrap());
            acknowledged_rounds += 1;
        }
        let store = open(dir.path());
        verify(&store, acknowledged, round);
    }
    assert!(
        acknowledged_rounds >= 4,
        "children acknowledged in only {acknowledged_rounds} rounds"
    );
}

/// The child's output, read by a thread so that every wait on it is bounded.
struct Output {
    lines: std::sync::mpsc::Receiver<String>,
    text: String,
}

impl Output {
    fn new(stdout: impl Read + Send + 'static) -> Self {
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                if sender.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            text: String::new(),
        }
    }

    /// Waits (at most 60 s) for the child's first acknowledgement or the end of its output.
    fn first_ack(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.text.push_str(&line);
                    if line.starts_with("ack ") {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the child did not acknowledge within 60 s: {:?}", self.text)
                }
            }
        }
    }

    /// The rest of the output of a child that is gone (bounded: 60 s).
    fn rest(&mut self) -> &str {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.text.push_str(&line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return &self.text,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the child's output did not end within 60 s of its death")
                }
            }
        }
    }
}

/// The last complete `ack <end> <term>` line of `output` as `(term, end)`.
fn last_ack(output: &str) -> Option<(u64, u64)> {
    // A line cut by the kill has no newline and is not an acknowledgement.
    let complete = output.rsplit_once('\n').map_or("", |(done, _)| done);
    let ack = complete
        .lines()
        .filter_map(|line| line.strip_prefix("ack "))
        .next_back()?;
    let (end, term) = ack.split_once(' ').unwrap();
    Some((term.parse().unwrap(), end.parse().unwrap()))
}

/// As the SIGKILL test, with a power cut instead: the child writes on `powerfs`, the power is
/// cut at a random point of its appends (the child is killed, every write it did not fsync is
/// dropped), and every acknowledged entry must still be there. `RINGKV_POWER_ROUNDS` sets the
/// number of cuts (8 by default).
#[test]
fn power_cut_during_appends_loses_no_acknowledged_entry() {
    const NAME: &str = "power_cut_during_appends_loses_no_acknowledged_entry";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        child(&dir, seed);
    }
    let rounds: usize = std::env::var("RINGKV_POWER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut fs = ringkv_powerfs::PowerFs::mount(dir.path()).unwrap();
    // The store is the mount's root, as a node's data dir is: a directory the store creates
    // itself is not durable until its parent is fsync'd, which neither fjall nor the store
    // does (see docs/power-loss.md).
    let data = fs.path().to_path_buf();
    let mut rng = Rng(0x90e7);
    let mut acknowledged = (0u64, 0u64);
    let mut acknowledged_rounds = 0;
    let mut discarded = 0;
    for round in 0..rounds {
        let seed = rng.next();
        let stderr = logs.path().join(format!("round-{round}.stderr"));
        let mut process = Process::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture"])
            .env(CHILD_ENV, &data)
            .env(SEED_ENV, seed.to_string())
            .stdout(Stdio::piped())
            // Children killed at a cut may panic first on the EIO the frozen file system
            // answers; a child that fails before the cut says why there.
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut output = Output::new(process.stdout.take().unwrap());
        output.first_ack();
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        let cut = fs.power_cut(&[process.id()]).unwrap();
        assert!(
            cut.killed.contains(&process.id()),
            "round {round}: the child was not running at the cut: {cut:?}, output {:?}, \
             stderr {:?}",
            output.text,
            std::fs::read_to_string(&stderr)
        );
        // Apply batches stay in the journal's buffer until the next synced append, so unsynced
        // pages are rare; unsynced directory changes (removed journals and tables) are not.
        discarded += cut.discarded.pages + cut.discarded.files + cut.discarded.directories;
        process.wait().unwrap();
        if let Some(ack) = last_ack(output.rest()) {
            acknowledged = ack;
            acknowledged_rounds += 1;
        }
        println!("round {round} (seed {seed}): acknowledged {acknowledged:?}, {cut:?}");
        let store = open(&data);
        verify(&store, acknowledged, round);
    }
    assert!(
        acknowledged_rounds * 2 >= rounds,
        "children acknowledged in only {acknowledged_rounds} of {rounds} rounds"
    );
    // The cuts must have thrown something away, or they tested nothing SIGKILL does not.
    assert!(
        discarded > 0,
        "no cut found unsynced data (pages, file sizes or directory entries)"
    );
}
