//! `ringctl`: start and grow a local cluster, read and write keys, show the cluster's status,
//! administer placement (nodes, shards, rebalancing, moves, splits, drains, schedulers), inspect
//! a node's store, create certificates.
//!
//! Global flags follow etcdctl's habits: `--endpoints host:port,...`, `--cacert/--cert/--key`,
//! `--cluster`, `-w table|json|simple`, each with an environment twin (`RINGCTL_ENDPOINTS`, ...);
//! flags win over the environment, which wins over the config file (`--config`).

mod admin;
mod auth;
mod certs;
mod config;
mod exit;
mod inspect;
mod kv;
mod kv_read;
mod kv_watch;
mod local;
mod status;
mod user;
mod view;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ringkv_client::Client;
use ringkv_types::pd::AdminOperator;
use ringkv_types::{NodeId, ShardId};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// ringkv admin and data tool.
#[derive(Debug, Parser)]
#[command(name = "ringctl", version, about)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes; each has an environment twin. Flags > environment > config file.
#[derive(Debug, Default, Args)]
struct Globals {
    /// The ringctl config (default: ./data/local/ringctl.toml). Only read for what the flags
    /// and the environment leave out.
    #[arg(long, global = true, env = "RINGCTL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Seed nodes, comma-separated: host:port (the node ids are learned) or id@ip:port.
    #[arg(
        long,
        global = true,
        env = "RINGCTL_ENDPOINTS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    endpoints: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, global = true, env = "RINGCTL_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// The client certificate (PEM).
    #[arg(
        long = "cert",
        global = true,
        env = "RINGCTL_CERT",
        value_name = "FILE"
    )]
    cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "key", global = true, env = "RINGCTL_KEY", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The cluster name (node certificates name node-<id>.<cluster>).
    #[arg(
        long = "cluster",
        global = true,
        env = "RINGCTL_CLUSTER",
        value_name = "NAME"
    )]
    cluster_name: Option<String>,
    /// Output format (`--json` on a command is the same as `-w json`).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        env = "RINGCTL_WRITE_OUT",
        value_enum
    )]
    write_out: Option<OutputFormat>,
    /// Act as the user of this token (from `ringctl auth login`): TLS with the cluster CA, no
    /// client certificate.
    #[arg(long, global = true, env = "RINGCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The namespace `kv` commands use (default: the user's own; root's is `root`).
    #[arg(long, global = true, env = "RINGCTL_NAMESPACE", value_name = "NS")]
    namespace: Option<String>,
}

