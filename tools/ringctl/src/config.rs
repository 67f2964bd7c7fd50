//! `ringctl.toml`: the cluster, its endpoints and the client certificate, and how ringctl finds it.

use anyhow::{Context, Result, bail};
use ringkv_client::{ClientConfig, TlsSource};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default location, relative to the working directory.
pub const DEFAULT_PATH: &str = "data/local/ringctl.toml";

/// The environment variable naming the config file.
pub const ENV_VAR: &str = "RINGCTL_CONFIG";

/// Client certificate paths; relative paths are relative to the config file's directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key.
    pub key: PathBuf,
}

/// The contents of `ringctl.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingctlConfig {
    /// The cluster name.
    pub cluster: String,
    /// `<node id>@<ip:port>` of every node.
    pub endpoints: Vec<String>,
    /// Per-call time budget in milliseconds (default 5000).
    #[serde(default = "default_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The client certificate.
    pub tls: TlsFiles,
}

fn default_timeout_ms() -> u64 {
    5000
}

impl RingctlConfig {
    /// Finds the config: `explicit` (from `--config`), else `$RINGCTL_CONFIG`, else
    /// `./data/local/ringctl.toml`.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        if let Some(path) = explicit {
            return path.to_path_buf();
        }
        match std::env::var_os(ENV_VAR) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(DEFAULT_PATH),
        }
    }

    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read ringctl config {} (pass --config FILE, set {ENV_VAR}, or start a \
                 local cluster with `ringctl local up`)",
                path.display()
            )
        })?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.tls.ca_cert,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        if config.endpoints.is_empty() {
            bail!("{}: no endpoints", path.display());
        }
        Ok(config)
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).context("encoding ringctl config")?;
        let header = "# Written by `ringctl local up`. Paths are relative to this file.\n";
        std::fs::write(path, format!("{header}{text}"))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The client library's configuration.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let endpoints = ClientConfig::parse_endpoints(&self.endpoints)?;
        let tls = TlsSource::Files {
            ca_cert: self.tls.ca_cert.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        };
        let mut config = ClientConfig::new(endpoints, self.cluster.clone(), tls);
        config.request_timeout = std::time::Duration::from_millis(self.request_timeout_ms.max(1));
        Ok(config)
    }
}
