//! `ringctl user ...`: the user table in the placement driver's state (admin only).
//!
//! Passwords are hashed here (argon2id, random salt), so they never leave this machine; the
//! placement driver stores the hash. A password is read from stdin when stdin is not a
//! terminal (one line), otherwise prompted for twice without echo.

use crate::exit::Usage;
use anyhow::{Context, Result};
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use clap::Subcommand;
use ringkv_client::Client;
use ringkv_types::Secret;
use ringkv_types::pd::{AuthCommand, Command, Role, User};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// The user commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user (password from stdin, or prompted twice).
    Add {
        /// The user's name, also its namespace (1-64 of A-Z a-z 0-9 _ . -).
        name: String,
        /// Create the user without a password (it can use a client certificate only).
        #[arg(long)]
        no_password: bool,
    },
    /// Deletes a user; its tokens stop working.
    Delete {
        /// The user.
        name: String,
    },
    /// Lists users and their roles.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sets a user's password; its older tokens stop working.
    Passwd {
        /// The user.
        name: String,
    },
    /// Gives a user a role: admin, read:NAMESPACE or readwrite:NAMESPACE.
    Grant {
        /// The user.
        name: String,
        /// The role.
        role: String,
    },
    /// Takes a role away; tokens issued with it stop working.
    Revoke {
        /// The user.
        name: String,
        /// The role.
        role: String,
    },
}

/// Reads a password: one line from stdin when it is not a terminal, else prompted twice
/// without echo.
pub fn read_password(prompt: &str) -> Result<Secret> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err(Usage("empty password on stdin".into()).into());
        }
        return Ok(Secret::new(password));
    }
    let first = prompt_hidden(prompt)?;
    let second = prompt_hidden("again: ")?;
    if first != second {
        return Err(Usage("the passwords differ".into()).into());
    }
    if first.is_empty() {
        return Err(Usage("empty password".into()).into());
    }
    Ok(Secret::new(first))
}

/// Prompts on stderr and reads a line from the terminal with echo off (`stty`).
fn prompt_hidden(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let _ = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let _ = stty("echo");
    eprintln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// An argon2id hash of `password` with a random salt.
pub fn hash_password(password: &Secret) -> Result<String> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))
}

fn parse_role(text: &str) -> Result<Role> {
    text.parse::<Role>().map_err(|e| Usage(e).into())
}

async fn call(client: &Client, command: AuthCommand) -> Result<()> {
    client
        .pd_call(Command::Auth { command, now_ms: 0 })
        .await
        .map_err(crate::admin::explain)?;
    Ok(())
}

fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "name": user.name,
        "admin": user.is_admin(),
        "roles": user.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "password": !user.password_hash.is_empty(),
    })
}

/// Runs one user command.
pub async fn run(client: &Client, command: UserCommand) -> Result<ExitCode> {
    match command {
        UserCommand::Add { name, no_password } => {
            let password_hash = if no_password {
                String::new()
            } else {
                hash_password(&read_password(&format!("password for {name}: "))?)?
            };
            call(
                client,
                AuthCommand::AddUser {
                    name: name.clone(),
                    password_hash,
                },
            )
            .await?;
            println!("added user {name}");
        }
        UserCommand::Delete { name } => {
            call(client, AuthCommand::DeleteUser { name: name.clone() }).await?;
            println!("deleted user {name}");
        }
        UserCommand::Passwd { name } => {
            let password_hash =
                hash_password(&read_password(&format!("new password for {name}: "))?)?;
            call(
                client,
                AuthCommand::SetPassword {
                    name: name.clone(),
                    password_hash,
                },
            )
            .await?;
            println!("changed the password of {name}; its older tokens no longer work");
        }
        UserCommand::Grant { name, role } => {
            let role = parse_role(&role)?;
            call(
                client,
                AuthCommand::Grant {
                    name: name.clone(),
                    role: role.clone(),
                },
            )
            .await?;
            println!("granted {role} to {name}");
        }
        UserCommand::Revoke { name, role } => {
            let role = parse_role(&role)?;
            call(
                client,
                AuthCommand::Revoke {
                    name: name.clone(),
                    role: role.clone(),
                },
            )
            .await?;
            println!("revoked {role} from {name}; its tokens issued before no longer work");
        }
        UserCommand::List { json } => {
            let state = crate::admin::state(client).await?;
            let users: Vec<&User> = state.auth.users.values().collect();
            if json {
                let list: Vec<serde_json::Value> = users.iter().map(|u| user_json(u)).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<6} ROLES", "NAME", "ADMIN");
                if !state.auth.users.contains_key("root") {
                    println!("{:<24} {:<6} (built-in, no password)", "root", "yes");
                }
                for user in users {
                    let roles: Vec<String> = user.roles.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<24} {:<6} {}",
                        user.name,
                        if user.is_admin() { "yes" } else { "no" },
                        roles.join(",")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
