//! Which cgroup hierarchies the host mounts and where this process sits in them, read
//! from `/proc/self/mountinfo` and `/proc/self/cgroup` (pure parsers, tested on the texts
//! of real hosts), and the choice between v2 and v1.

use std::path::{Component, Path, PathBuf};

use super::{Base, Cgroups, Controller, Version};

/// One cgroup mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub version: Version,
    /// The mount point (`/sys/fs/cgroup/memory`).
    pub point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless mounted from a namespace).
    pub root: String,
    /// v1: the controllers bound to this hierarchy (from the super options); v2: none
    /// (read from `cgroup.controllers`).
    pub controllers: Vec<Controller>,
}

/// `\040` and friends: mountinfo escapes spaces, tabs, newlines and backslashes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let code = &bytes[i + 1..i + 4];
            if code.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let text = std::str::from_utf8(code).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(text, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of a mountinfo text. A line is
/// `id parent major:minor root point options [optional fields] - fstype source super`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype)) =
            (fields.get(3), fields.get(4), fields.get(dash + 1))
        else {
            continue;
        };
        let super_options = fields.get(dash + 3).copied().unwrap_or_default();
        let version = match *fstype {
            "cgroup2" => Version::V2,
            "cgroup" => Version::V1,
            _ => continue,
        };
        let controllers = match version {
            Version::V2 => Vec::new(),
            Version::V1 => super_options
                .split(',')
                .filter_map(Controller::from_name)
                .collect(),
        };
        mounts.push(CgroupMount {
            version,
            point: PathBuf::from(unescape(point)),
            root: unescape(root),
            controllers,
        });
    }
    mounts
}

