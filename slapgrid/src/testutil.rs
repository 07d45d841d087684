//! Helpers of the crate's own tests.

use std::process::Command;

use crate::process::Identity;

/// A real Unix user (and its group) for a test run as root, removed when dropped.
pub struct TestUser {
    pub identity: Identity,
}

impl TestUser {
    /// `tag` keeps names apart between tests running at once (at most 6 characters).
    pub fn new(tag: &str) -> TestUser {
        let name = format!("sgt{tag}{:x}", std::process::id() & 0xffffff);
        // A leftover of an interrupted run of this very process id.
        let _ = Command::new("userdel").arg(&name).output();
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
            .arg(&name)
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let identity = Identity::by_name(&name).expect("the new user");
        TestUser { identity }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let name = &self.identity.name;
        // userdel refuses a user whose processes are still dying (a fork bomb's
        // children): kill and retry for a while.
        for _ in 0..50 {
            let _ = Command::new("pkill").args(["-KILL", "-u", name]).output();
            if Command::new("userdel")
                .arg(name)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("groupdel").arg(name).output();
    }
}
