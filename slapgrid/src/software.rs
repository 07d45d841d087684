//! `slapos node software`: converges the software releases the master lists for this
//! computer into `software_root/md5(url)` (slapgrid-behaviour.md 3): installs what is
//! `available`, removes what is `destroyed`, reports building / available / error.
//! A finished install (`.completed`, written only after the master acknowledged) is never
//! redone unless forced.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slapos_proto::slap::SoftwareRelease;

use crate::client::{get_url, SlapError};
use crate::digest::{md5_hex, sha256_file};
use crate::fsutil::write_in;
use crate::native::{self, Manifest, NativeError};
use crate::node::{io_err, remove_tree, Node, NodeError};

/// Debian's bundle of the system's certificate authorities.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
use crate::process::{self, Identity, Run};

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
enum InstallError {
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
                remove_tree(&entry.path()).map_err(io_err(&entry.path()))?;
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
                remove_tree(sr)
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

/// The owner of the software root (slapsoft on a formatted node): releases are built as
/// that user, never as root.
fn software_owner(node: &Node) -> Result<Identity, NodeError> {
    Identity::owner_of(&node.cfg.software_root).map_err(io_err(&node.cfg.software_root))
}

fn chown_if_root(path: &Path, owner: &Identity) -> Result<(), NodeError> {
    if process::is_root() {
        process::lchown(path, owner.uid, owner.gid).map_err(io_err(path))?;
    }
    Ok(())
}

/// Section 3.2: `buildout.cfg` extending the URL, bootstrap with the configured Python's
/// zc.buildout, then `bin/buildout -U` as the release owner with umask 027.
fn install_buildout(node: &Node, url: &str, sr: &Path, force: bool) -> Result<(), InstallError> {
    let cfg = &node.cfg;
    let owner = software_owner(node)?;
    if !sr.exists() {
        std::fs::create_dir(sr).map_err(io_err(sr))?;
        std::fs::set_permissions(sr, std::fs::Permissions::from_mode(0o755)).map_err(io_err(sr))?;
    }
    chown_if_root(sr, &owner)?;
    let cache = sr.join("extends-cache");
    if !cache.exists() {
        std::fs::create_dir(&cache).map_err(io_err(&cache))?;
        chown_if_root(&cache, &owner)?;
    }
    let profile = sr.join("buildout.cfg");
    if !profile.exists() {
        let list = |items: &[String]| items.iter().map(|i| format!("\n\t{i}")).collect::<String>();
        let text = format!(
            "[buildout]\nextends = {url}\nshared-part-list = {}\nbuild-time-part-list = {}\n\n",
            list(&cfg.shared_part_list),
            list(&cfg.build_time_part_list)
        );
        let owner_ids = process::is_root().then_some((owner.uid, owner.gid));
        write_in(
            sr,
            Path::new("buildout.cfg"),
            text.as_bytes(),
            0o644,
            owner_ids,
        )
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
    let out = run.as_user(owner).output()?;
    tracing::debug!(output = %out.output, "buildout");
    if !out.success() {
        return Err(fail(out.output));
    }
    Ok(())
}

/// A native release: fetch and verify every artifact into a fresh directory, then move
/// it into place (a failed install leaves nothing half-built behind).
fn install_native(node: &Node, url: &str, sr: &Path, force: bool) -> Result<(), InstallError> {
    let cfg = &node.cfg;
    let owner = software_owner(node)?;
    // https:// manifests and artifacts are verified against the system's CAs and the
    // master's CA (the manifest is what the checksums are trusted from).
    let cas: Vec<PathBuf> = cfg
        .master_ca_file
        .iter()
        .cloned()
        .chain(Some(PathBuf::from(SYSTEM_CA_BUNDLE)).filter(|p| p.exists()))
        .collect();
    let get = move |u: &str| get_url(u, &cas).map_err(|e| e.to_string());
    let (text, manifest) = native::read_manifest(url, &get)?;
    let tmp = sr.with_extension("partial");
    remove_tree(&tmp).map_err(io_err(&tmp))?;
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    // Archives are unpacked as the release owner, never as root.
    chown_if_root(&tmp, &owner)?;
    let result = fill_native(&tmp, url, &text, &manifest, &get, &owner);
    if let Err(e) = result {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    set_tree_owner_and_modes(&tmp, &owner)?;
    if sr.exists() {
        if !force {
            tracing::warn!("replacing an incomplete earlier install");
        }
        remove_tree(sr).map_err(io_err(sr))?;
    }
    std::fs::rename(&tmp, sr).map_err(io_err(sr))?;
    Ok(())
}

fn fill_native(
    dir: &Path,
    url: &str,
    text: &str,
    manifest: &Manifest,
    get: &dyn Fn(&str) -> Result<Vec<u8>, String>,
    owner: &Identity,
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
            set_tree_owner_and_modes(dir, owner)?;
            let mut tar = Run::new("tar", dir, dir)
                .arg("--no-same-owner")
                .arg("--no-same-permissions")
                .arg("-xf")
                .arg(&download)
                .arg("-C")
                .arg(&dest);
            if process::is_root() {
                tar = tar.as_user(owner.clone());
            }
            let out = tar.output().map_err(NodeError::from)?;
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

/// Release files are the release owner's, readable by its group (partition users are
/// members) and by nobody else, as a buildout release built with umask 027 is; the top
/// directory is 0755 as in the reference.
fn set_tree_owner_and_modes(dir: &Path, owner: &Identity) -> Result<(), NodeError> {
    fn walk(p: &Path, owner: &Identity, top: bool) -> Result<(), NodeError> {
        let meta = std::fs::symlink_metadata(p).map_err(io_err(p))?;
        if process::is_root() {
            process::lchown(p, owner.uid, owner.gid).map_err(io_err(p))?;
        }
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
                walk(&entry.path(), owner, false)?;
            }
        }
        Ok(())
    }
    walk(dir, owner, true)
}