/// One line of `/proc/self/cgroup`: `id:controllers:path` (v2: `0::path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// `cgroup_root`: absolute (from the hierarchy's root) or relative (below the cgroup
/// this process is in); plain components only.
pub fn valid_root(root: &str) -> bool {
    let path = Path::new(root);
    !root.is_empty()
        && !root.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// The directory of `root` in the hierarchy mounted at `mount`, where this process is in
/// cgroup `own` (as `/proc/self/cgroup` names it).
fn base_dir(mount: &CgroupMount, own: &str, root: &str) -> PathBuf {
    let relative_to_mount = |path: &str| -> PathBuf {
        // The mount shows `mount.root` as its top: strip it from our own path.
        let stripped = if mount.root == "/" {
            path
        } else {
            path.strip_prefix(mount.root.as_str()).unwrap_or(path)
        };
        PathBuf::from(stripped.trim_start_matches('/'))
    };
    let within = if root.starts_with('/') {
        PathBuf::from(root.trim_start_matches('/'))
    } else {
        relative_to_mount(own).join(root)
    };
    mount.point.join(within)
}

/// What the host offers, for each version: the hierarchy roots with their controllers.
pub(crate) struct Offer {
    pub version: Version,
    pub bases: Vec<Base>,
}

impl Offer {
    fn controllers(&self) -> usize {
        self.bases.iter().map(|b| b.controllers.len()).sum()
    }
}

/// v2: the unified mount and the controllers its root offers (`cgroup.controllers`,
/// read through `read_controllers`), among those we use.
pub(crate) fn offer_v2(
    mounts: &[CgroupMount],
    own: &[Membership],
    root: &str,
    read_controllers: &dyn Fn(&Path) -> Option<String>,
) -> Option<Offer> {
    let mount = mounts.iter().find(|m| m.version == Version::V2)?;
    let own_path = own
        .iter()
        .find(|m| m.controllers.is_empty())
        .map(|m| m.path.as_str())
        .unwrap_or("/");
    let offered = read_controllers(&mount.point).unwrap_or_default();
    let controllers: Vec<Controller> = offered
        .split_whitespace()
        .filter_map(Controller::from_name)
        .filter(|c| *c != Controller::Cpuacct)
        .collect();
    Some(Offer {
        version: Version::V2,
        bases: vec![Base {
            dir: base_dir(mount, own_path, root),
            controllers,
        }],
    })
}

/// v1: one base per hierarchy carrying cpu, cpuacct, cpuset, memory or pids (co-mounted
/// controllers share one).
pub(crate) fn offer_v1(mounts: &[CgroupMount], own: &[Membership], root: &str) -> Offer {
    let mut bases: Vec<Base> = Vec::new();
    for mount in mounts.iter().filter(|m| m.version == Version::V1) {
        let used: Vec<Controller> = mount
            .controllers
            .iter()
            .copied()
            .filter(|c| !bases.iter().any(|b| b.controllers.contains(c)))
            .collect();
        if used.is_empty() {
            continue;
        }
        let names: Vec<&str> = used.iter().map(|c| c.name()).collect();
        let own_path = own
            .iter()
            .find(|m| names.iter().any(|n| m.controllers.iter().any(|c| c == n)))
            .map(|m| m.path.as_str())
            .unwrap_or("/");
        bases.push(Base {
            dir: base_dir(mount, own_path, root),
            controllers: used,
        });
    }
    Offer {
        version: Version::V1,
        bases,
    }
}

/// The version to use: the one asked for, or (`None`, auto) v2 when it offers at least
/// as many of our controllers as v1 (a hybrid host binds them to v1 and leaves v2
/// empty). `Err`: why there is none.
pub(crate) fn choose(
    wanted: Option<Version>,
    v2: Option<Offer>,
    v1: Offer,
) -> Result<Cgroups, String> {
    let v2_count = v2.as_ref().map_or(0, Offer::controllers);
    let pick = match wanted {
        Some(Version::V2) => v2.ok_or_else(|| "no cgroup v2 hierarchy is mounted".to_owned())?,
        Some(Version::V1) => v1,
        None if v2_count > 0 && v2_count >= v1.controllers() => match v2 {
            Some(v2) => v2,
            None => v1,
        },
        None => v1,
    };
    if pick.controllers() == 0 {
        return Err(match (wanted, pick.version) {
            (None, _) => {
                "neither a cgroup v2 hierarchy offering cpu, cpuset, memory or pids nor a v1 \
                          hierarchy of cpu, cpuacct, cpuset, memory or pids is mounted"
                    .to_owned()
            }
            (_, Version::V2) => {
                "the cgroup v2 hierarchy offers none of cpu, cpuset, memory, pids".to_owned()
            }
            (_, Version::V1) => {
                "no cgroup v1 hierarchy of cpu, cpuacct, cpuset, memory or pids is mounted"
                    .to_owned()
            }
        });
    }
    Ok(Cgroups {
        version: pick.version,
        bases: pick.bases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This very machine: v1 controllers, an empty v2 hierarchy, the memory controller
    /// nesting us in a cgroup of our own.
    const HYBRID: &str = "\
27 22 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 27 0:25 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
29 27 0:26 / /sys/fs/cgroup/cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpuacct
30 27 0:27 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
31 27 0:28 / /sys/fs/cgroup/pids rw,relatime shared:13 - cgroup cgroup rw,pids
32 27 0:29 / /sys/fs/cgroup/systemd rw,relatime shared:14 - cgroup cgroup rw,name=systemd
33 27 0:30 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n\
        2:cpuacct:/\n1:cpu:/\n0::/\n";

    /// A systemd host on v2 only, the agent in its service's cgroup.
    const UNIFIED: &str =
        "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
    const UNIFIED_SELF: &str = "0::/system.slice/slapos-node.service\n";

    #[test]
    fn parses_mounts_and_memberships() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[0].point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(mounts[0].controllers, vec![Controller::Cpu]);
        assert!(
            mounts[4].controllers.is_empty(),
            "name=systemd is no controller"
        );
        assert_eq!(mounts[5].version, Version::V2);
        let own = parse_proc_cgroup(HYBRID_SELF);
        assert_eq!(own[2].controllers, vec!["memory".to_string()]);
        assert_eq!(own[2].path, "/process_api/abc");
        assert_eq!(
            parse_mountinfo("36 35 0:5 / /a\\040b rw - cgroup cgroup rw,cpu,cpuacct\n")[0],
            CgroupMount {
                version: Version::V1,
                point: PathBuf::from("/a b"),
                root: "/".into(),
                controllers: vec![Controller::Cpu, Controller::Cpuacct],
            }
        );
    }

    #[test]
    fn a_hybrid_host_uses_v1_and_relative_roots_nest_under_our_own_cgroup() {
        let mounts = parse_mountinfo(HYBRID);
        let own = parse_proc_cgroup(HYBRID_SELF);
        let empty = |_: &Path| Some("hugetlb\n".to_owned());
        let v2 = offer_v2(&mounts, &own, "/slapos", &empty);
        let chosen = choose(None, v2, offer_v1(&mounts, &own, "sg")).unwrap();
        assert_eq!(chosen.version, Version::V1);
        let dirs: Vec<(PathBuf, Vec<Controller>)> = chosen
            .bases
            .iter()
            .map(|b| (b.dir.clone(), b.controllers.clone()))
            .collect();
        assert_eq!(
            dirs,
            vec![
                (
                    PathBuf::from("/sys/fs/cgroup/cpu/sg"),
                    vec![Controller::Cpu]
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/cpuacct/sg"),
                    vec![Controller::Cpuacct]
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/sg"),
                    vec![Controller::Memory]
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/pids/sg"),
                    vec![Controller::Pids]
                ),
            ]
        );
        // Asking for v2 there is an error that says why.
        let v2 = offer_v2(&mounts, &own, "/slapos", &empty);
        let err = choose(Some(Version::V2), v2, offer_v1(&mounts, &own, "/slapos")).unwrap_err();
        assert!(err.contains("v2") && err.contains("none"), "{err}");
    }

    #[test]
    fn a_unified_host_uses_v2_with_absolute_or_relative_roots() {
        let mounts = parse_mountinfo(UNIFIED);
        let own = parse_proc_cgroup(UNIFIED_SELF);
        let offered = |p: &Path| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".to_owned())
        };
        let v2 = offer_v2(&mounts, &own, "/slapos", &offered);
        let chosen = choose(None, v2, offer_v1(&mounts, &own, "/slapos")).unwrap();
        assert_eq!(chosen.version, Version::V2);
        assert_eq!(chosen.bases[0].dir, Path::new("/sys/fs/cgroup/slapos"));
        assert_eq!(
            chosen.bases[0].controllers,
            vec![
                Controller::Cpuset,
                Controller::Cpu,
                Controller::Memory,
                Controller::Pids
            ]
        );
        let v2 = offer_v2(&mounts, &own, "partitions", &offered).unwrap();
        assert_eq!(
            v2.bases[0].dir,
            Path::new("/sys/fs/cgroup/system.slice/slapos-node.service/partitions")
        );
    }

    #[test]
    fn nothing_mounted_is_unavailable_with_the_reason() {
        let err = choose(None, None, offer_v1(&[], &[], "/slapos")).unwrap_err();
        assert!(err.contains("neither"), "{err}");
    }

    #[test]
    fn roots_are_plain_paths() {
        for good in ["/slapos", "slapos", "a/b", "/x.y-z"] {
            assert!(valid_root(good), "{good}");
        }
        for bad in ["", "/", "../x", "a/../b", "./a", "a\0b"] {
            assert!(!valid_root(bad), "{bad:?}");
        }
    }
}
