//! The flags every command takes (`--endpoints`, `--cacert`, `-w`, ...), each with an
//! environment twin, and the output formats of `-w`.

use crate::config;
use clap::Args;
use std::path::PathBuf;

/// Flags every command takes; each has an environment twin. Flags > environment > config file.
#[derive(Debug, Default, Args)]
pub struct Globals {
    /// The ringctl config (default: ./data/local/ringctl.toml). Only read for what the flags
    /// and the environment leave out.
    #[arg(long, global = true, env = "RINGCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed nodes, comma-separated: host:port (the node ids are learned) or id@ip:port.
    #[arg(
        long,
        global = true,
        env = "RINGCTL_ENDPOINTS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, global = true, env = "RINGCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// The client certificate (PEM).
    #[arg(
        long = "cert",
        global = true,
        env = "RINGCTL_CERT",
        value_name = "FILE"
    )]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "key", global = true, env = "RINGCTL_KEY", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The cluster name (node certificates name node-<id>.<cluster>).
    #[arg(
        long = "cluster",
        global = true,
        env = "RINGCTL_CLUSTER",
        value_name = "NAME"
    )]
    pub cluster_name: Option<String>,
    /// Output format (`--json` on a command is the same as `-w json`).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        env = "RINGCTL_WRITE_OUT",
        value_enum
    )]
    pub write_out: Option<OutputFormat>,
    /// Act as the user of this token (from `ringctl auth login`): TLS with the cluster CA, no
    /// client certificate.
    #[arg(long, global = true, env = "RINGCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The namespace `kv` commands use (default: the user's own; root's is `root`).
    #[arg(long, global = true, env = "RINGCTL_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
}

impl Globals {
    pub fn overrides(&self) -> config::Overrides {
        config::Overrides {
            config: self.config.clone(),
            endpoints: self.endpoints.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            cluster: self.cluster_name.clone(),
        }
    }

    /// Whether to print JSON: `-w json` or the command's own `--json`.
    pub fn json(&self, flag: bool) -> bool {
        flag || self.write_out == Some(OutputFormat::Json)
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with a header (the default for lists).
    Table,
    /// JSON, for scripts.
    Json,
    /// Bare values: one line per row, fields separated by ", ", no header.
    Simple,
}
