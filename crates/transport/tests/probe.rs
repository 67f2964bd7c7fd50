//! The liveness probe against a real endpoint, a closed port and a socket that never answers.

mod common;

use common::*;
use ringkv_transport::{FaultInjector, Probe, probe};
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_live_endpoint_answers_the_probe() {
    let ca = new_ca();
    let (transport, _inbound) = start(
        config(1, loopback()),
        node_identity(&ca, 1),
        &FaultInjector::default(),
    );
    let addr = transport.local_addr().unwrap().to_string();
    let outcome = probe(&addr, PROBE_TIMEOUT).await.unwrap();
    assert!(outcome.is_alive(), "{outcome:?}");
    transport.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    // A port that was just free: bind, note it, close.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    drop(socket);
    let outcome = probe(&addr, PROBE_TIMEOUT).await.unwrap();
    assert_eq!(outcome, Probe::Refused);
}

#[tokio::test]
async fn a_socket_that_never_answers_is_silent() {
    // Bound (so no ICMP error) but nobody answers: what a frozen process looks like.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let outcome = probe(&addr, Duration::from_millis(200)).await.unwrap();
    assert_eq!(outcome, Probe::Silent);
    drop(socket);
}
