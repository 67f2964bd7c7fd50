//! Certificates for a cluster: a CA, node certificates and client certificates, written under one
//! directory and reused when they already exist.

use anyhow::{Context, Result};
use ringkv_transport::certs::{ClusterCa, Validity};
use ringkv_types::NodeId;
use std::net::IpAddr;
use std::path::Path;

/// Validity of certificates ringctl creates.
const VALIDITY_DAYS: u32 = 3650;

/// What was created and what was reused.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written.
    pub created: Vec<String>,
    /// Stems that already existed.
    pub reused: Vec<String>,
}

/// Makes sure `dir` holds `ca.pem`/`ca.key`, `node-<id>.pem`/`.key` for every node (naming its
/// IP) and `client-<name>.pem`/`.key` for every client. Existing files are kept.
pub fn ensure(
    dir: &Path,
    cluster: &str,
    nodes: &[(NodeId, IpAddr)],
    clients: &[&str],
) -> Result<Report> {
    let named: Vec<(NodeId, Vec<String>)> = nodes
        .iter()
        .map(|(node, ip)| (*node, vec![ip.to_string()]))
        .collect();
    ensure_named(dir, cluster, &named, clients)
}

/// As [`ensure`], each node certificate naming IPs and/or DNS names (`ringkv-1`,
/// `ringkv-0.ringkv-peer.default.svc`) besides `node-<id>.<cluster>`.
pub fn ensure_named(
    dir: &Path,
    cluster: &str,
    nodes: &[(NodeId, Vec<String>)],
    clients: &[&str],
) -> Result<Report> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut report = Report::default();
    let validity = Validity::days_from_now(VALIDITY_DAYS);
    let exists = |stem: &str| {
        dir.join(format!("{stem}.pem")).exists() && dir.join(format!("{stem}.key")).exists()
    };
    let ca = if exists("ca") {
        report.reused.push("ca".into());
        ClusterCa::load(cluster, &dir.join("ca.pem"), &dir.join("ca.key"))
            .context("loading the existing CA")?
    } else {
        let ca = ClusterCa::generate(cluster, validity).context("generating the CA")?;
        ca.to_pem_pair().write(dir, "ca")?;
        report.created.push("ca".into());
        ca
    };
    for (node, names) in nodes {
        let stem = format!("node-{}", node.get());
        if exists(&stem) {
            report.reused.push(stem);
            continue;
        }
        ca.issue_node_named(*node, names, validity)
            .with_context(|| format!("issuing the certificate of {node}"))?
            .write(dir, &stem)?;
        report.created.push(stem);
    }
    for name in clients {
        let stem = format!("client-{name}");
        if exists(&stem) {
            report.reused.push(stem);
            continue;
        }
        ca.issue_client(name, validity)
            .with_context(|| format!("issuing the client certificate {name}"))?
            .write(dir, &stem)?;
        report.created.push(stem);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_created_once_and_then_reused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let nodes = [(NodeId(1), IpAddr::from([127, 0, 0, 11]))];
        let first = ensure(dir.path(), "t", &nodes, &["ringctl"])?;
        assert_eq!(first.created, ["ca", "node-1", "client-ringctl"]);
        let ca_before = std::fs::read(dir.path().join("ca.pem"))?;
        let more = [
            (NodeId(1), IpAddr::from([127, 0, 0, 11])),
            (NodeId(2), IpAddr::from([127, 0, 0, 12])),
        ];
        let second = ensure(dir.path(), "t", &more, &["ringctl"])?;
        assert_eq!(second.created, ["node-2"]);
        assert_eq!(second.reused, ["ca", "node-1", "client-ringctl"]);
        assert_eq!(std::fs::read(dir.path().join("ca.pem"))?, ca_before);
        // Everything loads as a TLS identity.
        ringkv_transport::certs::TlsIdentity::load(
            &dir.path().join("ca.pem"),
            &dir.path().join("node-2.pem"),
            &dir.path().join("node-2.key"),
        )?;
        Ok(())
    }
}
