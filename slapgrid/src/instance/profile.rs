//! The instance profile (slapgrid-behaviour.md 4.3), run as the partition's user:
//! buildout (the release's `instance.cfg` plus the tail slapgrid appends, run offline
//! through `SR/bin/buildout`'s interpreter) or native (the manifest's files rendered with
//! the partition's variables, each value escaped for its file's kind).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slapos_proto::marshal::Value;
use slapos_proto::slap::ComputerPartition;

use super::partition::{software_url, state_of, value_text, PartitionError};
use crate::cgroup::PartitionCgroup;
use crate::fsutil::{self, write_in};
use crate::native::{self, Manifest};
use crate::node::{io_err, Node};
use crate::process::{self, Identity, Run};

pub(super) enum Profile {
    Buildout,
    Native(Box<Manifest>, BTreeMap<String, String>),
}

/// Runs the instance profile (4.3), buildout or native.
pub(super) fn install(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    sr: Option<&Path>,
    identity: &Identity,
    cgroup: Option<&PartitionCgroup>,
) -> Result<Profile, PartitionError> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let sr = sr.ok_or_else(|| {
        PartitionError::Failed(format!("partition {pid} has no software release"))
    })?;
    crate::node::check_free_space(path, cfg.instance_min_free_space, "the instance")?;
    let mode = std::fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode != 0o750 {
        return Err(PartitionError::Failed(format!(
            "Wrong permissions in {}: actual permissions are: 0{mode:o}, wanted are 0750",
            path.display()
        )));
    }
    if !sr.is_dir() {
        return Err(PartitionError::Failed(format!(
            "Software Release {} is not present on this computer (not installed yet?)",
            sr.display()
        )));
    }
    // P/software_release -> SR (replaced if a link, left alone if something else).
    let link = path.join("software_release");
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&link).ok().as_deref() != Some(sr) {
                std::fs::remove_file(&link).map_err(io_err(&link))?;
                std::os::unix::fs::symlink(sr, &link).map_err(io_err(&link))?;
            }
        }
        Ok(_) => {}
        Err(_) => std::os::unix::fs::symlink(sr, &link).map_err(io_err(&link))?,
    }
    if process::is_root() {
        let _ = process::lchown(&link, identity.uid, identity.gid);
    }
    if let Some(manifest) = installed_manifest(sr)? {
        let vars = variables(node, partition, path, sr);
        let owner = process::is_root().then_some((identity.uid, identity.gid));
        for (rel, text, mode) in render_native(sr, &manifest, &vars)? {
            write_in(path, &rel, text.as_bytes(), mode, owner).map_err(io_err(&path.join(&rel)))?;
        }
        return Ok(Profile::Native(Box::new(manifest), vars));
    }
    buildout_instance(node, partition, path, sr, identity, cgroup)?;
    // The retention delay the master asked for (in days), kept for destruction.
    let delay = partition
        .filter_dict
        .get()
        .and_then(|d| d.get("retention_delay"))
        .and_then(value_text)
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0);
    let lock = path.join(".slapos-retention-lock-delay");
    if !lock.exists() {
        let _ = write_in(
            path,
            Path::new(".slapos-retention-lock-delay"),
            format!("{delay:?}").as_bytes(),
            0o644,
            None,
        );
    }
    let _ = cfg;
    Ok(Profile::Buildout)
}

/// Largest manifest, template or buildout profile read from an installed release.
const MAX_RELEASE_TEXT: u64 = 16 << 20;

/// A file of the installed release, as text. The release directory is the software
/// user's: root reads it without following a link (a template linked to a key of the
/// node is refused, never rendered into the partition). `None`: absent.
fn release_file(sr: &Path, rel: &Path) -> Result<Option<String>, PartitionError> {
    match fsutil::read_in(sr, rel, MAX_RELEASE_TEXT) {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PartitionError::Failed(format!("{}: not UTF-8", sr.join(rel).display()))),
        Ok(None) => Ok(None),
        Err(e) => Err(io_err(&sr.join(rel))(e).into()),
    }
}

/// The native manifest of the release installed at `sr` (`None`: a buildout release).
fn installed_manifest(sr: &Path) -> Result<Option<Manifest>, PartitionError> {
    release_file(sr, Path::new(native::INSTALLED_MANIFEST))?
        .map(|text| Manifest::parse(&text).map_err(|e| PartitionError::Failed(e.to_string())))
        .transpose()
}

/// The software type of the instance `vars` describe (the master's `slap_software_type`).
pub(super) fn software_type(vars: &BTreeMap<String, String>) -> &str {
    vars.get("software_type")
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or(native::DEFAULT_SOFTWARE_TYPE)
}

