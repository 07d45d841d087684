//! Running a closure inside a named network namespace (`ip netns add NAME` makes
//! `/run/netns/NAME`): on a scoped thread of its own that `setns`es into it, so the rest
//! of the process stays where it is. What the closure creates there (a TUN device, a
//! socket) stays in that namespace after the thread ends.

use std::fs::File;

use nix::sched::{setns, CloneFlags};

use crate::WanError;

/// The path `ip netns` gives namespace `name`.
pub fn path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// `f()` run on a thread inside namespace `name`.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, WanError> {
    let ns = File::open(path(name)).map_err(|source| WanError::Netns {
        ns: name.to_string(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| WanError::Netns {
                ns: name.to_string(),
                source: e.into(),
            })?;
            Ok(f())
        })
        .join()
        .map_err(|_| WanError::Panicked(format!("thread in namespace {name}")))?
    })
}
