//! The hub's rules: catch-up then live with no gap and no duplicate, `Compacted` below the
//! history, slow watchers cancelled with bounded memory, leaders only, splits.

use super::feed::Feed;
use super::hub::{WatchHub, WatchLimits};
use bytes::Bytes;
use ringkv_types::ring::Arc as RingArc;
use ringkv_types::{
    Epoch, FROM_CREATION, ShardDescriptor, ShardId, WatchEnd, WatchEvent, WatchEventKind,
    WatchFrame, WatchRequest, WatchTarget, WireError,
};
use std::sync::Arc;
use std::time::Duration;

const SHARD: ShardId = ShardId(7);
const CHILD: ShardId = ShardId(8);

fn descriptor(arc: RingArc) -> ShardDescriptor {
    ShardDescriptor {
        id: SHARD,
        arc,
        epoch: Epoch::default(),
        replicas: Vec::new(),
    }
}

fn put(key: &str, index: u64, value: &str) -> WatchEvent {
    WatchEvent {
        key: Bytes::copy_from_slice(key.as_bytes()),
        kind: WatchEventKind::Put {
            value: Bytes::copy_from_slice(value.as_bytes()),
        },
        version: index,
        index,
    }
}

fn hub(limits: WatchLimits) -> Arc<WatchHub> {
    let hub = Arc::new(WatchHub::new(limits));
    hub.set_role(SHARD, true, None, &descriptor(RingArc::FULL), 10);
    hub
}

fn key_watch(key: &str, after: Option<u64>) -> WatchRequest {
    WatchRequest {
        shard: SHARD,
        target: WatchTarget::Key(Bytes::copy_from_slice(key.as_bytes())),
        after,
    }
}

/// Frames until the feed has nothing ready (a short wait) or ended.
async fn drain(feed: &mut Feed) -> Vec<WatchFrame> {
    let mut frames = Vec::new();
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(50), feed.next_frame()).await
    {
        let end = matches!(frame, WatchFrame::End(_));
        frames.push(frame);
        if end {
            break;
        }
    }
    frames
}

