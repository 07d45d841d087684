//! The gateway's configuration file (TOML).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::slap::{FieldLimits, SlapContext};

/// A gateway's configuration.
///
/// ```toml
/// listen = "[::]:8443"                       # IPv4 or IPv6 (in brackets)
/// masters = ["10.0.0.1:7201", "10.0.0.2:7201", "10.0.0.3:7201"]  # master API addresses;
///                                            # the first is read locally (put the replica
///                                            # beside this gateway first)
/// tls_cert = "/etc/slapos/gateway.crt"       # PEM chain, leaf first
/// tls_key = "/etc/slapos/gateway.key"        # PEM private key (PKCS#8, PKCS#1 or SEC1)
/// # insecure_http = true                     # plain HTTP instead, for local tests only
/// url_prefix = ""                            # SLAP methods at <url_prefix>/<methodName>
/// local_read_staleness_ms = 2000             # node polling reads a replica this fresh
/// max_body_bytes = 16777216                  # larger request bodies get 413
///
/// [slap]                                     # what slapproxy's configuration says
/// person = "user"                            # owner of root requests
/// partition_header = true                    # honour Authorization: X-SlapPartition
/// # default_computer = "slaprunner"          # answered empty before it is formatted
/// software_product_list = """
/// kvm https://lab.example/kvm/software.cfg
/// """
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen address (host:port; IPv6 in brackets; port 0 picks one).
    pub listen: String,
    /// Master API addresses (gRPC). Reads with a bounded staleness go to the first one
    /// first.
    pub masters: Vec<String>,
    /// PEM certificate chain of the HTTPS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the HTTPS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (no TLS). Only for local tests: SLAP carries no other protection.
    #[serde(default)]
    pub insecure_http: bool,
    /// PEM certificate of the group's authority (`slapos cluster ca export`). When set,
    /// every connection must present a client certificate it issued and not revoked;
    /// the certificate's identity is the caller, checked against the authorization table
    /// (DESIGN.md, "Authorization"), and `[slap] person` no longer applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// mTLS to the masters (when they require it): this gateway's certificate
    /// (`gateway:<id>`), key and the group's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_tls: Option<master_client::tls::TlsFiles>,
    /// How often the revoked certificates are read from the masters.
    #[serde(default = "default_revocation_refresh")]
    pub revocation_refresh_ms: u64,
    /// Path prefix of the SLAP methods (`""` or e.g. `"/slap"`).
    #[serde(default)]
    pub url_prefix: String,
    /// How stale (ms since the answering replica last heard from a leader) a local read
    /// may be: node polling (`getFullComputerInformation`, `registerComputerPartition`...).
    #[serde(default = "default_staleness")]
    pub local_read_staleness_ms: u64,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Total time one master call may take across its retries (leader changes).
    #[serde(default = "default_deadline")]
    pub master_deadline_ms: u64,
    /// Time one attempt of a master call may take. A leader that lost its quorum answers
    /// "retry" within its lease; this bounds the wait on one that is paused or silently
    /// cut off, after which the write is retried (same request id) on another replica.
    #[serde(default = "default_call_timeout")]
    pub master_call_timeout_ms: u64,
    /// Writes forwarded to the master at once; more wait for a slot.
    #[serde(default = "default_inflight")]
    pub max_inflight_writes: usize,
    /// Proxy-mode settings of the SLAP layer.
    #[serde(default)]
    pub slap: SlapSettings,
    /// The releases this gateway serves (`/software/<sha256>/...`); none without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<ReleaseSettings>,
}

/// Where a gateway keeps the releases it serves (`crate::releases`).
///
/// ```toml
/// [releases]
/// dir = "/var/lib/slapos/releases"   # content-addressed store (blobs/<sha256>)
/// serve_installed = ["/opt/slapos/software/3f2a..."]  # installed native releases
///                                    # served again at their published address
/// max_blob_bytes = 1073741824        # a larger upload is refused
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    pub dir: PathBuf,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serve_installed: Vec<PathBuf>,
    #[serde(default = "default_max_blob")]
    pub max_blob_bytes: u64,
}

