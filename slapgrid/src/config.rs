//! The node's configuration, read from SlapOS's own `slapos.cfg` keys (`[slapos]`,
//! `[slapformat]`, see slapgrid-behaviour.md 0.1 and 1.1) so that an existing node's file
//! works, plus a few keys of our own, all optional, documented in DESIGN.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{Limits, Mode};
use crate::ini::{Ini, IniError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Syntax { path: PathBuf, source: IniError },
    #[error("{path}: [{section}] {key} is required")]
    Missing {
        path: PathBuf,
        section: &'static str,
        key: &'static str,
    },
    #[error("{path}: [{section}] {key} = {value:?}: {message}")]
    Invalid {
        path: PathBuf,
        section: &'static str,
        key: &'static str,
        value: String,
        message: String,
    },
}

/// `[slapformat]` (a key of `[slapos]` wins, as in the reference).
#[derive(Debug, Clone)]
pub struct FormatConfig {
    pub partition_amount: usize,
    pub partition_base_name: String,
    pub user_base_name: String,
    pub tap_base_name: String,
    /// Interface carrying the node's IPv6 and the partitions' local IPv4 addresses.
    pub interface_name: Option<String>,
    pub ipv6_interface: Option<String>,
    /// e.g. `10.0.0.0/16`.
    pub ipv4_local_network: Option<String>,
    pub ipv6_prefixshift: u8,
    pub partition_has_ipv6_range: bool,
    pub create_tap: bool,
    pub tap_ipv6: bool,
    pub tap_gateway_interface: Option<String>,
    /// Ours: a bridge every tap is made a port of (SlapOS's format once did it with
    /// `bridge_name`, which 1.26 refuses, as we do; this key is ours).
    pub tap_bridge: Option<String>,
    pub alter_user: bool,
    pub alter_network: bool,
    pub software_user: String,
    pub computer_xml: Option<PathBuf>,
    pub computer_json: Option<PathBuf>,
    pub input_definition_file: Option<PathBuf>,
    pub output_definition_file: Option<PathBuf>,
}

/// Everything the node commands read.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file it came from (for messages and for child commands).
    pub path: PathBuf,
    pub computer_id: String,
    /// `master_url`: one URL, or several separated by spaces or newlines (ours: the agent
    /// fails over between them). Each ends with `/`.
    pub master_urls: Vec<String>,
    pub key_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    /// Verify the master's certificate against this CA (the reference never verifies).
    pub master_ca_file: Option<PathBuf>,
    pub certificate_repository_path: Option<PathBuf>,
    pub software_root: PathBuf,
    pub instance_root: PathBuf,
    pub root_check: bool,
    pub maximum_periodicity: Duration,
    pub promise_timeout: Duration,
    pub partition_timeout: Option<Duration>,
    pub shared_part_list: Vec<String>,
    pub build_time_part_list: Vec<String>,
    pub instance_storage_home: Option<PathBuf>,
    pub ipv4_global_network: Option<String>,
    /// Free bytes a release build (`software_min_free_space`) and an instance profile run
    /// (`instance_min_free_space`) need; `1000M` each by default.
    pub software_min_free_space: u64,
    pub instance_min_free_space: u64,
    /// `[slapos] buildout`: a buildout script used to bootstrap release buildouts.
    pub buildout: Option<PathBuf>,
    /// Ours: the Python interpreter with zc.buildout (< 5) that bootstraps buildout
    /// releases (the reference uses its own interpreter). Default `python3` on PATH.
    pub buildout_python: PathBuf,
    pub pidfile_software: PathBuf,
    pub pidfile_instance: PathBuf,
    pub pidfile_report: PathBuf,
    /// Ours: seconds between runs of each `slapos node daemon` loop.
    pub software_interval: Duration,
    pub instance_interval: Duration,
    pub report_interval: Duration,
    pub format_interval: Duration,
    pub format: FormatConfig,
    /// Ours: `[slapos] cgroup` (`auto`, `v1`, `v2` or `off`; default `auto`).
    pub cgroup_mode: Mode,
    /// Ours: `[slapos] cgroup_root`, where the partitions' cgroups go in each hierarchy:
    /// absolute from the hierarchy's root (default `/slapos/<computer_id>`), or relative
    /// to the cgroup the agent runs in.
    pub cgroup_root: String,
    /// Ours: `[partition-limits]`, every partition's limits unless its instance names a
    /// size.
    pub partition_limits: Limits,
    /// Ours: `[partition-size:<name>]`, the sizes this node sells: an instance whose SLA
    /// says `size = <name>` gets these limits (keys it leaves out: the defaults').
    pub partition_sizes: BTreeMap<String, Limits>,
    /// Ours: seconds between two disk measures of an unchanged partition that has a
    /// disk limit (`[slapos] disk_check_interval`, default 300).
    pub disk_check_interval: Duration,
}

