//! Users and tokens end to end with real processes: `ringctl local up`, then `ringctl user`,
//! `ringctl auth login`, `--token`, `--namespace`, `auth rotate-key`, `user passwd`, and the
//! exit codes (0 ok, 1 not found, 2 usage, 3 unauthenticated or denied). Skipped (with a
//! message) when no `ringkvd` binary sits next to `ringctl`. Every process is killed on drop.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

mod common;

use common::{Cluster, ringctl, ringctl_in, skip_without_ringkvd, test_port};
use std::process::Output;
use std::time::{Duration, Instant};

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn users_log_in_and_tokens_reach_only_their_namespace() {
    if skip_without_ringkvd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let config = cluster_dir.join("ringctl.toml");
    let cluster = Cluster::start(&cluster_dir, test_port(0));

    let added = ringctl_in(&config, &["user", "add", "alice"], "alice-secret\n", None);
    assert_eq!(code(&added), Some(0), "{added:?}");
    let bad_role = ringctl(&config, &["user", "grant", "alice", "superuser"]);
    assert_eq!(code(&bad_role), Some(2), "{bad_role:?}");
    let bad_args = ringctl(&config, &["user", "grant", "alice"]);
    assert_eq!(code(&bad_args), Some(2), "{bad_args:?}");

    // The first signing key appears shortly after the cluster starts: retry the login.
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let login = ringctl_in(&config, &["auth", "login", "alice"], "alice-secret\n", None);
        if login.status.success() {
            break String::from_utf8(login.stdout).unwrap().trim().to_string();
        }
        assert!(Instant::now() < deadline, "no login: {login:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let wrong = ringctl_in(&config, &["auth", "login", "alice"], "guess\n", None);
    assert_eq!(code(&wrong), Some(3), "{wrong:?}");
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("guess"));

    // As alice: her namespace works, administration does not.
    let put = ringctl_in(&config, &["kv", "put", "x", "alice's"], "", Some(&token));
    assert_eq!(code(&put), Some(0), "{put:?}");
    let get = ringctl_in(&config, &["kv", "get", "x"], "", Some(&token));
    assert_eq!(get.stdout, b"alice's\n", "{get:?}");
    let flag = ringctl(&config, &["--token", &token, "kv", "get", "x"]);
    assert_eq!(flag.stdout, b"alice's\n", "{flag:?}");
    for args in [
        &["user", "list"][..],
        &["user", "add", "eve", "--no-password"],
        &["remove-node", "3"],
        &["drain-node", "3", "--no-wait"],
        &["scheduler", "disable", "repair"],
        &["auth", "rotate-key"],
        &["--namespace", "root", "kv", "get", "x"],
    ] {
        let refused = ringctl_in(&config, args, "", Some(&token));
        assert_eq!(code(&refused), Some(3), "{args:?}: {refused:?}");
    }
    let forged = ringctl_in(&config, &["kv", "get", "x"], "", Some("a.b.c"));
    assert_eq!(code(&forged), Some(3), "{forged:?}");

    // Root: raw keys by default, alice's through --namespace.
    let raw = ringctl(&config, &["kv", "get", "x"]);
    assert_eq!(code(&raw), Some(1), "{raw:?}");
    let hers = ringctl(&config, &["--namespace", "alice", "kv", "get", "x"]);
    assert_eq!(hers.stdout, b"alice's\n", "{hers:?}");
    let list = ringctl(&config, &["user", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(users[0]["name"], "alice", "{users}");
    assert_eq!(users[0]["admin"], false, "{users}");

    // A rotated key keeps the token; a new password revokes it.
    let rotate = ringctl(&config, &["auth", "rotate-key"]);
    assert_eq!(code(&rotate), Some(0), "{rotate:?}");
    let still = ringctl_in(&config, &["kv", "get", "x"], "", Some(&token));
    assert_eq!(still.stdout, b"alice's\n", "{still:?}");
    let passwd = ringctl_in(&config, &["user", "passwd", "alice"], "new-secret\n", None);
    assert_eq!(code(&passwd), Some(0), "{passwd:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let old = ringctl_in(&config, &["kv", "get", "x"], "", Some(&token));
        if code(&old) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "old token still works: {old:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.stop();
}
