//! An in-process cluster on 127.0.0.1 with generated certificates in a temporary directory.
//! Every wait is bounded; nodes are stopped when the cluster is dropped (the runtime ends).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ringkv_node::{NodeConfig, NodeHandle};
use ringkv_transport::certs::{ClusterCa, TlsIdentity, Validity};
use ringkv_transport::{ClientConnection, ClientEndpoint};
use ringkv_types::{
    AdminRequest, AdminResult, KvOp, KvRequest, NodeId, NodeStatus, ReadConsistency, Request,
    Response, ShardDescriptor, ShardId, ShardMap, WriteSession,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const CLUSTER: &str = "test";
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[pd]` table of tests that do not write their own.
pub const PD_SCHEDULERS_OFF: &str = "[pd]
repair = false
balance_replicas = false
balance_leaders = false
drain = false
split = false
";

/// A running node: in this process, or a `ringkvd` child (killed on drop).
pub enum Running {
    InProcess(NodeHandle),
    Process(ChildGuard),
}

/// A `ringkvd` child, killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Cluster {
    pub ca: ClusterCa,
    pub extra: String,
    pub dir: tempfile::TempDir,
    pub config_paths: Vec<PathBuf>,
    pub addrs: Vec<SocketAddr>,
    pub processes: bool,
    pub nodes: Vec<Option<Running>>,
    pub client: ClientEndpoint,
    /// The identity of `client`, for building more clients (e.g. `ringkv_client::Client`).
    pub client_identity: TlsIdentity,
    pub connections: Vec<Option<ClientConnection>>,
    /// Each node's HTTP address, when `extra` holds the placeholder [`HTTP_ADDR`].
    pub http_addrs: Vec<SocketAddr>,
}

/// In `extra`, replaced by a free loopback TCP address per node (its `http_addr`).
pub const HTTP_ADDR: &str = "{http_addr}";

/// Lines of `extra` starting with these keys are moved above the first table of the config.
pub const TOP_LEVEL_KEYS: [&str; 4] = ["http_addr", "http_tls", "slow_request_ms", "log_format"];

fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Appended to every node's config by tests that partition nodes with
/// [`Cluster::set_faults`].
pub const FAULT_INJECTION: &str = "[debug]\nfault_injection = true\n";

/// A loopback address with a free port, for a node started later.
/// Starts node `index` in this process. A stopped in-process node's UDP port stays bound while
/// its QUIC connections to peers that are already gone drain (quinn keeps the socket until
/// then); retry.
async fn start_in_process(index: usize, config: NodeConfig) -> NodeHandle {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match ringkv_node::start(config.clone()).await {
            Ok(handle) => return handle,
            Err(ringkv_node::Error::Transport(ringkv_transport::Error::Bind { .. }))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("node {} does not start: {error}", index + 1),
        }
    }
}

pub fn reserve_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port())
}

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

impl Cluster {
    /// Writes certificates and configs for `count` nodes and starts them in this process;
    /// `extra` is appended to every config.
    pub async fn start(count: u64, shards: u64, extra: &str) -> Cluster {
        Self::start_with(count, shards, extra, false).await
    }

    /// As [`Cluster::start`], with every node a `ringkvd` process when `processes`.
    pub async fn start_with(count: u64, shards: u64, extra: &str, processes: bool) -> Cluster {
        let mut cluster = Self::prepare(count, shards, extra, processes);
        // Together: an initial node with a new data dir creates the cluster only once a quorum
        // of the initial nodes is up (a start awaits that).
        if processes {
            for i in 0..count as usize {
                cluster.start_node(i).await;
            }
        } else {
            let starting: Vec<_> = (0..count as usize)
                .map(|i| tokio::spawn(start_in_process(i, cluster.config(i))))
                .collect();
            for (i, starting) in starting.into_iter().enumerate() {
                cluster.nodes[i] = Some(Running::InProcess(starting.await.unwrap()));
            }
        }
        cluster
    }

    /// As [`Cluster::start_with`], without starting any node: certificates and configs only
    /// (start them with [`Cluster::start_node`]).
    pub fn prepare(count: u64, shards: u64, extra: &str, processes: bool) -> Cluster {
        // Tests that do not configure the placement driver get its schedulers off, so nothing
        // moves replicas or leaders behind their back (PD still records the layout).
        let extra = if extra.contains("[pd]") {
            extra.to_string()
        } else {
            format!("{extra}\n{PD_SCHEDULERS_OFF}")
        };
        let extra = extra.as_str();
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let validity = Validity::days_from_now(1);
        let ca = ClusterCa::generate(CLUSTER, validity).unwrap();
        ca.to_pem_pair().write(&certs, "ca").unwrap();
        let addrs: Vec<SocketAddr> = (0..count)
            .map(|_| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()))
            .collect();
        let initial: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("\"{}@{addr}\"", i + 1))
            .collect();
        let mut config_paths = Vec::new();
        let http_addrs: Vec<SocketAddr> = match extra.contains(HTTP_ADDR) {
            true => (0..count)
                .map(|_| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_tcp_port()))
                .collect(),
            false => Vec::new(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let extra = match http_addrs.get(i) {
                Some(http) => extra.replace(HTTP_ADDR, &http.to_string()),
                None => extra.to_string(),
            };
            // Top-level keys must come before the first table.
            let (top, extra): (Vec<&str>, Vec<&str>) = extra
                .lines()
                .partition(|line| TOP_LEVEL_KEYS.iter().any(|key| line.starts_with(key)));
            let (top, extra) = (top.join("\n"), extra.join("\n"));
            ca.issue_node(NodeId(id), &[addr.ip()], validity)
                .unwrap()
                .write(&certs, &format!("node-{id}"))
                .unwrap();
            let text = format!(
                r#"node_id = {id}
cluster = "{CLUSTER}"
listen_addr = "{addr}"
data_dir = "node-{id}"
initial_cluster = [{initial}]
initial_shards = {shards}
replication_factor = 3
{top}
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-{id}.pem"
key = "certs/node-{id}.key"
{extra}
"#,
                initial = initial.join(", ")
            );
            let path = dir.path().join(format!("node-{id}.toml"));
            std::fs::write(&path, text).unwrap();
            config_paths.push(path);
        }
        let client_pair = ca.issue_client("ringctl", validity).unwrap();
        let identity = TlsIdentity::from_pem(ca.cert_pem(), &client_pair).unwrap();
        let client =
            ClientEndpoint::new(&identity, CLUSTER, "127.0.0.1:0".parse().unwrap()).unwrap();
        Cluster {
            ca,
            extra: extra.to_string(),
            dir,
            config_paths,
            addrs,
            nodes: (0..count).map(|_| None).collect(),
            client,
            client_identity: identity,
            processes,
            connections: (0..count).map(|_| None).collect(),
            http_addrs,
        }
    }

    /// Writes a certificate and a config for one more node (id = count + 1) that joins through
    /// the addresses of the first three nodes, and starts it. Returns its index.
    pub async fn add_joining_node(&mut self) -> usize {
        let addr = reserve_addr();
        self.add_joining_node_at(addr).await
    }

    /// As [`Cluster::add_joining_node`], listening on `addr` (from [`reserve_addr`]).
    pub async fn add_joining_node_at(&mut self, addr: SocketAddr) -> usize {
        let index = self.nodes.len();
        let id = index as u64 + 1;
        let path = self.write_joining_config(id, addr);
        self.config_paths.push(path);
        self.addrs.push(addr);
        self.nodes.push(None);
        self.connections.push(None);
        self.start_node(index).await;
        index
    }

    /// Writes a certificate and a config for node `id` listening on `addr`, joining through
    /// the first three nodes; returns the config's path.
    pub fn write_joining_config(&self, id: u64, addr: SocketAddr) -> PathBuf {
        let certs = self.dir.path().join("certs");
        self.ca
            .issue_node(NodeId(id), &[addr.ip()], Validity::days_from_now(1))
            .unwrap()
            .write(&certs, &format!("node-{id}"))
            .unwrap();
        let join: Vec<String> = self
            .addrs
            .iter()
            .take(3)
            .map(|a| format!("\"{a}\""))
            .collect();
        let text = format!(
            r#"node_id = {id}
cluster = "{CLUSTER}"
listen_addr = "{addr}"
data_dir = "node-{id}"
join = [{join}]
replication_factor = 3
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-{id}.pem"
key = "certs/node-{id}.key"
{extra}
"#,
            join = join.join(", "),
            extra = self.extra,
        );
        let path = self.dir.path().join(format!("node-{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Sends a placement-driver command to the PD leader (following `NotLeader`), retrying
    /// transient answers until `timeout`.
    pub async fn pd_call(
        &mut self,
        command: &ringkv_pd::Command,
    ) -> Result<ringkv_pd::Response, ringkv_pd::Error> {
        let bytes = postcard::to_stdvec(command).unwrap();
        let request = Request::Admin(AdminRequest::Pd {
            command: bytes.into(),
        });
        match self.pd_request(&request).await {
            Response::Admin(AdminResult::Pd(bytes)) => postcard::from_bytes(&bytes).unwrap(),
            other => panic!("unexpected PD answer {other:?}"),
        }
    }

    /// The PD leader's applied state.
    pub async fn pd_state(&mut self) -> ringkv_pd::PdState {
        match self
            .pd_request(&Request::Admin(AdminRequest::PdState))
            .await
        {
            Response::Admin(AdminResult::Pd(bytes)) => postcard::from_bytes(&bytes).unwrap(),
            other => panic!("unexpected PD state answer {other:?}"),
        }
    }

    async fn pd_request(&mut self, request: &Request) -> Response {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut target = 0;
        loop {
            if self.nodes[target].is_some()
                && let Some(response) = self.try_call(target, request).await
            {
                match response {
                    Response::Error(ringkv_types::WireError::NotLeader {
                        leader_hint: Some(hint),
                        ..
                    }) if (hint.get() as usize) <= self.nodes.len()
                        && self.nodes[hint.get() as usize - 1].is_some() =>
                    {
                        target = hint.get() as usize - 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        assert!(Instant::now() < deadline, "no PD leader answers");
                        continue;
                    }
                    Response::Error(error) if error.is_retryable() => {}
                    response => return response,
                }
            }
            assert!(Instant::now() < deadline, "no PD leader answers");
            target = (target + 1) % self.nodes.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn config(&self, index: usize) -> NodeConfig {
        NodeConfig::load(&self.config_paths[index]).unwrap()
    }

    pub async fn start_node(&mut self, index: usize) {
        let running = if self.processes {
            let log =
                std::fs::File::create(self.dir.path().join(format!("node-{}.log", index + 1)))
                    .unwrap();
            Running::Process(ChildGuard(
                std::process::Command::new(env!("CARGO_BIN_EXE_ringkvd"))
                    .arg("--config")
                    .arg(&self.config_paths[index])
                    .stdout(std::process::Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            ))
        } else {
            Running::InProcess(start_in_process(index, self.config(index)).await)
        };
        self.nodes[index] = Some(running);
        self.connections[index] = None;
    }

    /// Stops node `index` gracefully (SIGTERM for a process) and checks it exits cleanly.
    pub async fn stop_node(&mut self, index: usize) {
        match self.nodes[index].take() {
            Some(Running::InProcess(handle)) => {
                tokio::time::timeout(Duration::from_secs(20), handle.stop())
                    .await
                    .expect("node stops in time")
                    .expect("node stops cleanly");
            }
            Some(Running::Process(mut child)) => {
                let status = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(child.0.id().to_string())
                    .status()
                    .unwrap();
                assert!(status.success());
                let deadline = Instant::now() + Duration::from_secs(20);
                let exit = loop {
                    if let Some(exit) = child.0.try_wait().unwrap() {
                        break exit;
                    }
                    assert!(Instant::now() < deadline, "node {} did not stop", index + 1);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                assert_eq!(exit.code(), Some(0), "node {} exit", index + 1);
            }
            None => {}
        }
        if let Some(connection) = self.connections[index].take() {
            connection.close();
        }
    }

    /// Node `index`'s log so far (`node-N.log` in the cluster directory; processes only).
    pub fn log_of(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{}.log", index + 1)))
            .unwrap_or_default()
    }

    /// Waits (bounded, 60 s) for node `index`'s process to exit; returns its exit code and its
    /// log. Panics with "node N {still_running}" and the log if it keeps running.
    pub async fn wait_for_exit(
        &mut self,
        index: usize,
        still_running: &str,
    ) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            let Some(Running::Process(child)) = self.nodes[index].as_mut() else {
                panic!("node {} is not a running process", index + 1);
            };
            if let Some(status) = child.0.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                Instant::now() < deadline,
                "node {} {still_running}; log:\n{}",
                index + 1,
                self.log_of(index)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.nodes[index] = None;
        (code, self.log_of(index))
    }

    /// Kills node `index` at once (SIGKILL for a process; in process, drops it unflushed is not
    /// possible, so only processes may be killed).
    pub fn kill_node(&mut self, index: usize) {
        assert!(self.processes, "only processes can be killed");
        // Dropping a process handle kills it with SIGKILL and reaps it.
        self.nodes[index] = None;
        if let Some(connection) = self.connections[index].take() {
            connection.close();
        }
    }

    /// A connection to node `index` (0-based), reconnecting when needed.
    pub async fn connection(&mut self, index: usize) -> Option<ClientConnection> {
        if let Some(connection) = &self.connections[index] {
            return Some(connection.clone());
        }
        let node = NodeId(index as u64 + 1);
        let connecting = self.client.connect(node, self.addrs[index]);
        let connection = tokio::time::timeout(CALL_TIMEOUT, connecting)
            .await
            .ok()?
            .ok()?;
        self.connections[index] = Some(connection.clone());
        Some(connection)
    }

    /// Calls node `index`; `None` when it cannot be reached.
    pub async fn try_call(&mut self, index: usize, request: &Request) -> Option<Response> {
        let connection = self.connection(index).await?;
        match connection.call(request, CALL_TIMEOUT).await {
            Ok(response) => Some(response),
            Err(_) => {
                self.connections[index] = None;
                None
            }
        }
    }

    pub async fn call(&mut self, index: usize, request: Request) -> Response {
        match self.try_call(index, &request).await {
            Some(response) => response,
            None => panic!("call to node {} failed", index + 1),
        }
    }

    /// The status of node `index`, `None` when unreachable or not serving yet (a node still
    /// checking its new store with PD answers a retryable error such as `Timeout`).
    pub async fn try_status(&mut self, index: usize) -> Option<NodeStatus> {
        match self
            .try_call(index, &Request::Admin(AdminRequest::NodeStatus))
            .await?
        {
            Response::Admin(AdminResult::NodeStatus(status)) => Some(status),
            Response::Error(error) if error.is_retryable() => None,
            other => panic!("unexpected status answer {other:?}"),
        }
    }

    pub async fn status(&mut self, index: usize) -> NodeStatus {
        match self
            .call(index, Request::Admin(AdminRequest::NodeStatus))
            .await
        {
            Response::Admin(AdminResult::NodeStatus(status)) => status,
            other => panic!("unexpected status answer {other:?}"),
        }
    }

    pub async fn shard_map(&mut self, index: usize) -> ShardMap {
        match self
            .call(index, Request::Admin(AdminRequest::GetShardMap))
            .await
        {
            Response::Admin(AdminResult::ShardMap(map)) => map,
            other => panic!("unexpected map answer {other:?}"),
        }
    }

    /// Waits until every shard (and the PD group) has a leader; returns shard -> leader index.
    pub async fn wait_for_leaders(
        &mut self,
        shards: u64,
        timeout: Duration,
    ) -> Vec<(ShardId, usize)> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = std::collections::BTreeMap::new();
            for index in 0..self.nodes.len() {
                if self.nodes[index].is_none() {
                    continue;
                }
                let Some(status) = self.try_status(index).await else {
                    continue;
                };
                for replica in status.replicas {
                    if replica.is_leader {
                        leaders.insert(replica.shard, index);
                    }
                }
            }
            if leaders.len() as u64 == shards + 1 {
                return leaders.into_iter().collect();
            }
            assert!(
                Instant::now() < deadline,
                "not every shard has a leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node index leading `shard`, waiting for one.
    pub async fn leader_of(&mut self, shard: ShardId) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for index in 0..self.nodes.len() {
                if self.nodes[index].is_none() {
                    continue;
                }
                let status = self.status(index).await;
                if status
                    .replicas
                    .iter()
                    .any(|r| r.shard == shard && r.is_leader)
                {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no leader for {shard}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks node `index` to cut its Raft traffic to `cut` (node indexes; empty heals). The
    /// node must run with [`FAULT_INJECTION`]. Panics when the node refuses or is unreachable.
    pub async fn set_faults(&mut self, index: usize, cut: &[usize]) {
        let cut: Vec<NodeId> = cut.iter().map(|&i| NodeId(i as u64 + 1)).collect();
        let request = Request::Admin(AdminRequest::SetFaults { cut: cut.clone() });
        // A node busy electing may be slow to answer; retry within a bound.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_call(index, &request).await {
                Some(Response::Admin(AdminResult::Faults { cut: set })) => {
                    let mut expected = cut.clone();
                    expected.sort_unstable();
                    expected.dedup();
                    assert_eq!(set, expected, "node {} fault table", index + 1);
                    return;
                }
                Some(other) => panic!("node {} refused SetFaults: {other:?}", index + 1),
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "node {} unreachable for SetFaults",
                        index + 1
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Cuts node `minority` off from every other node, both ways (Raft traffic only; clients
    /// still reach every node).
    pub async fn isolate(&mut self, minority: usize) {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&i| i != minority).collect();
        self.set_faults(minority, &others).await;
        for other in others {
            if self.nodes[other].is_some() {
                self.set_faults(other, &[minority]).await;
            }
        }
    }

    /// Removes every fault on every running node.
    pub async fn heal(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].is_some() {
                self.set_faults(index, &[]).await;
            }
        }
    }

    /// The node among `candidates` that leads `shard`, waiting (bounded) for one. Unlike
    /// [`Cluster::leader_of`], a deposed leader outside `candidates` is not considered.
    pub async fn leader_among(&mut self, shard: ShardId, candidates: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for &index in candidates {
                if self.nodes[index].is_none() {
                    continue;
                }
                let Some(status) = self.try_status(index).await else {
                    continue;
                };
                if status
                    .replicas
                    .iter()
                    .any(|r| r.shard == shard && r.is_leader)
                {
                    return index;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader for {shard} among {candidates:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.stop_node(index).await;
        }
    }
}

pub fn kv(descriptor: &ShardDescriptor, session: Option<(u64, u64)>, op: KvOp) -> Request {
    Request::Kv(KvRequest {
        shard: descriptor.id,
        epoch: descriptor.epoch,
        session: session.map(|(session_id, sequence)| WriteSession {
            session_id,
            sequence,
        }),
        timeout_ms: 0,
        op,
    })
}

pub fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

pub fn get(key: &str, consistency: ReadConsistency) -> KvOp {
    KvOp::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
        consistency,
    }
}

/// Fast PD timing for tests; splits only on demand; a node down 3 s loses its replicas.
pub fn pd_config(balance: bool) -> String {
    pd_config_with(balance, 3000)
}

/// Fast PD timing for tests (the `[pd]` table): balancing on or off, repair after
/// `max_down_time_ms`, drain on, automatic splits off (tests split on demand).
pub fn pd_config_with(balance: bool, max_down_time_ms: u64) -> String {
    format!(
        "[pd]
tick_interval_ms = 200
heartbeat_interval_ms = 200
request_timeout_ms = 2000
heartbeat_timeout_ms = 1000
max_down_time_ms = {max_down_time_ms}
operator_step_timeout_ms = 30000
balance_replicas = {balance}
balance_leaders = {balance}
split = false
"
    )
}

impl Cluster {
    /// A `ringkv_client::Client` with the `ringctl` certificate (admin), seeded with every
    /// node, in `namespace` (raw keys when `None`).
    pub async fn rust_client(&self, namespace: Option<&str>) -> ringkv_client::Client {
        self.rust_client_seeded(&self.addrs, namespace).await
    }

    /// [`Cluster::rust_client`] seeded with `seeds` only, node `i + 1` at `seeds[i]` (nodes
    /// beyond them are learned from the cluster).
    pub async fn rust_client_seeded(
        &self,
        seeds: &[SocketAddr],
        namespace: Option<&str>,
    ) -> ringkv_client::Client {
        use ringkv_client::{ClientConfig, TlsSource};
        let pair = self
            .ca
            .issue_client("ringctl", Validity::days_from_now(1))
            .unwrap();
        let identity = TlsIdentity::from_pem(self.ca.cert_pem(), &pair).unwrap();
        let seeds: Vec<String> = seeds
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}@{addr}", i + 1))
            .collect();
        let endpoints = ClientConfig::parse_endpoints(&seeds).unwrap();
        let mut config = ClientConfig::new(endpoints, CLUSTER, TlsSource::Identity(identity));
        config.request_timeout = Duration::from_secs(20);
        config.retry.attempts_max = 64;
        config.namespace = namespace.map(str::to_string);
        ringkv_client::Client::connect(config).await.unwrap()
    }
}
