//! `powerfs`: a FUSE file system for tests that keeps every write in memory and, on a simulated
//! power cut, throws away everything that was not made durable (in the spirit of LazyFS).
//!
//! Test-only: no release binary depends on it. See `docs/power-loss.md`.
//!
//! # What is modelled
//! Every inode has a *live* state (what processes read) and a *durable* state (what survives a
//! cut):
//! - **File data and size** (write, truncate, `O_TRUNC`) change the live state only.
//!   `fsync` or `fdatasync` of the file copies its live data and size to its durable state.
//!   Nothing else makes data durable: not `close`, not an fsync of another file or of the
//!   directory.
//! - **Names** (create, mkdir, rename, unlink, rmdir) change the live entries of the
//!   directories involved. `fsync` of a directory copies its live entries to its durable
//!   entries. A new file whose directory was not synced is gone after a cut even if its data
//!   was fsync'd; a rename is undone in each directory that was not synced after it (so a
//!   rename across directories with only one of them synced can leave the file under both
//!   names or under neither; real file systems are kinder, the model is the POSIX minimum).
//! - **Attributes** (mode, owner, times) are not volatile: they change at once and stay.
//! - A cut drops *all* unsynced changes at once (no torn or reordered subsets of them).
//! - Not supported: hard links, symlinks, special files, xattrs, `fallocate` (EOPNOTSUPP),
//!   shared writable `mmap` is not tested.
//!
//! # The cut
//! [`PowerFs::power_cut`]: (1) freeze: every request from now on fails with EIO; (2) SIGKILL
//! every process that has a file, working directory or mapping under the mount (and the extra
//! pids given), and wait until they are gone; (3) every inode goes back to its durable state,
//! inodes no durable name reaches are dropped; (4) unmount and mount again (the kernel's page
//! and attribute caches go with the old mount) and serve the durable state.

mod fs;
mod model;
mod pages;

pub use model::{Counters, Discarded};

use model::State;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a cut waits for the killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(20);

/// What one power cut did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Processes killed (SIGKILL) because they used the mount, or were named by the caller.
    pub killed: Vec<u32>,
    /// What was thrown away.
    pub discarded: Discarded,
}

/// A mounted `powerfs`. Dropping it kills the processes still using it and unmounts it.
pub struct PowerFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for PowerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

fn config() -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("powerfs".into()),
        fuser::MountOption::Subtype("powerfs".into()),
        fuser::MountOption::NoAtime,
    ];
    // Two threads: a node's fsync does not wait behind another file's read.
    config.n_threads = Some(2);
    config.clone_fd = true;
    config
}

fn mount(mountpoint: &Path, state: &Arc<Mutex<State>>) -> io::Result<fuser::BackgroundSession> {
    let server = fs::PowerFsServer {
        state: state.clone(),
    };
    fuser::Session::new(server, mountpoint, &config())
        .and_then(fuser::Session::spawn)
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "mounting powerfs at {} (needs /dev/fuse and root or fusermount3): {error}",
                    mountpoint.display()
                ),
            )
        })
}

impl PowerFs {
    /// Mounts an empty `powerfs` on `mountpoint` (an existing empty directory).
    ///
    /// # Errors
    /// The mount fails (no `/dev/fuse`, no permission, not a directory).
    pub fn mount(mountpoint: &Path) -> io::Result<PowerFs> {
        let mountpoint = mountpoint.canonicalize()?;
        let state = Arc::new(Mutex::new(State::new()));
        let session = mount(&mountpoint, &state)?;
        Ok(PowerFs {
            mountpoint,
            state,
            session: Some(session),
        })
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Counters since the mount was created (they survive cuts).
    pub fn counters(&self) -> Counters {
        self.state
            .lock()
            .map(|state| state.counters.clone())
            .unwrap_or_default()
    }

    /// What a cut now would throw away, one line per file or directory.
    pub fn unsynced(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|state| state.unsynced())
            .unwrap_or_default()
    }

    /// Processes with an open file, working directory, root or mapping under the mount.
    pub fn users(&self) -> Vec<u32> {
        processes_using(&self.mountpoint)
    }

    /// Simulates a power cut of this mount; see the crate documentation. `also_kill`: pids
    /// to kill even if they hold nothing open under the mount at this instant.
    ///
    /// # Errors
    /// A process does not die in time, or the file system cannot be mounted again.
    pub fn power_cut(&mut self, also_kill: &[u32]) -> io::Result<CutReport> {
        self.with_state(|state| state.frozen = true)?;
        let killed = kill_and_wait(&self.mountpoint, also_kill)?;
        let discarded = self.with_state(State::cut)?;
        self.unmount()?;
        self.with_state(|state| state.frozen = false)?;
        self.session = Some(mount(&self.mountpoint, &self.state)?);
        Ok(CutReport { killed, discarded })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> io::Result<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| io::Error::other("powerfs state lock poisoned"))?;
        Ok(f(&mut state))
    }

    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(error) => {
                // Busy (a process we could not see keeps a file open): detach the mount so
                // the next one can take its place; the old session thread ends when the last
                // user lets go.
                let detached =
                    rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
                match detached {
                    Ok(()) => Ok(()),
                    Err(detach) => Err(io::Error::other(format!(
                        "unmounting {}: {error}; lazy unmount: {detach}",
                        self.mountpoint.display()
                    ))),
                }
            }
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            state.frozen = true;
        }
        let _ = kill_and_wait(&self.mountpoint, &[]);
        let _ = self.unmount();
    }
}

/// SIGKILLs every process using `mountpoint` plus `extra`, and waits (bounded) until each is
/// gone or a zombie (a zombie holds no files).
fn kill_and_wait(mountpoint: &Path, extra: &[u32]) -> io::Result<Vec<u32>> {
    let own = std::process::id();
    let mut killed: Vec<u32> = Vec::new();
    let deadline = Instant::now() + KILL_WAIT;
    // Repeat until nobody uses the mount: a process may open a file while we kill another.
    loop {
        let mut victims = processes_using(mountpoint);
        if killed.is_empty() {
            victims.extend(extra.iter().copied());
        }
        victims.retain(|pid| *pid != own && alive(*pid));
        if victims.is_empty() {
            break;
        }
        for &pid in &victims {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        while victims.iter().any(|pid| alive(*pid)) {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "processes {victims:?} still alive {KILL_WAIT:?} after SIGKILL"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(killed)
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may contain anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Pids (other than ours) with anything under `mountpoint` open: files, cwd, root, mappings.
fn processes_using(mountpoint: &Path) -> Vec<u32> {
    let own = std::process::id();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let under = |path: &Path| path.starts_with(mountpoint);
    let mut pids = Vec::new();
    for entry in proc_dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let base = entry.path();
        let mut uses = ["cwd", "root"]
            .iter()
            .any(|link| std::fs::read_link(base.join(link)).is_ok_and(|p| under(&p)));
        if !uses && let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            uses = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| under(&p)));
        }
        if !uses && let Ok(maps) = std::fs::read_to_string(base.join("maps")) {
            let prefix = mountpoint.to_string_lossy();
            uses = maps.lines().any(|line| {
                line.split_whitespace()
                    .nth(5)
                    .is_some_and(|path| Path::new(path).starts_with(prefix.as_ref()))
            });
        }
        if uses {
            pids.push(pid);
        }
    }
    pids
}
