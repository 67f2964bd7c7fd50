//! Real `ringkvd` processes joining a running cluster in an order PD does not expect.
//!
//! A joining node registers with `RegisterNodeAs { id, addr }`, its configured id. Before, it
//! sent `RegisterNode { addr }` and PD handed out ids in the order registrations arrived, so two
//! nodes started together raced and a node started before a lower-numbered one could never
//! join (it stopped: "PD assigned node id 4 ... but the config says 5"). This was the
//! reproducer; it now checks that both join under their own ids.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a test failure"
)]

mod common;
mod workload;

use common::{Cluster, Running, reserve_addr};
use ringkv_pd::NodeState;
use ringkv_types::NodeId;
use std::time::{Duration, Instant};
use workload::{KeepLogsOnPanic, pd_config, wait_for_pd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_out_of_id_order_both_join() {
    let mut cluster = Cluster::start_with(3, 2, &pd_config(60_000), true).await;
    let _logs = KeepLogsOnPanic::new(&cluster, "join");
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    // Configs for nodes 4 and 5; node 5 starts first.
    for id in [4, 5] {
        let addr = reserve_addr();
        let path = cluster.write_joining_config(id, addr);
        cluster.config_paths.push(path);
        cluster.addrs.push(addr);
        cluster.nodes.push(None);
        cluster.connections.push(None);
    }
    cluster.start_node(4).await;
    wait_for_pd(&mut cluster, "node 5 registered", |state| {
        state.nodes.len() == 4
    })
    .await;
    cluster.start_node(3).await;
    let registered = wait_for_pd(&mut cluster, "nodes 4 and 5 registered", |state| {
        state.nodes.len() == 5
    })
    .await;
    // Both must heartbeat after they registered; a node that stopped never does, and its
    // exit ends the wait at once.
    let since = registered.now_ms;
    let deadline = Instant::now() + workload::WAIT;
    let state = loop {
        for index in [3, 4] {
            if let Some(Running::Process(child)) = &mut cluster.nodes[index] {
                let exit = child.0.try_wait().expect("the child can be polled");
                assert!(exit.is_none(), "node {} exited: {exit:?}", index + 1);
            }
        }
        let state = cluster.pd_state().await;
        let heartbeating = [NodeId(4), NodeId(5)].iter().all(|id| {
            state
                .nodes
                .get(id)
                .is_some_and(|n| n.state == NodeState::Up && n.last_heartbeat_ms > since)
        });
        if heartbeating {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "nodes 4 and 5 not both heartbeating"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in [4u64, 5] {
        let addr = cluster.addrs[id as usize - 1].to_string();
        assert_eq!(
            state.nodes[&NodeId(id)].addr,
            addr,
            "node {id} registered at its own address"
        );
    }
    cluster.stop_all().await;
}
