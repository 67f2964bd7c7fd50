//! `ringctl local add-node`: register a node with PD, issue its certificate, write its
//! `join` config, run it until it has joined and then until Ctrl-C.

use super::*;

/// Runs `local add-node --dir DIR` until Ctrl-C or SIGTERM (or the node's exit).
pub async fn add_node(dir: &Path) -> Result<()> {
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "no cluster directory {}; create one with `ringctl local up`",
            dir.display()
        )
    })?;
    let ringctl_path = dir.join("ringctl.toml");
    let certs_dir = dir.join("certs");
    if !ringctl_path.is_file() || !certs_dir.join("ca.key").is_file() {
        bail!(
            "{} holds no local cluster (ringctl.toml and certs/ca.key are missing); create one              with `ringctl local up --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    let config = RingctlConfig::load(&ringctl_path)?;
    let port = cluster_port(&config.endpoints)?;
    let ringkvd = find_ringkvd()?;
    let client = Client::connect(config.client_config()?)
        .await
        .context("connecting to the cluster; is `ringctl local up` running?")?;
    let outcome = add_and_run(&client, &dir, port, &ringkvd).await;
    client.close().await;
    outcome
}

/// The port of the cluster's nodes (the same for every node).
pub(super) fn cluster_port(endpoints: &[String]) -> Result<u16> {
    let parsed = ringkv_client::ClientConfig::parse_endpoints(endpoints)?;
    let Some(first) = parsed.first() else {
        bail!("ringctl.toml lists no endpoints");
    };
    let port = first
        .addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    port.ok_or_else(|| anyhow::anyhow!("endpoint `{}` has no port", first.addr))
}

/// The id for the new node: a node PD registered at its conventional address whose config was
/// never written (an interrupted add-node), else the next id PD will hand out.
pub(super) fn pick_node_id(state: &pd::PdState, dir: &Path, port: u16) -> Result<u64> {
    for node in state.nodes.values() {
        if node.state == NodeState::Removed {
            continue;
        }
        let conventional = endpoint(node.id.get(), port).ok().map(|a| a.to_string());
        let config = dir
            .join(format!("node-{}", node.id.get()))
            .join("ringkvd.toml");
        if conventional.as_deref() == Some(node.addr.as_str()) && !config.exists() {
            return Ok(node.id.get());
        }
    }
    Ok(state.ids.next_node)
}

pub(super) async fn add_and_run(
    client: &Client,
    dir: &Path,
    port: u16,
    ringkvd: &Path,
) -> Result<()> {
    let state = crate::admin::state(client).await?;
    let predicted = pick_node_id(&state, dir, port)?;
    let addr = endpoint(predicted, port)?;
    check_bind(addr)?;
    let registered = client
        .pd_call(PdCommand::RegisterNode {
            node: NodeRegistration {
                addr: addr.to_string(),
                labels: BTreeMap::new(),
                capacity_bytes: 0,
            },
            now_ms: 0,
        })
        .await
        .map_err(crate::admin::explain)
        .context("registering the node with the placement driver")?;
    let pd::Response::NodeId(node) = registered else {
        bail!("unexpected answer to RegisterNode: {registered:?}");
    };
    let id = node.get();
    if id != predicted {
        // Another node registered between the read and the registration, so the address does
        // not follow the 127.0.0.(10+N) convention `local up` relies on.
        bail!(
            "PD assigned id {id} to {addr}, which was chosen for id {predicted} (another node \
             registered at the same time); remove it with `ringctl remove-node {id}` and run \
             add-node again"
        );
    }
    println!("registered node {id} at {addr}");
    let ip = addr.ip();
    let report = certs::ensure(&dir.join("certs"), CLUSTER, &[(node, ip)], &[])?;
    if report.created.iter().any(|stem| stem == "ca") {
        bail!("the cluster CA was missing under {}", dir.display());
    }
    let node_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let config_path = node_dir.join("ringkvd.toml");
    // Read after registering and before starting the node: a heartbeat newer than this one
    // comes from the running node.
    let registered = crate::admin::state(client).await?;
    let registered_ms = registered
        .nodes
        .get(&node)
        .map_or(0, |info| info.last_heartbeat_ms);
    if !config_path.exists() {
        let join = join_addresses(&registered, client, node);
        std::fs::write(&config_path, join_config_text(id, port, &join)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        println!("wrote {}", config_path.display());
    }
    let mut nodes = vec![spawn(ringkvd, dir, id, &config_path)?];
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let joined = wait_joined(client, &mut nodes, node, registered_ms);
    let outcome = tokio::select! {
        result = joined => result,
        () = &mut signal => {
            println!("stopping before the node joined");
            stop_all(&mut nodes).await;
            return Ok(());
        }
    };
    if let Err(error) = outcome {
        stop_all(&mut nodes).await;
        return Err(error);
    }
    println!(
        "node {id} is Up in the placement driver. Replicas move to it as the balance \
         schedulers run (`ringctl rebalance` shows and follows them)."
    );
    println!("Ctrl-C stops node {id}; `ringctl local up` starts it with the others from now on.");
    let exited = BTreeSet::new();
    let outcome = tokio::select! {
        () = &mut signal => Ok(()),
        (id, status, _) = first_exit(&mut nodes, &exited) => {
            Err(anyhow::anyhow!("node {id} exited ({status})"))
        }
    };
    stop_all(&mut nodes).await;
    outcome
}

/// Addresses of the registered, non-removed nodes other than `node`: the new node's `join` list
/// (the seed endpoints if PD lists none).
pub(super) fn join_addresses(
    state: &pd::PdState,
    client: &Client,
    node: NodeId,
) -> Vec<SocketAddr> {
    let mut join = Vec::new();
    for info in state.nodes.values() {
        if info.id == node || info.state == NodeState::Removed {
            continue;
        }
        if let Ok(addr) = info.addr.parse::<SocketAddr>() {
            join.push(addr);
        }
    }
    if join.is_empty() {
        join = client
            .endpoints()
            .iter()
            .filter_map(|e| e.addr.parse::<SocketAddr>().ok())
            .collect();
    }
    join
}

/// Waits until PD shows `node` `Up` with a heartbeat newer than `registered_ms`.
pub(super) async fn wait_joined(
    client: &Client,
    nodes: &mut [Node],
    node: NodeId,
    registered_ms: u64,
) -> Result<()> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        for running in nodes.iter_mut() {
            if let Ok(Some(status)) = running.child.try_wait() {
                bail!(
                    "node {} exited while joining ({status}); see {}",
                    running.id,
                    running.log.display()
                );
            }
        }
        match client.pd_state().await {
            Ok(state) => match state.nodes.get(&node) {
                Some(info) => {
                    if info.state == NodeState::Up && info.last_heartbeat_ms > registered_ms {
                        return Ok(());
                    }
                    println!(
                        "waiting for node {node}'s first heartbeat (state {:?})",
                        info.state
                    );
                }
                None => println!("waiting: PD does not list node {node} yet"),
            },
            Err(error) => println!("waiting: placement driver unavailable: {error}"),
        }
        if Instant::now() >= deadline {
            bail!(
                "node {node} did not heartbeat to the placement driver within {} s; see its log",
                JOIN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
