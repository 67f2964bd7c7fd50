//! `ringctl auth ...` and the global `--token` / `--namespace` options.
//!
//! With `--token TOKEN` (or `RINGCTL_TOKEN`), ringctl connects with the cluster CA of its
//! config and no client certificate, and sends the token with every request: it acts as the
//! token's user. `--namespace NS` picks the namespace `kv` commands read and write.

use anyhow::{Context, Result};
use clap::Subcommand;
use ringkv_client::{Client, ClientConfig, Credentials, Secret, TlsSource};
use ringkv_types::pd::{AuthCommand as PdAuthCommand, Command};
use std::process::ExitCode;
use std::sync::OnceLock;

/// The auth commands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Logs in as NAME (password from stdin, or prompted) and prints a token for --token.
    Login {
        /// The user.
        name: String,
    },
    /// Adds a new token-signing key (admin). Tokens signed by older keys stay valid until
    /// they expire (the cluster keeps the 4 newest keys).
    RotateKey,
}

/// How ringctl identifies itself, from the global options.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `--token` / `RINGCTL_TOKEN`.
    pub token: Option<Secret>,
    /// `--namespace`.
    pub namespace: Option<String>,
}

static ACCESS: OnceLock<Access> = OnceLock::new();

/// Records the global options (once, at start).
pub fn set_access(access: Access) {
    let _ = ACCESS.set(access);
}

/// Applies the global options to a resolved client configuration: with a token, only the
/// CA of its TLS files is kept (no client certificate).
pub fn apply(client: &mut ClientConfig) {
    let access = ACCESS.get().cloned().unwrap_or_default();
    if let Some(token) = access.token {
        ca_only(client);
        client.credentials = Credentials::Token(token);
    }
    client.namespace = access.namespace;
}

/// Drops the client certificate, keeping the cluster CA.
fn ca_only(client: &mut ClientConfig) {
    if let TlsSource::Files { ca_cert, .. } = &client.tls {
        client.tls = TlsSource::CaOnly {
            ca_cert: ca_cert.clone(),
        };
    }
}

/// Runs one auth command.
pub async fn run(globals: &crate::cli::Globals, command: AuthCommand) -> Result<ExitCode> {
    match command {
        AuthCommand::Login { name } => {
            let overrides = &globals.overrides();
            let password = crate::user::read_password(&format!("password for {name}: "))?;
            let (mut client_config, _) = crate::config::resolve(overrides)?;
            ca_only(&mut client_config);
            client_config.credentials = Credentials::Password {
                user: name.clone(),
                password,
            };
            client_config.namespace = None;
            let client = Client::connect(client_config)
                .await
                .with_context(|| format!("logging in as {name}"))?;
            let issued = client.current_token().await;
            client.close().await;
            let issued = issued.context("no token after login")?;
            println!("{}", issued.token.expose());
            eprintln!(
                "token for {name}, valid until {} ms since the epoch; use it with --token or \
                 RINGCTL_TOKEN",
                issued.expires_at_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        AuthCommand::RotateKey => {
            let client = crate::run::client(globals).await?;
            let outcome = client
                .pd_call(Command::Auth {
                    command: PdAuthCommand::AddSigningKey {
                        private_pkcs8: Vec::new(),
                        public: Vec::new(),
                    },
                    now_ms: 0,
                })
                .await
                .map_err(crate::admin::explain);
            client.close().await;
            outcome?;
            println!(
                "new signing key in use; tokens signed by older keys stay valid until they expire"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
