//! Identity and access on a real (in-process) cluster: per-user isolation with client
//! certificates and with tokens, grants and revocation, the admin boundary for user
//! certificates, user tokens and foreign node certificates, token attacks, and users that
//! survive a PD leader change and a full-cluster restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use bytes::Bytes;
use common::*;
use ringkv_client::{
    BatchOp, Client, ClientConfig, Credentials, Error as ClientError, ReadConsistency, Secret,
    TlsSource,
};
use ringkv_node::auth::{keys, password, token};
use ringkv_pd::{AdminOperator, AuthCommand, Command, NodeState, NodeStats, Role, SchedulerKind};
use ringkv_transport::ClientEndpoint;
use ringkv_transport::certs::{TlsIdentity, Validity};
use ringkv_types::{
    AdminRequest, AdminResult, Epoch, NodeId, ReplicaChange, Request, Response, ShardId, WireError,
};
use std::time::{Duration, Instant};

const ALICE_PW: &str = "alice's long password";
const BOB_PW: &str = "bob's long password";

fn endpoints(cluster: &Cluster) -> Vec<ringkv_client::Endpoint> {
    let seeds: Vec<String> = cluster
        .addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}@{addr}", i + 1))
        .collect();
    ClientConfig::parse_endpoints(&seeds).unwrap()
}

fn cert_identity(cluster: &Cluster, name: &str) -> TlsIdentity {
    let pair = cluster
        .ca
        .issue_client(name, Validity::days_from_now(1))
        .unwrap();
    TlsIdentity::from_pem(cluster.ca.cert_pem(), &pair).unwrap()
}

fn node_identity(cluster: &Cluster, node: u64) -> TlsIdentity {
    let pair = cluster
        .ca
        .issue_node(NodeId(node), &[], Validity::days_from_now(1))
        .unwrap();
    TlsIdentity::from_pem(cluster.ca.cert_pem(), &pair).unwrap()
}

fn anonymous_identity(cluster: &Cluster) -> TlsIdentity {
    let ca = cert_identity(cluster, "unused").ca;
    TlsIdentity::ca_only_der(ca)
}

fn config(cluster: &Cluster, tls: TlsSource, credentials: Credentials) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints(cluster), CLUSTER, tls);
    config.credentials = credentials;
    config.request_timeout = Duration::from_secs(10);
    config
}

/// A client with `name`'s certificate, in `namespace` (default: its own).
async fn cert_client(cluster: &Cluster, name: &str, namespace: Option<&str>) -> Client {
    let mut config = config(
        cluster,
        TlsSource::Identity(cert_identity(cluster, name)),
        Credentials::Certificate,
    );
    config.namespace = namespace.map(str::to_string);
    Client::connect(config).await.unwrap()
}

/// A client that logs in as `user`, in `namespace` (default: its own).
async fn password_client(
    cluster: &Cluster,
    user: &str,
    password: &str,
    namespace: Option<&str>,
) -> Result<Client, ClientError> {
    let mut config = config(
        cluster,
        TlsSource::Identity(anonymous_identity(cluster)),
        Credentials::Password {
            user: user.into(),
            password: Secret::new(password),
        },
    );
    config.namespace = namespace.map(str::to_string);
    Client::connect(config).await
}

