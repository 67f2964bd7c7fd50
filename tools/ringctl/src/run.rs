//! Carries out a parsed command: connects the client where the command needs one, calls the
//! module that does the work (`kv`, `admin`, `status`, `inspect`, `local`, ...) and returns
//! the exit code.

use crate::cli::{
    CertsCommand, Cli, Command, Globals, KvCommand, LocalCommand, OutputFormat, SchedulerCommand,
    parse_node_spec,
};
use crate::{
    admin, auth, certs, config, inspect, kv, kv_read, kv_watch, local, status, user, view,
};
use anyhow::{Context, Result};
use ringkv_client::Client;
use ringkv_types::pd::AdminOperator;
use std::process::ExitCode;

/// A client connected with the flags, environment and config file of `globals`.
pub async fn client(globals: &Globals) -> Result<Client> {
    let (mut config, described) = config::resolve(&globals.overrides())?;
    auth::apply(&mut config);
    Client::connect(config)
        .await
        .with_context(|| format!("connecting to {described}"))
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let globals = &cli.globals;
    view::set_simple(globals.write_out == Some(OutputFormat::Simple));
    let config = globals;
    match cli.command {
        Command::Local {
            command: LocalCommand::Up { nodes, dir, port },
        } => {
            local::up(local::UpOptions { nodes, dir, port }).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kv { command } => {
            let format = kv::Format::of(globals.write_out);
            // Read stdin before connecting, so a missing value fails fast and offline.
            let command = match command {
                KvCommand::Put {
                    key,
                    value: None,
                    ttl,
                } => KvCommand::Put {
                    key,
                    value: Some(kv::read_stdin()?),
                    ttl,
                },
                other => other,
            };
            let client = client(config).await?;
            let outcome = match command {
                KvCommand::Get {
                    mut keys,
                    consistency,
                } => match (keys.pop(), keys.is_empty()) {
                    (Some(key), true) => kv::get(&client, key, consistency.into(), format).await,
                    (last, _) => {
                        keys.extend(last);
                        kv_read::get_many(&client, keys, consistency.into(), format).await
                    }
                },
                KvCommand::Has { key, consistency } => {
                    kv::has(&client, key, consistency.into(), format).await
                }
                KvCommand::Put { key, value, ttl } => {
                    kv::put(&client, key, value.unwrap_or_default(), ttl, format).await
                }
                KvCommand::Ttl { key, consistency } => {
                    kv::ttl(&client, key, consistency.into(), format).await
                }
                KvCommand::Persist { key } => kv::persist(&client, key, format).await,
                KvCommand::Delete { key } => kv::delete(&client, key, format).await,
                KvCommand::Cas {
                    key,
                    expected_version: Some(version),
                    new,
                    ..
                } => kv_read::cas_version(&client, key, version, new, format).await,
                KvCommand::Cas {
                    key, expected, new, ..
                } => kv::cas(&client, key, expected, new, format).await,
                KvCommand::Scan {
                    prefix,
                    limit,
                    keys_only,
                    cursor,
                    consistency,
                } => {
                    let args = kv_read::ScanArgs {
                        prefix,
                        limit,
                        keys_only,
                        consistency: consistency.into(),
                        cursor,
                    };
                    kv_read::scan(&client, args, format).await
                }
                KvCommand::Watch {
                    key,
                    prefix,
                    after,
                    count,
                    timeout,
                } => {
                    let args = kv_watch::WatchArgs {
                        key,
                        prefix,
                        after,
                        count,
                        timeout,
                    };
                    kv_watch::watch(&client, args, format).await
                }
            };
            client.close().await;
            outcome
        }
        Command::Inspect { target, command } => {
            let request = inspect::request(&command);
            let json = globals.json(false);
            match target.data_dir {
                Some(dir) => inspect::offline(&dir, request, json).await,
                None => {
                    with_client(config, async |c| {
                        inspect::online(c, target.node, request, json).await
                    })
                    .await
                }
            }
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ringctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Local {
            command: LocalCommand::AddNode { dir },
        } => {
            local::add_node(&dir).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let json = globals.json(json);
            let client = client(config).await?;
            status::run(&client, json).await?;
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Nodes { json } => {
            let json = globals.json(json);
            with_client(config, async |c| admin::nodes(c, json).await).await
        }
        Command::Shards { json } => {
            let json = globals.json(json);
            with_client(config, async |c| admin::shards(c, json).await).await
        }
        Command::Rebalance {
            dry_run,
            wait,
            json,
        } => {
            let wait = wait.wait(globals.json(json));
            with_client(config, async |c| admin::rebalance(c, dry_run, wait).await).await
        }
        Command::MoveShard {
            shard,
            from,
            to,
            follow,
        } => {
            let operator = AdminOperator::MoveReplica { shard, from, to };
            let wait = follow.wait();
            with_client(config, async |c| admin::operator(c, operator, wait).await).await
        }
        Command::TransferLeader { shard, to, follow } => {
            let operator = AdminOperator::TransferLeader { shard, to };
            let wait = follow.wait();
            with_client(config, async |c| admin::operator(c, operator, wait).await).await
        }
        Command::SplitShard { shard, at, follow } => {
            let operator = AdminOperator::SplitShard { shard, at };
            let wait = follow.wait();
            with_client(config, async |c| admin::operator(c, operator, wait).await).await
        }
        Command::DrainNode {
            node,
            no_wait,
            wait,
        } => {
            let wait = (!no_wait).then(|| wait.wait(false));
            with_client(config, async |c| admin::drain_node(c, node, wait).await).await
        }
        Command::RemoveNode { node } => {
            with_client(config, async |c| admin::remove_node(c, node).await).await
        }
        Command::Scheduler { command } => match command {
            SchedulerCommand::List { json } => {
                let json = globals.json(json);
                with_client(config, async |c| admin::scheduler_list(c, json).await).await
            }
            SchedulerCommand::Enable { name } => {
                with_client(config, async |c| {
                    admin::scheduler_switch(c, &name, true).await
                })
                .await
            }
            SchedulerCommand::Disable { name } => {
                with_client(config, async |c| {
                    admin::scheduler_switch(c, &name, false).await
                })
                .await
            }
            SchedulerCommand::Set { key, value } => {
                with_client(config, async |c| {
                    admin::scheduler_set(c, &key, &value).await
                })
                .await
            }
        },
        Command::User { command } => {
            with_client(config, async |c| user::run(c, command).await).await
        }
        Command::Auth { command } => auth::run(config, command).await,
        Command::Certs {
            command:
                CertsCommand::Create {
                    dir,
                    nodes,
                    clients,
                },
        } => {
            let cluster = globals.cluster_name.as_deref().unwrap_or("local");
            let nodes = nodes
                .iter()
                .map(|spec| parse_node_spec(spec))
                .collect::<Result<Vec<_>>>()?;
            let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
            let report = certs::ensure_named(&dir, cluster, &nodes, &clients)?;
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

/// Connects, runs `command`, then closes the connections whatever the outcome.
async fn with_client<F>(config: &Globals, command: F) -> Result<ExitCode>
where
    F: AsyncFnOnce(&Client) -> Result<ExitCode>,
{
    let client = client(config).await?;
    let outcome = command(&client).await;
    client.close().await;
    outcome
}
