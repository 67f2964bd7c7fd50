//! A PD replica that was down while group 0 compacted its log catches up by snapshot. In its
//! own test binary: the test counts the PD leader's "sending a snapshot" events through a
//! tracing dispatcher on its runtime's threads, and with the other PD tests running beside it
//! in one process the count came out 0 under `cargo test` (it passes alone and under nextest,
//! one process per test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::{Cluster, pd_config};
use ringkv_pd::{Command, PdState, Response as PdResponse, SchedulerKind};
use ringkv_types::{AdminRequest, AdminResult, NodeId, Request, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

/// Counts the "sending a snapshot" events (the node's info log when a leader streams a
/// snapshot) for group `shard` to node `to`. Installed as the tracing dispatcher of every
/// thread of one test's runtime, so other tests in this binary do not add to it.
#[derive(Clone)]
struct SnapshotsSent {
    shard: String,
    to: String,
    count: Arc<AtomicU64>,
}

impl SnapshotsSent {
    /// Only the node's snapshot-sending module at info: with no filter every trace event of
    /// every crate (quinn's included) would be built and delivered, slowing the in-process
    /// cluster enough that a 5 s status call timed out under `cargo test`.
    fn wanted(metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "ringkv_node::event_loop::snapshot"
            && *metadata.level() <= tracing::Level::INFO
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SnapshotsSent {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::wanted(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        Self::wanted(metadata)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            shard: String,
            to: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let text = format!("{value:?}");
                match field.name() {
                    "message" => self.message = text,
                    "shard" => self.shard = text,
                    "to" => self.to = text,
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "sending a snapshot"
            && fields.shard == self.shard
            && fields.to == self.to
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A multi-thread runtime (2 workers, like `#[tokio::test(flavor = "multi_thread")]`) whose
/// threads all send their tracing events to `dispatch`.
fn runtime_with_dispatch(dispatch: tracing::Dispatch) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // Kept for the thread's life: the runtime's threads end with the runtime.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()
        .unwrap()
}

/// A PD replica that was down while group 0 compacted its log catches up from a snapshot that
/// carries the PD state (not shard data), saves it, and can lead PD afterwards. The test
/// counts the snapshots the PD leader sent to node 3 (its log event), so a catch-up by plain
/// appends fails it.
#[test]
fn a_lagging_pd_replica_gets_the_state_by_snapshot() {
    let sent = SnapshotsSent {
        shard: ringkv_types::ShardId::PD.to_string(),
        to: NodeId(3).to_string(),
        count: Arc::new(AtomicU64::new(0)),
    };
    let count = sent.count.clone();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        sent,
    ));
    let _main = tracing::dispatcher::set_default(&dispatch);
    let runtime = runtime_with_dispatch(dispatch);
    runtime.block_on(lagging_pd_replica_catches_up(count));
}

async fn lagging_pd_replica_catches_up(snapshots_sent: Arc<AtomicU64>) {
    let extra = pd_config(false) + "[raft]\nlog_compaction_entries = 20\n";
    let mut cluster = Cluster::start(3, 2, &extra).await;
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    let pd = ringkv_types::ShardId::PD;
    let commit_of = |status: &ringkv_types::NodeStatus| {
        status
            .replicas
            .iter()
            .find(|r| r.shard == pd)
            .map(|r| r.commit)
            .unwrap()
    };
    cluster.stop_node(2).await;
    let start = commit_of(&cluster.status(0).await);
    // PD commands fill group 0's log well past several compactions (every 20 entries), so the
    // leader no longer has the entries node 3 misses: it must send a snapshot. An idle PD writes
    // nothing to its log (liveness stays in its leader's memory), so the test writes the
    // entries: turning off the split scheduler, which `pd_config` already turned off.
    let deadline = Instant::now() + WAIT;
    while commit_of(&cluster.status(0).await).0 < start.0 + 100 {
        assert!(Instant::now() < deadline, "PD log does not grow");
        let answer = cluster
            .pd_call(&Command::SetScheduler {
                scheduler: SchedulerKind::Split,
                enabled: false,
            })
            .await;
        assert_eq!(answer, Ok(PdResponse::Done));
    }
    cluster.start_node(2).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = commit_of(&cluster.status(0).await);
        let caught_up = cluster.try_status(2).await.is_some_and(|status| {
            status
                .replicas
                .iter()
                .any(|r| r.shard == pd && r.applied >= leader)
        });
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3's PD replica never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = snapshots_sent.load(Ordering::Relaxed);
    println!("PD snapshots sent to node 3: {sent}");
    assert!(sent > 0, "node 3's PD replica caught up without a snapshot");
    // Node 3 leads PD and serves a state that was built from the snapshot plus its log.
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.leader_of(pd).await;
        if leader == 2 {
            break;
        }
        let _ = cluster
            .try_call(
                leader,
                &Request::Admin(AdminRequest::TransferLeader {
                    shard: pd,
                    to: NodeId(3),
                }),
            )
            .await;
        assert!(
            Instant::now() < deadline,
            "PD leadership never moved to node 3"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = match cluster.call(2, Request::Admin(AdminRequest::PdState)).await {
        Response::Admin(AdminResult::Pd(bytes)) => postcard::from_bytes::<PdState>(&bytes).unwrap(),
        other => panic!("node 3 does not serve the PD state: {other:?}"),
    };
    state.check_invariants();
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(state.shard_map, cluster.shard_map(0).await);
    let heartbeat = state.nodes.get(&NodeId(1)).unwrap().last_heartbeat_ms;
    assert!(heartbeat > 0, "node 1's heartbeats are in the state");
    // And PD keeps working under node 3.
    let answer = cluster
        .pd_call(&Command::SetScheduler {
            scheduler: ringkv_pd::SchedulerKind::Split,
            enabled: true,
        })
        .await;
    assert_eq!(answer, Ok(PdResponse::Done));
    assert!(cluster.pd_state().await.settings.split);
    cluster.stop_all().await;
}
