//! `ringctl`: start a local cluster, read and write keys, show the cluster's status, create
//! certificates.

mod certs;
mod config;
mod kv;
mod local;
mod status;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use config::RingctlConfig;
use ringkv_client::Client;
use ringkv_types::NodeId;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// ringkv admin and data tool.
#[derive(Debug, Parser)]
#[command(name = "ringctl", version, about)]
struct Cli {
    /// The ringctl config (default: $RINGCTL_CONFIG, else ./data/local/ringctl.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A cluster of local processes.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Key-value operations.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Nodes, shards, leaders, terms, commit and applied indexes.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Creates (or reuses) a cluster under DIR and runs its nodes in the foreground until
    /// Ctrl-C. Node N listens on 127.0.0.(10+N):7100.
    Up {
        /// Number of nodes: 3 or 5.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// The cluster directory (certificates, node configs and data, ringctl.toml).
        #[arg(long, default_value = "data/local")]
        dir: PathBuf,
        /// The port of every node (each node has its own loopback IP).
        #[arg(long, default_value_t = local::DEFAULT_PORT)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Prints the value of KEY; exits 1 if the key does not exist.
    Get {
        /// The key.
        key: String,
        /// linearizable, lease or stale.
        #[arg(long, default_value = "linearizable")]
        consistency: String,
    },
    /// Sets KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Removes KEY.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets KEY to NEW if its value is EXPECTED; exits 1 (printing the current value) if not.
    Cas {
        /// The key.
        key: String,
        /// The required current value; omit to require that the key is absent.
        #[arg(long)]
        expected: Option<String>,
        /// The new value; omit (with --delete) to remove the key.
        #[arg(long, required_unless_present = "delete")]
        new: Option<String>,
        /// Remove the key when the comparison holds.
        #[arg(long, conflicts_with = "new")]
        delete: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Creates a CA (or reuses DIR/ca.pem and ca.key), node and client certificates in DIR.
    /// Existing files are kept.
    Create {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// The cluster name.
        #[arg(long, default_value = "local")]
        cluster: String,
        /// A node certificate, as ID=IP (repeatable), e.g. --node 1=10.0.0.1.
        #[arg(long = "node", value_name = "ID=IP")]
        nodes: Vec<String>,
        /// A client certificate name (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client(config: Option<&std::path::Path>) -> Result<Client> {
    let path = RingctlConfig::locate(config);
    let config = RingctlConfig::load(&path)?;
    Client::connect(config.client_config()?)
        .await
        .with_context(|| format!("connecting to {}", config.endpoints.join(", ")))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Local {
            command: LocalCommand::Up { nodes, dir, port },
        } => {
            local::up(local::UpOptions { nodes, dir, port }).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kv { command } => {
            let client = client(config).await?;
            let code = match command {
                KvCommand::Get { key, consistency } => {
                    kv::get(&client, key, kv::parse_consistency(&consistency)?).await?
                }
                KvCommand::Put { key, value } => kv::put(&client, key, value).await?,
                KvCommand::Delete { key } => kv::delete(&client, key).await?,
                KvCommand::Cas {
                    key, expected, new, ..
                } => kv::cas(&client, key, expected, new).await?,
            };
            client.close().await;
            Ok(code)
        }
        Command::Status { json } => {
            let client = client(config).await?;
            status::run(&client, json).await?;
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            command:
                CertsCommand::Create {
                    dir,
                    cluster,
                    nodes,
                    clients,
                },
        } => {
            let nodes = nodes
                .iter()
                .map(|spec| parse_node_spec(spec))
                .collect::<Result<Vec<_>>>()?;
            let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
            let report = certs::ensure(&dir, &cluster, &nodes, &clients)?;
            for stem in &report.created {
                println!("created {}", dir.join(format!("{stem}.pem")).display());
            }
            for stem in &report.reused {
                println!("kept    {}", dir.join(format!("{stem}.pem")).display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Parses `ID=IP`.
fn parse_node_spec(spec: &str) -> Result<(NodeId, IpAddr)> {
    let Some((id, ip)) = spec.split_once('=') else {
        bail!("--node {spec:?}: expected ID=IP");
    };
    let id: u64 = id
        .parse()
        .with_context(|| format!("--node {spec:?}: bad node id"))?;
    if id == 0 {
        bail!("--node {spec:?}: node ids start at 1");
    }
    let ip: IpAddr = ip
        .parse()
        .with_context(|| format!("--node {spec:?}: bad IP address"))?;
    Ok((NodeId(id), ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn node_specs_parse() {
        assert!(parse_node_spec("1=127.0.0.11").is_ok());
        assert!(parse_node_spec("0=127.0.0.11").is_err());
        assert!(parse_node_spec("1:127.0.0.11").is_err());
        assert!(parse_node_spec("1=localhost").is_err());
    }

    #[test]
    fn config_is_found_by_flag_then_environment_then_default() {
        let explicit = PathBuf::from("x.toml");
        assert_eq!(RingctlConfig::locate(Some(&explicit)), explicit);
    }
}
