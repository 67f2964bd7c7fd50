//! The in-memory model: every inode has a live state (what processes see) and a durable state
//! (what survives a power cut). See the crate documentation for the exact rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use crate::pages::PAGE_U64;
pub use crate::pages::Pages;

/// Inode number of the root directory (FUSE's).
pub const ROOT: u64 = 1;

/// A POSIX error number.
pub type Errno = i32;

/// A file's data.
#[derive(Debug, Default)]
pub struct FileData {
    pub live: Pages,
    pub durable: Pages,
    /// Pages written (or truncated away) since the last fsync.
    dirty: BTreeSet<u64>,
    /// The size changed since the last fsync.
    size_dirty: bool,
}

/// A directory's entries.
#[derive(Debug, Default)]
pub struct DirData {
    pub live: BTreeMap<OsString, u64>,
    pub durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
pub enum Kind {
    File(FileData),
    Dir(DirData),
}

/// Attributes that are not modelled as volatile (they change at once and survive a cut).
#[derive(Debug)]
pub struct Inode {
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Lookups the kernel holds (FUSE `lookup` count); the inode stays while any.
    pub lookups: u64,
}

impl Inode {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Self {
            kind,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            lookups: 0,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(file) => file.live.size,
            Kind::Dir(dir) => dir.live.len() as u64,
        }
    }

    pub fn allocated(&self) -> u64 {
        match &self.kind {
            Kind::File(file) => file.live.allocated(),
            Kind::Dir(_) => 0,
        }
    }
}

/// What one power cut threw away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discarded {
    /// Files whose unsynced data (pages or size) were dropped.
    pub files: u64,
    /// Unsynced pages dropped, over all files.
    pub pages: u64,
    /// Directories whose unsynced entry changes (create, rename, unlink) were undone.
    pub directories: u64,
    /// What was undone, one line per file or directory (live path names).
    pub details: Vec<String>,
}

/// Counters since the mount was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `fsync`/`fdatasync` calls on files.
    pub file_syncs: u64,
    /// `fsync` calls on directories.
    pub dir_syncs: u64,
    /// Bytes written.
    pub written: u64,
}

