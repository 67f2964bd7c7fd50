//! `ringctl local up`: a cluster of `ringkvd` child processes on loopback addresses
//! 127.0.0.11, 127.0.0.12, … (port 7100), so partitions between nodes can be made with iptables.
//!
//! `ringctl local add-node` grows it: it registers a new node with the placement driver (node N
//! listens on 127.0.0.(10+N)), issues its certificate with the cluster CA, writes
//! `node-N/ringkvd.toml` with a `join` list instead of `initial_cluster`, and runs the node in
//! the foreground until Ctrl-C, like `local up`. Nodes added this way belong to the cluster
//! from then on: `local up` starts every `node-N/ringkvd.toml` it finds under the directory, so
//! after a restart of `local up` they run with the others and `add-node` is not needed again.

use crate::certs;
use crate::config::{RingctlConfig, TlsFiles};
use anyhow::{Context, Result, bail};
use ringkv_client::Client;
use ringkv_types::pd::{self, Command as PdCommand, NodeRegistration, NodeState};
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

mod add_node;
mod layout;

pub use add_node::add_node;
use layout::*;

/// The cluster name of local clusters.
const CLUSTER: &str = "local";
/// The default client-service and peer port of every node.
pub const DEFAULT_PORT: u16 = 7100;
/// Shards of a new local cluster.
const INITIAL_SHARDS: u64 = 16;
/// How long `local up` waits for every shard to have a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The client certificate ringctl (and the load generator) use.
const CLIENT_NAME: &str = "ringctl";
/// How far above `--port` every node's HTTP API listens (TCP): 7100 -> 8100. Clusters started
/// with different `--port`s (tests run several at once) so never share an HTTP port either.
const HTTP_PORT_OFFSET: u16 = 1000;
/// How long `local add-node` waits for the new node's first heartbeat at PD.
const JOIN_TIMEOUT: Duration = Duration::from_secs(90);

/// Options of `local up`.
#[derive(Debug)]
pub struct UpOptions {
    /// 3 or 5.
    pub nodes: u64,
    /// The cluster directory.
    pub dir: PathBuf,
    /// The port every node listens on (each node has its own IP).
    pub port: u16,
}

/// A running node; killed when dropped (`kill_on_drop`), stopped gently by [`stop_all`].
struct Node {
    id: u64,
    child: Child,
    log: PathBuf,
    config: PathBuf,
}

