//! glibc malloc settings for `ringkvd`: without them, memory that the store frees stays with
//! the process.
//!
//! What a snapshot install showed (docs/perf.md, "Memory of a shard move"): the store's heap
//! stays within its write buffer and block cache, but with glibc's default settings the
//! process's RSS did not. glibc serves an allocation of 128 KiB or more with its own `mmap`
//! (returned to the kernel on free) only until the first such block is freed; then it raises
//! that threshold to the freed size (up to 32 MiB), and every later 128 KiB value, memtable
//! entry and table block comes from the arenas, where freed memory is kept and fragmented. It
//! also gives each thread that contends an arena of its own (up to 8 per core), each keeping
//! its own free memory. A 1 GiB install into one store peaked at 934 MB RSS and 506 MB stayed
//! after both stores were dropped, while heaptrack found the heap bounded by the write buffer and
//! the block caches (467 MB at the peak of a 512 MiB install).
//!
//! The settings ([`GLIBC_TUNABLES`]): a fixed `mmap_threshold` of 128 KiB (a fixed value also
//! turns the raising off), so large blocks go back to the kernel when freed, and `arena_max`
//! 2: fewer arenas keep less free memory, and the threads that allocate much (the event loop,
//! the store's writer, fjall's workers, the snapshot tasks) are few (the put path's throughput
//! under these settings is not measured yet).
//! With them the same install peaked at 407 MB and 8 MB stayed.
//!
//! How: glibc reads its tunables only from the environment at process start, and the workspace
//! forbids `unsafe` (so no `mallopt`). `ringkvd` therefore re-executes itself once, first thing
//! in `main`, with `GLIBC_TUNABLES` set ([`reexec_with_tunables`]). It does not when the
//! operator set `GLIBC_TUNABLES` (any value: theirs wins) or `RINGKV_MALLOC_TUNING=off`, and
//! never twice (`RINGKV_MALLOC_TUNED` marks the second start). The process keeps its pid,
//! arguments, environment and open descriptors. Other C libraries ignore the variable.

use std::ffi::OsString;

/// The `GLIBC_TUNABLES` value `ringkvd` runs with (see the module docs).
pub const GLIBC_TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2";

/// Set (to `off`) by an operator to run with glibc's default malloc settings.
pub const OPT_OUT_ENV: &str = "RINGKV_MALLOC_TUNING";

/// Set by [`reexec_with_tunables`] in the environment of the process it starts.
pub const MARK_ENV: &str = "RINGKV_MALLOC_TUNED";

/// Whether a process with this environment should re-execute itself with [`GLIBC_TUNABLES`].
pub fn should_reexec(var: impl Fn(&str) -> Option<OsString>) -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
        && var("GLIBC_TUNABLES").is_none()
        && var(MARK_ENV).is_none()
        && var(OPT_OUT_ENV).is_none_or(|value| value != "off")
}

/// Re-executes the current program with [`GLIBC_TUNABLES`] set, when [`should_reexec`] says
/// so. Call it first thing in `main`, before any thread starts. Returns only if it did not
/// re-execute: `Ok(())` when there was nothing to do, the error when `exec` failed (the
/// process then goes on with glibc's defaults; log it).
///
/// # Errors
/// The program's path cannot be found, or `exec` failed.
pub fn reexec_with_tunables() -> std::io::Result<()> {
    if !should_reexec(|name| std::env::var_os(name)) {
        return Ok(());
    }
    exec_self()
}

#[cfg(unix)]
fn exec_self() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let program = std::env::current_exe()?;
    let error = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", GLIBC_TUNABLES)
        .env(MARK_ENV, "1")
        .exec();
    Err(error)
}

#[cfg(not(unix))]
fn exec_self() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn decide(vars: &[(&str, &str)]) -> bool {
        let vars: BTreeMap<&str, OsString> = vars
            .iter()
            .map(|(name, value)| (*name, OsString::from(value)))
            .collect();
        should_reexec(|name| vars.get(name).cloned())
    }

    #[test]
    fn reexecutes_once_unless_the_operator_chose() {
        let on_glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(
            decide(&[]),
            on_glibc,
            "a plain start is re-executed on glibc"
        );
        assert_eq!(decide(&[(OPT_OUT_ENV, "on")]), on_glibc);
        assert!(!decide(&[(MARK_ENV, "1")]), "never twice");
        assert!(!decide(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")]));
        assert!(!decide(&[(OPT_OUT_ENV, "off")]));
    }

    #[test]
    fn tunables_name_only_malloc_settings() {
        for item in GLIBC_TUNABLES.split(':') {
            let (name, value) = item.split_once('=').unwrap_or_default();
            assert!(name.starts_with("glibc.malloc."), "{item}");
            assert!(value.parse::<u64>().is_ok(), "{item}");
        }
    }
}
