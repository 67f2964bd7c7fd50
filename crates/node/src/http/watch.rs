//! `GET /v1/watch?key=K` or `?prefix=P`: a watch as server-sent events.
//!
//! One SSE event per change: `event: put` or `event: delete` (an expiry is a delete with
//! `"reason": "expired"`), `id: <shard>:<index>`, `data:` JSON with `key`, `key_b64`, `value`,
//! `value_b64` (puts), `version`, `shard`, `index`, `kind`. When the watch ends for good, one
//! `event: error` with `{"code": "compacted" | "slow_watcher" | ..., "message"}` and the stream
//! ends. A comment line every 15 s keeps proxies from closing an idle stream.
//!
//! It runs through the embedded client (`Client::watch_with` / `watch_prefix`), after the same
//! authorization as a read of the key (or a scan of the prefix).

use super::AppState;
use super::ConnectionInfo;
use super::body::value_json;
use super::caller::Caller;
use super::error::ApiError;
use super::op::{Op, finish};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ringkv_client::{Error as ClientError, Watch, WatchEvent, WatchEventType, WatchOptions};
use ringkv_types::{KvOp, ReadConsistency, ShardId};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// SSE chunks buffered towards the HTTP connection; when full, the watch stops reading (and
/// the node cancels it if the caller stays behind).
const SSE_CHUNKS_BUFFERED: usize = 16;
/// A comment line this often on an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query parameters of `GET /v1/watch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchParams {
    key: Option<String>,
    key_b64: Option<String>,
    prefix: Option<String>,
    prefix_b64: Option<String>,
    /// A key watch: changes after this log index of the key's shard (an event's `index`, or a
    /// version read from the key).
    after: Option<u64>,
    /// A prefix watch: per-shard resume points, `shard:index,shard:index` (the `id`s of the
    /// last events seen, one per shard).
    positions: Option<String>,
    namespace: Option<String>,
}

enum Target {
    Key(Bytes),
    Prefix(Bytes),
}

fn decode(name: &str, b64: &str) -> Result<Bytes, ApiError> {
    BASE64
        .decode(b64.as_bytes())
        .map(Bytes::from)
        .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}

fn target(params: &WatchParams) -> Result<Target, ApiError> {
    let given = [
        params.key.is_some(),
        params.key_b64.is_some(),
        params.prefix.is_some(),
        params.prefix_b64.is_some(),
    ];
    if given.iter().filter(|given| **given).count() != 1 {
        return Err(ApiError::bad_request(
            "give exactly one of `key`, `key_b64`, `prefix`, `prefix_b64`",
        ));
    }
    Ok(match params {
        WatchParams { key: Some(key), .. } => Target::Key(Bytes::from(key.clone())),
        WatchParams {
            key_b64: Some(b64), ..
        } => Target::Key(decode("key_b64", b64)?),
        WatchParams {
            prefix: Some(prefix),
            ..
        } => Target::Prefix(Bytes::from(prefix.clone())),
        WatchParams {
            prefix_b64: Some(b64),
            ..
        } => Target::Prefix(decode("prefix_b64", b64)?),
        _ => return Err(ApiError::bad_request("nothing to watch")),
    })
}

/// `shard:index,shard:index`.
fn parse_positions(text: &str) -> Result<BTreeMap<ShardId, u64>, ApiError> {
    let bad = || ApiError::bad_request("positions: expected shard:index,shard:index");
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (shard, index) = part.split_once(':').ok_or_else(bad)?;
            let shard = shard.trim().parse::<u64>().map_err(|_| bad())?;
            let index = index.trim().parse::<u64>().map_err(|_| bad())?;
            Ok((ShardId(shard), index))
        })
        .collect()
}

/// `GET /v1/watch`: 200 `text/event-stream` (see the module doc).
pub(super) async fn watch(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<WatchParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Watch, async {
        let Query(params) = query.map_err(|rejection| {
            ApiError::bad_request(format!("query: {}", rejection.body_text()))
        })?;
        let target = target(&params)?;
        let caller = Caller::resolve_in(
            &state,
            &headers,
            connection.as_ref(),
            params.namespace.as_deref(),
        )?;
        let client = state.inner.forwarder.client().await?;
        // The embedded client has no namespace: the caller's is put into the key here.
        let watch = match target {
            Target::Key(key) => {
                if params.positions.is_some() {
                    return Err(ApiError::bad_request("`positions` is for prefix watches"));
                }
                let key = caller.key(key)?;
                caller.authorize(KvOp::Get {
                    key: key.clone(),
                    consistency: ReadConsistency::Linearizable,
                })?;
                let options = WatchOptions {
                    after: params.after,
                    ..WatchOptions::default()
                };
                client.watch_with(key, options)?
            }
            Target::Prefix(prefix) => {
                if params.after.is_some() {
                    return Err(ApiError::bad_request(
                        "`after` is for key watches; a prefix watch resumes with `positions`",
                    ));
                }
                let prefix = caller.key(prefix)?;
                caller.authorize(KvOp::Scan {
                    start: Bytes::new(),
                    prefix: prefix.clone(),
                    limit: 1,
                    keys_only: true,
                    consistency: ReadConsistency::Linearizable,
                })?;
                let positions = params
                    .positions
                    .as_deref()
                    .map(parse_positions)
                    .transpose()?
                    .unwrap_or_default();
                let options = WatchOptions {
                    positions,
                    ..WatchOptions::default()
                };
                client.watch_prefix(prefix, options)?
            }
        };
        let strip = caller.namespace.as_ref().map_or(0, |ns| 1 + ns.len());
        let (sender, body) = http_body_util::channel::Channel::<Bytes>::new(SSE_CHUNKS_BUFFERED);
        tokio::spawn(stream(watch, sender, strip));
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            Body::new(body),
        )
            .into_response())
    })
    .await
}

