//! `slapos node format` (slapgrid-behaviour.md 1): turns the machine into computer
//! partitions and describes them to the master.
//!
//! * Privileged (root, `alter_user` and/or `alter_network`): the software user and one
//!   user per partition ([`users`]), the node's and the partitions' addresses, ranges and
//!   taps ([`network`], decided by [`plan`]), directories owned by the partition users.
//! * Standalone (not root, or neither `alter_user` nor `alter_network`): directories of the
//!   current user and the state files only; addresses come from `input_definition_file`
//!   or are `127.0.0.1` and `::1`. No user or network command runs.
//!
//! Idempotent: what is already as wanted is left alone, so a second run modifies nothing
//! and reports `changed == false`. Partitions keep their addresses across runs (the
//! previous state is read from `computer_json`, else `computer_xml`), partitions are never
//! removed, and a smaller `partition_amount` is refused before anything is touched.
//! Differences from the reference are listed in `DESIGN-notes.md`.

mod definition;
mod host;
mod ipcalc;
mod network;
mod plan;
mod state;
mod users;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::config::NodeConfig;
use crate::process::{self, Identity};

use host::Host;
use network::Net;
use state::{Address, Computer, Ipv6Range, Partition, Tap, User};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("format configuration: {0}")]
    Config(String),
    #[error(
        "partition_amount is {configured} but {existing} partitions are already formatted \
         (see {}) and {in_use} still hold something: only free partitions are dropped, \
         nothing was changed",
        state.display()
    )]
    Shrink {
        configured: usize,
        existing: usize,
        state: PathBuf,
        /// The partitions that would go but are not free.
        in_use: String,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("previous state {}: {message}", path.display())]
    State { path: PathBuf, message: String },
    #[error("definition file {}: {message}", path.display())]
    Definition { path: PathBuf, message: String },
    #[error(
        "user {user} already exists with home {}, not {}: refusing to take it over",
        home.display(),
        expected.display()
    )]
    UserConflict {
        user: String,
        home: PathBuf,
        expected: PathBuf,
    },
    #[error("address {addr} is wanted on {wanted} but is already on {found}")]
    AddressConflict {
        addr: String,
        wanted: String,
        found: String,
    },
    #[error(
        "no global-scope IPv6 address on {interface} (needed to derive the partitions' addresses)"
    )]
    NoIpv6 { interface: String },
    #[error("{0}")]
    Network(String),
    #[error("refusing to format {}: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("cannot serialize the state: {0}")]
    Json(String),
    #[error("cannot encode the computer for the master: {0}")]
    Encode(#[from] slapos_proto::marshal::EncodeError),
}

/// What `format` produced.
#[derive(Debug, Clone)]
pub struct FormatOutcome {
    /// The computer dict (reference 1.7/1.9) to POST as the `xml` form field of
    /// `loadComputerConfigurationFromXML`: `slapos_proto::marshal::encode(&outcome.computer)`
    /// gives the payload.
    pub computer: slapos_proto::marshal::Value,
    /// Per partition, in index order.
    pub partitions: Vec<FormattedPartition>,
    /// Anything written or created this run (in a dry run: would have been).
    pub changed: bool,
    /// Whether partitions get cgroups here (`v1 (cpu, ...)`, `unavailable: ...`).
    pub cgroups: String,
    /// Partitions dropped because `partition_amount` shrank (they held nothing).
    pub dropped: Vec<String>,
}

/// One partition as formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormattedPartition {
    /// `slappartN`.
    pub reference: String,
    pub path: PathBuf,
    /// The user owning the partition directory (what its processes run as).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub ipv4: String,
    pub ipv6: String,
    pub tap: Option<String>,
}

/// What this run may touch.
#[derive(Debug, Clone, Copy)]
struct Mode {
    users: bool,
    network: bool,
}

const LOCAL_V4: &str = "127.0.0.1";
const LOCAL_V4_MASK: &str = "255.255.255.255";
const LOCAL_V6: &str = "::1";