/// The keys of `[partition-limits]` and `[partition-size:*]`.
const LIMIT_KEYS: &[&str] = &[
    "cpu_weight",
    "cpu_quota",
    "memory",
    "pids",
    "disk",
    "reserved",
];

/// A human size (`1000M`, `2G`, `512k`, or bytes), as the reference reads sizes.
fn parse_size(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        "T" | "TB" => 1 << 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

struct Reader<'a> {
    ini: &'a Ini,
    path: &'a Path,
}

impl Reader<'_> {
    /// `[slapos]` first, then `[slapformat]` when `format` (a key of `[slapos]` wins).
    fn get(&self, section: &'static str, key: &'static str) -> Result<Option<String>, ConfigError> {
        let syntax = |source| ConfigError::Syntax {
            path: self.path.to_owned(),
            source,
        };
        if let Some(v) = self.ini.get("slapos", key).map_err(syntax)? {
            return Ok(Some(v));
        }
        if section == "slapformat" {
            return self.ini.get("slapformat", key).map_err(syntax);
        }
        Ok(None)
    }

    fn nonempty(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        Ok(self
            .get(section, key)?
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()))
    }

    fn required(&self, section: &'static str, key: &'static str) -> Result<String, ConfigError> {
        self.nonempty(section, key)?.ok_or(ConfigError::Missing {
            path: self.path.to_owned(),
            section,
            key,
        })
    }

    fn invalid(
        &self,
        section: &'static str,
        key: &'static str,
        value: &str,
        message: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            section,
            key,
            value: value.to_owned(),
            message: message.to_owned(),
        }
    }

    fn boolean(
        &self,
        section: &'static str,
        key: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.nonempty(section, key)? {
            None => Ok(default),
            Some(v) => match v.to_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.invalid(section, key, &v, "expected true or false")),
            },
        }
    }

    fn number<T: std::str::FromStr>(
        &self,
        section: &'static str,
        key: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.nonempty(section, key)? {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| self.invalid(section, key, &v, "expected a whole number")),
        }
    }

    fn seconds(&self, key: &'static str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.number("slapos", key, default)?))
    }

    /// A human size (`1000M`, `2G`, `512k`, or bytes), as the reference reads it.
    fn size(&self, key: &'static str, default: u64) -> Result<u64, ConfigError> {
        let Some(v) = self.nonempty("slapos", key)? else {
            return Ok(default);
        };
        parse_size(&v).ok_or_else(|| self.invalid("slapos", key, &v, "expected a size like 1000M"))
    }

    /// One section of limits over `base`: `cpu_weight` (1 to 10000), `cpu_quota`
    /// (hundredths of a CPU, `150`, or `150%%` as configparser spells a percent sign), `memory` and `disk` (sizes), `pids`,
    /// `reserved` (sizes only). Unknown keys are errors.
    fn limits(&self, section: &str, base: &Limits, sized: bool) -> Result<Limits, ConfigError> {
        let syntax = |source| ConfigError::Syntax {
            path: self.path.to_owned(),
            source,
        };
        let bad = |key: &str, value: &str, message: &str| ConfigError::Invalid {
            path: self.path.to_owned(),
            section: "partition limits",
            key: "limit",
            value: format!("[{section}] {key} = {value}"),
            message: message.to_owned(),
        };
        let mut limits = base.clone();
        for key in self.ini.keys(section) {
            let Some(value) = self.ini.get(section, &key).map_err(syntax)? else {
                continue;
            };
            let value = value.trim().to_owned();
            if !LIMIT_KEYS.contains(&key.as_str()) || (key == "reserved" && !sized) {
                // [DEFAULT] keys show up in every section: only ours are ours.
                if self.ini.get("DEFAULT", &key).ok().flatten().is_some() {
                    continue;
                }
                return Err(bad(
                    &key,
                    &value,
                    "unknown limit (cpu_weight, cpu_quota, memory, pids, disk; reserved in a size)",
                ));
            }
            if value.is_empty() || value == "none" {
                match key.as_str() {
                    "cpu_weight" => limits.cpu_weight = None,
                    "cpu_quota" => limits.cpu_quota = None,
                    "memory" => limits.memory = None,
                    "pids" => limits.pids = None,
                    "disk" => limits.disk = None,
                    _ => limits.reserved = false,
                }
                continue;
            }
            match key.as_str() {
                "cpu_weight" => {
                    limits.cpu_weight = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|w| (1..=10000).contains(w))
                            .ok_or_else(|| bad(&key, &value, "expected 1 to 10000"))?,
                    )
                }
                "cpu_quota" => {
                    limits.cpu_quota = Some(
                        value
                            .trim_end_matches('%')
                            .trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|q| *q >= 1)
                            .ok_or_else(|| {
                                bad(&key, &value, "expected hundredths of a CPU (150 or 150%)")
                            })?,
                    )
                }
                "memory" | "disk" => {
                    let bytes = parse_size(&value)
                        .filter(|b| *b > 0)
                        .ok_or_else(|| bad(&key, &value, "expected a size like 2G"))?;
                    if key == "memory" {
                        limits.memory = Some(bytes);
                    } else {
                        limits.disk = Some(bytes);
                    }
                }
                "pids" => {
                    limits.pids = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|p| *p >= 1)
                            .ok_or_else(|| bad(&key, &value, "expected a whole number"))?,
                    )
                }
                _ => {
                    limits.reserved = match value.to_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(&key, &value, "expected true or false")),
                    }
                }
            }
        }
        Ok(limits)
    }

    fn path(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.nonempty(section, key)?.map(PathBuf::from))
    }

    fn list(&self, key: &'static str) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .get("slapos", key)?
            .unwrap_or_default()
            .split(['\n', ' ', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// `master_url` normalised as the reference does: an unbracketed IPv6 literal is bracketed
/// and a trailing `/` added.
pub fn normalize_master_url(url: &str) -> String {
    let mut url = url.trim().to_owned();
    if let Some((scheme, rest)) = url.split_once("://") {
        let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !host_port.starts_with('[') && host_port.matches(':').count() > 1 {
            // `2001:db8::1` or `2001:db8::1:8080`? The reference brackets the whole host.
            url = format!("{scheme}://[{host_port}]/{path}");
        }
    }
    if !url.ends_with('/') {
        url.push('/');
    }
    url
}

impl NodeConfig {
    /// `--cfg`, else `$SLAPOS_CONFIGURATION`, else `/etc/opt/slapos/slapos.cfg`.
    pub fn default_path(cfg: Option<&Path>) -> PathBuf {
        cfg.map(Path::to_owned)
            .or_else(|| std::env::var_os("SLAPOS_CONFIGURATION").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc/opt/slapos/slapos.cfg"))
    }

    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        let ini = Ini::parse(text).map_err(|source| ConfigError::Syntax {
            path: path.to_owned(),
            source,
        })?;
        let r = Reader { ini: &ini, path };
        let master_urls: Vec<String> = r
            .required("slapos", "master_url")?
            .split_whitespace()
            .map(normalize_master_url)
            .collect();
        for url in &master_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(r.invalid("slapos", "master_url", url, "expected http:// or https://"));
            }
        }
        let key_file = r.path("slapos", "key_file")?;
        let cert_file = r.path("slapos", "cert_file")?;
        if key_file.is_some() != cert_file.is_some() {
            return Err(r.invalid(
                "slapos",
                "key_file",
                "",
                "key_file and cert_file go together",
            ));
        }
        let instance_root = PathBuf::from(r.required("slapos", "instance_root")?);
        let partition_timeout = match r.number("slapos", "partition_timeout", 0u64)? {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let run_dir = PathBuf::from("/opt/slapos");
        let interface_name = r.nonempty("slapformat", "interface_name")?;
        let format = FormatConfig {
            partition_amount: r.number("slapformat", "partition_amount", 10)?,
            partition_base_name: r
                .nonempty("slapformat", "partition_base_name")?
                .unwrap_or_else(|| "slappart".into()),
            user_base_name: r
                .nonempty("slapformat", "user_base_name")?
                .unwrap_or_else(|| "slapuser".into()),
            tap_base_name: r
                .nonempty("slapformat", "tap_base_name")?
                .unwrap_or_else(|| "slaptap".into()),
            ipv6_interface: r
                .nonempty("slapformat", "ipv6_interface")?
                .or_else(|| interface_name.clone()),
            interface_name,
            ipv4_local_network: r.nonempty("slapformat", "ipv4_local_network")?,
            ipv6_prefixshift: r.number("slapformat", "ipv6_prefixshift", 16)?,
            partition_has_ipv6_range: r.boolean("slapformat", "partition_has_ipv6_range", true)?,
            create_tap: r.boolean("slapformat", "create_tap", true)?,
            tap_ipv6: r.boolean("slapformat", "tap_ipv6", true)?,
            tap_gateway_interface: r.nonempty("slapformat", "tap_gateway_interface")?,
            tap_bridge: r.nonempty("slapformat", "tap_bridge")?,
            alter_user: r.boolean("slapformat", "alter_user", true)?,
            alter_network: r.boolean("slapformat", "alter_network", true)?,
            software_user: r
                .nonempty("slapformat", "software_user")?
                .unwrap_or_else(|| "slapsoft".into()),
            computer_xml: r.path("slapformat", "computer_xml")?,
            computer_json: r.path("slapformat", "computer_json")?,
            input_definition_file: r.path("slapformat", "input_definition_file")?,
            output_definition_file: r.path("slapformat", "output_definition_file")?,
        };
        for key in ["bridge_name", "no_bridge"] {
            if let Some(v) = r.nonempty("slapformat", key)? {
                return Err(r.invalid(
                    "slapformat",
                    key,
                    &v,
                    "totally deprecated, as in SlapOS's format (taps join a bridge with tap_bridge)",
                ));
            }
        }
        let cgroup_mode = match r
            .nonempty("slapos", "cgroup")?
            .map(|v| v.to_lowercase())
            .as_deref()
        {
            None | Some("auto") => Mode::Auto,
            Some("v1") => Mode::V1,
            Some("v2") => Mode::V2,
            Some("off") => Mode::Off,
            Some(other) => {
                return Err(r.invalid("slapos", "cgroup", other, "expected auto, v1, v2 or off"))
            }
        };
        let computer_id = r.required("slapos", "computer_id")?;
        // One node per host in production, several in tests and `slapos up`: each
        // node's partitions under its own computer's name.
        let cgroup_root = r.nonempty("slapos", "cgroup_root")?.unwrap_or_else(|| {
            let named = format!("/slapos/{computer_id}");
            if crate::cgroup::valid_root(&named) && !computer_id.contains('/') {
                named
            } else {
                "/slapos".into()
            }
        });
        if !crate::cgroup::valid_root(&cgroup_root) {
            return Err(r.invalid(
                "slapos",
                "cgroup_root",
                &cgroup_root,
                "expected a path of plain names (absolute, or relative to the agent's cgroup)",
            ));
        }
        let partition_limits = r.limits("partition-limits", &Limits::default(), false)?;
        let mut partition_sizes = BTreeMap::new();
        for section in ini.sections() {
            if let Some(name) = section.strip_prefix("partition-size:") {
                let name = name.trim();
                if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(r.invalid(
                        "slapos",
                        "partition-size",
                        section,
                        "a size is named with letters, digits, '-', '_' or '.', from a letter or digit",
                    ));
                }
                let mut limits = r.limits(section, &partition_limits, true)?;
                limits.size = Some(name.to_owned());
                partition_sizes.insert(name.to_owned(), limits);
            }
        }
        if format.ipv6_prefixshift == 0 || format.ipv6_prefixshift > 64 {
            return Err(r.invalid(
                "slapformat",
                "ipv6_prefixshift",
                &format.ipv6_prefixshift.to_string(),
                "expected 1 to 64",
            ));
        }
        Ok(NodeConfig {
            path: path.to_owned(),
            computer_id,
            master_urls,
            key_file,
            cert_file,
            master_ca_file: r.path("slapos", "master_ca_file")?,
            certificate_repository_path: r.path("slapos", "certificate_repository_path")?,
            software_root: PathBuf::from(r.required("slapos", "software_root")?),
            root_check: r.boolean("slapos", "root_check", true)?,
            maximum_periodicity: r.seconds("maximum_periodicity", 86400)?,
            promise_timeout: r.seconds("promise_timeout", 20)?,
            partition_timeout,
            shared_part_list: r.list("shared_part_list")?,
            build_time_part_list: r.list("build_time_part_list")?,
            instance_storage_home: r.path("slapos", "instance_storage_home")?,
            software_min_free_space: r.size("software_min_free_space", 1000 << 20)?,
            instance_min_free_space: r.size("instance_min_free_space", 1000 << 20)?,
            ipv4_global_network: r.nonempty("slapos", "ipv4_global_network")?,
            buildout: r.path("slapos", "buildout")?,
            buildout_python: r
                .path("slapos", "buildout_python")?
                .unwrap_or_else(|| PathBuf::from("python3")),
            pidfile_software: r
                .path("slapos", "pidfile_software")?
                .unwrap_or_else(|| run_dir.join("slapgrid-sr.pid")),
            pidfile_instance: r
                .path("slapos", "pidfile_instance")?
                .unwrap_or_else(|| run_dir.join("slapgrid-cp.pid")),
            pidfile_report: r
                .path("slapos", "pidfile_report")?
                .unwrap_or_else(|| run_dir.join("slapgrid-ur.pid")),
            software_interval: r.seconds("software_interval", 300)?,
            instance_interval: r.seconds("instance_interval", 300)?,
            report_interval: r.seconds("report_interval", 86400)?,
            format_interval: r.seconds("format_interval", 86400)?,
            disk_check_interval: r.seconds("disk_check_interval", 300)?,
            instance_root,
            format,
            cgroup_mode,
            cgroup_root,
            partition_limits,
            partition_sizes,
        })
    }

    /// `IR/sv.sock`: the supervisor's control socket.
    pub fn supervisor_socket(&self) -> PathBuf {
        self.instance_root.join("sv.sock")
    }

    /// The partition directory `IR/<partition_id>`.
    pub fn partition_path(&self, partition_id: &str) -> PathBuf {
        self.instance_root.join(partition_id)
    }

    /// `<repo>/<pid>.key` and `.crt` when a certificate repository is configured.
    pub fn partition_certificate_paths(&self, partition_id: &str) -> Option<(PathBuf, PathBuf)> {
        self.certificate_repository_path.as_ref().map(|repo| {
            (
                repo.join(format!("{partition_id}.key")),
                repo.join(format!("{partition_id}.crt")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_e2e_config() {
        let text = "[slapos]\ncomputer_id = COMP-TEST\nmaster_url = http://127.0.0.1:28080\n\
            software_root = /r/soft\ninstance_root = /r/inst\nroot_check = False\n\
            shared_part_list =\n  /r/shared\n\n[slapformat]\ninput_definition_file = /r/def.cfg\n\
            partition_amount = 2\nalter_user = false\nalter_network = false\ncreate_tap = false\n\
            computer_xml = /r/slapos.xml\npartition_has_ipv6_range = false\n";
        let c = NodeConfig::parse(Path::new("t.cfg"), text).unwrap();
        assert_eq!(c.computer_id, "COMP-TEST");
        assert_eq!(c.master_urls, vec!["http://127.0.0.1:28080/".to_string()]);
        assert!(!c.root_check);
        assert_eq!(c.shared_part_list, vec!["/r/shared".to_string()]);
        assert_eq!(c.format.partition_amount, 2);
        assert!(!c.format.alter_user && !c.format.alter_network && !c.format.create_tap);
        assert_eq!(c.format.partition_base_name, "slappart");
        assert_eq!(c.maximum_periodicity, Duration::from_secs(86400));
        assert_eq!(c.software_min_free_space, 1000 << 20);
    }

    #[test]
    fn several_gateways_and_ipv6_urls() {
        let text = "[slapos]\ncomputer_id = C\nmaster_url = https://[::1]:1/ http://2001:db8::1\n\
            software_root = /s\ninstance_root = /i\n";
        let c = NodeConfig::parse(Path::new("t.cfg"), text).unwrap();
        assert_eq!(
            c.master_urls,
            vec![
                "https://[::1]:1/".to_string(),
                "http://[2001:db8::1]/".to_string()
            ]
        );
    }

    /// The guide's example node configuration (`docs/examples/slapos.cfg`) is complete
    /// and means what its comments say.
    #[test]
    fn the_guides_example_parses() {
        let text = include_str!("../../docs/examples/slapos.cfg");
        let c = NodeConfig::parse(Path::new("/etc/opt/slapos/slapos.cfg"), text).unwrap();
        assert_eq!(c.computer_id, "COMP-1");
        assert_eq!(c.master_urls.len(), 2);
        assert!(c.key_file.is_some() && c.cert_file.is_some() && c.master_ca_file.is_some());
        assert_eq!(c.instance_interval, Duration::from_secs(300));
        assert_eq!(c.format.ipv6_interface.as_deref(), Some("eth0"));
        assert_eq!(c.partition_limits.pids, Some(512));
        let master = &c.partition_sizes["master"];
        assert!(master.reserved);
        assert_eq!(master.cpu_quota, Some(50));
        assert_eq!(master.pids, Some(512), "a size adds to the defaults");
    }

    #[test]
    fn sizes() {
        let base = "[slapos]\ncomputer_id = C\nmaster_url = http://x\nsoftware_root = /s\ninstance_root = /i\n";
        let c = NodeConfig::parse(
            Path::new("t"),
            &format!("{base}software_min_free_space = 2G\ninstance_min_free_space = 512\n"),
        )
        .unwrap();
        assert_eq!(
            (c.software_min_free_space, c.instance_min_free_space),
            (2 << 30, 512)
        );
        let err = NodeConfig::parse(
            Path::new("t"),
            &format!("{base}instance_min_free_space = lots\n"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("instance_min_free_space"), "{err}");
    }

    #[test]
    fn partition_limits_and_sizes() {
        let base = "[slapos]\ncomputer_id = C\nmaster_url = http://x\nsoftware_root = /s\ninstance_root = /i\n";
        let c = NodeConfig::parse(Path::new("t"), base).unwrap();
        assert_eq!(c.cgroup_mode, Mode::Auto);
        assert_eq!(c.cgroup_root, "/slapos/C");
        assert_eq!(c.partition_limits, Limits::default());
        let c = NodeConfig::parse(
            Path::new("t"),
            &format!(
                "{base}cgroup = v1\ncgroup_root = sg\n[partition-limits]\ncpu_weight = 100\n\
                 cpu_quota = 150%%\nmemory = 512M\npids = 200\ndisk = 1G\n\
                 [partition-size:master]\ncpu_weight = 1000\nmemory = 2G\nreserved = true\n\
                 [partition-size:tiny]\nmemory = 64M\ncpu_quota = none\n"
            ),
        )
        .unwrap();
        assert_eq!((c.cgroup_mode, c.cgroup_root.as_str()), (Mode::V1, "sg"));
        assert_eq!(
            c.partition_limits,
            Limits {
                cpu_weight: Some(100),
                cpu_quota: Some(150),
                memory: Some(512 << 20),
                pids: Some(200),
                disk: Some(1 << 30),
                ..Limits::default()
            }
        );
        let master = &c.partition_sizes["master"];
        assert_eq!(
            (
                master.cpu_weight,
                master.memory,
                master.pids,
                master.reserved
            ),
            (Some(1000), Some(2 << 30), Some(200), true)
        );
        assert_eq!(master.size.as_deref(), Some("master"));
        let tiny = &c.partition_sizes["tiny"];
        assert_eq!((tiny.memory, tiny.cpu_quota), (Some(64 << 20), None));
        for bad in [
            "[partition-limits]\ncpu_weight = 0\n",
            "[partition-limits]\nmemory = lots\n",
            "[partition-limits]\nreserved = true\n",
            "[partition-limits]\nswap = 1G\n",
            "[partition-size:a/b]\nmemory = 1G\n",
            // Hostile values: never written to a cgroup file as they are (only numbers
            // parsed here are).
            "[partition-limits]\nmemory = -1\n",
            "[partition-limits]\nmemory = 99999999999T\n",
            "[partition-limits]\nmemory = 1G\\n0\n",
            "[partition-limits]\npids = max\n",
            "[partition-limits]\npids = 10 > /etc/passwd\n",
            "[partition-limits]\ncpu_quota = 0\n",
            "[partition-limits]\ncpu_quota = 1e9\n",
            "[partition-limits]\ncpu_weight = 10001\n",
            "[partition-limits]\ndisk = 0\n",
            "[partition-size:..]\nmemory = 1G\n",
            "[partition-size:]\nmemory = 1G\n",
            "[partition-size:big]\nreserved = yes please\n",
            "cgroup = v3\n",
            "cgroup_root = ../x\n",
        ] {
            let text = format!("{base}{bad}");
            assert!(NodeConfig::parse(Path::new("t"), &text).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_and_invalid_keys_are_named() {
        let err = NodeConfig::parse(Path::new("t.cfg"), "[slapos]\ncomputer_id = C\n").unwrap_err();
        assert!(err.to_string().contains("master_url"), "{err}");
        let err = NodeConfig::parse(
            Path::new("t.cfg"),
            "[slapos]\ncomputer_id = C\nmaster_url = http://x\nsoftware_root = /s\n\
             instance_root = /i\nroot_check = maybe\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("root_check"), "{err}");
    }
}
