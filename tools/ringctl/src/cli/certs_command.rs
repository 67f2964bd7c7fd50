//! The `ringctl certs` subcommands and the `--node ID=NAMES` specs they take.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ringkv_types::NodeId;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Creates a CA (or reuses DIR/ca.pem and ca.key), node and client certificates in DIR,
    /// for the cluster named by --cluster (default: local). Existing files are kept.
    Create {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// A node certificate, as ID=NAMES (repeatable): comma-separated IPs and/or DNS names
        /// the certificate names besides node-<id>.<cluster>, e.g. --node 1=10.0.0.1 or
        /// --node 1=ringkv-1,10.0.0.1 (names a joining node dials through `join`).
        #[arg(long = "node", value_name = "ID=NAMES")]
        nodes: Vec<String>,
        /// A client certificate name (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
    },
}

/// Parses `ID=IP`.
pub fn parse_node_spec(spec: &str) -> Result<(NodeId, Vec<String>)> {
    let Some((id, names)) = spec.split_once('=') else {
        bail!("--node {spec:?}: expected ID=NAMES (IPs or DNS names, comma-separated)");
    };
    let id: u64 = id
        .parse()
        .with_context(|| format!("--node {spec:?}: bad node id"))?;
    if id == 0 {
        bail!("--node {spec:?}: node ids start at 1");
    }
    let mut out = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        // A name must be an IP or a DNS name (checked with a dummy port).
        if name.parse::<IpAddr>().is_err()
            && ringkv_transport::resolve::check_host_port(&format!("{name}:1")).is_err()
        {
            bail!("--node {spec:?}: `{name}` is neither an IP address nor a DNS name");
        }
        out.push(name.to_string());
    }
    if out.is_empty() {
        bail!("--node {spec:?}: name at least one IP or DNS name");
    }
    Ok((NodeId(id), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs_parse() {
        assert!(parse_node_spec("1=127.0.0.11").is_ok());
        assert!(parse_node_spec("0=127.0.0.11").is_err());
        assert!(parse_node_spec("1:127.0.0.11").is_err());
        assert!(parse_node_spec("1=bad name").is_err());
        assert!(parse_node_spec("1=").is_err());
        let (_, names) = parse_node_spec("1=ringkv-1, 10.0.0.1").unwrap();
        assert_eq!(names, ["ringkv-1", "10.0.0.1"]);
    }
}
