//! `ringctl local up`: a cluster of `ringkvd` child processes on loopback addresses
//! 127.0.0.11, 127.0.0.12, … (port 7100), so partitions between nodes can be made with iptables.

use crate::certs;
use crate::config::{RingctlConfig, TlsFiles};
use anyhow::{Context, Result, bail};
use ringkv_client::Client;
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

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

/// The loopback IP of node `id`: 127.0.0.(10 + id).
fn node_ip(id: u64) -> Result<Ipv4Addr> {
    let last = u8::try_from(10 + id).context("node id too large for a loopback address")?;
    Ok(Ipv4Addr::new(127, 0, 0, last))
}

fn endpoint(id: u64, port: u16) -> Result<SocketAddr> {
    Ok(SocketAddr::new(IpAddr::V4(node_ip(id)?), port))
}

fn node_config_text(id: u64, port: u16, endpoints: &[String]) -> Result<String> {
    let initial: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    Ok(format!(
        "# Written by `ringctl local up`; edit freely, it is reused on the next start.\n\
         # Relative paths are relative to this file's directory.\n\
         node_id = {id}\n\
         cluster = \"{CLUSTER}\"\n\
         listen_addr = \"{listen}\"\n\
         data_dir = \"data\"\n\
         initial_cluster = [{initial}]\n\
         initial_shards = {INITIAL_SHARDS}\n\
         replication_factor = 3\n\
         \n\
         [tls]\n\
         ca_cert = \"../certs/ca.pem\"\n\
         cert = \"../certs/node-{id}.pem\"\n\
         key = \"../certs/node-{id}.key\"\n",
        listen = endpoint(id, port)?,
        initial = initial.join(", "),
    ))
}

/// `ringkvd` next to the running executable, else on `PATH`.
fn find_ringkvd() -> Result<PathBuf> {
    let name = format!("ringkvd{}", std::env::consts::EXE_SUFFIX);
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(&name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "cannot find the `ringkvd` binary next to ringctl or on PATH; build it with \
         `cargo build --release --bins` and run `./target/release/ringctl local up`"
    )
}

/// Checks that this process may bind the node's address (a free port on an existing loopback
/// address).
fn check_bind(addr: SocketAddr) -> Result<()> {
    match std::net::UdpSocket::bind(addr) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("{addr} is in use: is another local cluster running? (stop it with Ctrl-C)")
        }
        Err(error) => bail!(
            "cannot bind {addr}: {error}. Linux routes all of 127.0.0.0/8 to loopback; on \
             other systems add the alias first (macOS: `sudo ifconfig lo0 alias {}`)",
            addr.ip()
        ),
    }
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
    for id in &ids {
        check_bind(endpoint(*id, options.port)?)?;
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
    for (id, path) in &config_paths {
        let log = dir.join(format!("node-{id}")).join("ringkvd.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let log_err = log_file.try_clone().context("duplicating the log handle")?;
        let child = Command::new(&ringkvd)
            .arg("--config")
            .arg(path)
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
        nodes.push(Node {
            id: *id,
            child,
            log,
            config: path.clone(),
        });
    }

    let outcome = run(&mut nodes, &ringctl_config, &ringctl_path).await;
    stop_all(&mut nodes).await;
    outcome
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
}
