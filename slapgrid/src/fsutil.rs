//! Reading and writing files inside a partition as root without trusting the partition:
//! its user owns the directory and could have replaced any path with a symlink to
//! `/etc/shadow`, or a FIFO that blocks a reader forever. Every component is opened
//! relative to the previous one with `O_NOFOLLOW`; files are created afresh with
//! `O_EXCL`; reads accept only regular files (opened `O_NONBLOCK`, size-capped). Nothing
//! outside the partition is ever written, read or removed through these functions.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

fn cstr(name: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::other("NUL in a file name"))
}

/// How every existing file is opened: no link followed, a FIFO never blocks.
const READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

fn open_dir_at(dir: impl AsFd, name: &CString) -> std::io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name.as_c_str(),
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )?)
}

/// The components of a plain relative path (no `..`, not absolute, not empty).
fn parts(rel: &Path) -> std::io::Result<Vec<&std::ffi::OsStr>> {
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(std::io::Error::other(format!(
                "{} is not a plain relative path",
                rel.display()
            ))),
        })
        .collect::<Result<_, _>>()?;
    if parts.is_empty() {
        return Err(std::io::Error::other("empty path"));
    }
    Ok(parts)
}

/// The directory `base/rel` opened without following any link (none created).
fn open_dir_in(base: &Path, rel: &[&std::ffi::OsStr]) -> std::io::Result<OwnedFd> {
    let mut dir = open_dir_at(AT_FDCWD, &cstr(base.as_os_str())?)?;
    for part in rel {
        dir = open_dir_at(&dir, &cstr(part)?)?;
    }
    Ok(dir)
}

/// Reads the regular file `base/rel` (at most `max` bytes; larger is an error). `None`
/// when it does not exist; an error when it is a link, a FIFO, a directory...
pub fn read_in(base: &Path, rel: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    read_checked(base, rel, max, None)
}

/// As [`read_in`], and the file must be owned by `uid` with a single link (a file the
/// partition user could not have made or hard-linked).
pub fn read_owned_in(
    base: &Path,
    rel: &Path,
    max: u64,
    uid: u32,
) -> std::io::Result<Option<Vec<u8>>> {
    read_checked(base, rel, max, Some(uid))
}

fn read_checked(
    base: &Path,
    rel: &Path,
    max: u64,
    uid: Option<u32>,
) -> std::io::Result<Option<Vec<u8>>> {
    let parts = parts(rel)?;
    let (file, dirs) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::other("empty path"))?;
    let dir = match open_dir_in(base, dirs) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = cstr(file)?;
    let f = match openat(&dir, name.as_c_str(), READ_FLAGS, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            rel.display()
        )));
    }
    {
        use std::os::unix::fs::MetadataExt;
        if uid.is_some_and(|u| meta.uid() != u || meta.nlink() != 1) {
            return Err(std::io::Error::other(format!(
                "{} is not the agent's own file",
                rel.display()
            )));
        }
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!(
            "{} is larger than {max} bytes",
            rel.display()
        )));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "{} is larger than {max} bytes",
            rel.display()
        )));
    }
    Ok(Some(out))
}

/// Opens the regular file `base/rel` for reading, following no symbolic link below
/// `base` (`ELOOP`/`ENOTDIR` when one is on the way), never blocking on a FIFO. An error
/// when it is missing or not a regular file.
pub fn open_file_in(base: &Path, rel: &Path) -> std::io::Result<std::fs::File> {
    let parts = parts(rel)?;
    let (file, dirs) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::other("empty path"))?;
    let dir = open_dir_in(base, dirs)?;
    let name = cstr(file)?;
    let f = std::fs::File::from(openat(&dir, name.as_c_str(), READ_FLAGS, Mode::empty())?);
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            rel.display()
        )));
    }
    Ok(f)
}

