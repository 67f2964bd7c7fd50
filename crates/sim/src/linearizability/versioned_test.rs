//! Hand-built histories: each check of the versioned model accepts a correct history and
//! refuses the same history with one answer made wrong.

use super::*;

const K: Key = 0;

fn done(
    op: VersionedOp,
    invoked_at: u64,
    returned_at: u64,
    result: VersionedResult,
) -> VersionedOperation {
    VersionedOperation {
        client: 0,
        op,
        invoked_at,
        completed: Some((returned_at, result)),
    }
}

fn unknown(op: VersionedOp, invoked_at: u64) -> VersionedOperation {
    VersionedOperation {
        client: 0,
        op,
        invoked_at,
        completed: None,
    }
}

fn put(value: Value) -> VersionedOp {
    VersionedOp::Put { key: K, value }
}

fn put_ttl(value: Value, ttl: u64) -> VersionedOp {
    VersionedOp::PutTtl { key: K, value, ttl }
}

fn cas_version(expected: Version, new: Value) -> VersionedOp {
    VersionedOp::CasVersion {
        key: K,
        expected,
        new,
    }
}

fn read(found: Option<(Value, Version)>) -> VersionedResult {
    VersionedResult::Read(found)
}

fn check(ops: &[VersionedOperation]) -> KeyVerdict {
    check_versioned_key_within(&ops.iter().collect::<Vec<_>>(), 0, STEP_BUDGET)
}

#[test]
fn a_read_returns_the_version_of_the_write_it_observes() {
    let good = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 3, 4, read(Some((1, 5)))),
    ];
    assert_eq!(check(&good), KeyVerdict::Linearizable);
    let wrong_version = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 3, 4, read(Some((1, 6)))),
    ];
    assert_eq!(check(&wrong_version), KeyVerdict::Violation);
}

#[test]
fn the_version_of_an_unanswered_write_is_fixed_by_the_first_read_that_shows_it() {
    let good = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        unknown(put(2), 3),
        done(VersionedOp::Get(K), 4, 5, read(Some((2, 9)))),
        done(VersionedOp::Get(K), 6, 7, read(Some((2, 9)))),
    ];
    assert_eq!(check(&good), KeyVerdict::Linearizable);
    // The same value cannot show two versions.
    let two_versions = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        unknown(put(2), 3),
        done(VersionedOp::Get(K), 4, 5, read(Some((2, 9)))),
        done(VersionedOp::Get(K), 6, 7, read(Some((2, 10)))),
    ];
    assert_eq!(check(&two_versions), KeyVerdict::Violation);
    // Nor a version at or below one already shown.
    let below = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        unknown(put(2), 3),
        done(VersionedOp::Get(K), 4, 5, read(Some((2, 4)))),
    ];
    assert_eq!(check(&below), KeyVerdict::Violation);
}

#[test]
fn versions_strictly_increase_in_linearization_order() {
    // Concurrent puts may be ordered by their versions.
    let concurrent = [
        done(put(1), 1, 4, VersionedResult::Written(7)),
        done(put(2), 2, 3, VersionedResult::Written(6)),
        done(VersionedOp::Get(K), 5, 6, read(Some((1, 7)))),
    ];
    assert_eq!(check(&concurrent), KeyVerdict::Linearizable);
    // A put that began after another returned got a smaller version.
    let backwards = [
        done(put(1), 1, 2, VersionedResult::Written(7)),
        done(put(2), 3, 4, VersionedResult::Written(6)),
    ];
    assert_eq!(check(&backwards), KeyVerdict::Violation);
    // Equal versions for two writes.
    let repeated = [
        done(put(1), 1, 2, VersionedResult::Written(7)),
        done(put(2), 3, 4, VersionedResult::Written(7)),
    ];
    assert_eq!(check(&repeated), KeyVerdict::Violation);
    // The second put is ordered after the read that showed version 7, so it must exceed it,
    // even though the put of version 7 is not the one it follows.
    let after_a_read = [
        done(put(1), 1, 2, VersionedResult::Written(7)),
        done(VersionedOp::Delete(K), 3, 4, VersionedResult::Deleted),
        done(put(2), 5, 6, VersionedResult::Written(3)),
    ];
    assert_eq!(check(&after_a_read), KeyVerdict::Violation);
}

#[test]
fn a_version_cas_succeeds_iff_the_version_matches() {
    let good = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        done(
            cas_version(5, 2),
            3,
            4,
            VersionedResult::VersionSwapped {
                succeeded: true,
                previous: Some((1, 5)),
                index: 8,
            },
        ),
        done(
            cas_version(5, 3),
            5,
            6,
            VersionedResult::VersionSwapped {
                succeeded: false,
                previous: Some((2, 8)),
                index: 9,
            },
        ),
        done(VersionedOp::Get(K), 7, 8, read(Some((2, 8)))),
    ];
    assert_eq!(check(&good), KeyVerdict::Linearizable);
    // Swapped although the version (5) was not the expected one (4).
    let swapped_on_mismatch = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        done(
            cas_version(4, 2),
            3,
            4,
            VersionedResult::VersionSwapped {
                succeeded: true,
                previous: Some((1, 5)),
                index: 8,
            },
        ),
    ];
    assert_eq!(check(&swapped_on_mismatch), KeyVerdict::Violation);
    // Refused although it matched.
    let refused_on_match = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        done(
            cas_version(5, 2),
            3,
            4,
            VersionedResult::VersionSwapped {
                succeeded: false,
                previous: Some((1, 5)),
                index: 8,
            },
        ),
    ];
    assert_eq!(check(&refused_on_match), KeyVerdict::Violation);
    // Refused, reporting a current version the key never had.
    let wrong_report = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        done(
            cas_version(4, 2),
            3,
            4,
            VersionedResult::VersionSwapped {
                succeeded: false,
                previous: Some((1, 6)),
                index: 8,
            },
        ),
    ];
    assert_eq!(check(&wrong_report), KeyVerdict::Violation);
    // Expected version 0 means absent.
    let absent = [done(
        cas_version(0, 1),
        1,
        2,
        VersionedResult::VersionSwapped {
            succeeded: true,
            previous: None,
            index: 3,
        },
    )];
    assert_eq!(check(&absent), KeyVerdict::Linearizable);
}

