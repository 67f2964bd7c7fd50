//! The local cluster's layout: node addresses (127.0.0.(10+N)), HTTP ports, the node config
//! files `local up` and `add-node` write, the nodes added under the directory, the `ringkvd`
//! binary, and checks that the addresses are free.

use super::*;

/// The loopback IP of node `id`: 127.0.0.(10 + id).
pub(super) fn node_ip(id: u64) -> Result<Ipv4Addr> {
    let last = u8::try_from(10 + id).context("node id too large for a loopback address")?;
    Ok(Ipv4Addr::new(127, 0, 0, last))
}

/// The HTTP port of a cluster whose nodes listen on `port`: `port + 1000` (8100 by default).
pub fn http_port(port: u16) -> Result<u16> {
    port.checked_add(HTTP_PORT_OFFSET).with_context(|| {
        format!("--port {port} leaves no room for the HTTP port (--port + {HTTP_PORT_OFFSET})")
    })
}

/// The `http_addr` a node config file names, if it can be read and names one.
pub(super) fn config_http_addr(config: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Table = text.parse().ok()?;
    value.get("http_addr")?.as_str()?.parse().ok()
}

pub(super) fn endpoint(id: u64, port: u16) -> Result<SocketAddr> {
    Ok(SocketAddr::new(IpAddr::V4(node_ip(id)?), port))
}

pub(super) fn node_config_text(id: u64, port: u16, endpoints: &[String]) -> Result<String> {
    let initial: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    Ok(format!(
        "# Written by `ringctl local up`; edit freely, it is reused on the next start.\n\
         # Relative paths are relative to this file's directory.\n\
         node_id = {id}\n\
         cluster = \"{CLUSTER}\"\n\
         listen_addr = \"{listen}\"\n\
         http_addr = \"{http}\"\n\
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
        http = endpoint(id, http_port(port)?)?,
        initial = initial.join(", "),
    ))
}

/// The config of a node that joins a running cluster: like [`node_config_text`], but with a
/// `join` list of existing nodes' addresses (`ip:port`) instead of `initial_cluster` (and no
/// `initial_shards`, which only bootstrap uses). The node asks a `join` address for the cluster
/// and registers with PD under its configured `node_id`'s address.
pub(super) fn join_config_text(id: u64, port: u16, join: &[SocketAddr]) -> Result<String> {
    let join: Vec<String> = join.iter().map(|a| format!("\"{a}\"")).collect();
    Ok(format!(
        "# Written by `ringctl local add-node`; edit freely, it is reused on the next start.\n\
         # Relative paths are relative to this file's directory.\n\
         node_id = {id}\n\
         cluster = \"{CLUSTER}\"\n\
         listen_addr = \"{listen}\"\n\
         http_addr = \"{http}\"\n\
         data_dir = \"data\"\n\
         join = [{join}]\n\
         replication_factor = 3\n\
         \n\
         [tls]\n\
         ca_cert = \"../certs/ca.pem\"\n\
         cert = \"../certs/node-{id}.pem\"\n\
         key = \"../certs/node-{id}.key\"\n",
        listen = endpoint(id, port)?,
        http = endpoint(id, http_port(port)?)?,
        join = join.join(", "),
    ))
}

/// Nodes added by `local add-node` under `dir`: ids above `initial` with a `node-N/ringkvd.toml`,
/// sorted.
pub(super) fn added_nodes(dir: &Path, initial: u64) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let config = entry.path().join("ringkvd.toml");
        // Written by a node the placement driver removed (`ringctl remove-node`): it would
        // refuse to start.
        if entry.path().join("data").join("REMOVED").is_file() {
            println!("node {id} was removed from the cluster; not starting it");
            continue;
        }
        if id > initial && config.is_file() {
            found.push((id, config));
        }
    }
    found.sort();
    Ok(found)
}

/// The environment variable naming the `ringkvd` binary to run (tests, custom builds).
pub const RINGKVD_ENV: &str = "RINGKVD_BIN";

/// `$RINGKVD_BIN`, else `ringkvd` next to the running executable, else on `PATH`.
pub(super) fn find_ringkvd() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(RINGKVD_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{RINGKVD_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
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
pub(super) fn check_bind(addr: SocketAddr) -> Result<()> {
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

/// Checks that the node's HTTP address (TCP) is free, so a clash reads as one line here rather
/// than as a node that exits during startup.
pub(super) fn check_http_bind(addr: SocketAddr) -> Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "HTTP address {addr} is in use: is another local cluster running? (stop it with \
             Ctrl-C, or start this one with another --port; HTTP listens on --port + \
             {HTTP_PORT_OFFSET})"
        ),
        Err(error) => bail!("cannot bind HTTP address {addr}: {error}"),
    }
}
