//! The `REMOVED` marker: a file the node writes into its data dir when the placement driver
//! removed it, so that a restart stops at once and `ringctl local up` skips the node.
//!
//! The marker is written the durable way: a temporary file in the same directory, fsync, rename
//! over the final name, fsync of the directory. A reader (the next start, `ringctl local up`)
//! therefore sees either no marker or the whole reason, never an empty or half-written file,
//! and a marker that was reported written survives a power loss.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The marker's file name inside the data dir.
pub const REMOVED_MARKER: &str = "REMOVED";

/// Suffix of the temporary file the marker is written to before the rename.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Writes `reason` as the removal marker of `data_dir`, durably and atomically; returns the
/// marker's path.
///
/// # Errors
/// Any I/O failure, with the path that failed in the message. The marker is then either
/// absent or complete (a leftover temporary file is harmless and overwritten next time).
pub fn write(data_dir: &Path, reason: &str) -> std::io::Result<PathBuf> {
    let path = data_dir.join(REMOVED_MARKER);
    let temporary = data_dir.join(format!("{REMOVED_MARKER}{TEMPORARY_SUFFIX}"));
    let context = |action: &str, path: &Path, error: std::io::Error| {
        std::io::Error::new(
            error.kind(),
            format!("{action} {}: {error}", path.display()),
        )
    };
    let mut file =
        std::fs::File::create(&temporary).map_err(|e| context("create", &temporary, e))?;
    file.write_all(format!("{}\n", reason.trim_end()).as_bytes())
        .map_err(|e| context("write", &temporary, e))?;
    // IMPORTANT: fsync the data before the rename, or a crash may leave an empty marker.
    file.sync_all()
        .map_err(|e| context("fsync", &temporary, e))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(|e| context("rename", &path, e))?;
    // IMPORTANT: fsync the directory or the rename may vanish.
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| context("fsync directory", data_dir, e))?;
    Ok(path)
}

/// The reason recorded in `data_dir`'s marker, or `None` when the node was not removed. An
/// empty marker (left by an older version's non-atomic write) still counts as removed.
pub fn read(data_dir: &Path) -> Option<String> {
    let path = data_dir.join(REMOVED_MARKER);
    match std::fs::read_to_string(&path) {
        Ok(reason) if reason.trim().is_empty() => Some(format!(
            "the placement driver removed this node (empty marker {})",
            path.display()
        )),
        Ok(reason) => Some(format!("{} ({})", reason.trim(), path.display())),
        // A marker that exists but cannot be read still means removed.
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Some(format!(
            "the placement driver removed this node (marker {} unreadable: {error})",
            path.display()
        )),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_marker_is_complete_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let path = write(dir.path(), "node 4 was removed").unwrap();
        assert_eq!(path, dir.path().join(REMOVED_MARKER));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, vec![std::ffi::OsString::from(REMOVED_MARKER)]);
        let reason = read(dir.path()).unwrap_or_else(|| panic!("no marker"));
        assert!(reason.starts_with("node 4 was removed ("), "{reason}");
    }

    /// Rewriting the marker replaces the file instead of truncating it in place: a reader that
    /// opened the old marker still reads all of it, so no reader can see an empty or partial
    /// marker (`std::fs::write` truncates first and fails this).
    #[test]
    fn a_rewrite_never_exposes_a_truncated_marker() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "first reason").unwrap();
        let mut old = std::fs::File::open(dir.path().join(REMOVED_MARKER)).unwrap();
        write(dir.path(), "second reason").unwrap();
        let mut seen = String::new();
        old.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "first reason\n");
        let reason = read(dir.path()).unwrap_or_else(|| panic!("no marker"));
        assert!(reason.starts_with("second reason ("), "{reason}");
    }

    #[test]
    fn an_empty_marker_still_means_removed_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REMOVED_MARKER), "").unwrap();
        let reason = read(dir.path()).unwrap_or_else(|| panic!("an empty marker was ignored"));
        assert!(
            reason.contains("removed this node (empty marker"),
            "{reason}"
        );
    }

    #[test]
    fn a_failed_write_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let error = write(&missing, "x").expect_err("wrote into a missing directory");
        assert!(error.to_string().contains("no-such-dir"), "{error}");
        assert_eq!(read(&missing), None);
    }
}