/// Formats the node (see the module documentation). `dry_run`: only reads, logs what it
/// would change, writes nothing.
pub fn format(cfg: &NodeConfig, dry_run: bool) -> Result<FormatOutcome, FormatError> {
    let f = &cfg.format;
    let root = process::is_root();
    let mode = Mode {
        users: root && f.alter_user,
        network: root && f.alter_network,
    };
    if !root && (f.alter_user || f.alter_network) {
        tracing::info!("not running as root: standalone format (directories and state files only)");
    }
    let definition = f
        .input_definition_file
        .as_deref()
        .map(|p| definition::read(p, f.partition_amount))
        .transpose()?;
    check_config(cfg, mode, definition.is_some())?;
    let previous = state::load_previous(f.computer_json.as_deref(), f.computer_xml.as_deref())?;
    // A smaller amount drops the last partitions, only if they hold nothing.
    let mut dropped = Vec::new();
    if let Some(previous) = &previous {
        if previous.partitions.len() > f.partition_amount {
            let in_use: Vec<String> = previous.partitions[f.partition_amount..]
                .iter()
                .filter(|p| partition_in_use(cfg, p))
                .map(|p| p.reference.clone())
                .collect();
            if !in_use.is_empty() {
                return Err(FormatError::Shrink {
                    configured: f.partition_amount,
                    existing: previous.partitions.len(),
                    state: previous.path.clone(),
                    in_use: in_use.join(", "),
                });
            }
            dropped = previous.partitions[f.partition_amount..]
                .iter()
                .cloned()
                .enumerate()
                .map(|(k, p)| (f.partition_amount + k, p))
                .collect();
        }
    }
    let software_user = definition
        .as_ref()
        .and_then(|d| d.software_user.clone())
        .unwrap_or_else(|| f.software_user.clone());
    let partitions = (0..f.partition_amount)
        .map(|i| {
            skeleton(
                cfg,
                previous.as_ref(),
                definition.as_ref(),
                &software_user,
                mode.users,
                i,
            )
        })
        .collect::<Vec<_>>();
    for p in &partitions {
        check_reference(&p.reference)?;
    }
    let cgroups = if mode.users {
        crate::cgroup::detect(cfg.cgroup_mode, &cfg.cgroup_root)
    } else {
        crate::cgroup::Availability::Unavailable(
            "standalone format (not root, or no alter_user)".into(),
        )
    };
    match &cgroups {
        crate::cgroup::Availability::Available(_) => {
            tracing::info!("cgroups: {}", cgroups.describe())
        }
        other => tracing::warn!(
            "partition limits not enforced: cgroups {}",
            other.describe()
        ),
    }
    let mut run = Formatter {
        cfg,
        mode,
        host: Host::new(dry_run),
        software_user,
        definition,
        net: None,
        node: None,
        cgroups,
        dropped,
    };
    run.format(
        partitions,
        previous.as_ref().and_then(|p| p.address.clone()),
    )
}

/// A partition reference names a directory of `instance_root`: one plain path component.
fn check_reference(reference: &str) -> Result<(), FormatError> {
    let mut components = Path::new(reference).components();
    match (components.next(), components.next()) {
        (Some(std::path::Component::Normal(_)), None) if !reference.contains('/') => Ok(()),
        _ => Err(FormatError::Config(format!(
            "partition reference {reference:?} is not a plain directory name"
        ))),
    }
}

/// The checks that need nothing but the configuration.
fn check_config(cfg: &NodeConfig, mode: Mode, has_definition: bool) -> Result<(), FormatError> {
    let f = &cfg.format;
    let bad = |m: String| Err(FormatError::Config(m));
    if f.partition_base_name.is_empty() || f.user_base_name.is_empty() {
        return bad("partition_base_name and user_base_name must not be empty".into());
    }
    if !mode.network {
        return Ok(());
    }
    if f.interface_name.is_none() {
        return bad("alter_network needs interface_name".into());
    }
    match &f.ipv4_local_network {
        None if !has_definition => return bad("alter_network needs ipv4_local_network".into()),
        Some(n) if ipcalc::parse_v4_network(n).is_none() => {
            return bad(format!(
                "ipv4_local_network {n:?} is not <network>/<length>"
            ));
        }
        _ => {}
    }
    let ranges = f.partition_has_ipv6_range || (f.create_tap && f.tap_ipv6);
    let room = 1u128
        .checked_shl(u32::from(f.ipv6_prefixshift))
        .unwrap_or(u128::MAX);
    if ranges && (f.partition_amount as u128).saturating_mul(4) > room {
        return bad(format!(
            "ipv6_prefixshift {} is too small for {} partitions (2^shift must be at least 4 times the amount)",
            f.ipv6_prefixshift, f.partition_amount
        ));
    }
    Ok(())
}

/// Partition `i` before formatting: from the definition file, else the previous state,
/// else new.
fn skeleton(
    cfg: &NodeConfig,
    previous: Option<&state::Previous>,
    definition: Option<&definition::Definition>,
    software_user: &str,
    users_mode: bool,
    i: usize,
) -> Partition {
    let f = &cfg.format;
    let stored = previous.and_then(|p| p.partitions.get(i));
    let mut p = match (definition.and_then(|d| d.partitions.get(i)), stored) {
        (Some(d), _) => Partition {
            reference: d.pathname.clone(),
            path: String::new(),
            user: User {
                name: d.user.clone(),
                path: String::new(),
                additional_group_list: Vec::new(),
            },
            address_list: d.address_list.clone(),
            ipv6_range: d.ipv6_range.clone(),
            tap: Tap::named(&d.tap),
            tun: stored.map_or(serde_json::Value::Null, |s| s.tun.clone()),
            capability_list: d.capability_list.clone(),
        },
        (None, Some(s)) => s.clone(),
        (None, None) => Partition {
            reference: format!("{}{i}", f.partition_base_name),
            path: String::new(),
            user: User {
                name: format!("{}{i}", f.user_base_name),
                path: String::new(),
                additional_group_list: Vec::new(),
            },
            address_list: Vec::new(),
            ipv6_range: None,
            tap: Tap::named(&format!("{}{i}", f.tap_base_name)),
            tun: serde_json::Value::Null,
            capability_list: None,
        },
    };
    // Users mode: partition i is always run by <user_base_name><i> (a stored name could
    // be the current user's, written by a standalone run).
    if p.user.name.is_empty() || (definition.is_none() && users_mode) {
        p.user.name = format!("{}{i}", f.user_base_name);
    }
    p.path = cfg
        .partition_path(&p.reference)
        .to_string_lossy()
        .into_owned();
    p.user.path = p.path.clone();
    p.user.additional_group_list = vec![software_user.to_owned()];
    p
}

