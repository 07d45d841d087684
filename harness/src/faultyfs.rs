//! A faulty disk for a replica's data directory (root only): a FUSE passthrough
//! ([`FaultyFs`]) that mirrors a backing directory and, from the moment its switch says
//! so, answers writes and syncs (or every operation) with `EIO`; and a small tmpfs
//! ([`Tmpfs`]) that can be shrunk until it is full and grown back. [`FaultyDisk`] stacks
//! the two: the tmpfs is the passthrough's backing directory, so one data directory can
//! take both kinds of fault.
//!
//! The passthrough is served by a thread of this process (fuser's background session);
//! it is mounted with mount(2) (fuser's pure-Rust mount, no libfuse, no fusermount) and
//! detached (`umount -l`) when dropped, whatever the processes using it still hold.

use crate::HarnessError;
use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, FUSE_ROOT_ID,
};
use nix::libc;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the passthrough fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Everything passes through.
    Healthy,
    /// Writes, syncs and every change to the tree (create, mkdir, unlink, rename,
    /// truncate) fail with `EIO`; reads still work.
    FailWrites,
    /// Every operation fails with `EIO` (but `statfs`, so free space still reads).
    FailAll,
}

/// The in-process switch of a [`FaultyFs`] (cheap to clone, shared with its thread).
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    mode: Arc<AtomicU8>,
    errors: Arc<AtomicU64>,
}

impl FaultSwitch {
    pub fn set(&self, mode: FaultMode) {
        let v = match mode {
            FaultMode::Healthy => 0,
            FaultMode::FailWrites => 1,
            FaultMode::FailAll => 2,
        };
        self.mode.store(v, Ordering::SeqCst);
    }

    pub fn mode(&self) -> FaultMode {
        match self.mode.load(Ordering::SeqCst) {
            0 => FaultMode::Healthy,
            1 => FaultMode::FailWrites,
            _ => FaultMode::FailAll,
        }
    }

    /// How many operations were answered with an injected `EIO` so far.
    pub fn injected(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    /// `Some(EIO)` when an operation of this class must fail now.
    fn fails(&self, writes: bool) -> Option<i32> {
        let fail = match self.mode() {
            FaultMode::Healthy => false,
            FaultMode::FailWrites => writes,
            FaultMode::FailAll => true,
        };
        if fail {
            self.errors.fetch_add(1, Ordering::SeqCst);
            Some(libc::EIO)
        } else {
            None
        }
    }
}

const TTL: Duration = Duration::from_secs(1);

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino,
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

/// The passthrough itself: inodes are numbered here and name paths relative to the
/// backing directory; open files are files of the backing directory.
struct Passthrough {
    root: PathBuf,
    paths: BTreeMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, File>,
    next_fh: u64,
    switch: FaultSwitch,
}

impl Passthrough {
    fn new(root: PathBuf, switch: FaultSwitch) -> Self {
        let mut paths = BTreeMap::new();
        let mut inodes = HashMap::new();
        paths.insert(FUSE_ROOT_ID, PathBuf::new());
        inodes.insert(PathBuf::new(), FUSE_ROOT_ID);
        Passthrough {
            root,
            paths,
            inodes,
            next_ino: FUSE_ROOT_ID + 1,
            files: HashMap::new(),
            next_fh: 1,
            switch,
        }
    }

    fn rel(&self, ino: u64) -> Option<&PathBuf> {
        self.paths.get(&ino)
    }

    fn real(&self, ino: u64) -> Option<PathBuf> {
        self.rel(ino).map(|p| self.root.join(p))
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.rel(parent).map(|p| p.join(name))
    }

    fn ino_of(&mut self, rel: &Path) -> u64 {
        if let Some(ino) = self.inodes.get(rel) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, rel.to_path_buf());
        self.inodes.insert(rel.to_path_buf(), ino);
        ino
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inodes.remove(rel) {
            self.paths.remove(&ino);
        }
    }

    /// The entry (inode and attributes) of a child that exists in the backing tree.
    fn entry(&mut self, rel: &Path) -> Result<FileAttr, i32> {
        let m = std::fs::symlink_metadata(self.root.join(rel)).map_err(|e| errno(&e))?;
        let ino = self.ino_of(rel);
        Ok(attr(ino, &m))
    }

