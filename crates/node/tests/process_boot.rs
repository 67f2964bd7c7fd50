//! Real `ringkvd` processes: how initial nodes create a cluster, and certificates rotated with
//! SIGHUP.
//!
//! - An initial node whose bootstrap settings differ from the cluster's (`initial_shards`) is
//!   refused naming the field and both values; a running node restarted with a changed
//!   bootstrap setting ignores it with a warning, and one restarted with other
//!   `initial_cluster` ids is refused.
//! - A placement-driver host whose data dir was wiped while its peers are down does not create
//!   a new cluster alone; once the peers are back it is refused as a lost store.
//! - A CA is rolled with SIGHUP only (bundle old+new, new node certificates, old CA removed)
//!   while a client writes; a client with a certificate of the removed CA is refused after.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failure is a test failure"
)]

mod common;
mod workload;

use common::{CLUSTER, Cluster, Running};
use ringkv_client::{Client, ClientConfig, Endpoint, RetryPolicy, TlsSource};
use ringkv_transport::ClientEndpoint;
use ringkv_transport::certs::{ClusterCa, TlsIdentity, Validity};
use ringkv_types::{AdminRequest, NodeId, Request, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use workload::{KeepLogsOnPanic, wait_for_pd};

/// Whether node `index`'s process still runs.
fn running(cluster: &mut Cluster, index: usize) -> bool {
    match cluster.nodes[index].as_mut() {
        Some(Running::Process(child)) => child.0.try_wait().unwrap().is_none(),
        _ => false,
    }
}

/// Waits (bounded) until node `index`'s log contains `needle` `times` times.
async fn wait_for_log(cluster: &Cluster, index: usize, needle: &str, times: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = cluster.log_of(index);
        if log.matches(needle).count() >= times {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "node {}: `{needle}` not logged {times} time(s); log:\n{log}",
            index + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn edit_config(cluster: &Cluster, index: usize, from: &str, to: &str) {
    let path = &cluster.config_paths[index];
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "config {} has no `{from}`", index + 1);
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_node_with_other_bootstrap_settings_is_refused_naming_the_field() {
    let shards = 4;
    let mut cluster = Cluster::prepare(3, shards, &workload::pd_config(600_000), true);
    let _logs = KeepLogsOnPanic::new(&cluster, "boot-mismatch");
    edit_config(&cluster, 2, "initial_shards = 4", "initial_shards = 8");
    cluster.start_node(0).await;
    cluster.start_node(1).await;
    cluster
        .wait_for_leaders(shards, Duration::from_secs(60))
        .await;

    // Node 3 says 8 shards where the cluster was created with 4.
    cluster.start_node(2).await;
    let (code, log) = cluster.wait_for_exit(2, "kept running").await;
    assert_ne!(code, Some(0), "refused with an error exit; log:\n{log}");
    assert!(
        log.contains("bootstrap settings differ from node")
            && log.contains("`initial_shards`: here 8, there 4"),
        "the refusal names the field and both values; log:\n{log}"
    );
    assert!(
        !log.contains("bootstrapped the initial shard map"),
        "node 3 created groups; log:\n{log}"
    );

    // Once fixed, node 3 joins the cluster (its data dir holds nothing yet).
    edit_config(&cluster, 2, "initial_shards = 8", "initial_shards = 4");
    cluster.start_node(2).await;
    wait_for_pd(&mut cluster, "node 3's store is recorded", |state| {
        state.store_incarnations.len() == 3
    })
    .await;

    // A restart with a changed bootstrap setting: ignored with a warning naming it.
    cluster.stop_node(0).await;
    edit_config(&cluster, 0, "initial_shards = 4", "initial_shards = 6");
    edit_config(
        &cluster,
        0,
        "max_down_time_ms = 600000",
        "max_down_time_ms = 5000",
    );
    cluster.start_node(0).await;
    let log = wait_for_log(&cluster, 0, "the config's value is ignored", 2).await;
    assert!(
        log.contains("`initial_shards`: here 6, there 4")
            && log.contains("`pd.max_down_time_ms`: here 5000, there 600000"),
        "the warning names each field and both values; log:\n{log}"
    );
    let leaders = cluster
        .wait_for_leaders(shards, Duration::from_secs(60))
        .await;
    assert_eq!(leaders.len() as u64, shards + 1, "still {shards} shards");
    assert!(running(&mut cluster, 0), "node 1 runs");

    // A restart with other initial_cluster ids: refused.
    cluster.stop_node(0).await;
    let third = format!("\"3@{}\"", cluster.addrs[2]);
    edit_config(&cluster, 0, &third, &format!("\"4@{}\"", cluster.addrs[2]));
    cluster.start_node(0).await;
    let (code, log) = cluster.wait_for_exit(0, "kept running").await;
    assert_ne!(code, Some(0), "refused; log:\n{log}");
    assert!(
        log.contains("`initial_cluster` names other nodes than the cluster was created with"),
        "log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_pd_host_alone_does_not_create_a_cluster_and_is_refused_once_peers_are_back() {
    let shards = 2;
    let mut cluster = Cluster::start_with(3, shards, &workload::pd_config(600_000), true).await;
    let _logs = KeepLogsOnPanic::new(&cluster, "boot-wiped");
    cluster
        .wait_for_leaders(shards, Duration::from_secs(60))
        .await;
    let state = wait_for_pd(&mut cluster, "every node's store is recorded", |state| {
        state.store_incarnations.len() == 3
    })
    .await;
    let recorded = state.store_incarnations[&NodeId(1)];

    // Every node down; node 1 (a PD host, the smallest id) loses its data dir.
    for index in 0..3 {
        cluster.kill_node(index);
    }
    let data_dir = cluster.dir.path().join("node-1");
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();

    // Alone, it waits saying why, and creates nothing.
    cluster.start_node(0).await;
    let log = wait_for_log(&cluster, 0, "fewer than a quorum of the initial nodes", 2).await;
    assert!(running(&mut cluster, 0), "node 1 waits; log:\n{log}");
    assert!(
        !log.contains("bootstrapped the initial shard map")
            && !log.contains("the cluster's first start"),
        "node 1 created a new cluster alone; log:\n{log}"
    );

    // Its peers come back: PD knows node 1's old store, so the empty one is refused.
    cluster.start_node(1).await;
    cluster.start_node(2).await;
    let (code, log) = cluster.wait_for_exit(0, "kept running").await;
    assert_ne!(code, Some(0), "refused with an error exit; log:\n{log}");
    assert!(
        log.contains("refusing to start node 1")
            && log.contains(&format!("recorded store incarnation {recorded:016x}")),
        "refused as a lost store; log:\n{log}"
    );
    assert!(
        !log.contains("bootstrapped the initial shard map"),
        "log:\n{log}"
    );
    // The two others serve.
    cluster
        .wait_for_leaders(shards, Duration::from_secs(60))
        .await;
}

/// A client of `cluster`'s first three nodes presenting `identity`.
async fn client_with(cluster: &Cluster, identity: TlsIdentity) -> Client {
    let endpoints = cluster
        .addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| Endpoint {
            node: NodeId(i as u64 + 1),
            addr: addr.to_string(),
        })
        .collect();
    let mut config = ClientConfig::new(endpoints, CLUSTER, TlsSource::Identity(identity));
    config.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.request_timeout = Duration::from_secs(20);
    config.attempt_timeout = Duration::from_secs(2);
    config.retry = RetryPolicy {
        attempts_max: 64,
        ..RetryPolicy::default()
    };
    Client::connect(config).await.unwrap()
}

/// Whether a new connection presenting `identity` gets a `NodeStatus` answer from node `index`.
async fn served(cluster: &Cluster, identity: &TlsIdentity, index: usize) -> bool {
    let endpoint = ClientEndpoint::new(identity, CLUSTER, "127.0.0.1:0".parse().unwrap()).unwrap();
    let node = NodeId(index as u64 + 1);
    let attempt = async {
        let connection = endpoint.connect(node, cluster.addrs[index]).await.ok()?;
        let answer = connection
            .call(
                &Request::Admin(AdminRequest::NodeStatus),
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        Some(matches!(answer, Response::Admin(_)))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn hangup(cluster: &Cluster, index: usize) {
    let Some(Running::Process(child)) = cluster.nodes[index].as_ref() else {
        panic!("node {} is not a running process", index + 1);
    };
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

const RELOADED: &str = "reloaded the certificate, key and CA bundle";

/// SIGHUP to every node; waits until each logged its `times`-th successful reload.
async fn reload_all(cluster: &Cluster, times: usize) {
    for index in 0..3 {
        hangup(cluster, index);
    }
    for index in 0..3 {
        wait_for_log(cluster, index, RELOADED, times).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_serving_through_a_ca_rotation_done_by_sighup() {
    let shards = 2;
    let mut cluster = Cluster::start_with(3, shards, &workload::pd_config(600_000), true).await;
    let _logs = KeepLogsOnPanic::new(&cluster, "boot-rotation");
    cluster
        .wait_for_leaders(shards, Duration::from_secs(60))
        .await;
    let certs = cluster.dir.path().join("certs");
    let validity = Validity::days_from_now(1);
    let old_pem = cluster.ca.cert_pem().to_string();
    let new_ca = ClusterCa::generate(CLUSTER, validity).unwrap();
    let new_pem = new_ca.cert_pem().to_string();
    let old_client = cluster.client_identity.clone();
    assert!(served(&cluster, &old_client, 0).await);

    // 1. Every node trusts the bundle: old and new CA.
    std::fs::write(certs.join("ca.pem"), format!("{old_pem}{new_pem}")).unwrap();
    reload_all(&cluster, 1).await;

    // A client of the new CA (trusting both) writes through the rest of the rotation.
    let bundle_client = TlsIdentity::from_pem(
        &format!("{old_pem}{new_pem}"),
        &new_ca.issue_client("ringctl", validity).unwrap(),
    )
    .unwrap();
    let client = client_with(&cluster, bundle_client).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match client.put(format!("rot-{}", i % 64), format!("v{i}")).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("put failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // A bad new certificate is refused; the one in use stays in use.
    let node1_cert = certs.join("node-1.pem");
    let good = std::fs::read(&node1_cert).unwrap();
    std::fs::write(&node1_cert, b"not a certificate").unwrap();
    hangup(&cluster, 0);
    let log = wait_for_log(&cluster, 0, "certificate reload refused", 1).await;
    assert!(
        log.contains("node-1.pem"),
        "the refusal names the file; log:\n{log}"
    );
    assert!(
        served(&cluster, &old_client, 0).await,
        "node 1 still serves"
    );
    std::fs::write(&node1_cert, good).unwrap();

    // 2. New node certificates from the new CA.
    for (index, addr) in cluster.addrs.iter().enumerate() {
        let id = index as u64 + 1;
        new_ca
            .issue_node(NodeId(id), &[addr.ip()], validity)
            .unwrap()
            .write(&certs, &format!("node-{id}"))
            .unwrap();
    }
    reload_all(&cluster, 2).await;

    // 3. The old CA removed.
    std::fs::write(certs.join("ca.pem"), &new_pem).unwrap();
    reload_all(&cluster, 3).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("writes during the rotation: {ok} ok, {failed} failed");
    assert!(ok > 0 && failed == 0, "{ok} ok, {failed} failed");

    // New connections: a client of the new CA is served by every node; one with a
    // certificate of the removed CA is refused (even trusting the new CA), and a client that
    // trusts only the old CA refuses the nodes.
    let new_client =
        TlsIdentity::from_pem(&new_pem, &new_ca.issue_client("ringctl", validity).unwrap())
            .unwrap();
    let mut removed_ca_client = old_client.clone();
    removed_ca_client.ca = new_client.ca.clone();
    for index in 0..3 {
        assert!(
            served(&cluster, &new_client, index).await,
            "node {}",
            index + 1
        );
        assert!(
            !served(&cluster, &removed_ca_client, index).await,
            "node {} accepted a certificate of the removed CA",
            index + 1
        );
        assert!(!served(&cluster, &old_client, index).await);
    }
    // Every key written is readable with the new CA's client.
    let reader = client_with(&cluster, new_client).await;
    for key in 0..64 {
        reader.get(format!("rot-{key}")).await.unwrap();
    }
    for index in 0..3 {
        assert!(
            running(&mut cluster, index),
            "node {} kept running",
            index + 1
        );
    }
}
