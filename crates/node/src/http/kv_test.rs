//! Tests of the key routes' parsing.

use super::*;

#[test]
fn keys_are_percent_decoded_bytes() {
    let cases: [(&str, &str, Option<&[u8]>); 5] = [
        ("/v1/kv/hello", "", Some(b"hello")),
        ("/v1/kv/a%2Fb", "", Some(b"a/b")),
        ("/v1/kv/%FF%00x", "", Some(b"\xff\x00x")),
        ("/v1/kv/k%20v/cas", "/cas", Some(b"k v")),
        ("/v1/kv/", "", None),
    ];
    for (path, suffix, expected) in cases {
        let uri: Uri = path.parse().unwrap();
        let got = key_of(&uri, suffix).ok();
        assert_eq!(got.as_deref(), expected, "{path}");
    }
}

#[test]
fn cas_fields_need_one_form_and_null_means_absent() {
    let body: CasBody = json_body(br#"{"expected": null, "new_b64": "AP8="}"#).unwrap();
    assert_eq!(
        text_or_b64("expected", body.expected, body.expected_b64).unwrap(),
        None
    );
    assert_eq!(
        text_or_b64("new", body.new, body.new_b64).unwrap(),
        Some(Bytes::from_static(b"\x00\xff"))
    );
    let missing: CasBody = json_body(br#"{"new": "x"}"#).unwrap();
    assert!(text_or_b64("expected", missing.expected, missing.expected_b64).is_err());
    assert!(json_body::<CasBody>(br#"{"expect": "x"}"#).is_err());
    let ops: BatchBody = json_body(
        br#"{"ops": [{"op": "put", "key": "a", "value": "1"}, {"op": "delete", "key_b64": "Yg=="}]}"#,
    )
    .unwrap();
    let ops: Vec<BatchOp> = ops
        .ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| batch_op(i, op).unwrap())
        .collect();
    assert_eq!(
        ops[1],
        BatchOp::Delete {
            key: Bytes::from_static(b"b")
        }
    );
    let bad: BatchBody = json_body(br#"{"ops": [{"op": "put", "key": "a"}]}"#).unwrap();
    let error = batch_op(0, bad.ops.into_iter().next().unwrap()).unwrap_err();
    assert!(error.message.starts_with("ops[0]"), "{}", error.message);
}

#[test]
fn consistency_names_are_checked() {
    for (name, expected) in [
        (None, Some(ReadConsistency::Linearizable)),
        (Some("stale"), Some(ReadConsistency::Stale)),
        (Some("lease"), Some(ReadConsistency::Lease)),
        (Some("strong"), None),
    ] {
        let params = KvParams {
            consistency: name.map(str::to_string),
            namespace: None,
            ttl: None,
        };
        assert_eq!(consistency(&params).ok(), expected, "{name:?}");
    }
}
