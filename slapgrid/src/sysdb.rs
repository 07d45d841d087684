//! The user and group databases through the C library's reentrant lookups (NSS aware;
//! nix's `User` and `Group`), for whoever needs a user's ids, home or groups: format, the
//! process runner, the supervisor.

use std::path::PathBuf;

use nix::unistd::{Group, Uid, User};

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

fn entry_of(user: User) -> PwEntry {
    PwEntry {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
        shell: user.shell.to_string_lossy().into_owned(),
    }
}

/// The user `name`, if it exists (a failed lookup counts as absent).
pub fn passwd(name: &str) -> Option<PwEntry> {
    User::from_name(name).ok().flatten().map(entry_of)
}

/// The name of the user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_by_uid(uid).map(|p| p.name)
}

/// The user `uid`, if it exists.
pub fn passwd_by_uid(uid: u32) -> Option<PwEntry> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(entry_of)
}

/// The group `name`, if it exists.
pub fn group(name: &str) -> Option<GrEntry> {
    Group::from_name(name).ok().flatten().map(|g| GrEntry {
        gid: g.gid.as_raw(),
        members: g.mem,
    })
}
