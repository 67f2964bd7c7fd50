//! The router serves exactly [`ROUTES`], and `docs/openapi.yaml` documents exactly [`ROUTES`].

use super::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use ringkv_transport::certs::{ClusterCa, Validity};
use std::collections::BTreeSet;
use std::path::Path;

/// `(METHOD, path)` pairs under `paths:` of the OpenAPI document: a path is a two-space key
/// starting with `/`, an operation a four-space HTTP method key under it.
fn documented() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in OPENAPI_YAML.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(rest) = line.strip_prefix("  /") {
            path = Some(format!("/{}", rest.trim_end_matches(':')));
            continue;
        }
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        if rest.starts_with(' ') {
            continue;
        }
        let key = rest.trim_end().trim_end_matches(':');
        if ["get", "head", "put", "post", "delete", "patch", "options"].contains(&key)
            && let Some(path) = &path
        {
            found.insert((key.to_uppercase(), path.clone()));
        }
    }
    found
}

fn state() -> AppState {
    let text = r#"
node_id = 1
cluster = "test"
listen_addr = "127.0.0.1:9"
data_dir = "/nonexistent"
initial_cluster = ["1@127.0.0.1:9"]
replication_factor = 1
[tls]
ca_cert = "ca.pem"
cert = "node-1.pem"
key = "node-1.key"
[limits]
client_request_timeout_ms = 200
"#;
    let config = NodeConfig::parse(text, Path::new("/")).unwrap();
    let validity = Validity::days_from_now(1);
    let ca = ClusterCa::generate("test", validity).unwrap();
    let pair = ca
        .issue_node(ringkv_types::NodeId(1), &[], validity)
        .unwrap();
    let identity = TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap();
    let (_publisher, health) = crate::health::channel();
    let metrics = Arc::new(Metrics::new(Path::new("/nonexistent")));
    let authenticator = Arc::new(crate::auth::Authenticator::new(
        "test",
        Duration::from_secs(60),
    ));
    AppState::new(
        &config,
        &identity,
        health,
        metrics,
        authenticator,
        Duration::from_secs(1),
    )
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(documented(), routes);
}

#[tokio::test]
async fn the_router_serves_exactly_the_routes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let router = router(state());
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, path)| *path).collect();
    for path in paths {
        let concrete = path.replace("{key}", "k");
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
        ] {
            let listed = ROUTES.iter().any(|(m, p)| {
                *p == path && (*m == method.as_str() || (method == Method::HEAD && *m == "GET"))
            });
            let request = axum::http::Request::builder()
                .method(method.clone())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let response = tower::ServiceExt::oneshot(router.clone(), request)
                .await
                .unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            // The router's own 404 (no route) has an empty body; ours are JSON (or HEAD's 404).
            let unrouted =
                status == StatusCode::NOT_FOUND && body.is_empty() && method != Method::HEAD;
            if listed {
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && !unrouted,
                    "{method} {concrete}: {status}"
                );
                assert!(
                    status != StatusCode::INTERNAL_SERVER_ERROR,
                    "{method} {concrete}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {concrete}"
                );
            }
        }
    }
    let request = axum::http::Request::builder()
        .uri("/v1/nothing")
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A single-key route answers the first failed check, in one order for every route: the query,
/// the key, then (reads) the consistency, and only then the caller. Here no request carries
/// credentials, so a route that authenticated first would answer 401 instead of the 400s.
#[tokio::test]
async fn key_routes_check_the_query_and_key_before_the_caller() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let router = router(state());
    let cases = [
        (
            Method::GET,
            "/v1/kv/k?consistency=strong",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::HEAD,
            "/v1/kv/k?consistency=strong",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/kv/k/ttl?consistency=strong",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/v1/kv/k?consistency=stale",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/kv/k/persist?consistency=stale",
            StatusCode::BAD_REQUEST,
        ),
        (Method::DELETE, "/v1/kv/k?ttl=5", StatusCode::BAD_REQUEST),
        (Method::GET, "/v1/kv/k?bogus=1", StatusCode::BAD_REQUEST),
        (Method::GET, "/v1/kv/k", StatusCode::UNAUTHORIZED),
        (Method::HEAD, "/v1/kv/k", StatusCode::UNAUTHORIZED),
        (Method::GET, "/v1/kv/k/ttl", StatusCode::UNAUTHORIZED),
        (Method::DELETE, "/v1/kv/k", StatusCode::UNAUTHORIZED),
        (Method::POST, "/v1/kv/k/persist", StatusCode::UNAUTHORIZED),
    ];
    for (method, uri, expected) in cases {
        let request = axum::http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(router.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{method} {uri}");
    }
}
