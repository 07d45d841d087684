//! `slapos request`, `slapos supply`, `slapos instance list|show`: a person's own
//! instance trees through a gateway, with the client configuration slapos.core's client
//! reads (`~/.slapos/slapos-client.cfg`, `$SLAPOS_CLIENT_CONFIGURATION`, `--cfg`).
//!
//! The calls are the gateway's JSON-RPC v0 methods (`slapos.post.v0.software_instance`,
//! `slapos.post.v0.software_installation`, `slapos.allDocs.v0.instance_tree_list`,
//! `slapos.get.v0.instance_tree`), through `slap_gateway::client`: the same authorization
//! table as SLAP's `requestComputerPartition` and `supplySupply`, JSON answers, and the
//! reads slapos.core's `slapos service list|info` need (which SLAP offers only through
//! hateoas). An https:// gateway is always verified against the group's CA that the
//! configuration names (`master_ca_file`); there is no way to skip it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use slap_gateway::client::JsonRpcClient;
use slapgrid::ini::Ini;

/// slapos.core's variable naming the client configuration.
pub const CONFIG_ENV: &str = "SLAPOS_CLIENT_CONFIGURATION";
/// slapos.core's default client configuration, under `$HOME`.
pub const DEFAULT_CONFIG: &str = ".slapos/slapos-client.cfg";

/// What is wrong with a client configuration: each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // (the cause is in the message, not a `source`: printed once)
    #[error("cannot read the client configuration {path}: {cause}")]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("client configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{what} {path} (named by {config}) cannot be read: {cause}")]
    File {
        what: &'static str,
        path: PathBuf,
        config: PathBuf,
        cause: std::io::Error,
    },
    #[error("no client configuration given: pass --cfg, set ${CONFIG_ENV} or write ~/{DEFAULT_CONFIG} (no $HOME to find it in)")]
    NoHome,
}

/// A client configuration: where the gateway is, who the person is, and the CA the
/// gateway is verified against.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub path: PathBuf,
    pub master_url: String,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub master_ca_file: Option<PathBuf>,
}

fn expand(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

impl ClientConfig {
    /// The file `--cfg` names, else `$SLAPOS_CLIENT_CONFIGURATION`, else
    /// `~/.slapos/slapos-client.cfg` (slapos.core's order).
    pub fn locate(cfg: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = cfg {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(expand(&p.to_string_lossy()));
        }
        let home = std::env::var_os("HOME").ok_or(ConfigError::NoHome)?;
        Ok(Path::new(&home).join(DEFAULT_CONFIG))
    }

    /// Reads `path`: `[slapos] master_url`; `[slapconsole] cert_file`, `key_file` and
    /// `master_ca_file` (each also read from `[slapos]` when `[slapconsole]` lacks it, as
    /// slapos.core falls back for the key pair). An https:// gateway needs all three.
    pub fn read(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Unreadable {
            path: path.to_path_buf(),
            cause,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let ini = Ini::parse(&text).map_err(|e| invalid(e.to_string()))?;
        let get = |section: &str, key: &str| -> Result<Option<String>, ConfigError> {
            Ok(ini
                .get(section, key)
                .map_err(|e| invalid(e.to_string()))?
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()))
        };
        let console = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
            let value = match get("slapconsole", key)? {
                Some(v) => Some(v),
                None => get("slapos", key)?,
            };
            Ok(value.map(|v| expand(&v)))
        };
        let master_url = get("slapos", "master_url")?
            .ok_or_else(|| invalid("no master_url in [slapos]: the gateway's URL".into()))?;
        let config = ClientConfig {
            path: path.to_path_buf(),
            master_url,
            cert_file: console("cert_file")?,
            key_file: console("key_file")?,
            master_ca_file: console("master_ca_file")?,
        };
        if config.master_url.starts_with("https://") {
            if config.cert_file.is_none() || config.key_file.is_none() {
                return Err(invalid(
                    "an https:// master_url needs cert_file and key_file in [slapconsole]: \
                     your certificate and its key"
                        .into(),
                ));
            }
            if config.master_ca_file.is_none() {
                return Err(invalid(
                    "an https:// master_url needs master_ca_file in [slapconsole]: the group's \
                     CA certificate the gateway is verified against (`slapos cluster ca \
                     export`; `slapos user add` writes it as ca.pem)"
                        .into(),
                ));
            }
        }
        Ok(config)
    }

    /// A client of the gateway: the files are checked readable first, so that a missing
    /// one is named with the configuration that names it.
    pub fn client(&self) -> Result<JsonRpcClient> {
        self.client_of(&self.master_url)
    }

    /// A client of another gateway of the group (`url`), with this configuration's
    /// certificate, key and CA.
    pub fn client_of(&self, url: &str) -> Result<JsonRpcClient> {
        for (what, file) in [
            ("certificate (cert_file)", &self.cert_file),
            ("key (key_file)", &self.key_file),
            ("the group's CA (master_ca_file)", &self.master_ca_file),
        ] {
            if let Some(path) = file {
                std::fs::read(path).map_err(|cause| ConfigError::File {
                    what,
                    path: path.clone(),
                    config: self.path.clone(),
                    cause,
                })?;
            }
        }
        let identity = self.cert_file.as_deref().zip(self.key_file.as_deref());
        Ok(JsonRpcClient::new(
            url,
            self.master_ca_file.as_deref(),
            identity,
        )?)
    }
}

