//! Criterion benchmarks for authentication and authorization on the request hot path:
//! `authorize` (pure: the principal x request check every request passes), resolving a token
//! whose signature was verified before (the token cache: the cost every token request pays),
//! and verifying a token's Ed25519 signature (what a cache miss costs).
//!
//! Run: `cargo bench -p ringkv-bench --bench auth`.

#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ringkv_node::auth::{Authenticator, Grant, Principal, authorize, keys, token};
use ringkv_pd::{AuthState, Role, SigningKey, User};
use ringkv_types::namespace::encode;
use ringkv_types::{
    BatchOp, Epoch, KvOp, KvRequest, PeerIdentity, Request, Secret, ShardId, WriteSession,
};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

const CLUSTER: &str = "bench";

fn put(namespace: &str) -> Request {
    Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: Some(WriteSession {
            session_id: 1,
            sequence: 1,
        }),
        timeout_ms: 0,
        op: KvOp::Put {
            key: encode(namespace, b"some-user-key-0001").unwrap(),
            value: Bytes::from_static(&[7; 100]),
        },
    })
}

fn batch(namespace: &str, ops: usize) -> Request {
    Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: None,
        timeout_ms: 0,
        op: KvOp::Batch {
            ops: (0..ops)
                .map(|i| BatchOp::Put {
                    key: encode(namespace, format!("key-{i}").as_bytes()).unwrap(),
                    value: Bytes::from_static(b"v"),
                })
                .collect(),
        },
    })
}

/// An auth state with one signing key and `users` users (alice among them).
fn state(users: usize) -> AuthState {
    let (private_pkcs8, public) = keys::generate().unwrap();
    let mut auth = AuthState {
        signing_keys: vec![SigningKey {
            id: 1,
            private_pkcs8,
            public,
            created_ms: 0,
        }],
        version: 1,
        ..AuthState::default()
    };
    for i in 0..users {
        let name = if i == 0 {
            "alice".to_string()
        } else {
            format!("user-{i}")
        };
        let mut roles = BTreeSet::new();
        roles.insert(Role::Read("bob".into()));
        auth.users.insert(
            name.clone(),
            User {
                name,
                password_hash: String::new(),
                roles,
                generation: i as u64,
                created_ms: 0,
            },
        );
    }
    auth
}

fn alice_token(auth: &AuthState) -> Secret {
    let now = ringkv_node::auth::now_secs();
    let claims = token::Claims {
        sub: "alice".into(),
        aud: CLUSTER.into(),
        iss: CLUSTER.into(),
        iat: now,
        exp: now + 3600,
        generation: 0,
        admin: false,
        grants: vec!["read:bob".into()],
    };
    Secret::new(token::issue(&auth.signing_keys[0], &claims).unwrap())
}

fn bench(c: &mut Criterion) {
    let alice = Principal::user("alice", false, vec![Grant::Read("bob".into())]);
    let own_put = put("alice");
    let batch_16 = batch("alice", 16);
    let mut group = c.benchmark_group("authorize");
    group.bench_function("user put own namespace", |b| {
        b.iter(|| authorize(black_box(&alice), black_box(&own_put)))
    });
    group.bench_function("user batch of 16", |b| {
        b.iter(|| authorize(black_box(&alice), black_box(&batch_16)))
    });
    let foreign = put("carol");
    group.bench_function("user put denied", |b| {
        b.iter(|| authorize(black_box(&alice), black_box(&foreign)))
    });
    group.finish();

    let mut group = c.benchmark_group("resolve");
    for users in [10, 10_000] {
        let auth = state(users);
        let authenticator = Authenticator::new(CLUSTER, Duration::from_secs(3600));
        authenticator.update(&auth);
        let token = alice_token(&auth);
        let now = ringkv_node::auth::now_secs();
        // Warm the cache once.
        authenticator.token_user(&token, now).unwrap();
        group.bench_function(format!("token cached, {users} users"), |b| {
            b.iter(|| authenticator.token_user(black_box(&token), now).unwrap())
        });
        let request = put("alice");
        let peer = PeerIdentity::Anonymous;
        group.bench_function(
            format!("token request resolve+authorize, {users} users"),
            |b| {
                b.iter(|| {
                    let wrapped = Request::WithToken {
                        token: token.clone(),
                        request: Box::new(request.clone()),
                    };
                    let (principal, inner) = authenticator.resolve(&peer, wrapped).unwrap();
                    authorize(&principal, &inner).unwrap();
                })
            },
        );
        let cert = PeerIdentity::ClientCert {
            name: "alice".into(),
        };
        group.bench_function(
            format!("certificate resolve+authorize, {users} users"),
            |b| {
                b.iter(|| {
                    let (principal, inner) = authenticator.resolve(&cert, request.clone()).unwrap();
                    authorize(&principal, &inner).unwrap();
                })
            },
        );
    }
    group.finish();

    let auth = state(10);
    let keys: Vec<token::VerifyingKey> = auth
        .signing_keys
        .iter()
        .map(token::VerifyingKey::of)
        .collect();
    let token = alice_token(&auth);
    let now = ringkv_node::auth::now_secs();
    c.bench_function("token verify (signature, uncached)", |b| {
        b.iter(|| token::verify(black_box(token.expose()), &keys, CLUSTER, now).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
