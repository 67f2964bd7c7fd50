//! The command line parses as documented, and refuses bad arguments with a reason.

use super::*;
use crate::config;
use clap::CommandFactory;
use std::path::PathBuf;

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
fn config_is_found_by_flag_then_environment_then_default() {
    use config::RingctlConfig;
    let explicit = PathBuf::from("x.toml");
    assert_eq!(RingctlConfig::locate(Some(&explicit)), explicit);
}
