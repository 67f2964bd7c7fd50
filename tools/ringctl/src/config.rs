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

/// Connection settings from the command line or the environment (clap merges each flag with
/// its environment twin, the flag winning); what they leave out comes from the config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--config` / `RINGCTL_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--endpoints` / `RINGCTL_ENDPOINTS`: `host:port` or `id@ip:port`.
    pub endpoints: Vec<String>,
    /// `--cacert` / `RINGCTL_CACERT`.
    pub cacert: Option<PathBuf>,
    /// `--cert` / `RINGCTL_CERT`.
    pub cert: Option<PathBuf>,
    /// `--key` / `RINGCTL_KEY`.
    pub key: Option<PathBuf>,
    /// `--cluster` / `RINGCTL_CLUSTER`.
    pub cluster: Option<String>,
}

impl Overrides {
    /// The flags still missing when no config file is read.
    fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.endpoints.is_empty() {
            missing.push("--endpoints");
        }
        if self.cacert.is_none() {
            missing.push("--cacert");
        }
        if self.cert.is_none() {
            missing.push("--cert");
        }
        if self.key.is_none() {
            missing.push("--key");
        }
        if self.cluster.is_none() {
            missing.push("--cluster");
        }
        missing
    }
}

/// The client configuration from flags > environment > config file, and the endpoints as text
/// (for error messages). The config file is read only when the flags and the environment leave
/// something out.
///
/// # Errors
/// An unreadable or invalid config file (naming what the flags left out), a malformed endpoint.
pub fn resolve(overrides: &Overrides) -> Result<(ClientConfig, String)> {
    let missing = overrides.missing();
    let file = if missing.is_empty() {
        None
    } else {
        let path = RingctlConfig::locate(overrides.config.as_deref());
        let file = RingctlConfig::load(&path).with_context(|| {
            format!(
                "{} not given (flags or RINGCTL_* variables), so ringctl reads its config file",
                missing.join(", ")
            )
        })?;
        Some(file)
    };
    let pick = |flag: &Option<PathBuf>, from_file: fn(&RingctlConfig) -> &PathBuf| {
        flag.clone()
            .or_else(|| file.as_ref().map(|f| from_file(f).clone()))
            .unwrap_or_default()
    };
    let endpoints = if overrides.endpoints.is_empty() {
        file.as_ref()
            .map(|f| f.endpoints.clone())
            .unwrap_or_default()
    } else {
        overrides.endpoints.clone()
    };
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        bail!("no endpoints (give --endpoints host:port,...)");
    }
    let cluster = overrides
        .cluster
        .clone()
        .or_else(|| file.as_ref().map(|f| f.cluster.clone()))
        .unwrap_or_default();
    let tls = TlsSource::Files {
        ca_cert: pick(&overrides.cacert, |f| &f.tls.ca_cert),
        cert: pick(&overrides.cert, |f| &f.tls.cert),
        key: pick(&overrides.key, |f| &f.tls.key),
    };
    let seeds = ClientConfig::parse_seeds(&endpoints)?;
    let mut config = ClientConfig::from_seeds(seeds, cluster, tls);
    let timeout_ms = file
        .as_ref()
        .map_or_else(default_timeout_ms, |f| f.request_timeout_ms);
    config.request_timeout = std::time::Duration::from_millis(timeout_ms.max(1));
    Ok((config, endpoints.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Overrides {
        Overrides {
            config: Some(PathBuf::from("/nonexistent/ringctl.toml")),
            endpoints: vec!["127.0.0.11:7100".into(), "2@127.0.0.12:7100".into()],
            cacert: Some("ca.pem".into()),
            cert: Some("c.pem".into()),
            key: Some("c.key".into()),
            cluster: Some("prod".into()),
        }
    }

    #[test]
    fn complete_flags_need_no_config_file() {
        let (config, described) = resolve(&complete()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.cluster, "prod");
        assert_eq!(config.seed_addresses, vec!["127.0.0.11:7100".to_string()]);
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(described, "127.0.0.11:7100, 2@127.0.0.12:7100");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("ringctl.toml");
        let file = RingctlConfig {
            cluster: "local".into(),
            endpoints: vec!["1@127.0.0.11:7100".into()],
            request_timeout_ms: 1234,
            tls: TlsFiles {
                ca_cert: "certs/ca.pem".into(),
                cert: "certs/client.pem".into(),
                key: "certs/client.key".into(),
            },
        };
        file.write(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let overrides = Overrides {
            config: Some(path),
            endpoints: vec!["127.0.0.12:7100".into()],
            cluster: None,
            cacert: None,
            cert: Some("/elsewhere/me.pem".into()),
            key: None,
        };
        let (config, _) = resolve(&overrides).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.cluster, "local");
        assert!(config.endpoints.is_empty());
        assert_eq!(config.seed_addresses, vec!["127.0.0.12:7100".to_string()]);
        assert_eq!(
            config.request_timeout,
            std::time::Duration::from_millis(1234)
        );
        let TlsSource::Files { ca_cert, cert, .. } = &config.tls else {
            panic!("files expected");
        };
        assert_eq!(ca_cert, &dir.path().join("certs/ca.pem"));
        assert_eq!(cert, &PathBuf::from("/elsewhere/me.pem"));
    }

    #[test]
    fn missing_flags_without_a_file_are_named() {
        let mut overrides = complete();
        overrides.cluster = None;
        overrides.key = None;
        let error = format!(
            "{:#}",
            resolve(&overrides).err().unwrap_or_else(|| panic!())
        );
        assert!(error.contains("--key, --cluster"), "{error}");
        assert!(error.contains("/nonexistent/ringctl.toml"), "{error}");
    }
}
