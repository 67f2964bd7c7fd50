//! The FUSE front of the model: each request locks the state, applies itself, replies.

use crate::model::{Errno as ModelErrno, Inode, Kind, State, libc_errno};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How long the kernel may cache names and attributes. Every change goes through this file
/// system and the kernel drops its caches with the mount at a power cut.
const TTL: Duration = Duration::from_secs(1);

/// Total size reported by statfs: large, so a node's free-space alarm never fires.
const TOTAL_BYTES: u64 = 1 << 40;

pub(crate) struct PowerFsServer {
    pub state: Arc<Mutex<State>>,
}

fn errno(code: ModelErrno) -> Errno {
    Errno::from_i32(code)
}

fn attr(ino: u64, inode: &Inode) -> FileAttr {
    let size = inode.size();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: inode.allocated() / 512,
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind: match inode.kind {
            Kind::File(_) => FileType::RegularFile,
            Kind::Dir(_) => FileType::Directory,
        },
        perm: inode.perm,
        nlink: if inode.is_dir() { 2 } else { 1 },
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl PowerFsServer {
    /// The state, or EIO while a power cut is under way. A poisoned lock (a panic in a
    /// request) also answers EIO rather than panicking again.
    fn lock(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = self.state.lock().map_err(|_| Errno::EIO)?;
        match state.frozen {
            true => Err(Errno::EIO),
            false => Ok(state),
        }
    }

    fn entry(&self, result: Result<u64, ModelErrno>, state: &State, reply: ReplyEntry) {
        match result.and_then(|ino| Ok((ino, state.inode(ino)?))) {
            Ok((ino, inode)) => reply.entry(&TTL, &attr(ino, inode), Generation(0)),
            Err(code) => reply.error(errno(code)),
        }
    }
}

fn time(value: Option<TimeOrNow>) -> Option<SystemTime> {
    value.map(|value| match value {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    })
}

impl Filesystem for PowerFsServer {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        let result = state.lookup(parent.0, name);
        self.entry(result, &state, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        match state.inode(ino.0) {
            Ok(inode) => reply.attr(&TTL, &attr(ino.0, inode)),
            Err(code) => reply.error(errno(code)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        let result = (|| {
            if let Some(size) = size {
                state.truncate(ino.0, size)?;
            }
            let perm = mode.map(|mode| (mode & 0o7777) as u16);
            state.set_attrs(ino.0, perm, uid, gid, time(atime), time(mtime))?;
            state.inode(ino.0).map(|inode| attr(ino.0, inode))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(code) => reply.error(errno(code)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        let perm = (mode & !umask & 0o7777) as u16;
        let result = state.create(parent.0, name, true, perm, req.uid(), req.gid());
        self.entry(result, &state, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only (S_IFREG); devices, fifos and sockets are not modelled.
        if mode & 0o170000 != 0o100000 {
            return reply.error(Errno::EPERM);
        }
        let mut state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        let perm = (mode & !umask & 0o7777) as u16;
        let result = state.create(parent.0, name, false, perm, req.uid(), req.gid());
        self.entry(result, &state, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        let perm = (mode & !umask & 0o7777) as u16;
        match state
            .create(parent.0, name, false, perm, req.uid(), req.gid())
            .and_then(|ino| Ok((ino, state.inode(ino)?)))
        {
            Ok((ino, inode)) => reply.created(
                &TTL,
                &attr(ino, inode),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(code) => reply.error(errno(code)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock() {
            Ok(mut state) => match state.unlink(parent.0, name, false) {
                Ok(()) => reply.ok(),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock() {
            Ok(mut state) => match state.unlink(parent.0, name, true) {
                Ok(()) => reply.ok(),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(errno(libc_errno::EINVAL));
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.lock() {
            Ok(mut state) => match state.rename(parent.0, name, newparent.0, newname, no_replace) {
                Ok(()) => reply.ok(),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock() {
            Ok(state) => match state.inode(ino.0) {
                Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.lock() {
            Ok(state) => match state.read(ino.0, offset, size as usize) {
                Ok(data) => reply.data(&data),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.lock() {
            Ok(mut state) => match state.write(ino.0, offset, data) {
                Ok(()) => reply.written(data.len() as u32),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock() {
            Ok(mut state) => match state.sync(ino.0) {
                Ok(()) => reply.ok(),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock() {
            Ok(state) => match state.inode(ino.0) {
                Ok(inode) if inode.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
                Ok(_) => reply.error(Errno::ENOTDIR),
                Err(code) => reply.error(errno(code)),
            },
            Err(error) => reply.error(error),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = match self.lock() {
            Ok(state) => state,
            Err(error) => return reply.error(error),
        };
        let entries = match state.entries(ino.0) {
            Ok(entries) => entries,
            Err(code) => return reply.error(errno(code)),
        };
        let parent = state.parent_of(ino.0);
        let all = [(".".into(), ino.0, true), ("..".into(), parent, true)]
            .into_iter()
            .chain(entries);
        for (index, (name, child, is_dir)) in all.enumerate().skip(offset as usize) {
            let kind = match is_dir {
                true => FileType::Directory,
                false => FileType::RegularFile,
            };
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(_req, ino, _fh, _datasync, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let used = self.state.lock().map(|state| state.used()).unwrap_or(0);
        let blocks = TOTAL_BYTES / 4096;
        let free = blocks.saturating_sub(used / 4096);
        reply.statfs(blocks, free, free, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(libc_errno::EOPNOTSUPP));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(errno(libc_errno::EOPNOTSUPP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.size(0);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links are not modelled.
        reply.error(Errno::EPERM);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // The kernel's generic lseek applies.
        reply.error(errno(libc_errno::ENOSYS));
    }
}