#[derive(Args, Clone)]
pub struct ConsoleArgs {
    /// The client configuration (`[slapos] master_url`; `[slapconsole] cert_file`,
    /// `key_file`, `master_ca_file`). Default: $SLAPOS_CLIENT_CONFIGURATION, else
    /// ~/.slapos/slapos-client.cfg.
    #[arg(long, value_name = "FILE")]
    cfg: Option<PathBuf>,
    /// Print the gateway's JSON documents instead of text.
    #[arg(long)]
    json: bool,
}

impl ConsoleArgs {
    fn client(&self) -> Result<JsonRpcClient> {
        self.config()?.client()
    }

    pub(crate) fn config(&self) -> Result<ClientConfig> {
        let path = ClientConfig::locate(self.cfg.as_deref())?;
        Ok(ClientConfig::read(&path)?)
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

#[derive(Args)]
pub struct SupplyArgs {
    /// The software release URL to install.
    software_url: String,
    /// The computer (one of yours) to install it on.
    computer_id: String,
    /// `available` installs it; `destroyed` removes it.
    #[arg(long, default_value = "available", value_parser = ["available", "destroyed"])]
    state: String,
    #[command(flatten)]
    console: ConsoleArgs,
}

#[derive(Args)]
pub struct RequestArgs {
    /// Your instance's reference (its title, unique among your trees).
    reference: String,
    /// The software release URL it is an instance of.
    software_url: String,
    /// The software type to request.
    #[arg(long = "type")]
    software_type: Option<String>,
    /// Ask for a shared (slave) instance, hosted by an instance of the release.
    #[arg(long)]
    slave: bool,
    /// Instance parameters, KEY=VALUE (several after one --parameters, or repeated).
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE", conflicts_with = "parameters_file")]
    parameters: Vec<String>,
    /// Instance parameters from a JSON file (an object).
    #[arg(long, value_name = "FILE")]
    parameters_file: Option<PathBuf>,
    /// Where it may be allocated, KEY=VALUE: computer_guid=COMP-1, region=eu, ...
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    node: Vec<String>,
    /// The requested state.
    #[arg(long, default_value = "started", value_parser = ["started", "stopped", "destroyed"])]
    state: String,
    #[command(flatten)]
    console: ConsoleArgs,
}

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Your instance trees: title, requested state, software release.
    List {
        #[command(flatten)]
        console: ConsoleArgs,
    },
    /// One of your instance trees: its state, software, parameters and connection
    /// parameters.
    Show {
        /// The tree's title (what `slapos request` was given).
        name: String,
        #[command(flatten)]
        console: ConsoleArgs,
    },
}

/// `KEY=VALUE` pairs, each key once (slapos.core's `parse_option_dict`).
fn pairs(what: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("{what} {item:?}: expected KEY=VALUE"))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            anyhow::bail!("{what}: multiple values provided for the same key {k:?}");
        }
    }
    Ok(out)
}

fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn dict_lines(value: &Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                format!("  {k} = {v}")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "  (none)".into(),
    }
}

/// Whether a requested instance is ready: allocated, and its connection parameters
/// published by its node.
fn ready(doc: &Value) -> bool {
    let allocated = doc["computer_guid"].as_str().is_some_and(|c| !c.is_empty());
    let published = doc["connection_parameters"]
        .as_object()
        .is_some_and(|m| !m.is_empty());
    allocated && published
}

/// `slapos supply`.
pub async fn supply(args: SupplyArgs) -> Result<()> {
    let client = args.console.client()?;
    let answer = client
        .call(
            "slapos.post.v0.software_installation",
            &json!({
                "computer_guid": args.computer_id,
                "software_release_uri": args.software_url,
                "state": args.state,
            }),
        )
        .await?;
    if args.console.json {
        print_json(&json!({
            "computer_guid": args.computer_id,
            "software_release_uri": args.software_url,
            "state": args.state,
            "result": answer["title"],
        }))
    } else {
        println!(
            "Requested {} to be {} on {}.",
            args.software_url, args.state, args.computer_id
        );
        Ok(())
    }
}

