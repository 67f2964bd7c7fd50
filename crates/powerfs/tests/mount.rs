//! The model through a real mount: what a cut keeps and what it throws away, and that it kills
//! the processes using the mount. Needs `/dev/fuse` and root (or fusermount3).
#![allow(clippy::unwrap_used, reason = "test")]

use ringkv_powerfs::PowerFs;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).unwrap();
    Some(data)
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn a_cut_keeps_synced_data_and_names_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = PowerFs::mount(dir.path()).unwrap();
    let root = fs.path().to_path_buf();

    // Synced data under a synced name.
    let mut kept = File::create(root.join("kept")).unwrap();
    kept.write_all(b"durable").unwrap();
    kept.sync_data().unwrap();
    sync_dir(&root);
    // Written after the sync: lost.
    kept.write_all(b" and volatile").unwrap();
    drop(kept);
    // A subdirectory whose entry is synced in the root but whose own entries are not.
    std::fs::create_dir(root.join("sub")).unwrap();
    sync_dir(&root);
    let mut inner = File::create(root.join("sub/inner")).unwrap();
    inner.write_all(b"x").unwrap();
    inner.sync_all().unwrap();
    drop(inner);
    // A rename and an unlink after the last sync of the root: undone.
    std::fs::write(root.join("renamed"), b"r").unwrap();
    File::open(root.join("renamed"))
        .unwrap()
        .sync_all()
        .unwrap();
    std::fs::write(root.join("removed"), b"gone?").unwrap();
    File::open(root.join("removed"))
        .unwrap()
        .sync_all()
        .unwrap();
    sync_dir(&root);
    std::fs::rename(root.join("renamed"), root.join("new-name")).unwrap();
    std::fs::remove_file(root.join("removed")).unwrap();
    // Created after the last sync of the root, data synced, name never synced: the file is lost.
    let mut unnamed = File::create(root.join("unnamed")).unwrap();
    unnamed.write_all(b"data").unwrap();
    unnamed.sync_all().unwrap();
    drop(unnamed);
    // A truncation without sync: undone.
    OpenOptions::new()
        .write(true)
        .open(root.join("renamed").with_file_name("new-name"))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(read(&root.join("new-name")).unwrap(), b"");

    let report = fs.power_cut(&[]).unwrap();
    assert!(report.killed.is_empty(), "{report:?}");
    assert!(report.discarded.files >= 1, "{report:?}");
    assert!(report.discarded.directories >= 1, "{report:?}");

    assert_eq!(read(&root.join("kept")).unwrap(), b"durable");
    assert_eq!(read(&root.join("unnamed")), None);
    assert!(root.join("sub").is_dir());
    assert_eq!(read(&root.join("sub/inner")), None);
    assert_eq!(read(&root.join("renamed")).unwrap(), b"r");
    assert_eq!(read(&root.join("new-name")), None);
    assert_eq!(read(&root.join("removed")).unwrap(), b"gone?");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "removed", "renamed", "sub"]);

    // The file system works after the cut, and a second cut without changes drops nothing.
    std::fs::write(root.join("after"), b"a").unwrap();
    File::open(root.join("after")).unwrap().sync_all().unwrap();
    sync_dir(&root);
    let report = fs.power_cut(&[]).unwrap();
    assert_eq!(report.discarded, Default::default(), "{report:?}");
    assert_eq!(read(&root.join("after")).unwrap(), b"a");
    let counters = fs.counters();
    assert!(
        counters.file_syncs >= 5 && counters.dir_syncs >= 4,
        "{counters:?}"
    );
}

#[test]
fn large_files_at_offsets_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = PowerFs::mount(dir.path()).unwrap();
    let path = fs.path().join("big");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut file = File::create(&path).unwrap();
    file.write_all(&data).unwrap();
    file.sync_data().unwrap();
    sync_dir(fs.path());
    // Sparse: a write far past the end leaves zeros between.
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"tail", 1_000_000).unwrap();
    drop(file);
    let now = read(&path).unwrap();
    assert_eq!(now.len(), 1_000_004);
    assert_eq!(&now[..data.len()], &data[..]);
    assert!(now[data.len()..1_000_000].iter().all(|&b| b == 0));
    fs.power_cut(&[]).unwrap();
    assert_eq!(read(&path).unwrap(), data);
}

#[test]
fn a_cut_kills_the_processes_using_the_mount_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = PowerFs::mount(dir.path()).unwrap();
    let root = fs.path().to_path_buf();
    // A shell that keeps a file open under the mount and appends to it, fsyncing nothing.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec 3>>\"$0/log\"; while true; do echo line >&3; sleep 0.01; done")
        .arg(&root)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while read(&root.join("log")).is_none_or(|data| data.len() < 50) {
        assert!(Instant::now() < deadline, "the child never wrote");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The shell, and any `sleep` it started at that moment (they inherit the file).
    assert!(fs.users().contains(&child.id()), "{:?}", fs.users());
    let report = fs.power_cut(&[]).unwrap();
    assert!(report.killed.contains(&child.id()), "{report:?}");
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    // Neither the name nor the data of `log` was ever synced.
    assert_eq!(read(&root.join("log")), None);
    assert!(fs.users().is_empty());
}