/// The first `n` bytes (or fewer) of the regular file `base/rel`, as [`open_file_in`]
/// opens it: a script's `#!` line.
pub fn read_head_in(base: &Path, rel: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let f = open_file_in(base, rel)?;
    let mut out = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// A small text file of the partition (`.timestamp`, retention dates): `None` when
/// absent or not a plain regular file of at most 4 KiB.
pub fn read_text_in(base: &Path, rel: &str) -> Option<String> {
    read_in(base, Path::new(rel), 4096)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// The names of the regular files directly in `base/rel` (links and others skipped).
pub fn list_files_in(base: &Path, rel: &Path) -> std::io::Result<Vec<String>> {
    list_in(base, rel, |t| t.is_file())
}

/// The names of the entries directly in `base/rel` that are not directories (regular
/// files and links: a partition's services), the directory itself reached without
/// following a link.
pub fn list_non_dirs_in(base: &Path, rel: &Path) -> std::io::Result<Vec<String>> {
    list_in(base, rel, |t| !t.is_dir())
}

fn list_in(
    base: &Path,
    rel: &Path,
    keep: impl Fn(std::fs::FileType) -> bool,
) -> std::io::Result<Vec<String>> {
    let parts = parts(rel)?;
    let dir = match open_dir_in(base, &parts) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Listing through /proc/self/fd keeps to the very directory opened above.
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&listing)? {
        let entry = entry?;
        if entry.file_type().is_ok_and(&keep) {
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Removes the file `base/rel` (not following links; absent is fine).
pub fn remove_in(base: &Path, rel: &Path) -> std::io::Result<()> {
    let parts = parts(rel)?;
    let (file, dirs) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::other("empty path"))?;
    let dir = match open_dir_in(base, dirs) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let name = cstr(file)?;
    match unlinkat(&dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the directories of `base/rel` (0750, owned by `owner` when given) without
/// following links.
pub fn mkdir_in(base: &Path, rel: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let mut dir = open_dir_at(AT_FDCWD, &cstr(base.as_os_str())?)?;
    for part in parts(rel)? {
        dir = mkdir_at(&dir, part, owner)?;
    }
    Ok(())
}

fn mkdir_at(
    dir: &OwnedFd,
    part: &std::ffi::OsStr,
    owner: Option<(u32, u32)>,
) -> std::io::Result<OwnedFd> {
    let name = cstr(part)?;
    let created = match mkdirat(dir, name.as_c_str(), Mode::from_bits_truncate(0o750)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(e.into()),
    };
    let next = open_dir_at(dir, &name)?;
    if created {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&next, Some(uid), Some(gid))?;
        }
    }
    Ok(next)
}

/// Appends `line` to the log `base/rel`, keeping its last `keep` bytes (rewritten with
/// [`write_in`], so never through a link).
pub fn append_in(
    base: &Path,
    rel: &Path,
    line: &[u8],
    keep: usize,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut content = read_in(base, rel, (keep as u64) * 2)
        .ok()
        .flatten()
        .unwrap_or_default();
    content.extend_from_slice(line);
    if content.len() > keep {
        content.drain(..content.len() - keep);
    }
    write_in(base, rel, &content, 0o640, owner).map(|_| ())
}

/// Writes `content` at `base/rel` with `mode`, owned by `owner` (uid, gid) when given;
/// missing parent directories are created 0750 with the same owner. Returns whether the
/// file changed (same bytes and mode: untouched).
pub fn write_in(
    base: &Path,
    rel: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<bool> {
    let parts = parts(rel)?;
    let (file, parents) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::other("empty path"))?;
    let mut dir = open_dir_at(AT_FDCWD, &cstr(base.as_os_str())?)?;
    for part in parents {
        dir = mkdir_at(&dir, part, owner)?;
    }
    let name = cstr(file)?;
    // Unchanged? Read the current file without following a link.
    if let Ok(existing) = openat(&dir, name.as_c_str(), READ_FLAGS, Mode::empty()) {
        let mut f = std::fs::File::from(existing);
        let meta = f.metadata()?;
        use std::os::unix::fs::MetadataExt;
        let owner_ok = owner.is_none_or(|(u, g)| meta.uid() == u && meta.gid() == g);
        // Only a plain file of ours is compared (a FIFO would block the read).
        if meta.is_file()
            && meta.mode() & 0o7777 == mode
            && owner_ok
            && meta.len() == content.len() as u64
        {
            let mut current = Vec::with_capacity(content.len());
            f.read_to_end(&mut current)?;
            if current == content {
                return Ok(false);
            }
        }
    }
    // Written whole under a name of its own, then renamed over the file: a write that
    // fails (a full disk) leaves the previous file as it was, never half of the new one.
    // The rename replaces the entry itself (a link planted there is not followed).
    let mut tmp_name = b".".to_vec();
    tmp_name.extend_from_slice(name.as_bytes());
    tmp_name.extend_from_slice(b".slapos-new");
    let tmp = CString::new(tmp_name).map_err(|_| std::io::Error::other("NUL in a file name"))?;
    match unlinkat(&dir, tmp.as_c_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let mut f = std::fs::File::from(openat(
        &dir,
        tmp.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?);
    let written = (|| {
        f.write_all(content)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        // fchmod: the descriptor's own file, whatever its name points to now.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        renameat(&dir, tmp.as_c_str(), &dir, name.as_c_str()).map_err(std::io::Error::from)
    })();
    if let Err(e) = written {
        let _ = unlinkat(&dir, tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_creates_parents_and_reports_changes() {
        let dir = tempfile::tempdir().unwrap();
        let rel = Path::new("etc/service/hello");
        assert!(write_in(dir.path(), rel, b"#!/bin/sh\n", 0o750, None).unwrap());
        let p = dir.path().join(rel);
        assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o750
        );
        assert!(!write_in(dir.path(), rel, b"#!/bin/sh\n", 0o750, None).unwrap());
        assert!(write_in(dir.path(), rel, b"#!/bin/sh\n", 0o700, None).unwrap());
        assert!(write_in(dir.path(), rel, b"other", 0o700, None).unwrap());
    }

    #[test]
    fn reads_refuse_links_fifos_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("outside"), "secret").unwrap();
        std::fs::create_dir(p.join("part")).unwrap();
        let part = p.join("part");
        std::os::unix::fs::symlink(p.join("outside"), part.join(".timestamp")).unwrap();
        assert!(read_in(&part, Path::new(".timestamp"), 100).is_err());
        assert_eq!(read_text_in(&part, ".timestamp"), None);
        nix::unistd::mkfifo(&part.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(
            read_in(&part, Path::new("fifo"), 100).is_err(),
            "a FIFO must not block nor be read"
        );
        std::fs::write(part.join("big"), vec![b'x'; 200]).unwrap();
        assert!(read_in(&part, Path::new("big"), 100).is_err());
        assert_eq!(read_in(&part, Path::new("missing"), 100).unwrap(), None);
        std::fs::write(part.join("ok"), "1795626938.83").unwrap();
        assert_eq!(read_text_in(&part, "ok").as_deref(), Some("1795626938.83"));
        // A linked directory on the way is refused too.
        std::os::unix::fs::symlink(p, part.join("var")).unwrap();
        assert!(read_in(&part, Path::new("var/outside"), 100).is_err());
        assert!(list_files_in(&part, Path::new("var")).is_err());
        assert!(remove_in(&part, Path::new("var/outside")).is_err());
        assert!(p.join("outside").exists());
        assert!(mkdir_in(&part, Path::new("var/x"), None).is_err());
        let names = list_files_in(p, Path::new("part")).unwrap();
        assert_eq!(names, vec!["big".to_string(), "ok".to_string()]);
        append_in(&part, Path::new("log/a.log"), b"one\n", 8, None).unwrap();
        append_in(&part, Path::new("log/a.log"), b"two\n", 8, None).unwrap();
        append_in(&part, Path::new("log/a.log"), b"three\n", 8, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(part.join("log/a.log")).unwrap(),
            "o\nthree\n"
        );
    }

    #[test]
    fn never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "secret").unwrap();
        let part = dir.path().join("part");
        std::fs::create_dir(&part).unwrap();
        // A link as the file itself: replaced, the target untouched.
        std::os::unix::fs::symlink(&outside, part.join("buildout.cfg")).unwrap();
        write_in(&part, Path::new("buildout.cfg"), b"new", 0o640, None).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        assert!(!std::fs::symlink_metadata(part.join("buildout.cfg"))
            .unwrap()
            .file_type()
            .is_symlink());
        // A link as a parent directory: refused.
        std::os::unix::fs::symlink(dir.path(), part.join("etc")).unwrap();
        assert!(write_in(&part, Path::new("etc/outside"), b"x", 0o640, None).is_err());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        assert!(write_in(&part, Path::new("../x"), b"x", 0o640, None).is_err());
        // A link planted at the name the new content is first written under: removed,
        // not followed; nothing of it is left.
        std::os::unix::fs::symlink(&outside, part.join(".buildout.cfg.slapos-new")).unwrap();
        write_in(&part, Path::new("buildout.cfg"), b"newer", 0o640, None).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        assert_eq!(std::fs::read(part.join("buildout.cfg")).unwrap(), b"newer");
        assert!(std::fs::symlink_metadata(part.join(".buildout.cfg.slapos-new")).is_err());
    }
}