struct Formatter<'a> {
    cfg: &'a NodeConfig,
    mode: Mode,
    host: Host,
    software_user: String,
    definition: Option<definition::Definition>,
    /// Network mode: what `ip` reported.
    net: Option<Net>,
    /// Network mode: the node's IPv6 address and prefix length.
    node: Option<(Ipv6Addr, u8)>,
    /// Whether partitions get cgroups.
    cgroups: crate::cgroup::Availability,
    /// (index, partition) of the partitions a smaller amount drops (all free).
    dropped: Vec<(usize, Partition)>,
}

/// Whether a formatted partition holds anything: an entry of its directory other than
/// `.slapos-resource` (a destroyed instance leaves nothing else), or a supervised group.
fn partition_in_use(cfg: &NodeConfig, p: &Partition) -> bool {
    let dir = cfg.partition_path(&p.reference);
    let busy_dir = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .any(|e| e.file_name() != ".slapos-resource"),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    };
    busy_dir
        || cfg
            .instance_root
            .join("etc/supervisor.d")
            .join(format!("{}.json", p.reference))
            .exists()
}

/// The owner a partition directory gets.
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
}

impl Formatter<'_> {
    fn format(
        &mut self,
        mut partitions: Vec<Partition>,
        stored_address: Option<String>,
    ) -> Result<FormatOutcome, FormatError> {
        let cfg = self.cfg;
        for root in [&cfg.instance_root, &cfg.software_root] {
            self.host.mkdir(root, 0o755, true)?;
            self.host.chmod(root, 0o755)?;
        }
        if self.mode.users {
            let soft = users::ensure_user(
                &mut self.host,
                &self.software_user.clone(),
                &cfg.software_root,
                None,
            )?;
            if let Some(soft) = soft {
                self.host.chown(&cfg.software_root, soft.uid, soft.gid)?;
            }
        }
        let plans = if self.mode.network {
            self.prepare_network(&partitions, stored_address)?
        } else {
            Vec::new()
        };
        let storage = self.storage_dirs()?;
        let mut formatted = Vec::with_capacity(partitions.len());
        for (i, p) in partitions.iter_mut().enumerate() {
            let owner = self.partition_user(p)?;
            if self.mode.network {
                self.partition_network(p, i, plans.get(i).cloned().unwrap_or_default(), &owner)?;
            } else {
                self.partition_local(p);
            }
            let path = PathBuf::from(&p.path);
            self.partition_dir(&path, &owner)?;
            for base in &storage {
                self.partition_dir(&base.join(&p.reference), &owner)?;
            }
            self.partition_cgroup(&p.reference)?;
            formatted.push(self.formatted(p, path, owner)?);
        }
        let dropped = self.drop_partitions()?;
        if let Some(repo) = &cfg.certificate_repository_path {
            self.host.mkdir(repo, 0o700, true)?;
        }
        let computer = self.computer(partitions);
        self.write_state(&computer)?;
        let dict = state::json_to_marshal(&computer.to_json());
        Ok(FormatOutcome {
            computer: dict,
            partitions: formatted,
            changed: self.host.changed(),
            cgroups: self.cgroups.describe(),
            dropped,
        })
    }

    /// The partition's cgroup with the node's default limits, when it has none yet (an
    /// instance's own size is applied when the instance is deployed; an existing cgroup
    /// keeps the limits it has).
    fn partition_cgroup(&mut self, reference: &str) -> Result<(), FormatError> {
        let Some(cgroups) = self.cgroups.cgroups() else {
            return Ok(());
        };
        let exists = [false, true].into_iter().any(|reserved| {
            let limits = crate::cgroup::Limits {
                reserved,
                ..Default::default()
            };
            cgroups.partition(reference, &limits).exists()
        });
        if exists {
            return Ok(());
        }
        let cgroup = cgroups.partition(reference, &self.cfg.partition_limits);
        self.host.note(&format!(
            "create the cgroup of {reference} ({})",
            cgroup
                .dirs
                .iter()
                .map(|b| b.dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if self.host.dry_run() {
            return Ok(());
        }
        for u in cgroup.ensure()? {
            tracing::warn!(partition = reference, limit = %u.limit, reason = %u.reason, "limit not enforced");
        }
        Ok(())
    }

    /// The partitions a smaller `partition_amount` drops (each checked free): their tap,
    /// addresses and range, their user, their cgroup, their `.slapos-resource` and
    /// (empty) directory.
    fn drop_partitions(&mut self) -> Result<Vec<String>, FormatError> {
        let dropped = std::mem::take(&mut self.dropped);
        let mut failures = Vec::new();
        let mut names = Vec::new();
        for (i, p) in &dropped {
            tracing::info!(partition = %p.reference, "dropping a free partition (partition_amount shrank)");
            if self.mode.network {
                let mut net = self.net.take().unwrap_or_default();
                unformat_network(
                    self.cfg,
                    &mut self.host,
                    &mut net,
                    Some(p),
                    *i,
                    &mut failures,
                );
                self.net = Some(net);
            }
            if self.mode.users {
                users::remove_user(
                    &mut self.host,
                    &p.user.name,
                    &self.cfg.instance_root,
                    true,
                    &mut failures,
                );
            }
            if let Some(cgroups) = self.cgroups.cgroups() {
                self.host
                    .note(&format!("remove the cgroup of {}", p.reference));
                if !self.host.dry_run() {
                    if let Err(e) = cgroups.remove_partition(&p.reference) {
                        failures.push(e.to_string());
                    }
                }
            }
            let dir = self.cfg.partition_path(&p.reference);
            if dir.exists() {
                self.host
                    .note(&format!("remove the free partition {}", dir.display()));
                if !self.host.dry_run() {
                    let _ = std::fs::remove_file(dir.join(".slapos-resource"));
                    if let Err(e) = std::fs::remove_dir(&dir) {
                        failures.push(format!("remove {}: {e}", dir.display()));
                    }
                }
            }
            names.push(p.reference.clone());
        }
        if failures.is_empty() {
            Ok(names)
        } else {
            Err(FormatError::Network(format!(
                "dropping partitions: {}",
                failures.join("; ")
            )))
        }
    }

    /// Network mode, before the partitions: the node address, `ip_nonlocal_bind`, the plan.
    fn prepare_network(
        &mut self,
        partitions: &[Partition],
        stored_address: Option<String>,
    ) -> Result<Vec<plan::NetPlan>, FormatError> {
        let cfg = self.cfg;
        let f = &cfg.format;
        let ipv6_interface = self.ipv6_interface().to_owned();
        let net = Net::read(&self.host)?;
        let partition_addrs: Vec<Ipv6Addr> = partitions
            .iter()
            .flat_map(|p| &p.address_list)
            .filter_map(|a| a.addr.parse().ok())
            .collect();
        let stored = stored_address.and_then(|a| a.parse().ok());
        let (node, node_len) =
            network::pick_node_address(&net.addrs, &ipv6_interface, stored, &partition_addrs)
                .ok_or_else(|| FormatError::NoIpv6 {
                    interface: ipv6_interface.clone(),
                })?;
        tracing::info!("node address {node}/{node_len} on {ipv6_interface}");
        if f.partition_has_ipv6_range {
            self.allow_nonlocal_bind()?;
        }
        let input = plan::PlanInput {
            node,
            node_len,
            shift: f.ipv6_prefixshift,
            v4_pool: match &self.definition {
                Some(_) => None,
                None => f
                    .ipv4_local_network
                    .as_deref()
                    .and_then(ipcalc::parse_v4_network),
            },
            ranges: f.partition_has_ipv6_range,
            tap_ipv6: f.create_tap && f.tap_ipv6,
            net: &net,
            ipv6_interface: &ipv6_interface,
        };
        let plans = plan::plan(&input, partitions)?;
        self.net = Some(net);
        self.node = Some((node, node_len));
        Ok(plans)
    }

    fn ipv6_interface(&self) -> &str {
        let f = &self.cfg.format;
        f.ipv6_interface
            .as_deref()
            .or(f.interface_name.as_deref())
            .unwrap_or_default()
    }

    fn interface_name(&self) -> &str {
        self.cfg
            .format
            .interface_name
            .as_deref()
            .unwrap_or_default()
    }

    /// `sysctl -w net.ipv6.ip_nonlocal_bind=1` unless it already is.
    fn allow_nonlocal_bind(&mut self) -> Result<(), FormatError> {
        let current =
            std::fs::read_to_string("/proc/sys/net/ipv6/ip_nonlocal_bind").unwrap_or_default();
        if current.trim() == "1" {
            return Ok(());
        }
        self.host
            .change("sysctl", &["-w", "net.ipv6.ip_nonlocal_bind=1"])
    }

    /// `instance_storage_home/data<N>` directories.
    fn storage_dirs(&self) -> Result<Vec<PathBuf>, FormatError> {
        let Some(home) = &self.cfg.instance_storage_home else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(home) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(FormatError::Io {
                    action: "list",
                    path: home.clone(),
                    source,
                })
            }
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("data"))
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Users mode: creates the partition user. Otherwise: the current user (or the owner
    /// of an existing directory).
    fn partition_user(&mut self, p: &mut Partition) -> Result<Owner, FormatError> {
        let path = PathBuf::from(&p.path);
        if self.mode.users {
            let soft = self.software_user.clone();
            let user = users::ensure_user(&mut self.host, &p.user.name, &path, Some(&soft))?;
            return Ok(match user {
                Some(u) => Owner {
                    name: u.name,
                    uid: u.uid,
                    gid: u.gid,
                },
                // Dry run, user not created yet.
                None => Owner {
                    name: p.user.name.clone(),
                    uid: 0,
                    gid: 0,
                },
            });
        }
        let me = match self.host.metadata(&path)? {
            Some(meta) => {
                use std::os::unix::fs::MetadataExt;
                Owner {
                    name: users::user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string()),
                    uid: meta.uid(),
                    gid: meta.gid(),
                }
            }
            None => {
                let id = Identity::current();
                Owner {
                    name: id.name,
                    uid: id.uid,
                    gid: id.gid,
                }
            }
        };
        if self.definition.is_none() {
            p.user.name = me.name.clone();
        }
        Ok(me)
    }

    /// Standalone or no network: addresses from the definition file, else loopback.
    fn partition_local(&mut self, p: &mut Partition) {
        if self.definition.is_some() {
            return;
        }
        p.address_list = vec![
            Address {
                addr: LOCAL_V4.into(),
                netmask: LOCAL_V4_MASK.into(),
            },
            Address {
                addr: LOCAL_V6.into(),
                netmask: ipcalc::mask_string_v6(128),
            },
        ];
        p.ipv6_range = None;
        p.tap = Tap::named("");
    }

    /// Network mode: tap, addresses and range of one partition.
    fn partition_network(
        &mut self,
        p: &mut Partition,
        index: usize,
        plan: plan::NetPlan,
        owner: &Owner,
    ) -> Result<(), FormatError> {
        let cfg = self.cfg;
        let f = &cfg.format;
        let mut net = self.net.take().unwrap_or_default();
        let result = (|| {
            if self.definition.is_none() {
                p.tap = match f.create_tap {
                    true if p.tap.name.is_empty() => {
                        Tap::named(&format!("{}{index}", f.tap_base_name))
                    }
                    true => p.tap.clone(),
                    false => Tap::named(""),
                };
            }
            if f.create_tap {
                self.partition_tap(p, index, &plan, owner, &mut net)?;
            }
            self.partition_addresses(p, &plan, &mut net)?;
            p.ipv6_range = None;
            if let Some((addr, len)) = plan.range {
                p.ipv6_range = Some(Ipv6Range::new(&addr.to_string(), len));
                net.ensure_local_route(&mut self.host, addr, len)?;
            }
            Ok(())
        })();
        self.net = Some(net);
        result
    }

    fn partition_addresses(
        &mut self,
        p: &mut Partition,
        plan: &plan::NetPlan,
        net: &mut Net,
    ) -> Result<(), FormatError> {
        let v4_dev = self.interface_name().to_owned();
        let v6_dev = self.ipv6_interface().to_owned();
        if let (Some(v4), Some(v6)) = (plan.v4, plan.v6) {
            let node_len = self.node.map_or(64, |(_, len)| len);
            p.address_list = vec![
                Address {
                    addr: v4.to_string(),
                    netmask: LOCAL_V4_MASK.into(),
                },
                Address {
                    addr: v6.to_string(),
                    netmask: ipcalc::mask_string_v6(node_len),
                },
            ];
        }
        for a in &p.address_list {
            let (ip, len, dev) = match a.addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => (IpAddr::V4(ip), ipcalc::prefixlen_v4(&a.netmask), &v4_dev),
                Ok(IpAddr::V6(ip)) => (IpAddr::V6(ip), ipcalc::prefixlen_v6(&a.netmask), &v6_dev),
                Err(_) => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), None, &v4_dev),
            };
            let Some(len) = len else {
                return Err(FormatError::Network(format!(
                    "partition {}: address {}/{} is not valid",
                    p.reference, a.addr, a.netmask
                )));
            };
            net.ensure_address(&mut self.host, ip, len, dev, &[])?;
        }
        Ok(())
    }

    /// The tap of one partition: created, its IPv4 from the gateway interface, its IPv6
    /// range, and the routes to both.
    fn partition_tap(
        &mut self,
        p: &mut Partition,
        index: usize,
        plan: &plan::NetPlan,
        owner: &Owner,
        net: &mut Net,
    ) -> Result<(), FormatError> {
        let cfg = self.cfg;
        let f = &cfg.format;
        if p.tap.name.is_empty() {
            return Ok(());
        }
        let name = p.tap.name.clone();
        let (owner_name, owner_uid) = match users::passwd(&p.user.name) {
            Some(u) => (u.name, Some(u.uid)),
            None if self.mode.users => (owner.name.clone(), None),
            None => ("root".to_owned(), Some(0)),
        };
        network::ensure_tap(&mut self.host, &name, &owner_name, owner_uid)?;
        if let Some(bridge) = f.tap_bridge.as_deref() {
            network::ensure_bridged(&mut self.host, &name, bridge)?;
        }
        match f.tap_gateway_interface.as_deref() {
            Some(gateway) if p.tap.ipv4_addr.is_empty() => {
                Self::tap_ipv4(&mut p.tap, gateway, index, net)?;
            }
            Some(_) => {}
            None => {
                p.tap.ipv4_addr.clear();
                p.tap.ipv4_gateway.clear();
                p.tap.ipv4_netmask.clear();
                p.tap.ipv4_network.clear();
            }
        }
        if let Ok(v4) = p.tap.ipv4_addr.parse::<Ipv4Addr>() {
            net.ensure_route(&mut self.host, IpAddr::V4(v4), 32, &name, None)?;
        }
        match plan.tap6 {
            Some((addr, len)) => {
                net.ensure_address(
                    &mut self.host,
                    IpAddr::V6(addr),
                    len,
                    &name,
                    &["noprefixroute"],
                )?;
                let gateway = ipcalc::range_first_addr(addr, len);
                p.tap.ipv6_addr = addr.to_string();
                p.tap.ipv6_netmask = ipcalc::mask_string_v6(len);
                p.tap.ipv6_gateway = gateway.to_string();
                p.tap.ipv6_network = format!("{gateway}/{len}");
                net.ensure_route(&mut self.host, IpAddr::V6(gateway), 128, &name, None)?;
                net.ensure_route(
                    &mut self.host,
                    IpAddr::V6(gateway),
                    len,
                    &name,
                    Some(IpAddr::V6(gateway)),
                )?;
            }
            None => {
                p.tap.ipv6_addr.clear();
                p.tap.ipv6_gateway.clear();
                p.tap.ipv6_netmask.clear();
                p.tap.ipv6_network.clear();
            }
        }
        Ok(())
    }

    /// The tap IPv4 of partition `index` from the subnet of `gateway` (its first IPv4):
    /// the `index`th address of the subnet that is neither the network, the broadcast nor
    /// the gateway's own.
    fn tap_ipv4(tap: &mut Tap, gateway: &str, index: usize, net: &Net) -> Result<(), FormatError> {
        let (gw, len) = net
            .addrs
            .iter()
            .find_map(|a| match a.addr {
                IpAddr::V4(v4) if a.ifname == gateway => Some((v4, a.prefixlen)),
                _ => None,
            })
            .ok_or_else(|| {
                FormatError::Network(format!(
                    "tap_gateway_interface {gateway} has no IPv4 address"
                ))
            })?;
        let network = Ipv4Addr::from(u32::from(gw) & ipcalc::mask_v4(len));
        let (first, last) = ipcalc::v4_host_offsets(len);
        let gw_offset = u64::from(u32::from(gw) - u32::from(network));
        let mut offset = first + index as u64;
        if offset >= gw_offset {
            offset += 1;
        }
        let addr = (offset <= last)
            .then(|| ipcalc::v4_at(network, len, offset))
            .flatten()
            .ok_or_else(|| {
                FormatError::Network(format!(
                    "the subnet of {gateway} ({network}/{len}) has no address left for tap {}",
                    tap.name
                ))
            })?;
        tap.ipv4_addr = addr.to_string();
        tap.ipv4_netmask = ipcalc::mask_string_v4(len);
        tap.ipv4_gateway = gw.to_string();
        tap.ipv4_network = network.to_string();
        Ok(())
    }

    /// A partition (or external storage) directory: 0750, owned by its user.
    fn partition_dir(&mut self, path: &Path, owner: &Owner) -> Result<(), FormatError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.is_dir() {
                return Err(FormatError::Refused {
                    path: path.to_owned(),
                    reason: "it exists and is not a directory (or is a symbolic link)".into(),
                });
            }
        }
        self.host.mkdir(path, 0o750, false)?;
        if self.mode.users && owner.uid != 0 {
            self.host.chown(path, owner.uid, owner.gid)?;
        }
        self.host.chmod(path, 0o750)
    }

    fn formatted(
        &self,
        p: &Partition,
        path: PathBuf,
        owner: Owner,
    ) -> Result<FormattedPartition, FormatError> {
        let first = |v6: bool| {
            p.address_list
                .iter()
                .find(|a| a.addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6() == v6))
                .map(|a| a.addr.clone())
                .unwrap_or_default()
        };
        Ok(FormattedPartition {
            reference: p.reference.clone(),
            path,
            user: owner.name,
            uid: owner.uid,
            gid: owner.gid,
            ipv4: first(false),
            ipv6: first(true),
            tap: Some(p.tap.name.clone()).filter(|t| !t.is_empty()),
        })
    }

    /// The computer dict of reference 1.7.
    fn computer(&self, partition_list: Vec<Partition>) -> Computer {
        let cfg = self.cfg;
        let f = &cfg.format;
        let (address, netmask) = match (
            self.node,
            self.definition.as_ref().and_then(|d| d.address.clone()),
        ) {
            (Some((node, len)), _) => (node.to_string(), ipcalc::mask_string_v6(len)),
            (None, Some(a)) => (a.addr, a.netmask),
            (None, None) => (LOCAL_V4.to_owned(), LOCAL_V4_MASK.to_owned()),
        };
        let interface = f
            .interface_name
            .as_ref()
            .filter(|_| self.definition.is_none() || self.mode.network)
            .map(|name| state::Interface {
                name: name.clone(),
                ipv4_local_network: f.ipv4_local_network.clone(),
                ipv6_interface: f.ipv6_interface.clone(),
                ipv6_prefixshift: f.ipv6_prefixshift,
            });
        Computer {
            reference: cfg.computer_id.clone(),
            address: Some(address),
            netmask: Some(netmask),
            instance_root: cfg.instance_root.to_string_lossy().into_owned(),
            software_root: cfg.software_root.to_string_lossy().into_owned(),
            software_user: self.software_user.clone(),
            instance_storage_home: cfg
                .instance_storage_home
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            interface,
            ipv6_interface: f.ipv6_interface.clone(),
            partition_has_ipv6_range: f.partition_has_ipv6_range,
            tap_gateway_interface: f.tap_gateway_interface.clone().unwrap_or_default(),
            tap_ipv6: f.tap_ipv6,
            public_ipv4_address: String::new(),
            os_type: os_type(),
            python_version: String::new(),
            slapos_version: env!("CARGO_PKG_VERSION").to_owned(),
            partition_list,
        }
    }

    /// `.slapos-resource` of every partition, `computer_json`, `computer_xml` (the previous
    /// version kept when it changes) and `output_definition_file`.
    fn write_state(&mut self, computer: &Computer) -> Result<(), FormatError> {
        let cfg = self.cfg;
        let f = &cfg.format;
        for p in &computer.partition_list {
            let text = state::json_text(&p.to_json(), 4)?;
            self.host.write_file(
                &Path::new(&p.path).join(".slapos-resource"),
                text.as_bytes(),
                0o644,
            )?;
        }
        let json = computer.to_json();
        if let Some(path) = &f.computer_json {
            let text = state::json_text(&json, 2)?;
            self.host.write_file(path, text.as_bytes(), 0o644)?;
        }
        if let Some(path) = &f.computer_xml {
            let xml = slapos_proto::marshal::encode(&state::json_to_marshal(&json))?;
            self.write_computer_xml(path, &xml)?;
        }
        if let Some(path) = &f.output_definition_file {
            self.host
                .write_file(path, definition::render(computer).as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// Writes `computer_xml` unless it already holds the same computer (byte for byte, or
    /// the reference's pretty-printed form of it); the replaced version is kept as
    /// `<computer_xml>.<YYYYMMDD-HH:MM>` (UTC).
    fn write_computer_xml(&mut self, path: &Path, xml: &str) -> Result<(), FormatError> {
        let old = match std::fs::read(path) {
            Ok(old) => Some(old),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(FormatError::Io {
                    action: "read",
                    path: path.to_owned(),
                    source,
                })
            }
        };
        if let Some(old) = &old {
            if old == xml.as_bytes() || same_marshal(old, xml) {
                return Ok(());
            }
            self.host.copy(path, &backup_path(path))?;
        }
        self.host.write_file(path, xml.as_bytes(), 0o644)?;
        Ok(())
    }
}

/// Whether `old` (any layout) decodes to what `xml` encodes.
fn same_marshal(old: &[u8], xml: &str) -> bool {
    let limits = slapos_proto::Limits::DEFAULT;
    match slapos_proto::marshal::decode(old, &limits) {
        Ok(value) => slapos_proto::marshal::encode(&value).is_ok_and(|again| again == xml),
        Err(_) => false,
    }
}

/// `<path>.<YYYYMMDD-HH:MM>`, with `-N` appended when that name is taken.
fn backup_path(path: &Path) -> PathBuf {
    let stamp =
        chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).format("%Y%m%d-%H:%M");
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{stamp}"));
    let base = PathBuf::from(name);
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.exists() {
        let mut name = base.as_os_str().to_owned();
        name.push(format!("-{n}"));
        candidate = PathBuf::from(name);
        n += 1;
    }
    candidate
}

