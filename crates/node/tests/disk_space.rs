//! The low-disk-space alarm on real small filesystems: every node's data dir on its own
//! size-limited tmpfs (mounted by the test; root only). Without permission to mount, the test is
//! skipped with a message, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Cluster, get, kv, put};
use ringkv_types::{KvOp, KvResult, ReadConsistency, Response, ShardDescriptor, WireError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted on a directory, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, mib: u64) -> Result<SmallFs, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(SmallFs(at.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

fn free_bytes(path: &Path) -> u64 {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Every node's free space falls under its reserve: puts are refused with `NoSpace` naming the
/// node, reads and deletes still work, the alarm shows in the node status; once space is freed
/// the alarm clears by itself and puts work again. No node stops.
/// Under a space alarm reads and deletes still work: `kept` reads `one`, then is deleted with
/// session 1's `sequence`.
async fn read_and_delete_kept(
    cluster: &mut Cluster,
    leader: usize,
    descriptor: &ShardDescriptor,
    sequence: u64,
) {
    let read = get("kept", ReadConsistency::Linearizable);
    let answer = cluster.call(leader, kv(descriptor, None, read)).await;
    assert!(
        matches!(&answer, Response::Kv(KvResult::Value { value: Some(v), .. }) if v.as_ref() == b"one"),
        "{answer:?}"
    );
    let delete = KvOp::Delete {
        key: Bytes::from_static(b"kept"),
    };
    let answer = cluster
        .call(leader, kv(descriptor, Some((1, sequence)), delete))
        .await;
    assert!(
        matches!(answer, Response::Kv(KvResult::Written { .. })),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_space_refuses_puts_keeps_reads_and_deletes_and_clears_when_space_returns() {
    let Some((mut cluster, mounts)) = cluster_on_small_disks().await else {
        return;
    };
    let map = cluster.shard_map(0).await;
    let descriptor = map.shards[0].clone();
    let mut leader = cluster.leader_of(descriptor.id).await;
    let answer = cluster
        .call(leader, kv(&descriptor, Some((1, 1)), put("kept", "one")))
        .await;
    assert!(
        matches!(answer, Response::Kv(KvResult::Written { .. })),
        "{answer:?}"
    );

    // Leave 8 MiB free on every node, under the 16 MiB reserve.
    let mut fillers = Vec::new();
    for fs in &mounts {
        let filler = fs.0.join("filler");
        let fill = free_bytes(&fs.0) - (8 << 20);
        std::fs::write(&filler, vec![7u8; fill as usize]).unwrap();
        fillers.push(filler);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sequence = 2;
    loop {
        leader = cluster.leader_of(descriptor.id).await;
        let answer = cluster
            .call(
                leader,
                kv(&descriptor, Some((1, sequence)), put("refused", "x")),
            )
            .await;
        sequence += 1;
        match answer {
            Response::Error(WireError::NoSpace {
                node,
                free_bytes,
                reserve_bytes,
            }) => {
                assert_eq!(node.get(), leader as u64 + 1);
                assert!(free_bytes < reserve_bytes && reserve_bytes == 16 << 20);
                break;
            }
            Response::Kv(KvResult::Written { .. }) => {
                assert!(Instant::now() < deadline, "puts still accepted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    let status = cluster.status(leader).await;
    let alarm = status.space_alarm.expect("alarm in the node status");
    assert!(alarm.free_bytes < 16 << 20);
    // Reads and deletes still work.
    read_and_delete_kept(&mut cluster, leader, &descriptor, sequence).await;
    sequence += 1;

    for filler in &fillers {
        std::fs::remove_file(filler).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        leader = cluster.leader_of(descriptor.id).await;
        let answer = cluster
            .call(
                leader,
                kv(&descriptor, Some((1, sequence)), put("after", "two")),
            )
            .await;
        sequence += 1;
        match answer {
            Response::Kv(KvResult::Written { .. }) => break,
            Response::Error(WireError::NoSpace { .. }) => {
                assert!(Instant::now() < deadline, "the alarm did not clear");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(cluster.status(leader).await.space_alarm, None);
    cluster.stop_all().await;
    drop(mounts);
}

/// A 3-node cluster (one data shard, 16 MiB space reserve) whose data dirs each sit on a
/// 96 MiB tmpfs, every shard led; `None` (after saying why) when mounting is not permitted
/// outside CI.
async fn cluster_on_small_disks() -> Option<(Cluster, Vec<SmallFs>)> {
    let mut cluster = Cluster::start(3, 1, "[storage]\nspace_reserve_mib = 16\n").await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    cluster.stop_all().await;
    let mut mounts = Vec::new();
    for id in 1..=3 {
        let data = cluster.dir.path().join(format!("node-{id}"));
        let saved = cluster.dir.path().join(format!("node-{id}.saved"));
        std::fs::rename(&data, &saved).unwrap();
        std::fs::create_dir(&data).unwrap();
        match SmallFs::mount(&data, 96) {
            Ok(fs) => mounts.push(fs),
            Err(reason) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "cannot mount a tmpfs under CI: {reason}"
                );
                println!("SKIPPED: cannot mount a tmpfs ({reason}); run as root");
                return None;
            }
        }
        copy_dir(&saved, &data);
    }
    for index in 0..3 {
        cluster.start_node(index).await;
    }
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    Some((cluster, mounts))
}

/// Leaves `free` bytes free on `fs` with a filler file (returned).
fn fill(fs: &SmallFs, free: u64) -> PathBuf {
    let filler = fs.0.join("filler");
    let fill = free_bytes(&fs.0) - free;
    std::fs::write(&filler, vec![7u8; fill as usize]).unwrap();
    filler
}

/// Only a follower's disk is low (its own alarm rises; the leader has room): the alarm reaches
/// the leader through the placement driver (`Command::SpaceAlarm`), which then refuses puts
/// with `NoSpace` naming the follower, while reads and deletes go on. Once the follower's space
/// is freed, its alarm clears at PD and the leader takes puts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_low_disk_makes_the_leader_refuse_puts_until_it_clears() {
    let Some((mut cluster, mounts)) = cluster_on_small_disks().await else {
        return;
    };
    let map = cluster.shard_map(0).await;
    let descriptor = map.shards[0].clone();
    let leader = cluster.leader_of(descriptor.id).await;
    let follower = (leader + 1) % 3;
    let answer = cluster
        .call(leader, kv(&descriptor, Some((1, 1)), put("kept", "one")))
        .await;
    assert!(
        matches!(answer, Response::Kv(KvResult::Written { .. })),
        "{answer:?}"
    );

    let filler = fill(&mounts[follower], 8 << 20);
    // The node reads free space at most every 100 ms: wait for its next reading.
    let seen = Instant::now() + Duration::from_secs(5);
    while cluster.status(follower).await.space_alarm.is_none() && Instant::now() < seen {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alarm = cluster.status(follower).await.space_alarm;
    assert!(alarm.is_some(), "the follower's own alarm is up");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sequence = 2;
    let mut accepted_meanwhile = 0;
    loop {
        let now_leading = cluster.leader_of(descriptor.id).await;
        let answer = cluster
            .call(
                now_leading,
                kv(&descriptor, Some((1, sequence)), put("refused", "x")),
            )
            .await;
        sequence += 1;
        match answer {
            Response::Error(WireError::NoSpace {
                node,
                free_bytes,
                reserve_bytes,
            }) => {
                assert_eq!(
                    node.get(),
                    follower as u64 + 1,
                    "the alarm names the follower"
                );
                assert!(free_bytes < reserve_bytes && reserve_bytes == 16 << 20);
                if now_leading != follower {
                    // The leader's own disk has room: the refusal came from the follower's
                    // alarm as PD recorded it.
                    assert!(cluster.status(now_leading).await.space_alarm.is_none());
                    break;
                }
            }
            Response::Kv(KvResult::Written { .. }) => accepted_meanwhile += 1,
            other => panic!("{other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the leader still takes puts while a follower's disk is low"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("puts accepted before the follower's alarm reached the leader: {accepted_meanwhile}");
    let leader = cluster.leader_of(descriptor.id).await;
    read_and_delete_kept(&mut cluster, leader, &descriptor, sequence).await;
    sequence += 1;

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.leader_of(descriptor.id).await;
        let answer = cluster
            .call(
                leader,
                kv(&descriptor, Some((1, sequence)), put("after", "two")),
            )
            .await;
        sequence += 1;
        match answer {
            Response::Kv(KvResult::Written { .. }) => break,
            Response::Error(WireError::NoSpace { .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "the follower's alarm did not clear"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    let state = cluster.pd_state().await;
    assert!(state.space_alarms.is_empty(), "{:?}", state.space_alarms);
    cluster.stop_all().await;
    drop(mounts);
}
