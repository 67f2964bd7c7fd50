//! Tests of the in-memory model.

#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn unsynced_data_is_lost_and_synced_data_kept() {
    let mut state = State::new();
    let ino = state
        .create(ROOT, OsStr::new("f"), false, 0o644, 0, 0)
        .unwrap();
    state.sync(ROOT).unwrap();
    state.write(ino, 0, b"hello").unwrap();
    state.sync(ino).unwrap();
    state.write(ino, 5, b" world").unwrap();
    state.write(ino, 0, b"J").unwrap();
    let discarded = state.cut();
    assert_eq!(discarded.files, 1);
    assert_eq!(state.read(ino, 0, 100).unwrap(), b"hello");
}

#[test]
fn names_need_a_directory_sync() {
    let mut state = State::new();
    let a = state
        .create(ROOT, OsStr::new("a"), false, 0o644, 0, 0)
        .unwrap();
    state.write(a, 0, b"x").unwrap();
    state.sync(a).unwrap();
    state.cut();
    assert!(!state.inodes.contains_key(&a), "file without a synced name");
    let b = state
        .create(ROOT, OsStr::new("b"), false, 0o644, 0, 0)
        .unwrap();
    state.sync(ROOT).unwrap();
    state
        .rename(ROOT, OsStr::new("b"), ROOT, OsStr::new("c"), false)
        .unwrap();
    state.cut();
    assert_eq!(state.lookup(ROOT, OsStr::new("b")), Ok(b));
    assert_eq!(state.lookup(ROOT, OsStr::new("c")), Err(libc_errno::ENOENT));
}

#[test]
fn truncation_is_volatile_until_synced() {
    let mut state = State::new();
    let f = state
        .create(ROOT, OsStr::new("f"), false, 0o644, 0, 0)
        .unwrap();
    state.sync(ROOT).unwrap();
    state.write(f, 0, &[7u8; 10_000]).unwrap();
    state.sync(f).unwrap();
    state.truncate(f, 5000).unwrap();
    assert_eq!(state.read(f, 0, 20_000).unwrap().len(), 5000);
    state.cut();
    assert_eq!(state.read(f, 0, 20_000).unwrap(), vec![7u8; 10_000]);
    state.truncate(f, 5000).unwrap();
    state.write(f, 8000, b"z").unwrap();
    state.sync(f).unwrap();
    state.cut();
    let data = state.read(f, 0, 20_000).unwrap();
    assert_eq!(data.len(), 8001);
    assert!(data[..5000].iter().all(|&b| b == 7));
    assert!(data[5000..8000].iter().all(|&b| b == 0));
}