/// The whole file system.
#[derive(Debug)]
pub struct State {
    pub inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// While set (during a power cut) every operation fails with EIO.
    pub frozen: bool,
    pub counters: Counters,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    pub fn new() -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(ROOT, Inode::new(Kind::Dir(DirData::default()), 0o755, 0, 0));
        Self {
            inodes,
            next_ino: ROOT + 1,
            frozen: false,
            counters: Counters::default(),
        }
    }

    pub fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(libc_errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(libc_errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirData, Errno> {
        match &self.inode(ino)?.kind {
            Kind::Dir(dir) => Ok(dir),
            Kind::File(_) => Err(libc_errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirData, Errno> {
        match &mut self.inode_mut(ino)?.kind {
            Kind::Dir(dir) => Ok(dir),
            Kind::File(_) => Err(libc_errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match &mut self.inode_mut(ino)?.kind {
            Kind::File(file) => Ok(file),
            Kind::Dir(_) => Err(libc_errno::EISDIR),
        }
    }

    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let ino = *self.dir(parent)?.live.get(name).ok_or(libc_errno::ENOENT)?;
        self.inode_mut(ino)?.lookups += 1;
        Ok(ino)
    }

    /// The kernel dropped `count` lookups; an inode no name refers to, live or durable, goes.
    pub fn forget(&mut self, ino: u64, count: u64) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(count);
        if inode.lookups == 0 && ino != ROOT && !self.is_named(ino) {
            self.inodes.remove(&ino);
        }
    }

    fn is_named(&self, ino: u64) -> bool {
        self.inodes.values().any(|inode| match &inode.kind {
            Kind::Dir(dir) => {
                dir.live.values().any(|&i| i == ino) || dir.durable.values().any(|&i| i == ino)
            }
            Kind::File(_) => false,
        })
    }

    /// Creates a file or directory `name` in `parent` (live only until `parent` is synced).
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        dir: bool,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<u64, Errno> {
        if name.len() > 255 {
            return Err(libc_errno::ENAMETOOLONG);
        }
        if self.dir(parent)?.live.contains_key(name) {
            return Err(libc_errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let kind = match dir {
            true => Kind::Dir(DirData::default()),
            false => Kind::File(FileData::default()),
        };
        let mut inode = Inode::new(kind, perm, uid, gid);
        inode.lookups = 1;
        self.inodes.insert(ino, inode);
        self.dir_mut(parent)?.live.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            inode.mtime = now;
            inode.ctime = now;
        }
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.live.get(name).ok_or(libc_errno::ENOENT)?;
        match (&self.inode(ino)?.kind, dir) {
            (Kind::Dir(data), true) => {
                if !data.live.is_empty() {
                    return Err(libc_errno::ENOTEMPTY);
                }
            }
            (Kind::Dir(_), false) => return Err(libc_errno::EISDIR),
            (Kind::File(_), true) => return Err(libc_errno::ENOTDIR),
            (Kind::File(_), false) => {}
        }
        self.dir_mut(parent)?.live.remove(name);
        self.touch(parent);
        self.forget(ino, 0);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        if new_name.len() > 255 {
            return Err(libc_errno::ENAMETOOLONG);
        }
        let ino = *self.dir(parent)?.live.get(name).ok_or(libc_errno::ENOENT)?;
        let moving_dir = self.inode(ino)?.is_dir();
        if moving_dir && self.is_ancestor(ino, new_parent) {
            return Err(libc_errno::EINVAL);
        }
        if let Some(&target) = self.dir(new_parent)?.live.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc_errno::EEXIST);
            }
            match (&self.inode(target)?.kind, moving_dir) {
                (Kind::Dir(data), true) if !data.live.is_empty() => {
                    return Err(libc_errno::ENOTEMPTY);
                }
                (Kind::Dir(_), false) => return Err(libc_errno::EISDIR),
                (Kind::File(_), true) => return Err(libc_errno::ENOTDIR),
                _ => {}
            }
        }
        self.dir_mut(parent)?.live.remove(name);
        let replaced = self
            .dir_mut(new_parent)?
            .live
            .insert(new_name.to_owned(), ino);
        self.touch(parent);
        self.touch(new_parent);
        if let Some(replaced) = replaced {
            self.forget(replaced, 0);
        }
        Ok(())
    }

    /// Whether `ancestor` is `ino` or one of its live ancestors.
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        // Bounded by the number of inodes: a walk up the live tree.
        for _ in 0..=self.inodes.len() {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            let parent = self
                .inodes
                .iter()
                .find_map(|(&p, inode)| match &inode.kind {
                    Kind::Dir(dir) if dir.live.values().any(|&i| i == ino) => Some(p),
                    _ => None,
                });
            match parent {
                Some(parent) => ino = parent,
                None => return false,
            }
        }
        false
    }

    pub fn read(&self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        match &self.inode(ino)?.kind {
            Kind::File(file) => Ok(file.live.read(offset, len)),
            Kind::Dir(_) => Err(libc_errno::EISDIR),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= i64::MAX as u64)
            .ok_or(libc_errno::EFBIG)?;
        let file = self.file_mut(ino)?;
        let before = file.live.size;
        file.live.write(offset, data, &mut file.dirty);
        file.size_dirty |= file.live.size != before;
        self.counters.written += data.len() as u64;
        self.touch(ino);
        Ok(())
    }

    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        if size > i64::MAX as u64 {
            return Err(libc_errno::EFBIG);
        }
        let file = self.file_mut(ino)?;
        let before = file.live.size;
        file.live.truncate(size, &mut file.dirty);
        file.size_dirty |= file.live.size != before;
        self.touch(ino);
        Ok(())
    }

    pub fn set_attrs(
        &mut self,
        ino: u64,
        perm: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Result<(), Errno> {
        let inode = self.inode_mut(ino)?;
        if let Some(perm) = perm {
            inode.perm = perm;
        }
        if let Some(uid) = uid {
            inode.uid = uid;
        }
        if let Some(gid) = gid {
            inode.gid = gid;
        }
        if let Some(atime) = atime {
            inode.atime = atime;
        }
        if let Some(mtime) = mtime {
            inode.mtime = mtime;
        }
        inode.ctime = SystemTime::now();
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its data and size become durable (its name does not:
    /// that takes an fsync of the directory). On a directory: its entries become durable.
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.inode_mut(ino)?.kind {
            Kind::File(file) => {
                for index in std::mem::take(&mut file.dirty) {
                    match file.live.pages.get(&index) {
                        Some(page) => {
                            file.durable.pages.insert(index, page.clone());
                        }
                        None => {
                            file.durable.pages.remove(&index);
                        }
                    }
                }
                file.durable.size = file.live.size;
                let keep = file.durable.size.div_ceil(PAGE_U64);
                drop(file.durable.pages.split_off(&keep));
                file.size_dirty = false;
                self.counters.file_syncs += 1;
            }
            Kind::Dir(dir) => {
                dir.durable = dir.live.clone();
                self.counters.dir_syncs += 1;
            }
        }
        Ok(())
    }

    /// The power cut: every inode goes back to its durable state; inodes no durable name
    /// reaches from the root are gone. The kernel's lookups are reset (a new mount follows).
    pub fn cut(&mut self) -> Discarded {
        let mut discarded = Discarded {
            details: self.unsynced(),
            ..Discarded::default()
        };
        for inode in self.inodes.values_mut() {
            inode.lookups = 0;
            match &mut inode.kind {
                Kind::File(file) => {
                    if !file.dirty.is_empty() || file.size_dirty {
                        discarded.files += 1;
                        discarded.pages += file.dirty.len() as u64;
                    }
                    file.live = file.durable.clone();
                    file.dirty.clear();
                    file.size_dirty = false;
                }
                Kind::Dir(dir) => {
                    if dir.live != dir.durable {
                        discarded.directories += 1;
                    }
                    dir.live = dir.durable.clone();
                }
            }
        }
        let mut reachable = BTreeSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(Inode {
                kind: Kind::Dir(dir),
                ..
            }) = self.inodes.get(&ino)
            {
                for &child in dir.durable.values() {
                    if reachable.insert(child) {
                        stack.push(child);
                    }
                }
            }
        }
        self.inodes.retain(|ino, _| reachable.contains(ino));
        discarded
    }

    /// One line per file with unsynced data and per directory with unsynced entries, by live
    /// path (an inode reachable under several names is listed once).
    pub fn unsynced(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![(ROOT, String::from("/"))];
        while let Some((ino, path)) = stack.pop() {
            if !seen.insert(ino) {
                continue;
            }
            match self.inodes.get(&ino).map(|inode| &inode.kind) {
                Some(Kind::Dir(dir)) => {
                    let added: Vec<_> = dir
                        .live
                        .iter()
                        .filter(|(name, ino)| dir.durable.get(*name) != Some(ino))
                        .map(|(name, _)| name.to_string_lossy().into_owned())
                        .collect();
                    let removed: Vec<_> = dir
                        .durable
                        .iter()
                        .filter(|(name, ino)| dir.live.get(*name) != Some(ino))
                        .map(|(name, _)| name.to_string_lossy().into_owned())
                        .collect();
                    if !added.is_empty() || !removed.is_empty() {
                        lines.push(format!(
                            "dir {path}: unsynced new names {added:?}, unsynced removals {removed:?}"
                        ));
                    }
                    for (name, &child) in dir.live.iter().rev() {
                        let base = path.trim_end_matches('/');
                        stack.push((child, format!("{base}/{}", name.to_string_lossy())));
                    }
                }
                Some(Kind::File(file)) if !file.dirty.is_empty() || file.size_dirty => {
                    lines.push(format!(
                        "file {path}: {} unsynced pages, size {} (durable {})",
                        file.dirty.len(),
                        file.live.size,
                        file.durable.size
                    ));
                }
                Some(Kind::File(_)) | None => {}
            }
        }
        lines
    }

    /// Bytes held in file pages (live copies only), for statfs.
    pub fn used(&self) -> u64 {
        self.inodes.values().map(Inode::allocated).sum()
    }

    /// Live entries of a directory, in name order.
    pub fn entries(&self, ino: u64) -> Result<Vec<(OsString, u64, bool)>, Errno> {
        let dir = self.dir(ino)?;
        Ok(dir
            .live
            .iter()
            .map(|(name, &child)| {
                let is_dir = self.inodes.get(&child).is_some_and(Inode::is_dir);
                (name.clone(), child, is_dir)
            })
            .collect())
    }

    /// The live parent of a directory (itself for the root).
    pub fn parent_of(&self, ino: u64) -> u64 {
        if ino == ROOT {
            return ROOT;
        }
        self.inodes
            .iter()
            .find_map(|(&p, inode)| match &inode.kind {
                Kind::Dir(dir) if dir.live.values().any(|&i| i == ino) => Some(p),
                _ => None,
            })
            .unwrap_or(ROOT)
    }
}

/// The few errno values the model returns (Linux numbers).
pub mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const EOPNOTSUPP: i32 = 95;
}

#[cfg(test)]
#[path = "model_test.rs"]
mod tests;