/// Runs `local up` until Ctrl-C or SIGTERM.
pub async fn up(options: UpOptions) -> Result<()> {
    if options.nodes != 3 && options.nodes != 5 {
        bail!("--nodes must be 3 or 5");
    }
    let dir = options.dir;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let ringctl_path = dir.join("ringctl.toml");
    let ids: Vec<u64> = (1..=options.nodes).collect();
    let endpoints = ids
        .iter()
        .map(|id| Ok(format!("{id}@{}", endpoint(*id, options.port)?)))
        .collect::<Result<Vec<_>>>()?;
    if ringctl_path.exists() {
        let existing = RingctlConfig::load(&ringctl_path)?;
        if existing.endpoints != endpoints {
            bail!(
                "{} holds a cluster with endpoints {}; start it with the same --nodes and \
                 --port, or use another --dir",
                dir.display(),
                existing.endpoints.join(", ")
            );
        }
        println!("reusing the cluster in {}", dir.display());
    }
    let ringkvd = find_ringkvd()?;
    // Nodes grown with `local add-node` run too (they joined the cluster for good).
    let added = added_nodes(&dir, options.nodes)?;
    for id in ids.iter().chain(added.iter().map(|(id, _)| id)) {
        check_bind(endpoint(*id, options.port)?)?;
    }
    if !added.is_empty() {
        let list: Vec<String> = added.iter().map(|(id, _)| id.to_string()).collect();
        println!("also starting added node(s) {}", list.join(", "));
    }

    let nodes_with_ips = ids
        .iter()
        .map(|id| Ok((NodeId(*id), IpAddr::V4(node_ip(*id)?))))
        .collect::<Result<Vec<_>>>()?;
    let report = certs::ensure(&dir.join("certs"), CLUSTER, &nodes_with_ips, &[CLIENT_NAME])?;
    if !report.created.is_empty() {
        println!("created certificates: {}", report.created.join(", "));
    }
    let mut config_paths = Vec::new();
    for id in &ids {
        let node_dir = dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
        let path = node_dir.join("ringkvd.toml");
        if !path.exists() {
            std::fs::write(&path, node_config_text(*id, options.port, &endpoints)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        config_paths.push((*id, path));
    }
    for (_, path) in config_paths.iter().chain(&added) {
        if let Some(http) = config_http_addr(path) {
            check_http_bind(http)?;
        }
    }
    let ringctl_config = RingctlConfig {
        cluster: CLUSTER.into(),
        endpoints: endpoints.clone(),
        request_timeout_ms: 5000,
        tls: TlsFiles {
            ca_cert: "certs/ca.pem".into(),
            cert: format!("certs/client-{CLIENT_NAME}.pem").into(),
            key: format!("certs/client-{CLIENT_NAME}.key").into(),
        },
    };
    ringctl_config.write(&ringctl_path)?;

    let mut nodes = Vec::new();
    for (id, path) in config_paths.iter().chain(&added) {
        nodes.push(spawn(&ringkvd, &dir, *id, path)?);
    }

    let outcome = run(&mut nodes, &ringctl_config, &ringctl_path).await;
    stop_all(&mut nodes).await;
    outcome
}

/// Starts node `id` with its config, logging to `node-<id>/ringkvd.log` under `dir`.
fn spawn(ringkvd: &Path, dir: &Path, id: u64, config: &Path) -> Result<Node> {
    let log = dir.join(format!("node-{id}")).join("ringkvd.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let log_err = log_file.try_clone().context("duplicating the log handle")?;
    // `--exit-with-parent`: the node stops when this process dies, even by SIGKILL, when
    // `kill_on_drop` and `stop_all` never run. The kernel ties the signal to the thread that
    // forks, so nodes are spawned from the main future (on the thread that runs `block_on`,
    // which lives as long as ringctl), never from a blocking-pool thread.
    let child = Command::new(ringkvd)
        .arg("--exit-with-parent")
        .arg(std::process::id().to_string())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", ringkvd.display()))?;
    println!(
        "started node {id} (pid {}), log {}",
        child.id().unwrap_or(0),
        log.display()
    );
    Ok(Node {
        id,
        child,
        log,
        config: config.to_path_buf(),
    })
}
/// The curl lines of the tour: the HTTP API of the first nodes (node configs written before
/// `http_addr` existed have none: edit `node-N/ringkvd.toml` to add it).
fn print_curl_tour(nodes: &[Node], config_path: &Path) {
    let Some(dir) = config_path.parent() else {
        return;
    };
    let ca = dir.join("certs").join("ca.pem");
    let ca = std::env::current_dir()
        .ok()
        .and_then(|cwd| ca.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or(ca);
    let Some(first) = nodes.first() else {
        return;
    };
    let second = nodes.get(1).unwrap_or(first);
    let (Some(one), Some(two)) = (
        config_http_addr(&first.config),
        config_http_addr(&second.config),
    ) else {
        return;
    };
    let certs = ca.parent().map(Path::to_path_buf).unwrap_or_default();
    // The `root` client certificate (`client-ringctl`); users log in with POST /v1/auth/token.
    let auth = format!(
        "--cacert {} --cert {} --key {}",
        ca.display(),
        certs.join(format!("client-{CLIENT_NAME}.pem")).display(),
        certs.join(format!("client-{CLIENT_NAME}.key")).display()
    );
    let ca = ca.display();
    println!("or over HTTPS (any node serves any key):");
    println!("  curl {auth} -X PUT --data-binary world https://{one}/v1/kv/hello");
    println!("  curl {auth} https://{two}/v1/kv/hello");
    println!("  curl --cacert {ca} https://{two}/readyz");
    println!("  curl --cacert {ca} https://{one}/metrics");
}

/// Waits for leaders, prints the tour, then waits for a signal or a node's death.
async fn run(nodes: &mut [Node], config: &RingctlConfig, config_path: &Path) -> Result<()> {
    let mut client_config = RingctlConfig::load(config_path)?.client_config()?;
    client_config.request_timeout = Duration::from_secs(2);
    client_config.attempt_timeout = Duration::from_secs(1);
    client_config.connect_timeout = Duration::from_secs(1);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let ready = wait_ready(nodes, client_config);
    tokio::select! {
        result = ready => result?,
        () = &mut signal => {
            println!("stopping before the cluster was ready");
            return Ok(());
        }
    }
    let config_hint = if config_path == Path::new(crate::config::DEFAULT_PATH)
        || std::env::current_dir()
            .map(|cwd| cwd.join(crate::config::DEFAULT_PATH) == config_path)
            .unwrap_or(false)
    {
        String::new()
    } else {
        format!(" --config {}", config_path.display())
    };
    println!();
    println!(
        "cluster {:?} is up: {}",
        config.cluster,
        config.endpoints.join(", ")
    );
    println!("client config: {}", config_path.display());
    println!("try, in another terminal:");
    println!("  ringctl{config_hint} kv put hello world");
    println!("  ringctl{config_hint} kv get hello");
    println!("  ringctl{config_hint} status");
    println!(
        "  ringkv-bench --config {} --workload mixed --duration 10",
        config_path.display()
    );
    print_curl_tour(nodes, config_path);
    println!("Ctrl-C stops every node.");
    // A node that dies (a crash, or `kill -9` in a failure test) is reported, not restarted;
    // the others keep running. Restart it by hand with the printed command.
    let mut exited = BTreeSet::new();
    loop {
        tokio::select! {
            () = &mut signal => {
                println!("stopping {} nodes", nodes.len() - exited.len());
                return Ok(());
            }
            (id, status, config) = first_exit(nodes, &exited) => {
                exited.insert(id);
                println!(
                    "node {id} exited ({status}); the other nodes keep running. Restart it \
                     with: ringkvd --config {}",
                    config.display()
                );
                if exited.len() == nodes.len() {
                    bail!("every node exited");
                }
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves when a node not in `exited` exits: its id, exit status and config file.
async fn first_exit(nodes: &mut [Node], exited: &BTreeSet<u64>) -> (u64, String, PathBuf) {
    loop {
        for node in nodes.iter_mut().filter(|node| !exited.contains(&node.id)) {
            if let Ok(Some(status)) = node.child.try_wait() {
                let status = format!("{status}, log {}", node.log.display());
                return (node.id, status, node.config.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until every shard of the map (and the placement driver) has a leader.
async fn wait_ready(nodes: &mut [Node], config: ringkv_client::ClientConfig) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut client = None;
    let mut last_progress = String::new();
    loop {
        for node in nodes.iter_mut() {
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!(
                    "node {} exited during startup ({status}); see {}",
                    node.id,
                    node.log.display()
                );
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the cluster did not elect every shard leader within {} s ({last_progress}); see \
                 the logs under node-*/ringkvd.log",
                READY_TIMEOUT.as_secs()
            );
        }
        if client.is_none() {
            match Client::connect(config.clone()).await {
                Ok(connected) => client = Some(connected),
                Err(error) => last_progress = format!("waiting for the shard map: {error}"),
            }
        }
        if let Some(client) = &client {
            match leaders(client).await {
                Ok((led, total)) if total > 0 && led == total => {
                    println!("every shard has a leader ({led}/{total})");
                    return Ok(());
                }
                Ok((led, total)) => last_progress = format!("{led}/{total} shards have a leader"),
                Err(error) => last_progress = format!("waiting: {error}"),
            }
        }
        println!("{last_progress}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Counts shards (map shards plus the placement driver) with a leader among reachable nodes.
async fn leaders(client: &Client) -> Result<(usize, usize)> {
    let map = client.shard_map().await?;
    let mut shards: BTreeSet<ShardId> = map.shards.iter().map(|d| d.id).collect();
    shards.insert(ShardId::PD);
    let mut led = BTreeMap::new();
    for endpoint in client.nodes() {
        let Ok(status) = client.node_status(endpoint.node).await else {
            continue;
        };
        for replica in status.replicas.iter().filter(|r| r.is_leader) {
            led.insert(replica.shard, endpoint.node);
        }
    }
    let count = shards.iter().filter(|s| led.contains_key(s)).count();
    Ok((count, shards.len()))
}

/// SIGTERM to every node, wait up to [`STOP_TIMEOUT`], then kill what is left.
async fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id() {
            // std has no signal API and this crate forbids unsafe code, so ask kill(1).
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for node in nodes.iter_mut() {
        match tokio::time::timeout_at(deadline, node.child.wait()).await {
            Ok(Ok(status)) => println!("node {} stopped ({status})", node.id),
            _ => {
                let _ = node.child.kill().await;
                println!("node {} killed after {} s", node.id, STOP_TIMEOUT.as_secs());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::add_node::pick_node_id;
    use super::*;

    #[test]
    fn node_configs_name_loopback_addresses_and_relative_files() -> Result<()> {
        let endpoints = vec!["1@127.0.0.11:7100".to_string(), "2@127.0.0.12:7100".into()];
        let text = node_config_text(2, DEFAULT_PORT, &endpoints)?;
        let value: toml::Table = toml::from_str(&text)?;
        assert_eq!(value.get("node_id").and_then(|v| v.as_integer()), Some(2));
        assert_eq!(
            value.get("listen_addr").and_then(|v| v.as_str()),
            Some("127.0.0.12:7100")
        );
        assert_eq!(
            value
                .get("initial_cluster")
                .and_then(|v| v.as_array())
                .map(Vec::len),
            Some(2)
        );
        assert!(text.contains("cert = \"../certs/node-2.pem\""));
        assert!(node_ip(300).is_err());
        Ok(())
    }

    #[test]
    fn joining_nodes_list_join_addresses_instead_of_an_initial_cluster() -> Result<()> {
        let join: Vec<SocketAddr> = vec!["127.0.0.11:7100".parse()?, "127.0.0.12:7100".parse()?];
        let text = join_config_text(4, DEFAULT_PORT, &join)?;
        let value: toml::Table = toml::from_str(&text)?;
        assert_eq!(value.get("node_id").and_then(|v| v.as_integer()), Some(4));
        assert_eq!(
            value.get("listen_addr").and_then(|v| v.as_str()),
            Some("127.0.0.14:7100")
        );
        let listed: Vec<&str> = value
            .get("join")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(listed, ["127.0.0.11:7100", "127.0.0.12:7100"]);
        assert!(value.get("initial_cluster").is_none());
        assert!(value.get("tls").is_some());
        Ok(())
    }

    #[test]
    fn added_nodes_are_found_by_their_config_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        for (name, with_config) in [
            ("node-1", true),
            ("node-4", true),
            ("node-6", false),
            ("node-x", true),
            ("certs", false),
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path)?;
            if with_config {
                std::fs::write(path.join("ringkvd.toml"), "")?;
            }
        }
        let found: Vec<u64> = added_nodes(dir.path(), 3)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(found, [4]);
        Ok(())
    }

    #[test]
    fn a_registered_node_without_a_config_is_resumed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut state = pd::PdState::new();
        state.ids.next_node = 6;
        let info = |id: u64, addr: String| pd::NodeInfo {
            id: NodeId(id),
            addr,
            state: NodeState::Up,
            labels: BTreeMap::new(),
            capacity_bytes: 0,
            last_heartbeat_ms: 0,
            down_since_ms: None,
            stats: pd::NodeStats::default(),
        };
        state
            .nodes
            .insert(NodeId(1), info(1, "127.0.0.11:7100".into()));
        std::fs::create_dir_all(dir.path().join("node-1"))?;
        std::fs::write(dir.path().join("node-1").join("ringkvd.toml"), "")?;
        assert_eq!(pick_node_id(&state, dir.path(), DEFAULT_PORT)?, 6);
        state
            .nodes
            .insert(NodeId(5), info(5, "127.0.0.15:7100".into()));
        assert_eq!(pick_node_id(&state, dir.path(), DEFAULT_PORT)?, 5);
        Ok(())
    }
}
