//! `slapos node software`: converges the software releases the master lists for this
//! computer into `software_root/md5(url)` (slapgrid-behaviour.md 3): installs what is
//! `available`, removes what is `destroyed`, reports building / available / error.
//! A finished install (`.completed`, written only after the master acknowledged) is never
//! redone unless forced.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slapos_proto::slap::SoftwareRelease;

use crate::client::{get_url_trusting, SlapError};
use crate::digest::{md5_hex, sha256_file};
use crate::fsutil::write_in;
use crate::native::{self, Manifest, NativeError};
use crate::node::{io_err, remove_tree, Node, NodeError};
use crate::process::{self, Identity, Run};

/// Debian's bundle of the system's certificate authorities.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Default)]
pub struct SoftwareOptions {
    /// Rebuild even completed releases.
    pub force: bool,
    /// Only these releases (URL or md5); empty = all.
    pub only: Vec<String>,
    /// Remove release directories no longer listed `available`.
    pub garbage_collect: bool,
}

/// What a run did, release by release.
#[derive(Debug, Default)]
pub struct SoftwareReport {
    pub installed: Vec<String>,
    pub destroyed: Vec<String>,
    pub up_to_date: Vec<String>,
    /// (url, error) of each release that failed.
    pub failed: Vec<(String, String)>,
}

/// `software_root/md5(url)`.
pub fn release_path(software_root: &Path, url: &str) -> PathBuf {
    software_root.join(md5_hex(url.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("Failed to run buildout profile in directory '{dir}':\n{output}\n")]
    Buildout { dir: String, output: String },
    #[error(transparent)]
    Native(#[from] NativeError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Slap(#[from] SlapError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

pub fn run(node: &Node, opts: &SoftwareOptions) -> Result<SoftwareReport, NodeError> {
    let cfg = &node.cfg;
    if !cfg.software_root.is_dir() {
        return Err(NodeError::Invalid(format!(
            "software_root {} does not exist (run `slapos node format` first)",
            cfg.software_root.display()
        )));
    }
    let computer = node.client.full_computer_information(&cfg.computer_id)?;
    let mut report = SoftwareReport::default();
    for release in computer.software_releases() {
        let url = release.software_release.clone();
        let sr = release_path(&cfg.software_root, &url);
        let hash = md5_hex(url.as_bytes());
        if !opts.only.is_empty() && !opts.only.iter().any(|o| *o == url || *o == hash) {
            continue;
        }
        let span = tracing::info_span!("software", url = %url, hash = %hash);
        let _enter = span.enter();
        match converge(node, release, &sr, opts.force) {
            Ok(Outcome::Installed) => report.installed.push(url),
            Ok(Outcome::Destroyed) => report.destroyed.push(url),
            Ok(Outcome::UpToDate) => report.up_to_date.push(url),
            Err(e) => {
                // The master unreachable is the run's failure, not this release's.
                if let InstallError::Slap(s) = &e {
                    if s.is_unreachable() {
                        return Err(NodeError::Slap(unreachable_again(s)));
                    }
                }
                let log = e.to_string();
                tracing::error!(error = %log, "software release failed");
                let computer_id = cfg.computer_id.as_str();
                if let Err(post) = node.client.post(
                    "softwareReleaseError",
                    &[
                        ("url", &url),
                        ("computer_id", computer_id),
                        ("error_log", &log),
                    ],
                    None,
                ) {
                    tracing::warn!(error = %post, "could not report the error to the master");
                }
                report.failed.push((url, log));
            }
        }
    }
    if opts.garbage_collect {
        let keep: Vec<String> = computer
            .software_releases()
            .iter()
            .filter(|r| requested_state(r) == "available")
            .map(|r| md5_hex(r.software_release.as_bytes()))
            .collect();
        let entries = std::fs::read_dir(&cfg.software_root).map_err(io_err(&cfg.software_root))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_release = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let has_profile = entry.path().join("buildout.cfg").exists()
                || entry.path().join(native::INSTALLED_MANIFEST).exists();
            if is_release && has_profile && !keep.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "garbage-collecting release");
                let owner = software_owner(node)?;
                let path = entry.path();
                process::run_as(&owner, || remove_tree(&path))?.map_err(io_err(&path))?;
            }
        }
    }
    Ok(report)
}

fn unreachable_again(e: &SlapError) -> SlapError {
    SlapError::Unreachable(e.to_string())
}

fn requested_state(release: &SoftwareRelease) -> &str {
    release
        .requested_state
        .get()
        .map(String::as_str)
        .unwrap_or("available")
}