/// The instance files of a native release rendered with `vars`, those of the instance's
/// software type: (path in the partition, content, mode). Typed parameters are checked
/// first, whether a file uses them or not.
fn render_native(
    sr: &Path,
    manifest: &Manifest,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<(PathBuf, String, u32)>, PartitionError> {
    let failed = |e: native::NativeError| PartitionError::Failed(e.to_string());
    let files = manifest.files_for(software_type(vars)).map_err(failed)?;
    manifest.check_parameters(vars).map_err(failed)?;
    let mut out = Vec::new();
    for file in files {
        let template = match &file.template {
            Some(t) => {
                let rel = native::safe_relative(t).unwrap_or_default();
                Some(release_file(sr, &rel)?.ok_or_else(|| {
                    PartitionError::Failed(format!("template {t} is missing from {}", sr.display()))
                })?)
            }
            None => None,
        };
        let text = manifest
            .render_file(file, template.as_deref(), vars)
            .map_err(failed)?;
        let mode = file
            .mode
            .as_deref()
            .and_then(native::parse_mode)
            .unwrap_or(0o640);
        out.push((
            native::safe_relative(&file.path).unwrap_or_default(),
            text,
            mode,
        ));
    }
    Ok(out)
}

fn buildout_instance(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    sr: &Path,
    identity: &Identity,
    cgroup: Option<&PartitionCgroup>,
) -> Result<(), PartitionError> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    // Files of the software user's directory, read by root: never through a link.
    let mut profile = None;
    for name in ["instance.cfg", "template.cfg"] {
        if let Some(text) = release_file(sr, Path::new(name))? {
            profile = Some(text);
            break;
        }
    }
    let mut text = profile.ok_or_else(|| {
        PartitionError::Failed(format!(
            "Software Release {} is not correctly installed (no instance.cfg)",
            sr.display()
        ))
    })?;
    text.push_str("\n\n");
    text.push_str(&buildout_tail(node, partition));
    let owner = process::is_root().then_some((0, identity.gid));
    write_in(
        path,
        Path::new("buildout.cfg"),
        text.as_bytes(),
        0o640,
        owner,
    )
    .map_err(io_err(&path.join("buildout.cfg")))?;
    let buildout = sr.join("bin/buildout");
    let words = fsutil::read_head_in(sr, Path::new("bin/buildout"), 512)
        .ok()
        .and_then(|head| process::shebang_words(&head))
        .ok_or_else(|| {
            PartitionError::Failed(format!(
                "{} is missing or has no #! line",
                buildout.display()
            ))
        })?;
    let mut run = Run::new(&words[0], path, path);
    for w in &words[1..] {
        run = run.arg(w);
    }
    let out = run
        .arg(&buildout)
        .arg("-U")
        .env("SLAPGRID_INSTANCE_ROOT", &cfg.instance_root)
        .as_user(identity.clone())
        .in_cgroup(cgroup.cloned())
        .timeout(cfg.partition_timeout)
        .output()?;
    tracing::debug!(output = %out.output, "instance buildout");
    if !out.success() {
        return Err(PartitionError::Failed(format!(
            "Failed to run buildout profile in directory '{}':\n{}\n",
            path.display(),
            out.output
        )));
    }
    let _ = pid;
    Ok(())
}

/// The tail slapgrid appends to the instance profile (4.3 step 6).
fn buildout_tail(node: &Node, partition: &ComputerPartition) -> String {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let (key, cert) = cfg
        .partition_certificate_paths(pid)
        .map(|(k, c)| (k.display().to_string(), c.display().to_string()))
        .unwrap_or_default();
    let list = |items: &[String]| items.iter().map(|i| format!("\n  {i}")).collect::<String>();
    let url = software_url(partition).unwrap_or_default();
    let master = cfg.master_urls.first().cloned().unwrap_or_default();
    let master = master.trim_end_matches('/');
    format!(
        "# This part was generated by slapgrid (slapos-rs) and overrides the profile above.\n\
         [buildout]\nbin-directory = ${{buildout:directory}}/sbin\noffline = true\n\n\
         [slap-connection]\ncomputer-id = {cid}\npartition-id = {pid}\nserver-url = {master}\n\
         software-release-url = {url}\nkey-file = {key}\ncert-file = {cert}\n\
         shared-part-list = {shared}\nbuild-time-part-list = {build}\nrequested-state = {state}\n\n\
         [slap_connection]\ncomputer_id = {cid}\npartition_id = {pid}\nserver_url = {master}\n\
         software_release_url = {url}\nkey_file = {key}\ncert_file = {cert}\n\n\
         [storage-configuration]\nstorage-home = {storage}\n\n\
         [network-information]\nglobal-ipv4-network = {ipv4}\n\
         # End of the part generated by slapgrid.\n",
        cid = cfg.computer_id,
        shared = list(&cfg.shared_part_list),
        build = list(&cfg.build_time_part_list),
        state = state_of(partition),
        storage = cfg
            .instance_storage_home
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ipv4 = cfg.ipv4_global_network.clone().unwrap_or_default(),
    )
}