fn default_max_blob() -> u64 {
    1 << 30
}

/// What a slapproxy-compatible master decides (see [`SlapContext`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlapSettings {
    /// The person root requests belong to (until certificates identify the caller).
    pub person: String,
    /// Honour `Authorization: X-SlapPartition ...` as the requesting partition.
    pub partition_header: bool,
    /// A computer answered with empty lists before it is formatted (slapproxy's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_computer: Option<String>,
    /// slapproxy's `software_product_list`: one `<reference> <url>` per line.
    pub software_product_list: String,
    /// No longer read: admin rights are recorded in the group (`slapos user admin`), so
    /// that no gateway's configuration makes anyone an admin. Present and non-empty, the
    /// configuration is refused with that explanation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
}

impl Default for SlapSettings {
    fn default() -> Self {
        SlapSettings {
            person: "user".to_string(),
            partition_header: true,
            default_computer: None,
            software_product_list: String::new(),
            admins: Vec::new(),
        }
    }
}

fn default_revocation_refresh() -> u64 {
    2000
}

fn default_staleness() -> u64 {
    2000
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_deadline() -> u64 {
    30_000
}
fn default_call_timeout() -> u64 {
    3_000
}
fn default_inflight() -> usize {
    256
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl GatewayConfig {
    /// A plain-HTTP gateway on `listen` in front of `masters`, every other setting at its
    /// default (tests, `slapos up`).
    pub fn insecure(listen: impl Into<String>, masters: Vec<String>) -> Self {
        GatewayConfig {
            listen: listen.into(),
            masters,
            tls_cert: None,
            tls_key: None,
            insecure_http: true,
            client_ca: None,
            master_tls: None,
            revocation_refresh_ms: default_revocation_refresh(),
            url_prefix: String::new(),
            local_read_staleness_ms: default_staleness(),
            max_body_bytes: default_max_body(),
            master_deadline_ms: default_deadline(),
            master_call_timeout_ms: default_call_timeout(),
            max_inflight_writes: default_inflight(),
            slap: SlapSettings::default(),
            releases: None,
        }
    }

    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<GatewayConfig, String> {
        let c: GatewayConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks what the file alone can tell (the PEM files are read at start).
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|e| format!("listen '{}' is not host:port ({e})", self.listen))?;
        if self.masters.is_empty() {
            return Err("masters: give at least one master API address".into());
        }
        for m in &self.masters {
            m.parse::<SocketAddr>()
                .map_err(|e| format!("masters: '{m}' is not host:port ({e})"))?;
        }
        match (self.insecure_http, &self.tls_cert, &self.tls_key) {
            (true, None, None) | (false, Some(_), Some(_)) => {}
            (true, _, _) => {
                return Err("insecure_http = true serves plain HTTP: remove tls_cert and tls_key, or insecure_http".into())
            }
            (false, _, _) => {
                return Err(
                    "HTTPS needs both tls_cert and tls_key (or insecure_http = true for local tests)"
                        .into(),
                )
            }
        }
        if self.client_ca.is_some() && self.insecure_http {
            return Err("client_ca needs HTTPS (tls_cert and tls_key), not insecure_http".into());
        }
        let p = &self.url_prefix;
        if !p.is_empty() && (!p.starts_with('/') || p.ends_with('/')) {
            return Err(format!(
                "url_prefix '{p}' must be empty or start with '/' and not end with '/'"
            ));
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be > 0".into());
        }
        if self.max_inflight_writes == 0 {
            return Err("max_inflight_writes must be > 0".into());
        }
        if self.master_deadline_ms == 0 || self.master_call_timeout_ms == 0 {
            return Err("master_deadline_ms and master_call_timeout_ms must be > 0".into());
        }
        if !self.slap.admins.is_empty() {
            return Err(format!(
                "[slap] admins is no longer read: admin rights are recorded in the group, so that no gateway's configuration makes anyone an admin; grant them with `slapos user admin --person <id> --via <master API>` ({} listed here)",
                self.slap.admins.join(", ")
            ));
        }
        Ok(())
    }

    /// The SLAP layer's context.
    pub fn slap_context(&self) -> SlapContext {
        SlapContext {
            person: self.slap.person.clone(),
            partition_header: self.slap.partition_header,
            default_computer: self.slap.default_computer.clone(),
            software_products: Vec::new(),
            run_id: None,
            admin: false,
            limits: FieldLimits::DEFAULT,
        }
        .with_software_product_list(&self.slap.software_product_list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c = GatewayConfig::parse(
            r#"
listen = "[::]:8443"
masters = ["10.0.0.1:7201", "10.0.0.2:7201"]
tls_cert = "/etc/slapos/gateway.crt"
tls_key = "/etc/slapos/gateway.key"
url_prefix = "/slap"
local_read_staleness_ms = 500

[slap]
person = "admin"
partition_header = false
default_computer = "slaprunner"
software_product_list = """
kvm https://lab.example/kvm/software.cfg
kvm https://lab.example/kvm/2.cfg
"""
"#,
        )
        .unwrap();
        assert_eq!(c.masters.len(), 2);
        assert_eq!(c.local_read_staleness_ms, 500);
        assert_eq!(c.max_body_bytes, 16 << 20);
        let ctx = c.slap_context();
        assert_eq!(ctx.person, "admin");
        assert!(!ctx.partition_header);
        assert_eq!(ctx.default_computer.as_deref(), Some("slaprunner"));
        assert_eq!(ctx.software_products.len(), 2);
        assert_eq!(GatewayConfig::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn defaults_are_slapproxys() {
        let c = GatewayConfig::parse(
            "listen = \"127.0.0.1:0\"\nmasters = [\"127.0.0.1:7201\"]\ninsecure_http = true\n",
        )
        .unwrap();
        assert_eq!(
            c,
            GatewayConfig::insecure("127.0.0.1:0", vec!["127.0.0.1:7201".into()])
        );
        assert_eq!(c.slap_context(), SlapContext::proxy(None));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let base = "listen = \"127.0.0.1:0\"\nmasters = [\"127.0.0.1:7201\"]\n";
        for (extra, expected) in [
            ("", "HTTPS needs both tls_cert and tls_key"),
            ("tls_cert = \"c\"\n", "HTTPS needs both"),
            (
                "insecure_http = true\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "insecure_http = true serves plain HTTP",
            ),
            (
                "insecure_http = true\nurl_prefix = \"slap\"\n",
                "url_prefix 'slap'",
            ),
            (
                "insecure_http = true\nurl_prefix = \"/slap/\"\n",
                "url_prefix '/slap/'",
            ),
            (
                "insecure_http = true\nmax_body_bytes = 0\n",
                "max_body_bytes",
            ),
            ("insecure_http = true\nlisten_typo = 1\n", "unknown field"),
            // No configuration makes anyone an admin: the group records them.
            (
                "insecure_http = true\n[slap]\nadmins = [\"root\"]\n",
                "[slap] admins is no longer read",
            ),
        ] {
            let err = GatewayConfig::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(expected), "{extra:?}: {err}");
        }
        let err = GatewayConfig::parse("listen = \"nowhere\"\nmasters = []\ninsecure_http = true")
            .unwrap_err();
        assert!(err.contains("listen 'nowhere' is not host:port"), "{err}");
        let err =
            GatewayConfig::parse("listen = \"127.0.0.1:1\"\nmasters = []\ninsecure_http = true")
                .unwrap_err();
        assert!(err.contains("at least one master"), "{err}");
    }
}