impl Globals {
    fn overrides(&self) -> config::Overrides {
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
    fn json(&self, flag: bool) -> bool {
        flag || self.write_out == Some(OutputFormat::Json)
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// Aligned columns with a header (the default for lists).
    Table,
    /// JSON, for scripts.
    Json,
    /// Bare values: one line per row, fields separated by ", ", no header.
    Simple,
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
    /// Nodes as the placement driver sees them: address, state, replicas, leaders, disk.
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shards: arc, epoch, replicas with roles, leader, size, operator in flight.
    Shards {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Turns the balance schedulers on and follows them until replica counts differ by at most
    /// one and leaders are spread (or nothing is left to move).
    Rebalance {
        /// Only print the counts and what the schedulers would do now.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: WaitArgs,
        /// Print JSON (one object per progress line) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Moves SHARD's replica from one node to another (add learner, promote, remove).
    MoveShard {
        /// The shard (3 or s3).
        #[arg(value_parser = admin::parse_shard)]
        shard: ShardId,
        /// The node holding the replica.
        #[arg(long, value_parser = admin::parse_node)]
        from: NodeId,
        /// The node to receive it.
        #[arg(long, value_parser = admin::parse_node)]
        to: NodeId,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Makes the voter on a node the leader of SHARD.
    TransferLeader {
        /// The shard (3 or s3).
        #[arg(value_parser = admin::parse_shard)]
        shard: ShardId,
        /// The new leader's node.
        #[arg(long, value_parser = admin::parse_node)]
        to: NodeId,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Splits SHARD in two (no data is copied).
    SplitShard {
        /// The shard (3 or s3).
        #[arg(value_parser = admin::parse_shard)]
        shard: ShardId,
        /// Ring position of the cut (decimal or 0x hex); default: the leader's hint, else the
        /// middle of the arc.
        #[arg(long, value_parser = admin::parse_position)]
        at: Option<u64>,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Marks node N draining and follows its replicas moving away until it holds none.
    DrainNode {
        /// The node (4 or n4).
        #[arg(value_parser = admin::parse_node)]
        node: NodeId,
        /// Return once the node is marked draining.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Removes node N from the cluster for good; refused while it holds replicas.
    RemoveNode {
        /// The node (4 or n4).
        #[arg(value_parser = admin::parse_node)]
        node: NodeId,
    },
    /// Lists, enables and disables the placement schedulers, and changes their settings.
    Scheduler {
        #[command(subcommand)]
        command: SchedulerCommand,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Users and their roles (admin).
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Tokens: log in, rotate the signing key.
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Looks inside a node's store: keys and values, the decoded Raft log, hard states and
    /// descriptors. Online through a running node (admin only), or offline on a stopped node's
    /// data dir with --data-dir.
    Inspect {
        #[command(flatten)]
        target: InspectTarget,
        #[command(subcommand)]
        command: InspectCommand,
    },
    /// Prints a shell completion script: `source <(ringctl completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Which store `inspect` reads.
#[derive(Debug, Args)]
struct InspectTarget {
    /// Read this stopped node's data dir instead of asking a running node (refused while a
    /// node runs on it).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "node")]
    data_dir: Option<PathBuf>,
    /// The running node to ask (default: the first endpoint).
    #[arg(long, global = true, value_parser = admin::parse_node)]
    node: Option<NodeId>,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// The node's identity and one line per shard: term, vote, commit, applied, log bounds.
    Status,
    /// Keys and values in storage order, of one shard or of every local shard.
    Data {
        /// One shard (3 or s3); default: every shard.
        #[arg(long, value_parser = admin::parse_shard_or_pd)]
        shard: Option<ShardId>,
        /// Most keys to show (at most 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Decoded Raft log entries of one shard: index, term, kind and command.
    Raft {
        /// The shard (3, s3, or 0 / pd for the placement driver).
        #[arg(long, value_parser = admin::parse_shard_or_pd)]
        shard: ShardId,
        /// First index to show (default: the first in the log).
        #[arg(long, value_name = "INDEX")]
        from: Option<u64>,
        /// Most entries to show (at most 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Hard state, applied index, compaction point, configuration, log bounds and descriptor
    /// per shard.
    Meta {
        /// One shard; default: every shard with records.
        #[arg(long, value_parser = admin::parse_shard_or_pd)]
        shard: Option<ShardId>,
    },
}

/// How long commands wait.
#[derive(Debug, Args)]
struct WaitArgs {
    /// Give up waiting after this many seconds (exit 4; PD keeps working).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Seconds between progress polls.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    interval: u64,
}

impl WaitArgs {
    fn wait(&self, json: bool) -> admin::Wait {
        admin::Wait {
            timeout: Duration::from_secs(self.timeout),
            interval: Duration::from_secs(self.interval.max(1)),
            json,
        }
    }
}

/// Whether an operator command follows its operator to the end.
#[derive(Debug, Args)]
struct FollowArgs {
    /// Wait until the operator finishes, printing its steps.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    limits: WaitArgs,
}

impl FollowArgs {
    fn wait(&self) -> Option<admin::Wait> {
        self.wait.then(|| self.limits.wait(false))
    }
}

#[derive(Debug, Subcommand)]
enum SchedulerCommand {
    /// Every scheduler's switch and the settings.
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Turns a scheduler on: repair, drain, split, balance-replicas, balance-leaders.
    Enable {
        /// The scheduler.
        name: String,
    },
    /// Turns a scheduler off.
    Disable {
        /// The scheduler.
        name: String,
    },
    /// Sets one setting (as listed by `scheduler list`), e.g. `max_operators 8`.
    Set {
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
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
        /// The port of every node (each node has its own loopback IP); the HTTP API listens on
        /// this port + 1000 (8100 by default).
        #[arg(long, default_value_t = local::DEFAULT_PORT)]
        port: u16,
    },
    /// Adds a node to the running cluster under DIR (made by `local up`) and runs it in the
    /// foreground until Ctrl-C; `local up` also starts it on its next start.
    AddNode {
        /// The cluster directory.
        #[arg(long, default_value = "data/local")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Prints the value of KEY (with several keys, `KEY<TAB>VALUE` lines, read in parallel
    /// per shard); exits 1 if a key does not exist.
    Get {
        /// The keys.
        #[arg(required = true, num_args = 1..)]
        keys: Vec<String>,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Exits 0 if KEY exists and 1 if not (the value is not fetched).
    Has {
        /// The key.
        key: String,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Sets KEY to VALUE; without VALUE, the value is read from stdin (all of it, as bytes).
    Put {
        /// The key.
        key: String,
        /// The value (default: stdin).
        value: Option<String>,
        /// Time to live: the key expires this long after its shard's leader applies the put
        /// (`500ms`, `30s`, `10m`, `2h`, `1d`; a bare number is seconds).
        #[arg(long, value_parser = kv::parse_ttl)]
        ttl: Option<std::time::Duration>,
    },
    /// Prints what is left of KEY's time to live in milliseconds (`none` without a TTL);
    /// exits like `get` if the key does not exist.
    Ttl {
        /// The key.
        key: String,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Clears KEY's time to live, keeping its value; prints whether it had one.
    Persist {
        /// The key.
        key: String,
    },
    /// Removes KEY.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets KEY to NEW if its value is EXPECTED (or its version EXPECTED_VERSION); exits 1
    /// (printing the current value) if not.
    Cas {
        /// The key.
        key: String,
        /// The required current value; omit to require that the key is absent.
        #[arg(long)]
        expected: Option<String>,
        /// Compare the version (the log index of the key's last write, as `get -w json`
        /// prints it) instead of the value; 0 = the key must be absent.
        #[arg(long, conflicts_with = "expected")]
        expected_version: Option<u64>,
        /// The new value; omit (with --delete) to remove the key.
        #[arg(long, required_unless_present = "delete")]
        new: Option<String>,
        /// Remove the key when the comparison holds.
        #[arg(long, conflicts_with = "new")]
        delete: bool,
    },
    /// Lists keys (and values) of the namespace in ring order (keys are hashed: not sorted).
    /// A key present for the whole scan is printed exactly once, even across splits and moves.
    Scan {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Print at most this many keys, then the cursor to resume from.
        #[arg(long)]
        limit: Option<u64>,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Resume from a cursor an earlier scan printed.
        #[arg(long)]
        cursor: Option<String>,
        /// How fresh each page must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Prints one line per change of KEY (or of every key under --prefix) as it happens, in
    /// order per key; until Ctrl-C, --count events or --timeout.
    Watch {
        /// The key.
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<String>,
        /// Watch every key starting with this (empty: the whole namespace).
        #[arg(long)]
        prefix: Option<String>,
        /// Changes after this log index of the key's shard (a version `kv get -w json` printed,
        /// or the `index` of the last event seen); default: from now.
        #[arg(long)]
        after: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long (`500ms`, `30s`, `10m`; a bare number is seconds).
        #[arg(long, value_parser = kv::parse_ttl)]
        timeout: Option<std::time::Duration>,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
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

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
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
    auth::set_access(auth::Access {
        token: cli.globals.token.clone().map(ringkv_types::Secret::new),
        namespace: cli.globals.namespace.clone(),
    });
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => failure(&error),
    }
}

/// `ringctl status | head` closes stdout early, and `println!` (or clap_complete's writer) then
/// panics on the broken pipe. A reader that stopped reading is not an error of ours: end quietly
/// with exit code 0 (as a process killed by SIGPIPE would end silently) instead of printing a
/// panic. ringctl writes to no other pipe (its network traffic is QUIC over UDP).
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// The one place a failed command ends: the error on stderr, and its exit code.
fn failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    exit::exit(exit::code_of(error))
}

async fn client(globals: &Globals) -> Result<Client> {
    let (mut config, described) = config::resolve(&globals.overrides())?;
    auth::apply(&mut config);
    Client::connect(config)
        .await
        .with_context(|| format!("connecting to {described}"))
}

async fn run(cli: Cli) -> Result<ExitCode> {
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

/// Parses `ID=IP`.
fn parse_node_spec(spec: &str) -> Result<(NodeId, Vec<String>)> {
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
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> std::result::Result<Command, String> {
        Cli::try_parse_from(std::iter::once("ringctl").chain(args.iter().copied()))
            .map(|cli| cli.command)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn admin_commands_parse() {
        let moved = parse(&["move-shard", "s3", "--from", "1", "--to", "n4", "--wait"]);
        assert!(
            matches!(
                &moved,
                Ok(Command::MoveShard { shard, from, to, follow })
                    if *shard == ShardId(3) && *from == NodeId(1) && *to == NodeId(4)
                        && follow.wait && follow.limits.timeout == 600
            ),
            "{moved:?}"
        );
        let split = parse(&["split-shard", "3", "--at", "0x8000000000000000"]);
        assert!(
            matches!(&split, Ok(Command::SplitShard { at: Some(at), follow, .. })
                if *at == 1 << 63 && !follow.wait),
            "{split:?}"
        );
        assert!(matches!(
            parse(&["split-shard", "3"]),
            Ok(Command::SplitShard { at: None, .. })
        ));
        assert!(matches!(
            parse(&["transfer-leader", "7", "--to", "2"]),
            Ok(Command::TransferLeader { .. })
        ));
        let drain = parse(&["drain-node", "n2", "--no-wait"]);
        assert!(
            matches!(&drain, Ok(Command::DrainNode { node, no_wait: true, .. }) if *node == NodeId(2)),
            "{drain:?}"
        );
        let rebalance = parse(&["rebalance", "--dry-run", "--json", "--timeout", "30"]);
        assert!(
            matches!(&rebalance, Ok(Command::Rebalance { dry_run: true, json: true, wait })
                if wait.timeout == 30),
            "{rebalance:?}"
        );
        assert!(matches!(
            parse(&["remove-node", "4"]),
            Ok(Command::RemoveNode { .. })
        ));
        assert!(matches!(
            parse(&["scheduler", "disable", "balance-leaders"]),
            Ok(Command::Scheduler {
                command: SchedulerCommand::Disable { .. }
            })
        ));
        assert!(matches!(
            parse(&["scheduler", "set", "max_operators", "8"]),
            Ok(Command::Scheduler {
                command: SchedulerCommand::Set { .. }
            })
        ));
        assert!(matches!(
            parse(&["nodes", "--json"]),
            Ok(Command::Nodes { json: true })
        ));
        assert!(matches!(
            parse(&["shards"]),
            Ok(Command::Shards { json: false })
        ));
        assert!(matches!(
            parse(&["local", "add-node", "--dir", "x"]),
            Ok(Command::Local {
                command: LocalCommand::AddNode { .. }
            })
        ));
    }

    #[test]
    fn bad_admin_arguments_are_refused_with_a_reason() {
        let cases: [(&[&str], &str); 5] = [
            (
                &["move-shard", "0", "--from", "1", "--to", "2"],
                "placement driver",
            ),
            (&["move-shard", "3", "--to", "2"], "--from"),
            (&["transfer-leader", "3", "--to", "zero"], "not a node id"),
            (
                &["split-shard", "3", "--at", "0xfffffffffffffffff"],
                "ring position",
            ),
            (&["drain-node"], "<NODE>"),
        ];
        for (args, expected) in cases {
            let error = parse(args).map(|_| ()).unwrap_err();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }

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

    #[test]
    fn config_is_found_by_flag_then_environment_then_default() {
        use config::RingctlConfig;
        let explicit = PathBuf::from("x.toml");
        assert_eq!(RingctlConfig::locate(Some(&explicit)), explicit);
    }
}