/// The variables a native template may use (DESIGN.md lists them).
fn variables(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    sr: &Path,
) -> BTreeMap<String, String> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let mut vars = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_owned(), v);
    };
    set("computer_id", cfg.computer_id.clone());
    set("partition_id", pid.to_owned());
    set("partition_path", path.display().to_string());
    set("software_path", sr.display().to_string());
    set(
        "software_release_url",
        software_url(partition).unwrap_or_default(),
    );
    set("requested_state", state_of(partition).to_owned());
    set(
        "master_url",
        cfg.master_urls.first().cloned().unwrap_or_default(),
    );
    set("instance_root", cfg.instance_root.display().to_string());
    if let Some((k, c)) = cfg.partition_certificate_paths(pid) {
        set("key_file", k.display().to_string());
        set("cert_file", c.display().to_string());
    }
    if let Some(guid) = partition.instance_guid.get() {
        set("instance_guid", guid.clone());
    }
    let params = partition.parameter_dict.get();
    for (key, name) in [
        ("instance_title", "instance_title"),
        ("root_instance_title", "root_instance_title"),
        ("slap_software_type", "software_type"),
        ("timestamp", "timestamp"),
    ] {
        if let Some(v) = params.and_then(|d| d.get(key)).and_then(value_text) {
            set(name, v);
        }
    }
    // Addresses: the master's ip_list, (interface, address) pairs.
    if let Some(Value::List(ips)) = params.and_then(|d| d.get("ip_list")) {
        for ip in ips {
            if let Value::Tuple(t) | Value::List(t) = ip {
                if let Some(Value::Str(addr)) = t.get(1) {
                    let key = if addr.contains(':') { "ipv6" } else { "ipv4" };
                    vars.entry(key.to_owned()).or_insert_with(|| addr.clone());
                }
            }
        }
    }
    if let Some(d) = params {
        for (k, v) in d {
            if let Some(text) = value_text(v) {
                vars.insert(format!("param.{k}"), text);
            }
        }
        // JSON-in-XML parameters: one `_` key holding a JSON object.
        if let Some(Value::Str(json)) = d.get("_") {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    vars.insert(format!("param.{k}"), text);
                }
            }
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release directory is the software user's: a template (or the manifest itself)
    /// it turned into a link to a file of the node's is refused, never rendered into the
    /// partition where the partition user would read it.
    #[test]
    fn release_files_read_by_root_never_follow_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("computer.key");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        let sr = dir.path().join("sr");
        std::fs::create_dir(&sr).unwrap();
        let manifest = "[release]\nname = \"t\"\n\n[[instance.file]]\npath = \"etc/k\"\n\
                        kind = \"plain\"\ntemplate = \"k.in\"\n";
        std::fs::write(sr.join("software.toml"), manifest).unwrap();
        std::os::unix::fs::symlink(&secret, sr.join("k.in")).unwrap();
        let m = installed_manifest(&sr).unwrap().unwrap();
        let err = render_native(&sr, &m, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("k.in") && !err.contains("PRIVATE"), "{err}");

        // A plain template renders.
        std::fs::remove_file(sr.join("k.in")).unwrap();
        std::fs::write(sr.join("k.in"), "x={{x}}\n").unwrap();
        let vars = BTreeMap::from([("x".to_string(), "1".to_string())]);
        let files = render_native(&sr, &m, &vars).unwrap();
        assert_eq!(
            files,
            vec![(PathBuf::from("etc/k"), "x=1\n".to_string(), 0o640)]
        );

        // The manifest itself as a link.
        std::fs::rename(sr.join("software.toml"), dir.path().join("m.toml")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("m.toml"), sr.join("software.toml")).unwrap();
        assert!(installed_manifest(&sr).is_err());
        // The release directory itself as a link (made by its owner in the software root).
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(dir.path(), &linked).unwrap();
        assert!(installed_manifest(&linked).is_err());
    }

    /// A partition gets the files of its instance's software type (the master's
    /// `slap_software_type`), and an instance of a type the release does not deploy is
    /// refused before any file is written.
    #[test]
    fn a_partition_gets_the_files_of_its_software_type() {
        let dir = tempfile::tempdir().unwrap();
        let sr = dir.path().join("sr");
        std::fs::create_dir(&sr).unwrap();
        let manifest = "[release]\nname = \"t\"\n\n\
                        [[instance.file]]\npath = \"etc/ca\"\nkind = \"plain\"\ncontent = \"ca\"\n\n\
                        [[instance.file]]\npath = \"etc/key\"\nkind = \"plain\"\n\
                        software_types = [\"replica\"]\ncontent = \"replica key\"\n\n\
                        [[instance.file]]\npath = \"etc/conf\"\nkind = \"plain\"\n\
                        software_types = [\"gateway\"]\ncontent = \"gateway\"\n";
        std::fs::write(sr.join("software.toml"), manifest).unwrap();
        let m = installed_manifest(&sr).unwrap().unwrap();
        let of = |software_type: &str| {
            let vars = BTreeMap::from([("software_type".to_string(), software_type.to_string())]);
            render_native(&sr, &m, &vars).map(|files| {
                files
                    .into_iter()
                    .map(|(p, text, _)| format!("{}={text}", p.display()))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(of("replica").unwrap(), ["etc/ca=ca", "etc/key=replica key"]);
        assert_eq!(of("gateway").unwrap(), ["etc/ca=ca", "etc/conf=gateway"]);
        // The master names no type: `default`, which this release does not deploy.
        for other in ["", "default", "Replica"] {
            let err = of(other).unwrap_err().to_string();
            assert!(err.contains("gateway, replica"), "{other:?}: {err}");
        }
    }
}
