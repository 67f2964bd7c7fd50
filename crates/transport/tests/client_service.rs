//! The client service: round trips, `Busy` when the handler bound is reached, `Timeout`.

mod common;

use bytes::Bytes;
use common::*;
use ringkv_transport::{ClientEndpoint, ClientHandler};
use ringkv_types::{
    Epoch, KvOp, KvRequest, KvResult, LogIndex, NodeId, PeerIdentity, ReadConsistency, Request,
    Response, ShardId, WireError,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

fn get(key: &'static [u8], timeout_ms: u32) -> Request {
    Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: None,
        timeout_ms,
        op: KvOp::Get {
            key: Bytes::from_static(key),
            consistency: ReadConsistency::Linearizable,
        },
    })
}

/// Answers a `Get` with the key as value.
fn echo() -> impl ClientHandler {
    |_peer: PeerIdentity, request: Request| async move {
        match request {
            Request::Kv(KvRequest {
                op: KvOp::Get { key, .. },
                ..
            }) => Response::Kv(KvResult::Value {
                value: Some(key),
                applied: LogIndex(1),
            }),
            _ => Response::Error(WireError::InvalidRequest {
                reason: "only get".into(),
            }),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_round_trip_concurrently() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let (node, _inbound) =
            start_with_handler(config(1, loopback()), node_identity(&ca, 1), echo());
        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client
            .connect(NodeId(1), node.local_addr().unwrap())
            .await
            .unwrap();
        let calls = (0..64).map(|_| {
            let connection = connection.clone();
            async move { connection.call(&get(b"key", 0), WAIT).await }
        });
        for response in futures_join_all(calls).await {
            assert_eq!(
                response.unwrap(),
                Response::Kv(KvResult::Value {
                    value: Some(Bytes::from_static(b"key")),
                    applied: LogIndex(1)
                })
            );
        }
        assert_eq!(node.stats().client_requests, 64);
        client.close().await;
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("call task panicked"));
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_client_queue_answers_busy_and_slow_handlers_time_out() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(AtomicU64::new(0));
        let handler = {
            let (gate, entered) = (gate.clone(), entered.clone());
            move |_peer: PeerIdentity, _request: Request| {
                let (gate, entered) = (gate.clone(), entered.clone());
                async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    // Each permit lets exactly one request through.
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                    Response::Kv(KvResult::Written { index: LogIndex(9) })
                }
            }
        };
        let mut node_config = config(1, loopback());
        node_config.client_inflight_max = 1;
        let (node, _inbound) = start_with_handler(node_config, node_identity(&ca, 1), handler);
        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client
            .connect(NodeId(1), node.local_addr().unwrap())
            .await
            .unwrap();

        let first = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.call(&get(b"a", 0), WAIT).await })
        };
        eventually("first request in the handler", || {
            entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let second = connection.call(&get(b"b", 0), WAIT).await.unwrap();
        assert_eq!(second, Response::Error(WireError::Busy));
        assert_eq!(node.stats().client_busy, 1);
        gate.add_permits(1);
        assert_eq!(
            first.await.unwrap().unwrap(),
            Response::Kv(KvResult::Written { index: LogIndex(9) })
        );

        // The handler now blocks forever (no more permits); the request's own timeout answers.
        let slow = connection.call(&get(b"c", 100), WAIT).await.unwrap();
        assert_eq!(slow, Response::Error(WireError::Timeout));
        assert_eq!(node.stats().client_timeouts, 1);
        // The timed-out handler released its slot.
        gate.add_permits(1);
        let after = connection.call(&get(b"d", 0), WAIT).await.unwrap();
        assert_eq!(
            after,
            Response::Kv(KvResult::Written { index: LogIndex(9) })
        );

        // The client's own timeout surfaces as an error.
        let error = connection
            .call(&get(b"e", 0), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(error, ringkv_transport::Error::Timeout { .. }));
        client.close().await;
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let mut node_config = config(1, loopback());
        node_config.max_connections = 1;
        let (node, _inbound) = start_with_handler(node_config, node_identity(&ca, 1), echo());
        let addr = node.local_addr().unwrap();
        let first = ClientEndpoint::new(&client_identity(&ca, "a"), CLUSTER, loopback()).unwrap();
        let connection = first.connect(NodeId(1), addr).await.unwrap();
        assert!(connection.call(&get(b"k", 0), WAIT).await.is_ok());
        let second = ClientEndpoint::new(&client_identity(&ca, "b"), CLUSTER, loopback()).unwrap();
        assert!(second.connect(NodeId(1), addr).await.is_err());
        assert_eq!(node.stats().connections_refused, 1);
        // The admitted connection is unaffected.
        assert!(connection.call(&get(b"k", 0), WAIT).await.is_ok());
        first.close().await;
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}