/// Sends the watch's events as SSE until it ends or the caller goes away.
async fn stream(
    mut watch: Watch,
    mut sender: http_body_util::channel::Sender<Bytes>,
    strip: usize,
) {
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        let next = tokio::select! {
            next = watch.next() => next,
            _ = keep_alive.tick() => {
                if sender.send_data(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let chunk = match next {
            Some(Ok(event)) => event_chunk(&event, strip),
            Some(Err(error)) => {
                let _ = sender.send_data(error_chunk(&error)).await;
                return;
            }
            None => return,
        };
        if sender.send_data(chunk).await.is_err() {
            return;
        }
    }
}

/// One change as an SSE event.
fn event_chunk(event: &WatchEvent, strip: usize) -> Bytes {
    let key = event.key.slice(strip.min(event.key.len())..);
    let (key_text, key_b64) = value_json(Some(&key));
    let (name, kind, reason) = match &event.kind {
        WatchEventType::Put(_) => ("put", "put", None),
        WatchEventType::Delete => ("delete", "delete", Some("deleted")),
        WatchEventType::Expire => ("delete", "delete", Some("expired")),
    };
    let mut data = json!({
        "key": key_text,
        "key_b64": key_b64,
        "kind": kind,
        "version": event.version,
        "shard": event.shard.0,
        "index": event.index,
    });
    if let WatchEventType::Put(value) = &event.kind {
        let (value, value_b64) = value_json(Some(value));
        data["value"] = value;
        data["value_b64"] = value_b64;
    }
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    Bytes::from(format!(
        "event: {name}\nid: {}:{}\ndata: {data}\n\n",
        event.shard.0, event.index
    ))
}

/// The end of a watch as an SSE `error` event.
fn error_chunk(error: &ClientError) -> Bytes {
    let mut data = json!({ "message": error.to_string() });
    match error {
        ClientError::Compacted { shard, oldest } => {
            data["code"] = json!("compacted");
            data["shard"] = json!(shard.0);
            data["oldest"] = json!(oldest);
        }
        ClientError::SlowWatcher { shard } => {
            data["code"] = json!("slow_watcher");
            data["shard"] = json!(shard.0);
        }
        ClientError::PermissionDenied { .. } => data["code"] = json!("permission_denied"),
        ClientError::Unauthenticated { .. } => data["code"] = json!("unauthenticated"),
        _ => data["code"] = json!("error"),
    }
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_garbage_is_refused() {
        let parsed = parse_positions("1:10,2:7").unwrap();
        assert_eq!(parsed.get(&ShardId(1)), Some(&10));
        assert_eq!(parsed.get(&ShardId(2)), Some(&7));
        assert!(parse_positions("1-10").is_err());
        assert!(parse_positions("x:1").is_err());
    }

    #[test]
    fn events_are_sse_with_the_namespace_stripped() {
        let event = WatchEvent {
            key: ringkv_types::namespace::encode("ns", b"k").unwrap(),
            kind: WatchEventType::Expire,
            version: 9,
            shard: ShardId(3),
            index: 8,
        };
        let text = String::from_utf8(event_chunk(&event, 3).to_vec()).unwrap();
        assert!(
            text.starts_with("event: delete\nid: 3:8\ndata: {"),
            "{text}"
        );
        assert!(text.contains(r#""key":"k""#), "{text}");
        assert!(text.contains(r#""reason":"expired""#), "{text}");
        assert!(text.ends_with("\n\n"));
        let error = error_chunk(&ClientError::Compacted {
            shard: ShardId(3),
            oldest: 40,
        });
        let text = String::from_utf8(error.to_vec()).unwrap();
        assert!(text.starts_with("event: error\ndata: {"), "{text}");
        assert!(text.contains(r#""code":"compacted""#), "{text}");
        assert!(text.contains(r#""oldest":40"#), "{text}");
    }
}
