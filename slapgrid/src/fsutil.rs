//! Writing files inside a partition as root without trusting the partition: its user owns
//! the directory and could have replaced any path with a symlink to `/etc/shadow`. Every
//! component is opened relative to the previous one with `O_NOFOLLOW`, and the file is
//! created afresh with `O_EXCL`, so nothing outside the partition is ever written.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn cstr(name: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::other("NUL in a file name"))
}

fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_dir_at(dir: libc::c_int, name: &CString) -> std::io::Result<OwnedFd> {
    // SAFETY: valid descriptor and NUL-terminated name; the result is owned here.
    let fd = check(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
        )
    })?;
    // SAFETY: fd was just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    let base_c = cstr(base.as_os_str())?;
    let mut dir = open_dir_at(libc::AT_FDCWD, &base_c)?;
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
    let Some((file, parents)) = parts.split_last() else {
        return Err(std::io::Error::other("empty path"));
    };
    for part in parents {
        let name = cstr(part)?;
        // SAFETY: valid descriptor and name.
        let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o750) };
        let created = rc == 0;
        if !created {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        let next = open_dir_at(dir.as_raw_fd(), &name)?;
        if created {
            if let Some((uid, gid)) = owner {
                // SAFETY: valid descriptor.
                check(unsafe { libc::fchown(next.as_raw_fd(), uid, gid) })?;
            }
        }
        dir = next;
    }
    let name = cstr(file)?;
    // Unchanged? Read the current file without following a link.
    // SAFETY: valid descriptor and name.
    let existing = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if existing >= 0 {
        // SAFETY: just opened.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(existing) });
        let meta = f.metadata()?;
        use std::os::unix::fs::MetadataExt;
        let owner_ok = owner.is_none_or(|(u, g)| meta.uid() == u && meta.gid() == g);
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
    // SAFETY: valid descriptor and name.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    // SAFETY: valid descriptor and name; the result is owned below.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: just opened.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(content)?;
    if let Some((uid, gid)) = owner {
        // SAFETY: valid descriptor.
        check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })?;
    }
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) })?;
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
    }
}