enum Outcome {
    Installed,
    Destroyed,
    UpToDate,
}

fn converge(
    node: &Node,
    release: &SoftwareRelease,
    sr: &Path,
    force: bool,
) -> Result<Outcome, InstallError> {
    let cfg = &node.cfg;
    let url = release.software_release.as_str();
    let form = [("url", url), ("computer_id", cfg.computer_id.as_str())];
    match requested_state(release) {
        "destroyed" => {
            if sr.exists() {
                tracing::info!("removing software release");
                // The release directory is the software user's: removed as that user.
                let owner = software_owner(node)?;
                process::run_as(&owner, || remove_tree(sr))?
                    .map_err(io_err(sr))
                    .map_err(InstallError::Node)?;
            }
            node.client.post("destroyedSoftwareRelease", &form, None)?;
            Ok(Outcome::Destroyed)
        }
        _ => {
            let completed = sr.join(".completed");
            if completed.exists() && !force {
                return Ok(Outcome::UpToDate);
            }
            check_release_url(url).map_err(InstallError::Node)?;
            match node.client.post("buildingSoftwareRelease", &form, None) {
                Err(SlapError::NotFound { .. }) | Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            crate::node::check_free_space(sr, cfg.software_min_free_space, "the release")
                .map_err(InstallError::Node)?;
            tracing::info!("installing software release");
            if native::is_native(url) {
                install_native(node, url, sr, force)?;
            } else {
                install_buildout(node, url, sr, force)?;
            }
            node.client.post("availableSoftwareRelease", &form, None)?;
            let stamp = chrono::DateTime::from_timestamp(crate::node::now_unix() as i64, 0)
                .map(|t| t.format("%a %b %e %H:%M:%S %Y").to_string())
                .unwrap_or_default();
            // The release directory is the software user's: written without following a
            // link a build could have left there.
            write_in(sr, Path::new(".completed"), stamp.as_bytes(), 0o644, None)
                .map_err(io_err(&completed))
                .map_err(InstallError::Node)?;
            Ok(Outcome::Installed)
        }
    }
}

/// A release URL is one line of text: it goes into `buildout.cfg` (`extends = <url>`),
/// the partitions' buildout tail and their templates. One with a control character (a
/// newline would add buildout sections of the requester's) is refused.
pub fn check_release_url(url: &str) -> Result<(), NodeError> {
    if url.is_empty() || url.chars().any(char::is_control) {
        return Err(NodeError::Invalid(format!(
            "refusing software release URL {url:?}: empty or with a control character"
        )));
    }
    Ok(())
}

/// The owner of the software root (slapsoft on a formatted node): releases are built as
/// that user, never as root (a root-owned software root is refused).
fn software_owner(node: &Node) -> Result<Identity, NodeError> {
    let root = &node.cfg.software_root;
    let owner = Identity::owner_of(root).map_err(io_err(root))?;
    if process::is_root() && (owner.uid == 0 || owner.gid == 0) {
        return Err(NodeError::Invalid(format!(
            "{} is owned by root: releases are built by the software user that owns the \
             software root (made by `slapos node format` with alter_user), never as root",
            root.display()
        )));
    }
    Ok(owner)
}

/// Section 3.2: `buildout.cfg` extending the URL, bootstrap with the configured Python's
/// zc.buildout, then `bin/buildout -U` with umask 027, all of it as the release owner
/// (the directory, the profile, the cache: root touches nothing in the software root).
fn install_buildout(node: &Node, url: &str, sr: &Path, force: bool) -> Result<(), InstallError> {
    let owner = software_owner(node)?;
    process::run_as(&owner, || buildout_as_owner(node, url, sr, force, &owner))?
}

fn buildout_as_owner(
    node: &Node,
    url: &str,
    sr: &Path,
    force: bool,
    owner: &Identity,
) -> Result<(), InstallError> {
    let cfg = &node.cfg;
    if !sr.exists() {
        std::fs::create_dir(sr).map_err(io_err(sr))?;
        std::fs::set_permissions(sr, std::fs::Permissions::from_mode(0o755)).map_err(io_err(sr))?;
    }
    let cache = sr.join("extends-cache");
    if !cache.exists() {
        std::fs::create_dir(&cache).map_err(io_err(&cache))?;
    }
    let profile = sr.join("buildout.cfg");
    if !profile.exists() {
        let list = |items: &[String]| items.iter().map(|i| format!("\n\t{i}")).collect::<String>();
        let text = format!(
            "[buildout]\nextends = {url}\nshared-part-list = {}\nbuild-time-part-list = {}\n\n",
            list(&cfg.shared_part_list),
            list(&cfg.build_time_part_list)
        );
        write_in(sr, Path::new("buildout.cfg"), text.as_bytes(), 0o644, None)
            .map_err(io_err(&profile))?;
    }
    let mut params: Vec<String> = vec![
        format!("buildout:extends-cache={}", cache.display()),
        format!("buildout:directory={}", sr.display()),
    ];
    if !force {
        params.push("-N".into());
    }
    params.push("-c".into());
    params.push(profile.display().to_string());
    let buildout = sr.join("bin/buildout");
    let fail = |output: String| InstallError::Buildout {
        dir: sr.display().to_string(),
        output,
    };
    if !buildout.exists() {
        let home = owner.home.clone();
        let mut run = match &cfg.buildout {
            Some(script) => Run::new(&cfg.buildout_python, sr, &home)
                .arg("-S")
                .arg(script),
            None => Run::new(&cfg.buildout_python, sr, &home).arg("-c").arg(
                "import sys, zc.buildout.buildout; sys.argv[0] = 'buildout'; \
                 sys.exit(zc.buildout.buildout.main())",
            ),
        };
        for p in &params {
            run = run.arg(p);
        }
        let out = run.arg("bootstrap").as_user(owner.clone()).output()?;
        if !out.success() || !buildout.exists() {
            return Err(fail(format!(
                "bootstrap ({}):\n{}",
                out.describe(),
                out.output
            )));
        }
    }
    let words = process::shebang(&buildout)
        .ok_or_else(|| fail(format!("{} has no #! line", buildout.display())))?;
    let mut run = Run::new(&words[0], sr, sr);
    for w in &words[1..] {
        run = run.arg(w);
    }
    run = run.arg(&buildout).arg("-U");
    for p in &params {
        run = run.arg(p);
    }
    let out = run.as_user(owner.clone()).output()?;
    tracing::debug!(output = %out.output, "buildout");
    if !out.success() {
        return Err(fail(out.output));
    }
    Ok(())
}

/// The certificate authorities https:// manifests and artifacts are verified against
/// (the master's CA, the manifest being what the checksums are trusted from, and the
/// system's), read here so that the software user needs no access to them.
fn trusted_cas(node: &Node) -> Vec<Vec<u8>> {
    node.cfg
        .master_ca_file
        .iter()
        .cloned()
        .chain(Some(PathBuf::from(SYSTEM_CA_BUNDLE)))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// A native release, installed as the software user (see [`install_native_here`]). A
/// published release (its address names its manifest's digest) that cannot be installed
/// from the gateway its address names (retired, in a region cut off) is installed from
/// the same address at each gateway of the group the node knows, in turn: any of them
/// serves the same bytes, checked against the digest and the checksums.
fn install_native(node: &Node, url: &str, sr: &Path, force: bool) -> Result<(), InstallError> {
    let owner = software_owner(node)?;
    let cas = trusted_cas(node);
    let mirrors = mirrors(url, &node.client.gateway_urls());
    let mut failed = None;
    for candidate in &mirrors {
        match install_native_as(&owner, candidate, sr, &cas, force) {
            Ok(()) => {
                if candidate != url {
                    tracing::info!(from = %candidate, "installed from another gateway of the group");
                }
                return Ok(());
            }
            Err(e) => {
                if mirrors.len() > 1 {
                    tracing::warn!(from = %candidate, error = %e, "cannot install the release from there");
                }
                failed.get_or_insert(e);
            }
        }
    }
    Err(failed.unwrap_or_else(|| NativeError::Manifest(format!("no address for {url}")).into()))
}

/// Where a release at `url` can be installed from: `url` first, then, for a published
/// release's address, the same address at each https gateway (never plain HTTP).
fn mirrors(url: &str, gateways: &[String]) -> Vec<String> {
    let mut out = vec![url.to_string()];
    if let Some(digest) = slapos_proto::release_address::content_address(url) {
        for gateway in gateways.iter().filter(|g| g.starts_with("https://")) {
            let candidate = slapos_proto::release_address::release_url(gateway, digest);
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// [`install_native_here`] on a thread that is `owner` (the software user) for good:
/// every read, download, copy and unpack of the release is that user's, never root's.
pub fn install_native_as(
    owner: &Identity,
    url: &str,
    sr: &Path,
    cas: &[Vec<u8>],
    force: bool,
) -> Result<(), InstallError> {
    process::run_as(owner, || install_native_here(url, sr, cas, force))?
}

/// A native release: fetch and verify every artifact into a fresh directory, then move
/// it into place (a failed install leaves nothing half-built behind). Runs with the
/// caller's credentials: call it through [`install_native_as`].
pub fn install_native_here(
    url: &str,
    sr: &Path,
    cas: &[Vec<u8>],
    force: bool,
) -> Result<(), InstallError> {
    let get = |u: &str| get_url_trusting(u, cas).map_err(|e| e.to_string());
    let (text, manifest) = native::read_manifest(url, &get)?;
    let tmp = sr.with_extension("partial");
    remove_tree(&tmp).map_err(io_err(&tmp))?;
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = fill_native(&tmp, url, &text, &manifest, &get).and_then(|()| {
        check_templates(&tmp, &manifest)?;
        set_tree_modes(&tmp).map_err(InstallError::from)
    });
    if let Err(e) = result {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    if sr.exists() {
        if !force {
            tracing::warn!("replacing an incomplete earlier install");
        }
        remove_tree(sr).map_err(io_err(sr))?;
    }
    std::fs::rename(&tmp, sr).map_err(io_err(sr))?;
    Ok(())
}

/// The templates instance files name are files of the release that read as templates
/// of their kind (a release that would escape a value badly never installs).
fn check_templates(dir: &Path, manifest: &Manifest) -> Result<(), InstallError> {
    for file in &manifest.instance.file {
        if let Some(t) = &file.template {
            let rel = native::safe_relative(t).unwrap_or_default();
            let text = crate::fsutil::read_in(dir, &rel, native::MAX_MANIFEST)
                .map_err(io_err(&dir.join(&rel)))?
                .ok_or_else(|| {
                    NativeError::Manifest(format!("template {t} is not in the release"))
                })?;
            let text = String::from_utf8(text)
                .map_err(|_| NativeError::Manifest(format!("template {t} is not UTF-8")))?;
            native::Template::compile(&text, file.kind(), &file.path).map_err(NativeError::from)?;
        }
    }
    Ok(())
}

fn fill_native(
    dir: &Path,
    url: &str,
    text: &str,
    manifest: &Manifest,
    get: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<(), InstallError> {
    std::fs::write(dir.join(native::INSTALLED_MANIFEST), text)
        .map_err(io_err(&dir.join(native::INSTALLED_MANIFEST)))?;
    std::fs::write(dir.join(".url"), url).map_err(io_err(&dir.join(".url")))?;
    if let Some(p) = manifest.release.periodicity {
        std::fs::write(dir.join("periodicity"), p.to_string())
            .map_err(io_err(&dir.join("periodicity")))?;
    }
    for (i, artifact) in manifest.artifact.iter().enumerate() {
        let download = dir.join(format!(".download-{i}"));
        native::fetch(&artifact.url, url, &download, get)?;
        let sum = sha256_file(&download).map_err(io_err(&download))?;
        if !sum.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(NativeError::Artifact {
                url: artifact.url.clone(),
                message: format!("sha256 {sum}, expected {}", artifact.sha256),
            }
            .into());
        }
        // Checked by Manifest::parse.
        let rel = native::safe_relative(&artifact.dest).unwrap_or_default();
        let dest = dir.join(rel);
        if artifact.unpack {
            std::fs::create_dir_all(&dest).map_err(io_err(&dest))?;
            let out = Run::new("tar", dir, dir)
                .arg("--no-same-owner")
                .arg("--no-same-permissions")
                .arg("-xf")
                .arg(&download)
                .arg("-C")
                .arg(&dest)
                .output()
                .map_err(NodeError::from)?;
            if !out.success() {
                return Err(NativeError::Artifact {
                    url: artifact.url.clone(),
                    message: format!("tar: {}: {}", out.describe(), out.output.trim()),
                }
                .into());
            }
            std::fs::remove_file(&download).map_err(io_err(&download))?;
        } else {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            std::fs::rename(&download, &dest).map_err(io_err(&dest))?;
            let mode = artifact
                .mode
                .as_deref()
                .and_then(native::parse_mode)
                .unwrap_or(0o640);
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&dest))?;
        }
    }
    Ok(())
}

/// Release files are readable by the release owner's group (partition users are
/// members) and by nobody else, as a buildout release built with umask 027 is; the top
/// directory is 0755 as in the reference. Done by the owner itself (no link followed: a
/// link keeps its target's mode).
fn set_tree_modes(dir: &Path) -> Result<(), NodeError> {
    fn walk(p: &Path, top: bool) -> Result<(), NodeError> {
        let meta = std::fs::symlink_metadata(p).map_err(io_err(p))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        // No set-id or sticky bit survives: partition users are in the release group.
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if top {
            0o755
        } else if meta.is_dir() {
            (mode | 0o750) & 0o750
        } else {
            (mode | 0o640) & 0o750
        };
        if wanted != mode {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(wanted))
                .map_err(io_err(p))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(p).map_err(io_err(p))? {
                let entry = entry.map_err(io_err(p))?;
                walk(&entry.path(), false)?;
            }
        }
        Ok(())
    }
    walk(dir, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write_release(dir: &Path, artifacts: &[(&str, &[u8], u32)]) -> String {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut manifest = String::from("[release]\nname = \"t\"\n\n");
        for (name, content, mode) in artifacts {
            let f = dir.join(name);
            std::fs::write(&f, content).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode)).unwrap();
            manifest.push_str(&format!(
                "[[artifact]]\nurl = \"{name}\"\nsha256 = \"{}\"\ndest = \"bin/{name}\"\nmode = \"0755\"\n\n",
                sha256_file(&f).unwrap()
            ));
        }
        manifest.push_str(
            "[[instance.file]]\npath = \"etc/run/x\"\nmode = \"0750\"\nkind = \"shell\"\n\
             content = \"#!/bin/sh\\nexec {{software_path}}/bin/a {{param.x}}\\n\"\n",
        );
        let path = dir.join("software.toml");
        std::fs::write(&path, manifest).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path.display().to_string()
    }

    /// Issue 17.2: the agent installed native releases as root. Now everything happens
    /// as the software user: a file of the release only root can read is not installed,
    /// and what is installed is the software user's, group-readable, set-id bits gone.
    #[test]
    fn a_published_release_is_also_fetched_from_the_groups_other_https_gateways() {
        let sha = "b".repeat(64);
        let url = format!("https://[fd00::1]:8443/software/{sha}/software.toml");
        let gateways = [
            "https://[fd00::1]:8443/".to_string(),
            "https://[fd00::2]:8443/".to_string(),
            "http://[fd00::3]:8080/".to_string(),
        ];
        assert_eq!(
            mirrors(&url, &gateways),
            vec![
                url.clone(),
                format!("https://[fd00::2]:8443/software/{sha}/software.toml")
            ]
        );
        // Any other address is only itself.
        let plain = "https://lab.example/kvm/software.toml";
        assert_eq!(mirrors(plain, &gateways), vec![plain.to_string()]);
    }

    #[test]
    fn release_urls_with_control_characters_are_refused() {
        for bad in [
            "",
            "http://h/x.cfg\n[buildout]\nparts = evil",
            "/srv/x.toml\r",
            "a\u{0}b",
        ] {
            assert!(check_release_url(bad).is_err(), "{bad:?}");
        }
        check_release_url("https://h/rel/software.cfg?x=1 y").unwrap();
    }

    #[test]
    fn native_releases_install_as_the_software_user_never_root() {
        if !process::is_root() {
            return;
        }
        let user = crate::testutil::TestUser::new("inst");
        let who = user.identity.clone();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let soft = dir.path().join("soft");
        std::fs::create_dir(&soft).unwrap();
        std::os::unix::fs::chown(&soft, Some(who.uid), Some(who.gid)).unwrap();

        // A readable release installs, owned by the software user.
        let url = write_release(&dir.path().join("good"), &[("a", b"#!/bin/sh\n", 0o4755)]);
        let sr = release_path(&soft, &url);
        install_native_as(&who, &url, &sr, &[], false).unwrap();
        for (rel, mode) in [
            ("", 0o755),
            ("bin", 0o750),
            ("bin/a", 0o750),
            ("software.toml", 0o640),
        ] {
            let meta = std::fs::symlink_metadata(sr.join(rel)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (who.uid, who.gid), "{rel}");
            assert_eq!(meta.mode() & 0o7777, mode, "{rel}");
        }

        // A file of the release directory that only root may read (a key someone put
        // there) stays unread: the install fails and leaves nothing.
        let url = write_release(
            &dir.path().join("secret"),
            &[
                ("a", b"#!/bin/sh\n", 0o644),
                ("computer.key", b"PRIVATE KEY", 0o600),
            ],
        );
        let sr = release_path(&soft, &url);
        let err = install_native_as(&who, &url, &sr, &[], false).unwrap_err();
        assert!(
            err.to_string().contains("computer.key")
                && err.to_string().contains("ermission denied"),
            "{err}"
        );
        assert!(!sr.exists() && !sr.with_extension("partial").exists());

        // A software root owned by root is refused rather than built in as root.
        let root = Identity::by_name("root").unwrap();
        assert!(install_native_as(&root, &url, &sr, &[], false).is_err());
    }
}