/// `os_type`: the JSON text of `[platform, distro id, distro version, distro name]` as
/// the reference builds it (platform approximated as `<system>-<release>-<machine>`).
fn os_type() -> String {
    let platform = uname();
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
            .unwrap_or_default()
    };
    let items = [platform, field("ID"), field("VERSION_ID"), field("NAME")];
    let quoted: Vec<String> = items
        .iter()
        .map(|s| state::json_text(&serde_json::Value::String(s.clone()), 0).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(", "))
}

fn uname() -> String {
    let Ok(u) = nix::sys::utsname::uname() else {
        return String::new();
    };
    format!(
        "{}-{}-{}",
        u.sysname().to_string_lossy(),
        u.release().to_string_lossy(),
        u.machine().to_string_lossy()
    )
}

/// The tap of each partition as format recorded it (its own state files, root's):
/// partition reference → tap name.
pub fn partition_taps(cfg: &NodeConfig) -> std::collections::BTreeMap<String, String> {
    let f = &cfg.format;
    state::load_previous(f.computer_json.as_deref(), f.computer_xml.as_deref())
        .ok()
        .flatten()
        .map(|p| {
            p.partitions
                .into_iter()
                .filter(|p| !p.tap.name.is_empty())
                .map(|p| (p.reference, p.tap.name))
                .collect()
        })
        .unwrap_or_default()
}

