//! The user and group databases through the C library's reentrant lookups (NSS aware),
//! for whoever needs a user's ids, home or groups: format, the process runner, the
//! supervisor.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A `passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PwEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// A `group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrEntry {
    pub gid: u32,
    pub members: Vec<String>,
}

fn cstr(ptr: *const libc::c_char) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-null NUL-terminated string inside the buffer of the caller.
    unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec()
}

/// Calls a reentrant `get*_r` lookup with a buffer grown on `ERANGE`.
fn with_buffer<T>(mut call: impl FnMut(&mut [u8]) -> (libc::c_int, Option<T>)) -> Option<T> {
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        let (rc, found) = call(&mut buf);
        if rc == libc::ERANGE && size < (1 << 24) {
            size *= 4;
            continue;
        }
        return found;
    }
}

fn entry_of(pwd: &libc::passwd) -> PwEntry {
    PwEntry {
        name: String::from_utf8_lossy(&cstr(pwd.pw_name)).into_owned(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: PathBuf::from(OsStr::from_bytes(&cstr(pwd.pw_dir))),
        shell: String::from_utf8_lossy(&cstr(pwd.pw_shell)).into_owned(),
    }
}

/// The user `name`, if it exists.
pub fn passwd(name: &str) -> Option<PwEntry> {
    let c = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: zeroed passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; results point into `buf`.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        (0, Some(entry_of(&pwd)))
    })
}

/// The name of the user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_by_uid(uid).map(|p| p.name)
}

/// The user `uid`, if it exists.
pub fn passwd_by_uid(uid: u32) -> Option<PwEntry> {
    with_buffer(|buf| {
        // SAFETY: as in `passwd`.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: as in `passwd`.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        (0, Some(entry_of(&pwd)))
    })
}

/// The group `name`, if it exists.
pub fn group(name: &str) -> Option<GrEntry> {
    let c = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: zeroed group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; results point into `buf`.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        let mut members = Vec::new();
        let mut member = grp.gr_mem;
        // SAFETY: gr_mem is a NULL-terminated array of strings inside `buf`.
        unsafe {
            while !member.is_null() && !(*member).is_null() {
                members.push(String::from_utf8_lossy(&cstr(*member)).into_owned());
                member = member.add(1);
            }
        }
        (
            0,
            Some(GrEntry {
                gid: grp.gr_gid,
                members,
            }),
        )
    })
}