/// One request on one connection to node 1, as `identity` presents itself.
async fn raw_call(cluster: &Cluster, identity: &TlsIdentity, request: &Request) -> Response {
    let endpoint = ClientEndpoint::new(identity, CLUSTER, "127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint.connect(NodeId(1), cluster.addrs[0]).await.unwrap();
    let response = connection.call(request, CALL_TIMEOUT).await.unwrap();
    connection.close();
    response
}

async fn login(cluster: &Cluster, user: &str, password: &str) -> Response {
    raw_call(
        cluster,
        &anonymous_identity(cluster),
        &Request::Admin(AdminRequest::Login {
            user: user.into(),
            password: Secret::new(password),
        }),
    )
    .await
}

fn token_of(response: Response) -> Secret {
    match response {
        Response::Admin(AdminResult::Token { token, .. }) => token,
        other => panic!("no token: {other:?}"),
    }
}

fn with_token(token: &Secret, request: Request) -> Request {
    Request::WithToken {
        token: token.clone(),
        request: Box::new(request),
    }
}

fn pd(command: Command) -> Request {
    Request::Admin(AdminRequest::Pd {
        command: postcard::to_stdvec(&command).unwrap().into(),
    })
}

async fn add_user(cluster: &mut Cluster, name: &str, pw: &str) {
    let hash = password::hash(&Secret::new(pw)).unwrap();
    let command = Command::Auth {
        command: AuthCommand::AddUser {
            name: name.into(),
            password_hash: hash,
        },
        now_ms: 0,
    };
    cluster.pd_call(&command).await.unwrap();
}

async fn auth(cluster: &mut Cluster, command: AuthCommand) {
    cluster
        .pd_call(&Command::Auth { command, now_ms: 0 })
        .await
        .unwrap();
}

/// The full PD state (signing keys included), as only a node may read it.
async fn full_pd_state(cluster: &mut Cluster) -> ringkv_pd::PdState {
    let identity = node_identity(cluster, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for index in 0..cluster.addrs.len() {
            let endpoint =
                ClientEndpoint::new(&identity, CLUSTER, "127.0.0.1:0".parse().unwrap()).unwrap();
            let Ok(connection) = endpoint
                .connect(NodeId(index as u64 + 1), cluster.addrs[index])
                .await
            else {
                continue;
            };
            if let Ok(Response::Admin(AdminResult::Pd(bytes))) = connection
                .call(&Request::Admin(AdminRequest::PdState), CALL_TIMEOUT)
                .await
            {
                return postcard::from_bytes(&bytes).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no PD state");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a 3-node cluster with users alice and bob and a signing key.
async fn cluster_with_users() -> Cluster {
    let mut cluster = Cluster::start(3, 4, "").await;
    add_user(&mut cluster, "alice", ALICE_PW).await;
    add_user(&mut cluster, "bob", BOB_PW).await;
    // The PD leader creates the first signing key after its election grace period.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.pd_state().await.auth.signing_keys.is_empty() {
        assert!(Instant::now() < deadline, "no signing key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each PD replica applies the users in its own time (a follower learns the commit a
    // heartbeat later): wait until every node's authenticator knows both.
    for index in 0..cluster.addrs.len() {
        for user in ["alice", "bob"] {
            let addr = cluster.addrs[index];
            eventually(&format!("node {} knows {user}", index + 1), || {
                let identity = cert_identity(&cluster, user);
                async move { !is_unknown_user(&call_node(&identity, index, addr).await) }
            })
            .await;
        }
    }
    cluster
}

/// One `NodeStatus` request to the node at `addr` as `identity` (None if unreachable).
async fn call_node(
    identity: &TlsIdentity,
    index: usize,
    addr: std::net::SocketAddr,
) -> Option<Response> {
    let endpoint = ClientEndpoint::new(identity, CLUSTER, "127.0.0.1:0".parse().unwrap()).ok()?;
    let connection = endpoint
        .connect(NodeId(index as u64 + 1), addr)
        .await
        .ok()?;
    let response = connection
        .call(&Request::Admin(AdminRequest::NodeStatus), CALL_TIMEOUT)
        .await
        .ok();
    connection.close();
    response
}

fn is_unknown_user(response: &Option<Response>) -> bool {
    matches!(
        response,
        None | Some(Response::Error(WireError::Unauthenticated { .. }))
    )
}

/// Waits until `check` passes on a fresh attempt (PD changes reach the nodes' authenticators
/// within a PD apply), for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_denied(result: &Result<impl std::fmt::Debug, ClientError>) -> bool {
    matches!(result, Err(ClientError::PermissionDenied { .. }))
}

fn is_unauthenticated(result: &Result<impl std::fmt::Debug, ClientError>) -> bool {
    matches!(result, Err(ClientError::Unauthenticated { .. }))
}

/// Every data operation of `intruder` on `victim`'s namespace is refused; existing and
/// missing keys are refused alike (nothing tells whether a key exists).
async fn assert_no_access(intruder: &Client, write_only: bool) {
    for consistency in [
        ReadConsistency::Linearizable,
        ReadConsistency::Lease,
        ReadConsistency::Stale,
    ] {
        if !write_only {
            let existing = intruder.get_with("x", consistency).await;
            let missing = intruder.get_with("never-written", consistency).await;
            assert!(is_denied(&existing), "{consistency:?} read: {existing:?}");
            assert_eq!(format!("{existing:?}"), format!("{missing:?}"));
        }
    }
    let put = intruder.put("x", "intruder").await;
    assert!(is_denied(&put), "put: {put:?}");
    let delete = intruder.delete("x").await;
    assert!(is_denied(&delete), "delete: {delete:?}");
    let cas = intruder
        .compare_and_swap("x", None, Some(Bytes::from_static(b"intruder")))
        .await;
    assert!(is_denied(&cas), "cas: {cas:?}");
    let batch = intruder
        .batch(vec![BatchOp::Put {
            key: Bytes::from_static(b"x"),
            value: Bytes::from_static(b"intruder"),
        }])
        .await;
    assert!(is_denied(&batch), "batch: {batch:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_isolated_by_namespace_with_certificates_and_tokens() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = cluster_with_users().await;
        let alice_cert = cert_client(&cluster, "alice", None).await;
        let bob_cert = cert_client(&cluster, "bob", None).await;
        let alice_token = password_client(&cluster, "alice", ALICE_PW, None)
            .await
            .unwrap();
        let bob_token = password_client(&cluster, "bob", BOB_PW, None)
            .await
            .unwrap();
        assert_eq!(alice_cert.namespace(), Some("alice"));

        // The same key name in two namespaces: two keys.
        alice_cert.put("x", "alice's x").await.unwrap();
        bob_token.put("x", "bob's x").await.unwrap();
        for alice in [&alice_cert, &alice_token] {
            assert_eq!(alice.get("x").await.unwrap().unwrap(), "alice's x");
        }
        for bob in [&bob_cert, &bob_token] {
            assert_eq!(bob.get("x").await.unwrap().unwrap(), "bob's x");
        }
        // root (raw keys) reaches both through their namespaces.
        let root_in_alice = cert_client(&cluster, "ringctl", Some("alice")).await;
        assert_eq!(root_in_alice.get("x").await.unwrap().unwrap(), "alice's x");

        // bob, by certificate and by token, aimed at alice's namespace.
        let bob_cert_in_alice = cert_client(&cluster, "bob", Some("alice")).await;
        let bob_token_in_alice = password_client(&cluster, "bob", BOB_PW, Some("alice"))
            .await
            .unwrap();
        assert_no_access(&bob_cert_in_alice, false).await;
        assert_no_access(&bob_token_in_alice, false).await;
        // A user without a PD entry cannot use its certificate at all.
        let mallory = Client::connect(config(
            &cluster,
            TlsSource::Identity(cert_identity(&cluster, "mallory")),
            Credentials::Certificate,
        ))
        .await;
        assert!(is_unauthenticated(&mallory), "{:?}", mallory.err());

        // read:alice lets bob read, not write.
        auth(
            &mut cluster,
            AuthCommand::Grant {
                name: "bob".into(),
                role: Role::Read("alice".into()),
            },
        )
        .await;
        eventually("grant applies", || async {
            bob_cert_in_alice
                .get_with("x", ReadConsistency::Stale)
                .await
                .is_ok()
        })
        .await;
        for consistency in [
            ReadConsistency::Linearizable,
            ReadConsistency::Lease,
            ReadConsistency::Stale,
        ] {
            assert_eq!(
                bob_cert_in_alice
                    .get_with("x", consistency)
                    .await
                    .unwrap()
                    .unwrap(),
                "alice's x"
            );
        }
        let bob_token_in_alice = password_client(&cluster, "bob", BOB_PW, Some("alice"))
            .await
            .unwrap();
        assert_eq!(
            bob_token_in_alice.get("x").await.unwrap().unwrap(),
            "alice's x"
        );
        assert_no_access(&bob_cert_in_alice, true).await;
        assert_no_access(&bob_token_in_alice, true).await;

        // After revoke: not even read. The token was issued with the grant: revoked too.
        auth(
            &mut cluster,
            AuthCommand::Revoke {
                name: "bob".into(),
                role: Role::Read("alice".into()),
            },
        )
        .await;
        eventually("revoke applies", || async {
            is_denied(&bob_cert_in_alice.get("x").await)
        })
        .await;
        assert_no_access(&bob_cert_in_alice, false).await;
        let revoked = bob_token_in_alice.get("x").await;
        assert!(is_unauthenticated(&revoked), "{revoked:?}");
        // Nothing bob tried changed alice's key.
        assert_eq!(alice_cert.get("x").await.unwrap().unwrap(), "alice's x");
        assert_eq!(bob_cert.get("x").await.unwrap().unwrap(), "bob's x");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_refused_every_admin_command_and_nodes_speak_only_for_themselves() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let cluster = cluster_with_users().await;
        let token = token_of(login(&cluster, "alice", ALICE_PW).await);
        let admin_requests: Vec<(&str, Request)> = vec![
            (
                "remove-node",
                pd(Command::SetNodeState {
                    node: NodeId(3),
                    state: NodeState::Removed,
                    now_ms: 0,
                }),
            ),
            (
                "drain-node",
                pd(Command::SetNodeState {
                    node: NodeId(3),
                    state: NodeState::Draining,
                    now_ms: 0,
                }),
            ),
            (
                "move-shard",
                pd(Command::AddOperator {
                    operator: AdminOperator::MoveReplica {
                        shard: ShardId(1),
                        from: NodeId(1),
                        to: NodeId(2),
                    },
                    now_ms: 0,
                }),
            ),
            (
                "transfer-leader (PD)",
                pd(Command::AddOperator {
                    operator: AdminOperator::TransferLeader {
                        shard: ShardId(1),
                        to: NodeId(2),
                    },
                    now_ms: 0,
                }),
            ),
            (
                "split-shard (PD)",
                pd(Command::AddOperator {
                    operator: AdminOperator::SplitShard {
                        shard: ShardId(1),
                        at: None,
                    },
                    now_ms: 0,
                }),
            ),
            (
                "transfer-leader (shard leader)",
                Request::Admin(AdminRequest::TransferLeader {
                    shard: ShardId(1),
                    to: NodeId(2),
                }),
            ),
            (
                "split-shard (shard leader)",
                Request::Admin(AdminRequest::SplitShard {
                    shard: ShardId(1),
                    epoch: Epoch::default(),
                    new_shard: ShardId(99),
                    at: None,
                }),
            ),
            (
                "change-replica",
                Request::Admin(AdminRequest::ChangeReplica {
                    shard: ShardId(1),
                    epoch: Epoch::default(),
                    change: ReplicaChange::Remove { node: NodeId(3) },
                }),
            ),
            (
                "scheduler enable",
                pd(Command::SetScheduler {
                    scheduler: SchedulerKind::Repair,
                    enabled: true,
                }),
            ),
            (
                "user add",
                pd(Command::Auth {
                    command: AuthCommand::AddUser {
                        name: "eve".into(),
                        password_hash: String::new(),
                    },
                    now_ms: 0,
                }),
            ),
            (
                "user grant",
                pd(Command::Auth {
                    command: AuthCommand::Grant {
                        name: "alice".into(),
                        role: Role::Admin,
                    },
                    now_ms: 0,
                }),
            ),
            (
                "auth rotate-key",
                pd(Command::Auth {
                    command: AuthCommand::AddSigningKey {
                        private_pkcs8: Vec::new(),
                        public: Vec::new(),
                    },
                    now_ms: 0,
                }),
            ),
            ("pd state", Request::Admin(AdminRequest::PdState)),
            (
                "set faults",
                Request::Admin(AdminRequest::SetFaults {
                    cut: vec![NodeId(2)],
                }),
            ),
        ];
        let alice_cert = cert_identity(&cluster, "alice");
        let anonymous = anonymous_identity(&cluster);
        let denied = |response: &Response| {
            matches!(
                response,
                Response::Error(WireError::PermissionDenied { missing }) if missing == "admin"
            )
        };
        for (name, request) in &admin_requests {
            let by_cert = raw_call(&cluster, &alice_cert, request).await;
            assert!(denied(&by_cert), "{name} by certificate: {by_cert:?}");
            let by_token = raw_call(&cluster, &anonymous, &with_token(&token, request.clone())).await;
            assert!(denied(&by_token), "{name} by token: {by_token:?}");
            let without = raw_call(&cluster, &anonymous, request).await;
            assert!(
                matches!(without, Response::Error(WireError::Unauthenticated { .. })),
                "{name} anonymous: {without:?}"
            );
        }
        // Nothing changed.
        let mut cluster = cluster;
        let state = cluster.pd_state().await;
        assert!(state.nodes.values().all(|n| n.state == NodeState::Up));
        assert!(state.operators.is_empty());
        assert!(!state.settings.repair);
        assert!(!state.auth.users.contains_key("eve"));
        assert!(!state.auth.users["alice"].is_admin());

        // A node certificate speaks for its own node only; users (even root) never.
        let node_2 = node_identity(&cluster, 2);
        let heartbeat = |node: u64| {
            pd(Command::NodeHeartbeat {
                node: NodeId(node),
                stats: NodeStats::default(),
                now_ms: 0,
            })
        };
        let foreign = raw_call(&cluster, &node_2, &heartbeat(1)).await;
        assert!(
            matches!(&foreign, Response::Error(WireError::PermissionDenied { missing }) if missing == "the certificate of node 1"),
            "{foreign:?}"
        );
        let descriptor = state.shard_map.shards[0].clone();
        let report = pd(Command::ShardReport(ringkv_pd::ShardReport {
            descriptor,
            leader: NodeId(1),
            stats: ringkv_pd::ShardStats::default(),
            caught_up_learners: Vec::new(),
            split_hint: None,
            now_ms: 0,
        }));
        let foreign_report = raw_call(&cluster, &node_2, &report).await;
        assert!(
            matches!(foreign_report, Response::Error(WireError::PermissionDenied { .. })),
            "{foreign_report:?}"
        );
        let own = raw_call(&cluster, &node_2, &heartbeat(2)).await;
        assert!(
            !matches!(own, Response::Error(WireError::PermissionDenied { .. })),
            "{own:?}"
        );
        let root = cert_identity(&cluster, "ringctl");
        let by_root = raw_call(&cluster, &root, &heartbeat(1)).await;
        assert!(
            matches!(by_root, Response::Error(WireError::PermissionDenied { .. })),
            "{by_root:?}"
        );
        // Root reads a PD state without password hashes or private keys.
        let redacted = cluster.pd_state().await;
        assert!(redacted.auth.signing_keys.iter().all(|k| k.private_pkcs8.is_empty()));
        assert!(
            redacted.auth.users["alice"].password_hash == "<redacted>",
            "hash shown to root"
        );
    })
    .await
    .expect("test timed out");
}

/// Signs `claims` with `key` as the cluster would, or with any header.
fn sign(header: &serde_json::Value, claims: &serde_json::Value, pkcs8: &[u8]) -> String {
    use ring::signature::Ed25519KeyPair;
    let b64 = |bytes: &[u8]| base64url(bytes);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).unwrap();
    let signature = pair.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(signature.as_ref()))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_expired_and_revoked_tokens_are_refused_and_rotation_keeps_old_tokens() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = cluster_with_users().await;
        let anonymous = anonymous_identity(&cluster);
        let request = Request::Admin(AdminRequest::GetShardMap);
        let accepted = |response: &Response| {
            matches!(response, Response::Admin(AdminResult::ShardMap(_)))
        };
        let refused = |response: &Response| {
            matches!(response, Response::Error(WireError::Unauthenticated { .. }))
        };
        let good = token_of(login(&cluster, "alice", ALICE_PW).await);
        let ok = raw_call(&cluster, &anonymous, &with_token(&good, request.clone())).await;
        assert!(accepted(&ok), "{ok:?}");
        let wrong_password = login(&cluster, "alice", "guess").await;
        assert!(refused(&wrong_password), "{wrong_password:?}");
        let no_such_user = login(&cluster, "nobody", "guess").await;
        assert!(refused(&no_such_user), "{no_such_user:?}");

        // Tokens made outside the cluster, or changed.
        let state = full_pd_state(&mut cluster).await;
        let key = state.auth.current_key().unwrap().clone();
        let now = token::LEEWAY_SECS + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let generation = state.auth.users["alice"].generation;
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.id.to_string()});
        let claims = |sub: &str, aud: &str, exp: u64, generation: u64| {
            serde_json::json!({
                "sub": sub, "aud": aud, "iss": CLUSTER, "iat": now - 10, "exp": exp,
                "gen": generation, "admin": false, "grants": []
            })
        };
        let valid_claims = claims("alice", CLUSTER, now + 600, generation);
        let crafted = sign(&header, &valid_claims, &key.private_pkcs8);
        let crafted_ok = raw_call(&cluster, &anonymous, &with_token(&Secret::new(&crafted), request.clone())).await;
        assert!(accepted(&crafted_ok), "the test's own signing is wrong: {crafted_ok:?}");
        let (other_key, _) = keys::generate().unwrap();
        let good_text = good.expose().to_string();
        let parts: Vec<&str> = good_text.split('.').collect();
        let mut forged_signature = parts[2].as_bytes().to_vec();
        forged_signature[5] = if forged_signature[5] == b'A' { b'B' } else { b'A' };
        let tampered_payload = base64url(claims("bob", CLUSTER, now + 600, generation).to_string().as_bytes());
        let attacks: Vec<(&str, String)> = vec![
            (
                "forged signature",
                format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(forged_signature).unwrap()),
            ),
            ("another cluster's key", sign(&header, &valid_claims, &other_key)),
            ("tampered claims", format!("{}.{}.{}", parts[0], tampered_payload, parts[2])),
            ("expired", sign(&header, &claims("alice", CLUSTER, now - 3600, generation), &key.private_pkcs8)),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    base64url(serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.id.to_string()}).to_string().as_bytes()),
                    base64url(valid_claims.to_string().as_bytes())
                ),
            ),
            (
                "alg HS256",
                format!(
                    "{}.{}.{}",
                    base64url(serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key.id.to_string()}).to_string().as_bytes()),
                    base64url(valid_claims.to_string().as_bytes()),
                    parts[2]
                ),
            ),
            ("wrong audience", sign(&header, &claims("alice", "other-cluster", now + 600, generation), &key.private_pkcs8)),
            ("another generation", sign(&header, &claims("alice", CLUSTER, now + 600, generation + 1), &key.private_pkcs8)),
            ("garbage", "not.a.token".into()),
        ];
        for (name, token) in attacks {
            let response = raw_call(&cluster, &anonymous, &with_token(&Secret::new(token), request.clone())).await;
            assert!(refused(&response), "{name}: {response:?}");
        }
        // A token on a connection with a client certificate is refused, not mixed up.
        let mixed = raw_call(&cluster, &cert_identity(&cluster, "bob"), &with_token(&good, request.clone())).await;
        assert!(refused(&mixed), "{mixed:?}");

        // A rotated key keeps older tokens valid; new tokens use the new key.
        auth(&mut cluster, AuthCommand::AddSigningKey { private_pkcs8: Vec::new(), public: Vec::new() }).await;
        eventually("rotation applies", || async {
            let fresh = token_of(login(&cluster, "alice", ALICE_PW).await);
            fresh.expose().split('.').next() != good.expose().split('.').next()
        })
        .await;
        let still = raw_call(&cluster, &anonymous, &with_token(&good, request.clone())).await;
        assert!(accepted(&still), "old token after rotation: {still:?}");

        // A changed password revokes alice's tokens; a deleted user's tokens die too.
        let hash = password::hash(&Secret::new("alice's new password")).unwrap();
        auth(&mut cluster, AuthCommand::SetPassword { name: "alice".into(), password_hash: hash }).await;
        eventually("password change applies", || async {
            refused(&raw_call(&cluster, &anonymous, &with_token(&good, request.clone())).await)
        })
        .await;
        assert!(refused(&login(&cluster, "alice", ALICE_PW).await));
        token_of(login(&cluster, "alice", "alice's new password").await);
        let bob = token_of(login(&cluster, "bob", BOB_PW).await);
        auth(&mut cluster, AuthCommand::DeleteUser { name: "bob".into() }).await;
        eventually("delete applies", || async {
            refused(&raw_call(&cluster, &anonymous, &with_token(&bob, request.clone())).await)
        })
        .await;
        // bob added again does not revive the old token.
        add_user(&mut cluster, "bob", BOB_PW).await;
        let revived = raw_call(&cluster, &anonymous, &with_token(&bob, request.clone())).await;
        assert!(refused(&revived), "{revived:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_survive_a_pd_leader_change_and_a_full_cluster_restart() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = cluster_with_users().await;
        let before = cluster.pd_state().await.auth;
        // Move PD's leadership.
        let status = cluster.status(0).await;
        let leader = status
            .replicas
            .iter()
            .find(|r| r.shard == ShardId::PD)
            .and_then(|r| r.leader)
            .unwrap();
        let target = if leader == NodeId(1) {
            NodeId(2)
        } else {
            NodeId(1)
        };
        let index = leader.get() as usize - 1;
        let moved = cluster
            .call(
                index,
                Request::Admin(AdminRequest::TransferLeader {
                    shard: ShardId::PD,
                    to: target,
                }),
            )
            .await;
        assert!(
            matches!(
                moved,
                Response::Admin(AdminResult::LeaderTransferred { .. })
            ),
            "{moved:?}"
        );
        assert_eq!(cluster.pd_state().await.auth, before);
        token_of(login(&cluster, "alice", ALICE_PW).await);

        // Stop every node, start them again.
        for index in 0..3 {
            cluster.stop_node(index).await;
        }
        for index in 0..3 {
            cluster.start_node(index).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let token = loop {
            match login(&cluster, "alice", ALICE_PW).await {
                Response::Admin(AdminResult::Token { token, .. }) => break token,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "no login after restart: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(
            cluster.pd_state().await.auth.users.len(),
            before.users.len()
        );
        let alice = password_client(&cluster, "alice", ALICE_PW, None)
            .await
            .unwrap();
        alice.put("k", "v").await.unwrap();
        let response = raw_call(
            &cluster,
            &anonymous_identity(&cluster),
            &with_token(&token, Request::Admin(AdminRequest::GetShardMap)),
        )
        .await;
        assert!(
            matches!(response, Response::Admin(AdminResult::ShardMap(_))),
            "{response:?}"
        );
    })
    .await
    .expect("test timed out");
}
