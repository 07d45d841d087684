//! The software releases of `deploy/software`, embedded, and written out for a node to
//! install: `slapos-master` (the master as a release: a `replica` and a `gateway` type)
//! for this very binary, and `hello`, the sample of `slapos up`. A node installs only
//! files of the release's own directory, named relative to the manifest, verified
//! against the checksums filled in here; the files are readable by a node's software
//! user.

use crate::error::OperatorError;
use crate::files;
use std::path::Path;

const MASTER_MANIFEST: &str = include_str!("../../deploy/software/slapos-master/software.toml");
const MASTER_SCRIPT: &str = include_str!("../../deploy/software/slapos-master/slapos-master.sh");
const HELLO_MANIFEST: &str = include_str!("../../deploy/software/hello/software.toml");
const HELLO_SCRIPT: &str = include_str!("../../deploy/software/hello/hello.sh");

/// The slapos-master release for `binary` (this program), written into `dir`: the
/// manifest, its script and a copy of the binary beside them; the manifest's path.
pub fn write_master_release(dir: &Path, binary: &Path) -> Result<String, OperatorError> {
    files::create_dir_all(dir)?;
    let dir = files::absolute(dir)?;
    let script = dir.join("slapos-master.sh");
    files::write(&script, MASTER_SCRIPT)?;
    let sum = files::sha256(binary)?;
    let copy = dir.join("slapos");
    if !copy.exists() || files::sha256(&copy)? != sum {
        // A copy, not a link, swapped in whole (a node may be reading the previous one).
        let tmp = dir.join(".slapos.partial");
        files::copy(binary, &tmp)?;
        files::rename(&tmp, &copy)?;
    }
    let manifest = MASTER_MANIFEST
        .replace("@SLAPOS_SHA256@", &sum)
        .replace("@SCRIPT_SHA256@", &files::sha256(&script)?);
    let path = dir.join("software.toml");
    files::write(&path, manifest)?;
    files::set_mode(&dir, 0o755)?;
    for f in [&script, &path, &copy] {
        files::set_mode(f, 0o644)?;
    }
    Ok(path.display().to_string())
}

/// The sample release (its artifact's checksum filled in) written into
/// `<dir>/software/hello`; its manifest's path.
pub fn write_sample_release(dir: &Path) -> Result<String, OperatorError> {
    let release = dir.join("software/hello");
    files::create_dir_all(&release)?;
    let script = release.join("hello.sh");
    files::write(&script, HELLO_SCRIPT)?;
    let sum = files::sha256(&script)?;
    let manifest = release.join("software.toml");
    files::write(&manifest, HELLO_MANIFEST.replace("@HELLO_SHA256@", &sum))?;
    if slapgrid::process::is_root() {
        for d in [dir.join("software"), release.clone()] {
            files::set_mode(&d, 0o755)?;
        }
        for f in [&script, &manifest] {
            files::set_mode(f, 0o644)?;
        }
    }
    Ok(manifest.display().to_string())
}
