//! The HTTP data routes beyond single keys, driven with real `curl`: versions in the
//! `ringkv-version` header, compare-and-swap on the version, `POST /v1/kv:batchGet` and a scan
//! page by page with `GET /v1/kv?prefix=&cursor=&limit=`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod curl;

use common::{Cluster, HTTP_ADDR};
use curl::Curl;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn version_of(headers: &str) -> u64 {
    headers
        .lines()
        .find_map(|line| line.strip_prefix("ringkv-version: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version header in {headers}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_batch_get_and_scan_over_http() {
    let extra = format!("http_addr = \"{HTTP_ADDR}\"\n");
    let mut cluster = Cluster::start_with(3, 4, &extra, false).await;
    cluster.wait_for_leaders(4, Duration::from_secs(30)).await;
    let curl = Curl::new(&cluster);
    let deadline = Instant::now() + Duration::from_secs(60);
    let put = |key: &str, value: &str| {
        curl.head_and_body(
            0,
            &["-X", "PUT", "--data-binary", value],
            &format!("/v1/kv/{key}?namespace=web"),
        )
    };
    let (status, headers, _) = loop {
        let answer = put("a", "1");
        if answer.0 == 204 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 204);
    let first = version_of(&headers);
    let (status, headers, body) = curl.head_and_body(0, &[], "/v1/kv/a?namespace=web");
    assert_eq!((status, body.as_str()), (200, "1"));
    assert_eq!(version_of(&headers), first);

    // Compare on the version: stale -> 409 with the current version; current -> 200.
    let cas = |body: &str| {
        curl.json_at(
            0,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ],
            "/v1/kv/a/cas?namespace=web",
        )
    };
    let (status, swapped) = cas(&format!(r#"{{"expected_version": {first}, "new": "2"}}"#));
    assert_eq!(status, 200, "{swapped}");
    let second = swapped["version"].as_u64().unwrap();
    assert!(second > first);
    let (status, conflict) = cas(&format!(r#"{{"expected_version": {first}, "new": "3"}}"#));
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["current_version"], second);
    assert_eq!(conflict["current"], "2");
    let (status, both) = cas(r#"{"expected_version": 1, "expected": "2", "new": "3"}"#);
    assert_eq!(status, 400, "{both}");

    // Batch get across shards, in order, with an absent key.
    let keys: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    for key in &keys {
        assert_eq!(put(key, key).0, 204);
    }
    let mut asked: Vec<String> = keys.clone();
    asked.push("absent".into());
    let body = serde_json::json!({ "keys": asked }).to_string();
    let (status, answer) = curl.json_at(
        0,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
        ],
        "/v1/kv:batchGet?namespace=web",
    );
    assert_eq!(status, 200, "{answer}");
    let values = answer["values"].as_array().unwrap();
    assert_eq!(values.len(), asked.len());
    for (key, value) in keys.iter().zip(values) {
        assert_eq!(value["key"], key.as_str());
        assert_eq!(value["value"], key.as_str());
        assert!(value["version"].as_u64().unwrap() > 0);
    }
    assert_eq!(values[keys.len()]["found"], false);

    // Scan the namespace 3 keys a page: every key once; another namespace stays out.
    assert_eq!(
        curl.head_and_body(
            0,
            &["-X", "PUT", "--data-binary", "x"],
            "/v1/kv/b1?namespace=other"
        )
        .0,
        204
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/kv?namespace=web&prefix=b&limit=3&cursor={cursor}"),
            None => "/v1/kv?namespace=web&prefix=b&limit=3".to_string(),
        };
        let (status, page) = curl.json_at(0, &[], &path);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(item["version"].as_u64().unwrap() > 0);
            seen.push(item["key"].as_str().unwrap().to_string());
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 100, "the scan does not end");
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a key twice: {seen:?}");
    let expected: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique, expected);
    let (status, bad) = curl.json_at(0, &[], "/v1/kv?limit=0");
    assert_eq!(status, 400, "{bad}");
    cluster.stop_all().await;
}

/// TTLs over HTTP: `PUT ?ttl=SECONDS`, `GET /ttl` (milliseconds left, `null` without a TTL,
/// 404 once expired), `POST /persist`, and refusals of bad TTLs and of `ttl` on other routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_put_read_and_persist_over_http() {
    let extra = format!("http_addr = \"{HTTP_ADDR}\"\n");
    let mut cluster = Cluster::start_with(3, 2, &extra, false).await;
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    let curl = Curl::new(&cluster);
    let put = |path: &str| curl.head_and_body(0, &["-X", "PUT", "--data-binary", "v"], path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while put("/v1/kv/warm?namespace=web").0 != 204 {
        assert!(Instant::now() < deadline, "no write succeeded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    assert_eq!(put("/v1/kv/t?namespace=web&ttl=2").0, 204);
    assert_eq!(put("/v1/kv/p?namespace=web&ttl=2").0, 204);
    let (status, left) = curl.json_at(0, &[], "/v1/kv/t/ttl?namespace=web");
    assert_eq!(status, 200, "{left}");
    let ms = left["ttl_ms"].as_u64().unwrap();
    assert!(ms > 0 && ms <= 2_000, "{left}");
    let (status, none) = curl.json_at(0, &[], "/v1/kv/warm/ttl?namespace=web");
    assert_eq!(
        (status, none["ttl_ms"].clone()),
        (200, serde_json::Value::Null)
    );

    let post = |path: &str| curl.json_at(0, &["-X", "POST"], path);
    let (status, persisted) = post("/v1/kv/p/persist?namespace=web");
    assert_eq!((status, persisted["had_ttl"].clone()), (200, true.into()));
    let (status, again) = post("/v1/kv/p/persist?namespace=web");
    assert_eq!((status, again["had_ttl"].clone()), (200, false.into()));

    for bad in [
        "/v1/kv/b?namespace=web&ttl=0",
        "/v1/kv/b?namespace=web&ttl=-1",
        "/v1/kv/b?namespace=web&ttl=x",
        "/v1/kv/b?namespace=web&ttl=999999999999",
    ] {
        assert_eq!(put(bad).0, 400, "{bad}");
    }
    assert_eq!(
        curl.head_and_body(0, &[], "/v1/kv/t?namespace=web&ttl=5").0,
        400
    );

    tokio::time::sleep((started + Duration::from_millis(2_300)) - Instant::now()).await;
    assert_eq!(curl.head_and_body(0, &[], "/v1/kv/t?namespace=web").0, 404);
    assert_eq!(
        curl.head_and_body(0, &[], "/v1/kv/t/ttl?namespace=web").0,
        404
    );
    assert_eq!(
        curl.head_and_body(0, &["-I"], "/v1/kv/t?namespace=web").0,
        404
    );
    let (status, _, body) = curl.head_and_body(0, &[], "/v1/kv/p?namespace=web");
    assert_eq!(
        (status, body.as_str()),
        (200, "v"),
        "persisted: still there"
    );
    cluster.stop_all().await;
}