/// Undoes what [`format`] made, best effort: taps, the partitions' addresses and local
/// routes, the partition users and groups and the software user whose homes are under
/// `instance_root` / `software_root`. Directories, their content and the state files are
/// left. Returns what could not be removed. Nothing to undo when not root.
pub fn unformat(cfg: &NodeConfig) -> Result<Vec<String>, FormatError> {
    let f = &cfg.format;
    let mut failures = Vec::new();
    if !process::is_root() {
        tracing::info!("not root: format changed no user or network, nothing to undo");
        return Ok(failures);
    }
    let (stored, count) = formatted_partitions(cfg)?;
    let mut host = Host::new(false);
    if f.alter_network {
        match Net::read(&host) {
            Ok(mut net) => {
                for i in 0..count {
                    unformat_network(cfg, &mut host, &mut net, stored.get(i), i, &mut failures);
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(cgroups) = crate::cgroup::detect(cfg.cgroup_mode, &cfg.cgroup_root).cgroups() {
        if let Err(e) = cgroups.remove_all() {
            failures.push(e.to_string());
        }
        // The default root, `/slapos/<computer>`: `/slapos` too once no other node of
        // this host has its partitions there (else it is busy and stays).
        if cfg.cgroup_root.starts_with("/slapos/") {
            for base in &cgroups.bases {
                if let Some(parent) = base.dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
    }
    if f.alter_user {
        for i in 0..count {
            let own = format!("{}{i}", f.user_base_name);
            let mut names = vec![own.clone()];
            if let Some(name) = stored.get(i).map(|p| p.user.name.clone()) {
                if !name.is_empty() && name != own {
                    names.push(name);
                }
            }
            for name in names {
                let orphan_group = name == own;
                users::remove_user(
                    &mut host,
                    &name,
                    &cfg.instance_root,
                    orphan_group,
                    &mut failures,
                );
            }
        }
        users::remove_user(
            &mut host,
            &f.software_user,
            &cfg.software_root,
            true,
            &mut failures,
        );
    }
    Ok(failures)
}

/// The partitions the state files record, and how many partitions format made: the
/// more of those and `partition_amount` (what `unformat` and `purge` undo).
fn formatted_partitions(cfg: &NodeConfig) -> Result<(Vec<Partition>, usize), FormatError> {
    let f = &cfg.format;
    let previous = state::load_previous(f.computer_json.as_deref(), f.computer_xml.as_deref())?;
    let stored = previous.map(|p| p.partitions).unwrap_or_default();
    let count = stored.len().max(f.partition_amount);
    Ok((stored, count))
}

/// `unformat --purge`, after [`unformat`]: what it leaves, whose owners it deleted. The
/// partitions' directories (`<instance_root>/<partition_base_name><i>`, and the stored
/// partitions' own names when they are plain partition ids), the installed software
/// releases (the `md5(url)` entries of `software_root`, which stays), and the computer's state
/// files (`computer_json`, `computer_xml`), so that a new `format` starts afresh.
/// Nothing is followed: a symbolic link is removed, never what it points at. Returns
/// what could not be removed.
pub fn purge(cfg: &NodeConfig) -> Result<Vec<String>, FormatError> {
    let f = &cfg.format;
    let mut failures = Vec::new();
    let (stored, count) = formatted_partitions(cfg)?;
    let mut doomed: Vec<PathBuf> = (0..count)
        .map(|i| {
            cfg.instance_root
                .join(format!("{}{i}", f.partition_base_name))
        })
        .collect();
    doomed.extend(
        stored
            .iter()
            .map(|p| p.reference.as_str())
            .filter(|r| crate::names::valid_partition_id(r))
            .map(|r| cfg.instance_root.join(r)),
    );
    // Only what slapgrid installs there (`md5(url)` directories and their markers): a
    // software_root pointed at a directory of other things loses none of them.
    let release = |name: &str| {
        let md5 = name.split('.').next().unwrap_or_default();
        md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if let Ok(entries) = std::fs::read_dir(&cfg.software_root) {
        doomed.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(release))
                .map(|e| e.path()),
        );
    }
    doomed.extend(f.computer_json.iter().cloned());
    doomed.extend(f.computer_xml.iter().cloned());
    doomed.sort();
    doomed.dedup();
    for path in doomed {
        let removed = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "purged"),
            Err(e) => failures.push(format!("remove {}: {e}", path.display())),
        }
    }
    Ok(failures)
}

fn unformat_network(
    cfg: &NodeConfig,
    host: &mut Host,
    net: &mut Net,
    stored: Option<&Partition>,
    i: usize,
    failures: &mut Vec<String>,
) {
    let f = &cfg.format;
    let mut record = |r: Result<(), FormatError>| {
        if let Err(e) = r {
            failures.push(e.to_string());
        }
    };
    let mut taps = vec![format!("{}{i}", f.tap_base_name)];
    if let Some(name) = stored
        .map(|p| p.tap.name.clone())
        .filter(|n| !n.is_empty() && !taps.contains(n))
    {
        taps.push(name);
    }
    for tap in taps {
        // Only tun/tap devices (never a physical interface named in a definition file).
        if network::device_exists(&tap)
            && Path::new("/sys/class/net")
                .join(&tap)
                .join("tun_flags")
                .exists()
        {
            record(host.change("ip", &["link", "delete", &tap]));
        }
    }
    let Some(p) = stored else {
        return;
    };
    let pool = f
        .ipv4_local_network
        .as_deref()
        .and_then(ipcalc::parse_v4_network);
    let v4_dev = f.interface_name.clone().unwrap_or_default();
    let v6_dev = f.ipv6_interface.clone().unwrap_or_else(|| v4_dev.clone());
    for a in &p.address_list {
        match a.addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if pool.is_some_and(|(n, l)| ipcalc::contains_v4(n, l, v4)) => {
                record(net.remove_address(host, IpAddr::V4(v4), &v4_dev));
            }
            Ok(IpAddr::V6(v6)) if is_global_v6(v6) => {
                record(net.remove_address(host, IpAddr::V6(v6), &v6_dev));
            }
            _ => {}
        }
    }
    if let Some(range) = &p.ipv6_range {
        if let Ok(addr) = range.addr.parse::<Ipv6Addr>() {
            record(net.remove_local_route(host, addr, range.prefixlen));
        }
    }
}

/// Not loopback, unspecified, link-local or multicast.
fn is_global_v6(a: Ipv6Addr) -> bool {
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local())
}

#[cfg(test)]
mod tests;