fn indexes(frames: &[WatchFrame]) -> Vec<u64> {
    frames
        .iter()
        .flat_map(|frame| match frame {
            WatchFrame::Events(events) => events.iter().map(|e| e.index).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[tokio::test]
async fn resume_gets_history_then_live_changes_once_each() {
    let hub = hub(WatchLimits::default());
    hub.record(
        SHARD,
        11,
        13,
        &[put("a", 11, "1"), put("b", 12, "x"), put("a", 13, "2")],
    );
    let mut feed = hub.subscribe(key_watch("a", Some(11))).unwrap();
    hub.record(SHARD, 14, 15, &[put("a", 14, "3"), put("a", 15, "4")]);
    let frames = drain(&mut feed).await;
    assert_eq!(
        frames.first(),
        Some(&WatchFrame::Started {
            shard: SHARD,
            index: 11
        })
    );
    assert_eq!(indexes(&frames), vec![13, 14, 15]);
    // From now: only what comes after.
    let mut now = hub.subscribe(key_watch("a", None)).unwrap();
    hub.record(SHARD, 16, 16, &[put("a", 16, "5")]);
    let frames = drain(&mut now).await;
    assert_eq!(
        frames.first(),
        Some(&WatchFrame::Started {
            shard: SHARD,
            index: 15
        })
    );
    assert_eq!(indexes(&frames), vec![16]);
}

#[tokio::test]
async fn resume_below_the_history_is_compacted() {
    // Room for about two changes: older ones are dropped.
    let limits = WatchLimits {
        history_bytes: 2 * put("a", 1, "v").size(),
        ..WatchLimits::default()
    };
    let hub = hub(limits);
    for index in 11..=20 {
        hub.record(SHARD, index, index, &[put("a", index, "v")]);
    }
    assert!(hub.history_bytes(SHARD) <= limits.history_bytes);
    let mut feed = hub.subscribe(key_watch("a", Some(12))).unwrap();
    let frames = drain(&mut feed).await;
    assert_eq!(
        frames.last(),
        Some(&WatchFrame::End(WatchEnd::Compacted { oldest: 18 }))
    );
    let mut feed = hub.subscribe(key_watch("a", Some(18))).unwrap();
    assert_eq!(indexes(&drain(&mut feed).await), vec![19, 20]);
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_cancelled_and_its_queue_stays_bounded() {
    let limits = WatchLimits {
        buffer_bytes_max: 10 * put("k", 1, "value").size(),
        ..WatchLimits::default()
    };
    let hub = hub(limits);
    let mut feed = hub.subscribe(key_watch("k", None)).unwrap();
    for index in 11..1000 {
        hub.record(SHARD, index, index, &[put("k", index, "value")]);
        assert!(feed.queue.queued_bytes() <= limits.buffer_bytes_max);
    }
    let frames = drain(&mut feed).await;
    assert_eq!(frames.last(), Some(&WatchFrame::End(WatchEnd::SlowWatcher)));
    assert_eq!(hub.cancelled_slow.get(), 1);
    drop(feed);
    assert_eq!(hub.watchers(), 0);
}

#[tokio::test]
async fn only_leaders_serve_and_a_leader_that_steps_down_ends_its_watchers() {
    let hub = hub(WatchLimits::default());
    let mut feed = hub.subscribe(key_watch("a", None)).unwrap();
    hub.set_role(SHARD, false, None, &descriptor(RingArc::FULL), 10);
    let frames = drain(&mut feed).await;
    assert_eq!(frames.last(), Some(&WatchFrame::End(WatchEnd::NotLeader)));
    assert!(matches!(
        hub.subscribe(key_watch("a", None)),
        Err(WireError::NotLeader { .. })
    ));
}

#[tokio::test]
async fn a_split_ends_watchers_after_the_changes_before_it() {
    let hub = hub(WatchLimits::default());
    // A key on each side of the middle of the ring.
    let (low, high) = {
        let mut low = None;
        let mut high = None;
        for n in 0..100 {
            let key = format!("k{n}");
            if ringkv_types::ring::position(key.as_bytes()) < 1 << 63 {
                low.get_or_insert(key);
            } else {
                high.get_or_insert(key);
            }
        }
        (low.unwrap(), high.unwrap())
    };
    hub.record(SHARD, 11, 11, &[put(&high, 11, "1"), put(&low, 11, "1")]);
    let mut feed = hub.subscribe(key_watch(&high, Some(10))).unwrap();
    let left = descriptor(RingArc {
        start: 0,
        end: Some(1 << 63),
    });
    let right = ShardDescriptor {
        id: CHILD,
        ..descriptor(RingArc {
            start: 1 << 63,
            end: None,
        })
    };
    hub.split(SHARD, 12, left, &right, true);
    let frames = drain(&mut feed).await;
    assert_eq!(indexes(&frames), vec![11]);
    assert_eq!(
        frames.last(),
        Some(&WatchFrame::End(WatchEnd::ShardSplit { index: 12 }))
    );
    // The moved key: its changes up to the split, then the end; after it: not here.
    let mut feed = hub.subscribe(key_watch(&high, Some(10))).unwrap();
    let frames = drain(&mut feed).await;
    assert_eq!(indexes(&frames), vec![11]);
    assert_eq!(
        frames.last(),
        Some(&WatchFrame::End(WatchEnd::ShardSplit { index: 12 }))
    );
    assert!(matches!(
        hub.subscribe(key_watch(&high, Some(12))),
        Err(WireError::KeyNotInShard { .. })
    ));
    // The key that stayed is served on.
    assert!(hub.subscribe(key_watch(&low, Some(12))).is_ok());

    // The new shard's log continues at 13; its history holds the parent's changes of its keys
    // (a resume from a version seen before the split finds them), and "from creation" starts
    // after the split.
    hub.set_role(CHILD, true, None, &right, 12);
    hub.record(CHILD, 13, 13, &[put(&high, 13, "2")]);
    let child_watch = |key: &str, after| WatchRequest {
        shard: CHILD,
        ..key_watch(key, after)
    };
    let mut feed = hub.subscribe(child_watch(&high, Some(10))).unwrap();
    assert_eq!(indexes(&drain(&mut feed).await), vec![11, 13]);
    let mut feed = hub
        .subscribe(child_watch(&high, Some(FROM_CREATION)))
        .unwrap();
    assert_eq!(indexes(&drain(&mut feed).await), vec![13]);
    // The key that stayed in the parent is not in the new shard's history.
    let mut feed = hub
        .subscribe(WatchRequest {
            shard: CHILD,
            target: WatchTarget::Prefix(Bytes::from_static(b"k")),
            after: Some(10),
        })
        .unwrap();
    let keys: Vec<(Bytes, u64)> = drain(&mut feed)
        .await
        .iter()
        .flat_map(|frame| match frame {
            WatchFrame::Events(events) => events.iter().map(|e| (e.key.clone(), e.index)).collect(),
            _ => Vec::new(),
        })
        .collect();
    let high = Bytes::copy_from_slice(high.as_bytes());
    assert_eq!(keys, vec![(high.clone(), 11), (high, 13)]);
}

#[tokio::test]
async fn a_gap_in_the_applied_indexes_restarts_the_history() {
    let hub = hub(WatchLimits::default());
    hub.record(SHARD, 11, 11, &[put("a", 11, "1")]);
    let mut feed = hub.subscribe(key_watch("a", Some(10))).unwrap();
    // A snapshot moved the replica to 30.
    hub.record(SHARD, 31, 31, &[put("a", 31, "2")]);
    let frames = drain(&mut feed).await;
    assert_eq!(
        frames.last(),
        Some(&WatchFrame::End(WatchEnd::Compacted { oldest: 30 }))
    );
}

#[tokio::test]
async fn watchers_beyond_the_node_cap_are_refused_busy() {
    let hub = hub(WatchLimits {
        watchers_max: 2,
        ..WatchLimits::default()
    });
    let first = hub.subscribe(key_watch("a", None)).unwrap();
    let _second = hub.subscribe(key_watch("a", None)).unwrap();
    assert!(matches!(
        hub.subscribe(key_watch("a", None)),
        Err(WireError::Busy)
    ));
    drop(first);
    assert!(hub.subscribe(key_watch("a", None)).is_ok());
}