    fn add_file(&mut self, f: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, f);
        fh
    }
}

/// Open options for the flags the kernel passed (appends come with their offsets, so
/// the backing file is never opened in append mode).
fn open_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => o.write(true),
        libc::O_RDWR => o.read(true).write(true),
        _ => o.read(true),
    };
    let keep = flags & !(libc::O_ACCMODE | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL);
    o.custom_flags(keep);
    o
}

impl Filesystem for Passthrough {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if let Some(e) = self.switch.fails(false) {
            return reply.error(e);
        }
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match self.entry(&rel) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        if let Some(e) = self.switch.fails(false) {
            return reply.error(e);
        }
        let m = match fh.and_then(|fh| self.files.get(&fh)) {
            Some(f) => f.metadata(),
            None => match self.real(ino) {
                Some(p) => std::fs::symlink_metadata(p),
                None => return reply.error(libc::ENOENT),
            },
        };
        match m {
            Ok(m) => reply.attr(&TTL, &attr(ino, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        if let Some(e) = self.switch.fails(size.is_some() || mode.is_some()) {
            return reply.error(e);
        }
        let Some(path) = self.real(ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(size) = size {
            let done = match fh.and_then(|fh| self.files.get(&fh)) {
                Some(f) => f.set_len(size),
                None => OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(size)),
            };
            if let Err(e) = done {
                return reply.error(errno(&e));
            }
        }
        if let Some(mode) = mode {
            let perms = std::fs::Permissions::from_mode(mode & 0o7777);
            if let Err(e) = std::fs::set_permissions(&path, perms) {
                return reply.error(errno(&e));
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) => reply.attr(&TTL, &attr(ino, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let real = self.root.join(&rel);
        if let Err(e) = std::fs::create_dir(&real) {
            return reply.error(errno(&e));
        }
        let perms = std::fs::Permissions::from_mode(mode & !umask & 0o7777);
        let _ = std::fs::set_permissions(&real, perms);
        match self.entry(&rel) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match std::fs::remove_file(self.root.join(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match std::fs::remove_dir(self.root.join(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        if flags != 0 {
            return reply.error(libc::EINVAL);
        }
        let (Some(from), Some(to)) = (self.child(parent, name), self.child(newparent, newname))
        else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = std::fs::rename(self.root.join(&from), self.root.join(&to)) {
            return reply.error(errno(&e));
        }
        // the target's old inode is gone; the moved inode (and, for a directory, every
        // inode below it) now names the new path
        self.forget_path(&to);
        let moved: Vec<(u64, PathBuf)> = self
            .paths
            .iter()
            .filter_map(|(ino, p)| {
                let rest = p.strip_prefix(&from).ok()?;
                // (joining an empty rest would add a trailing slash)
                let new = if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                };
                Some((*ino, new))
            })
            .collect();
        for (ino, new) in moved {
            if let Some(old) = self.paths.insert(ino, new.clone()) {
                self.inodes.remove(&old);
            }
            self.inodes.insert(new, ino);
        }
        reply.ok()
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if let Some(e) = self.switch.fails(writes) {
            return reply.error(e);
        }
        let Some(path) = self.real(ino) else {
            return reply.error(libc::ENOENT);
        };
        match open_options(flags).open(path) {
            Ok(f) => {
                let fh = self.add_file(f);
                reply.opened(fh, 0)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        if let Some(e) = self.switch.fails(false) {
            return reply.error(e);
        }
        let Some(f) = self.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0usize;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset.max(0) as u64 + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got])
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(f) = self.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        match f.write_all_at(data, offset.max(0) as u64) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok()
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.remove(&fh);
        reply.ok()
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, datasync: bool, reply: ReplyEmpty) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(f) = self.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let done = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if let Some(e) = self.switch.fails(false) {
            return reply.error(e);
        }
        if self.rel(ino).is_none() {
            return reply.error(libc::ENOENT);
        }
        reply.opened(0, 0)
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if let Some(e) = self.switch.fails(false) {
            return reply.error(e);
        }
        let Some(rel) = self.rel(ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let children = match std::fs::read_dir(self.root.join(&rel)) {
            Ok(d) => d,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for child in children.flatten() {
            let kind = match child.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let name = child.file_name();
            let child_ino = self.ino_of(&rel.join(&name));
            entries.push((child_ino, kind, name));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(path) = self.real(ino) else {
            return reply.error(libc::ENOENT);
        };
        match File::open(path).and_then(|d| d.sync_all()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e as i32),
        }
    }

    /// No extended attributes (quietly: fuser's default logs each call).
    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(libc::ENOSYS)
    }

    fn listxattr(&mut self, _req: &Request<'_>, _ino: u64, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(libc::ENOSYS)
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        if let Some(e) = self.switch.fails(false) {
            return reply.error(e);
        }
        match self.real(ino) {
            Some(p) if p.exists() => reply.ok(),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if let Some(e) = self.switch.fails(true) {
            return reply.error(e);
        }
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let mut o = open_options(flags);
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            o.write(true);
        }
        o.create(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            o.create_new(true);
        }
        let f = match o.open(self.root.join(&rel)) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let m = match f.metadata() {
            Ok(m) => m,
            Err(e) => return reply.error(errno(&e)),
        };
        let ino = self.ino_of(&rel);
        let fh = self.add_file(f);
        reply.created(&TTL, &attr(ino, &m), 0, fh, 0)
    }
}

/// A FUSE passthrough of `backing` mounted on `mountpoint`, with its switch; detached
/// (`umount -l`) when dropped.
pub struct FaultyFs {
    mountpoint: PathBuf,
    switch: FaultSwitch,
    session: Option<fuser::BackgroundSession>,
}

impl FaultyFs {
    /// Mount a passthrough of `backing` (which must exist) on `mountpoint` (created if
    /// missing). Root only: mount(2) of a FUSE filesystem.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<FaultyFs, HarnessError> {
        let io = |what: &str, p: &Path, e| HarnessError::Io(format!("{what} {}", p.display()), e);
        std::fs::create_dir_all(mountpoint).map_err(|e| io("create", mountpoint, e))?;
        let backing = backing
            .canonicalize()
            .map_err(|e| io("backing directory", backing, e))?;
        let switch = FaultSwitch::default();
        let fs = Passthrough::new(backing, switch.clone());
        let options = [
            MountOption::FSName("slapos-faultyfs".into()),
            MountOption::RW,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        let session = fuser::spawn_mount2(fs, mountpoint, &options)
            .map_err(|e| io("mount a FUSE passthrough on", mountpoint, e))?;
        Ok(FaultyFs {
            mountpoint: mountpoint.to_path_buf(),
            switch,
            session: Some(session),
        })
    }

    /// The switch (to hand to another task: it is shared with the filesystem's thread).
    pub fn switch(&self) -> FaultSwitch {
        self.switch.clone()
    }

    pub fn set(&self, mode: FaultMode) {
        self.switch.set(mode);
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for FaultyFs {
    fn drop(&mut self) {
        // fuser's own unmount first; if a process still holds files there (it then
        // says so in its log), detach lazily. Its thread ends when the kernel drops the
        // connection.
        self.switch.set(FaultMode::Healthy);
        drop(self.session.take());
        if is_mounted(&self.mountpoint) {
            umount_lazy(&self.mountpoint);
        }
    }
}

/// Whether `dir` is a mount point (in `/proc/self/mountinfo`).
fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dir = dir.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == dir))
}

fn umount_lazy(dir: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status();
}

fn run_mount(args: &[&str], dir: &Path) -> Result<(), HarnessError> {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| HarnessError::Io("run mount".into(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Io(
            format!(
                "mount {} {}: {}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            std::io::Error::other("mount failed"),
        ))
    }
}

/// A tmpfs mounted on a directory (root only), that can be resized; unmounted
/// (`umount -l`) when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size_mb: u64) -> Result<Tmpfs, HarnessError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::Io(format!("create {}", dir.display()), e))?;
        run_mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m,mode=0700"),
                "tmpfs",
            ],
            dir,
        )?;
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// A new size limit: the kernel refuses one below what is already used.
    pub fn resize_bytes(&self, bytes: u64) -> Result<(), HarnessError> {
        let kib = bytes.div_ceil(1024);
        run_mount(&["-o", &format!("remount,size={kib}k")], &self.dir)
    }

    /// (used, free) bytes of the filesystem.
    pub fn usage(&self) -> Result<(u64, u64), HarnessError> {
        let s = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| HarnessError::Io(format!("statvfs {}", self.dir.display()), e.into()))?;
        let frag = s.fragment_size();
        let used = s.blocks().saturating_sub(s.blocks_free()) * frag;
        Ok((used, s.blocks_available() * frag))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        umount_lazy(&self.dir);
    }
}

/// A replica's data directory on a faulty disk: a tmpfs of `size_mb` (`<data>.backing`)
/// seen through a [`FaultyFs`] mounted on the data directory. Dropped in that order:
/// the passthrough first, then the tmpfs.
pub struct FaultyDisk {
    pub fs: FaultyFs,
    pub tmpfs: Tmpfs,
    size_mb: u64,
}

impl FaultyDisk {
    pub fn mount(data_dir: &Path, size_mb: u64) -> Result<FaultyDisk, HarnessError> {
        let mut backing = data_dir.as_os_str().to_owned();
        backing.push(".backing");
        let tmpfs = Tmpfs::mount(Path::new(&backing), size_mb)?;
        let fs = FaultyFs::mount(tmpfs.dir(), data_dir)?;
        Ok(FaultyDisk { fs, tmpfs, size_mb })
    }

    /// Shrink the tmpfs to what is used plus `room` bytes: the disk is (about to be) full.
    pub fn fill(&self, room: u64) -> Result<(), HarnessError> {
        let (used, _) = self.tmpfs.usage()?;
        self.tmpfs.resize_bytes(used + room)
    }

    /// The tmpfs back at its first size.
    pub fn grow_back(&self) -> Result<(), HarnessError> {
        self.tmpfs.resize_bytes(self.size_mb << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The passthrough mirrors its backing directory, fails writes and syncs with `EIO`
    /// while switched, passes reads, and comes back once healed.
    #[test]
    fn passthrough_fails_on_demand_and_heals() {
        if !root() {
            eprintln!("skipped: mounting a FUSE filesystem needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("faultyfs-test-{}", std::process::id()));
        let backing = dir.join("backing");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&backing).expect("backing dir");
        {
            let fs = FaultyFs::mount(&backing, &mnt).expect("mount");
            std::fs::create_dir(mnt.join("sub")).expect("mkdir");
            let path = mnt.join("sub/file");
            let mut f = File::create(&path).expect("create");
            f.write_all(b"hello").expect("write");
            f.sync_all().expect("fsync");
            assert_eq!(
                std::fs::read(backing.join("sub/file")).expect("backing"),
                b"hello"
            );
            std::fs::rename(&path, mnt.join("sub/renamed")).expect("rename");
            assert_eq!(
                std::fs::read(mnt.join("sub/renamed")).expect("read"),
                b"hello"
            );

            fs.set(FaultMode::FailWrites);
            let mut f = OpenOptions::new()
                .read(true)
                .open(mnt.join("sub/renamed"))
                .expect("open for reading");
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).expect("reads pass");
            let w = OpenOptions::new().write(true).open(mnt.join("sub/renamed"));
            assert_eq!(
                w.err().and_then(|e| e.raw_os_error()),
                Some(libc::EIO),
                "opening for writing fails"
            );
            let c = File::create(mnt.join("sub/new"));
            assert_eq!(c.err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
            assert!(fs.switch().injected() >= 2);
            let _ = std::fs::metadata(&mnt).expect("statfs and getattr pass");

            fs.set(FaultMode::FailAll);
            assert!(std::fs::read_dir(mnt.join("sub")).is_err());

            fs.set(FaultMode::Healthy);
            let mut f = OpenOptions::new()
                .append(true)
                .open(mnt.join("sub/renamed"))
                .expect("open again");
            f.write_all(b" world").expect("append");
            f.sync_data().expect("fdatasync");
            assert_eq!(
                std::fs::read(backing.join("sub/renamed")).expect("backing"),
                b"hello world"
            );
            let names: Vec<_> = std::fs::read_dir(mnt.join("sub"))
                .expect("readdir")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("renamed")]);
            std::fs::remove_file(mnt.join("sub/renamed")).expect("unlink");
            std::fs::remove_dir(mnt.join("sub")).expect("rmdir");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !mounts.contains(&mnt.display().to_string()),
            "unmounted on drop"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
