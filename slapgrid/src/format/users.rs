//! Users and groups (slapgrid-behaviour.md 1.3) through `groupadd`, `useradd`, `usermod`
//! and `passwd -l`, read back through the C library. Unlike the reference, nothing is run
//! when the user is already as wanted, a user of the same name whose home is elsewhere is
//! never taken over, and a failing `useradd`/`usermod` is an error.

use std::path::{Path, PathBuf};

use super::host::Host;
use super::FormatError;

/// The shell of every user format creates.
pub(crate) const SHELL: &str = "/bin/sh";

pub(crate) use crate::sysdb::{group, passwd, user_name, PwEntry};

/// Whether two paths name the same directory (textually, or once resolved).
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    let trim = |p: &Path| PathBuf::from(p.to_string_lossy().trim_end_matches('/'));
    if trim(a) == trim(b) {
        return true;
    }
    matches!(
        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
        (Ok(x), Ok(y)) if x == y
    )
}

/// Whether `passwd -S` reports the password locked (`L` on Debian, `LK` on Red Hat).
fn password_locked(host: &Host, name: &str) -> Result<bool, FormatError> {
    let (status, text) = host.probe("passwd", &["-S", name])?;
    Ok(status.success()
        && text
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s == "L" || s == "LK"))
}

/// Makes `name` a user with its own primary group, home `home`, shell `/bin/sh`, member of
/// `extra_group`, password locked. Refuses a user of that name whose home is elsewhere.
/// Returns its entry (`None` only in a dry run where it does not exist yet).
pub(crate) fn ensure_user(
    host: &mut Host,
    name: &str,
    home: &Path,
    extra_group: Option<&str>,
) -> Result<Option<PwEntry>, FormatError> {
    let existing = passwd(name);
    if let Some(user) = &existing {
        if !same_path(&user.home, home) {
            return Err(FormatError::UserConflict {
                user: name.to_owned(),
                home: user.home.clone(),
                expected: home.to_owned(),
            });
        }
    }
    let own_group = group(name);
    if own_group.is_none() {
        host.change("groupadd", &[name])?;
    }
    let home_text = home.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["-d", &home_text, "-g", name, "-s", SHELL];
    match &existing {
        None => {
            args.push("-r");
            if let Some(extra) = extra_group {
                args.extend(["-G", extra]);
            }
            args.push(name);
            host.change("useradd", &args)?;
            host.change("passwd", &["-l", name])?;
        }
        Some(user) => {
            let primary_ok = own_group.as_ref().is_some_and(|g| g.gid == user.gid);
            let extra_ok = extra_group.is_none_or(|extra| {
                group(extra)
                    .is_some_and(|g| g.gid == user.gid || g.members.iter().any(|m| m == name))
            });
            if !primary_ok || !extra_ok || user.shell != SHELL {
                if let Some(extra) = extra_group {
                    args.extend(["-aG", extra]);
                }
                args.push(name);
                host.change("usermod", &args)?;
            }
            if !password_locked(host, name)? {
                host.change("passwd", &["-l", name])?;
            }
        }
    }
    if host.dry_run() {
        return Ok(passwd(name));
    }
    passwd(name).map(Some).ok_or_else(|| FormatError::Command {
        command: format!("useradd {name}"),
        status: "exit 0".into(),
        output: format!("user {name} still does not exist"),
    })
}

/// Deletes the user `name` and its group when its home is under `under` (a user format
/// made). The group alone (no such user) is deleted only when `orphan_group` (the name
/// follows format's naming). What fails is added to `failures`.
pub(crate) fn remove_user(
    host: &mut Host,
    name: &str,
    under: &Path,
    orphan_group: bool,
    failures: &mut Vec<String>,
) {
    let remove_group = match passwd(name) {
        None => orphan_group,
        Some(user) if user.home.starts_with(under) => match host.change("userdel", &[name]) {
            Ok(()) => true,
            Err(e) => {
                failures.push(e.to_string());
                false
            }
        },
        Some(user) => {
            tracing::info!(
                "leaving user {name}: its home {} is not under {}",
                user.home.display(),
                under.display()
            );
            false
        }
    };
    if remove_group && group(name).is_some() {
        if let Err(e) = host.change("groupdel", &[name]) {
            failures.push(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_user_database() {
        let root = passwd("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(group("root").is_some_and(|g| g.gid == 0));
        assert!(passwd("no-such-user-slapformat").is_none());
        assert!(group("no-such-group-slapformat").is_none());
    }

    #[test]
    fn paths_compare_without_trailing_slashes() {
        assert!(same_path(
            Path::new("/srv/slapgrid/slappart0/"),
            Path::new("/srv/slapgrid/slappart0")
        ));
        assert!(!same_path(Path::new("/home/a"), Path::new("/srv/a")));
    }
}