/// `slapos request`: exit code 2 (as slapos.core) while the instance is not ready.
pub async fn request(args: RequestArgs) -> Result<i32> {
    let parameters: Map<String, Value> = match &args.parameters_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --parameters-file {}", path.display()))?;
            match serde_json::from_str(&text)
                .with_context(|| format!("--parameters-file {} is not JSON", path.display()))?
            {
                Value::Object(map) => map,
                _ => anyhow::bail!(
                    "--parameters-file {}: expected a JSON object of parameters",
                    path.display()
                ),
            }
        }
        None => pairs("--parameters", &args.parameters)?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    };
    let sla: Map<String, Value> = pairs("--node", &args.node)?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let body = json!({
        "title": args.reference,
        "software_release_uri": args.software_url,
        // slapos.core's DEFAULT_SOFTWARE_TYPE
        "software_type": args.software_type.as_deref().unwrap_or("default"),
        "state": args.state,
        "shared": args.slave,
        "parameters": parameters,
        "sla_parameters": sla,
    });
    let client = args.console.client()?;
    let doc = client
        .call("slapos.post.v0.software_instance", &body)
        .await?;
    let is_ready = ready(&doc) || args.state == "destroyed";
    if args.console.json {
        print_json(&doc)?;
    } else if is_ready {
        println!(
            "Instance requested.\nState is : {}.\nConnection parameters of instance are:\n{}\n\
             You can rerun the command to get up-to-date information.",
            doc["state"].as_str().unwrap_or(""),
            dict_lines(&doc["connection_parameters"])
        );
    } else {
        eprintln!(
            "Instance requested. Master is provisioning it. Please rerun in a couple of \
             minutes to get connection information."
        );
    }
    Ok(if is_ready { 0 } else { 2 })
}

/// `slapos instance list|show`.
pub async fn instance(cmd: InstanceCommand) -> Result<()> {
    match cmd {
        InstanceCommand::List { console } => {
            let client = console.client()?;
            let mut docs = Vec::new();
            for title in client.instance_trees().await? {
                docs.push(client.instance_tree(&title).await?);
            }
            if console.json {
                return print_json(&Value::Array(docs));
            }
            if docs.is_empty() {
                println!("no instance trees");
            }
            for d in &docs {
                println!(
                    "{}\t{}\t{}",
                    d["title"].as_str().unwrap_or(""),
                    d["state"].as_str().unwrap_or(""),
                    d["software_release_uri"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        InstanceCommand::Show { name, console } => {
            let client = console.client()?;
            let d = client.instance_tree(&name).await?;
            if console.json {
                return print_json(&d);
            }
            let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
            let placed = if s("computer_guid").is_empty() {
                "not allocated".to_string()
            } else {
                format!("{} {}", s("computer_guid"), s("compute_partition_id"))
            };
            println!(
                "title: {}\ninstance: {}\nsoftware release: {}\nsoftware type: {}\n\
                 shared: {}\nrequested state: {}\npartition: {placed}\nstatus: {}\n\
                 parameters:\n{}\nconnection parameters:\n{}",
                s("title"),
                s("instance_guid"),
                s("software_release_uri"),
                s("software_type"),
                d["shared"].as_bool().unwrap_or(false),
                s("state"),
                s("access_status_message"),
                dict_lines(&d["parameters"]),
                dict_lines(&d["connection_parameters"]),
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<ClientConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.cfg");
        std::fs::write(&p, text).unwrap();
        ClientConfig::read(&p)
    }

    #[test]
    fn client_configurations() {
        let c = cfg("[slapos]\nmaster_url = https://gw:1/\n\n[slapconsole]\ncert_file = /c\nkey_file = /k\nmaster_ca_file = /ca\n").unwrap();
        assert_eq!(c.master_ca_file.as_deref(), Some(Path::new("/ca")));
        // slapos.core's fallback to [slapos]
        let c = cfg("[slapos]\nmaster_url = https://gw:1/\ncert_file = /c\nkey_file = /k\nmaster_ca_file = /ca\n").unwrap();
        assert_eq!(c.cert_file.as_deref(), Some(Path::new("/c")));
        let e = cfg(
            "[slapos]\nmaster_url = https://gw:1/\n[slapconsole]\ncert_file = /c\nkey_file = /k\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("master_ca_file"), "{e}");
        assert!(cfg("[slapconsole]\ncert_file = /c\n")
            .unwrap_err()
            .to_string()
            .contains("master_url"));
        // plain HTTP (a test cluster): nothing to verify, no certificate
        assert!(cfg("[slapos]\nmaster_url = http://127.0.0.1:1/\n").is_ok());
        let missing = ClientConfig::read(Path::new("/nonexistent/slapos-client.cfg")).unwrap_err();
        assert!(missing
            .to_string()
            .contains("/nonexistent/slapos-client.cfg"));
    }

    #[test]
    fn key_value_pairs() {
        let p = pairs("--node", &["computer_guid=C=1".into(), "region=eu".into()]).unwrap();
        assert_eq!(p["computer_guid"], "C=1");
        assert!(pairs("--node", &["a=1".into(), "a=2".into()]).is_err());
        assert!(pairs("--node", &["nokey".into()]).is_err());
    }
}
