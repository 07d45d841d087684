//! The process table from `/proc/<pid>/stat`: what the supervisor needs to find a
//! service's process group or session, and what the usage report needs to measure a
//! partition. Processes that vanish while read are skipped.

/// One process.
#[derive(Debug, Clone)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
    /// User and system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks (with the pid, unique across pid reuse).
    pub start_ticks: u64,
    pub rss_pages: u64,
    /// Owner (uid of `/proc/<pid>`).
    pub uid: u32,
}

impl ProcStat {
    /// Alive: neither a zombie nor dead.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Parses one `stat` line; the command name may hold spaces and parentheses, so fields
/// are counted after the last `)`.
fn parse(pid: i32, stat: &str, uid: u32) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    let int = |field: usize| f.get(field - 3).and_then(|v| v.parse::<i32>().ok());
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        pgrp: int(5)?,
        session: int(6)?,
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        rss_pages: num(24)?,
        uid,
    })
}

/// Every process of the machine.
pub fn all() -> Vec<ProcStat> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let uid = std::fs::metadata(entry.path())
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if let Some(p) = parse(pid, &stat, uid) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line =
            "42 (a (b) c) S 1 40 41 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 5555 1000 12 rest";
        let p = parse(42, line, 0).unwrap();
        assert_eq!((p.state, p.pgrp, p.session), ('S', 40, 41));
        assert_eq!((p.cpu_ticks, p.start_ticks, p.rss_pages), (10, 5555, 12));
    }

    #[test]
    fn finds_this_process() {
        let me = std::process::id() as i32;
        assert!(all().iter().any(|p| p.pid == me && p.is_live()));
    }
}