#[test]
fn an_unanswered_version_cas_may_or_may_not_have_swapped() {
    let swapped = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        unknown(cas_version(5, 2), 3),
        done(VersionedOp::Get(K), 4, 5, read(Some((2, 9)))),
    ];
    assert_eq!(check(&swapped), KeyVerdict::Linearizable);
    let not_swapped = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        unknown(cas_version(5, 2), 3),
        done(VersionedOp::Get(K), 4, 5, read(Some((1, 5)))),
    ];
    assert_eq!(check(&not_swapped), KeyVerdict::Linearizable);
    // Expecting the wrong version, it cannot have swapped.
    let impossible = [
        done(put(1), 1, 2, VersionedResult::Written(5)),
        unknown(cas_version(4, 2), 3),
        done(VersionedOp::Get(K), 4, 5, read(Some((2, 9)))),
    ];
    assert_eq!(check(&impossible), KeyVerdict::Violation);
}

#[test]
fn a_ttl_key_is_present_before_its_time_and_absent_after() {
    // Put at [10, 20] with TTL 100: expiry in [110, 120].
    let good = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 30, 40, read(Some((1, 5)))),
        done(VersionedOp::Get(K), 130, 140, read(None)),
    ];
    assert_eq!(check(&good), KeyVerdict::Linearizable);
    // Present after its latest possible expiry.
    let late = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 121, 130, read(Some((1, 5)))),
    ];
    assert_eq!(check(&late), KeyVerdict::Violation);
    // Absent before its earliest possible expiry.
    let early = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 50, 109, read(None)),
    ];
    assert_eq!(check(&early), KeyVerdict::Violation);
    // Inside the uncertain interval, either answer is possible...
    for found in [Some((1, 5)), None] {
        let uncertain = [
            done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
            done(VersionedOp::Get(K), 112, 114, read(found)),
        ];
        assert_eq!(check(&uncertain), KeyVerdict::Linearizable, "{found:?}");
    }
    // ...but not present again once seen expired.
    let flicker = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 112, 113, read(None)),
        done(VersionedOp::Get(K), 114, 115, read(Some((1, 5)))),
    ];
    assert_eq!(check(&flicker), KeyVerdict::Violation);
}

#[test]
fn writes_after_expiry_see_the_key_absent() {
    // A CAS expecting "absent" succeeds once the TTL is up, and one expecting the old value
    // fails reporting absent.
    let good = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(
            cas_version(5, 2),
            130,
            140,
            VersionedResult::VersionSwapped {
                succeeded: false,
                previous: None,
                index: 9,
            },
        ),
        done(
            VersionedOp::Cas {
                key: K,
                expected: None,
                new: 3,
            },
            150,
            160,
            VersionedResult::Swapped {
                succeeded: true,
                previous: None,
            },
        ),
        done(
            VersionedOp::Get(K),
            170,
            180,
            VersionedResult::Value(Some(3)),
        ),
    ];
    assert_eq!(check(&good), KeyVerdict::Linearizable);
    // A version CAS that swapped an expired key.
    let swapped_expired = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(
            cas_version(5, 2),
            130,
            140,
            VersionedResult::VersionSwapped {
                succeeded: true,
                previous: Some((1, 5)),
                index: 9,
            },
        ),
    ];
    assert_eq!(check(&swapped_expired), KeyVerdict::Violation);
    // A put without a TTL clears it: the key stays.
    let cleared = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(put(2), 30, 40, VersionedResult::Written(6)),
        done(VersionedOp::Get(K), 200, 210, read(Some((2, 6)))),
    ];
    assert_eq!(check(&cleared), KeyVerdict::Linearizable);
    let cleared_but_gone = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(put(2), 30, 40, VersionedResult::Written(6)),
        done(VersionedOp::Get(K), 200, 210, read(None)),
    ];
    assert_eq!(check(&cleared_but_gone), KeyVerdict::Violation);
}

#[test]
fn an_unanswered_ttl_put_may_expire_any_time_after_its_earliest_bound() {
    let ops = [
        unknown(put_ttl(1, 100), 10),
        done(VersionedOp::Get(K), 500, 510, read(Some((1, 5)))),
        done(VersionedOp::Get(K), 600, 610, read(None)),
    ];
    assert_eq!(check(&ops), KeyVerdict::Linearizable);
    let too_early = [
        unknown(put_ttl(1, 100), 10),
        done(VersionedOp::Get(K), 20, 30, read(Some((1, 5)))),
        done(VersionedOp::Get(K), 40, 50, read(None)),
    ];
    assert_eq!(check(&too_early), KeyVerdict::Violation);
}

#[test]
fn clock_slack_widens_the_expiry_interval() {
    let ops = [
        done(put_ttl(1, 100), 10, 20, VersionedResult::Written(5)),
        done(VersionedOp::Get(K), 100, 105, read(None)),
    ];
    let refs: Vec<&VersionedOperation> = ops.iter().collect();
    assert_eq!(check_versioned_key(&refs, 0), KeyVerdict::Violation);
    assert_eq!(check_versioned_key(&refs, 10), KeyVerdict::Linearizable);
}
