//! The releases a gateway serves: a content-addressed store of published blobs (a
//! release's manifest and its artifacts, each named by its sha256), and the names a node
//! reads them by.
//!
//! A release published here is reached at `<gateway>/software/<manifest sha256>/software.toml`;
//! an artifact the manifest names by a relative URL (`slapos`, `lib/x.tar.gz`) resolves,
//! as a node resolves it, to `<gateway>/software/<manifest sha256>/<that URL>` and is
//! served from the blob of the sha256 the manifest gives it. Everything is immutable: a
//! URL always names the same bytes, and a node checks them against the manifest's
//! checksums whichever gateway answered. Blobs are written under a temporary name while
//! their digest is computed and renamed into place only when it matches their name.
//!
//! The transport (routes, who may publish) is `server::releases`; this room only knows
//! files and digests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use slapos_proto::release_address::{content_address, is_digest, release_url, MANIFEST};

/// The largest manifest read (a manifest is text; its artifacts hold the bulk).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0:?} is not a sha256 (64 lowercase hexadecimal digits)")]
    NotADigest(String),
    #[error("no blob {0} here")]
    Missing(String),
    #[error("release {release} names no artifact {name:?}")]
    NoSuchArtifact { release: String, name: String },
    #[error("blob {0} is not a release manifest: {1}")]
    NotAManifest(String, String),
    #[error("the body's sha256 is {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_digest(s: &str) -> Result<(), StoreError> {
    if is_digest(s) {
        Ok(())
    } else {
        Err(StoreError::NotADigest(s.chars().take(80).collect()))
    }
}

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest computed while writing.
pub struct Hashing {
    ctx: ring::digest::Context,
    len: u64,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
        }
    }
}

impl Hashing {
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> String {
        hex(self.ctx.finish().as_ref())
    }
}

/// The artifacts a manifest names by a relative URL, and their sha256 (what the store can
/// serve under the release's address).
pub fn relative_artifacts(manifest: &str) -> Result<BTreeMap<String, String>, String> {
    let doc: toml::Table = toml::from_str(manifest).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    let Some(artifacts) = doc.get("artifact") else {
        return Ok(out);
    };
    let artifacts = artifacts
        .as_array()
        .ok_or("`artifact` is not an array of tables")?;
    for a in artifacts {
        let url = a
            .get("url")
            .and_then(|v| v.as_str())
            .ok_or("an artifact has no url")?;
        let sha = a
            .get("sha256")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("artifact {url} has no sha256"))?;
        if !url.contains("://") {
            out.insert(url.to_string(), sha.to_ascii_lowercase());
        }
    }
    Ok(out)
}

/// The JSON schema of a release's instance parameters for `software_type`, by SlapOS's
/// `software.cfg.json` convention: the manifest names an artifact `software.cfg.json`
/// whose `software-type.<type>.request` names another artifact of the manifest, the
/// schema. Names are looked up among the manifest's artifacts (never joined to a path);
/// each file is read within 1 MiB. None when any step is missing.
pub fn parameter_schema(
    store: &ReleaseStore,
    release: &str,
    software_type: &str,
) -> Option<serde_json::Value> {
    const LIMIT: u64 = 1 << 20;
    let read = |name: &str| -> Option<serde_json::Value> {
        let path = store.resolve(release, name).ok()?;
        let text = read_bounded(&path, LIMIT).ok()?;
        serde_json::from_str(&text).ok()
    };
    let cfg = read("software.cfg.json")?;
    let types = cfg.get("software-type")?;
    let t = types.get(software_type).or_else(|| types.get("default"))?;
    let name = t.get("request")?.as_str()?;
    let schema = read(name)?;
    schema.is_object().then_some(schema)
}

/// A content-addressed store of blobs in a directory: `blobs/<sha256>` and `tmp/`.
#[derive(Debug, Clone)]
pub struct ReleaseStore {
    dir: PathBuf,
    max_blob_bytes: u64,
}

impl ReleaseStore {
    /// The store in `dir` (created), refusing blobs over `max_blob_bytes`. Temporary
    /// files an interrupted upload left are removed.
    pub fn open(dir: &Path, max_blob_bytes: u64) -> Result<ReleaseStore, StoreError> {
        let store = ReleaseStore {
            dir: dir.to_path_buf(),
            max_blob_bytes,
        };
        std::fs::create_dir_all(store.blobs()).map_err(io(dir))?;
        let tmp = store.tmp();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(store)
    }

    pub fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The file of blob `sha256`, when the store has it.
    pub fn blob(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        check_digest(sha256)?;
        let path = self.blobs().join(sha256);
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::Missing(sha256.to_string()))
        }
    }

    /// Whether blob `sha256` is here.
    pub fn has(&self, sha256: &str) -> bool {
        self.blob(sha256).is_ok()
    }

    /// The file served as `name` of release `release` (its manifest's digest):
    /// the manifest itself, or the blob of the artifact it names `name`.
    pub fn resolve(&self, release: &str, name: &str) -> Result<PathBuf, StoreError> {
        let manifest = self.blob(release)?;
        if name == MANIFEST {
            return Ok(manifest);
        }
        let text = read_bounded(&manifest, MAX_MANIFEST_BYTES)
            .map_err(|e| StoreError::NotAManifest(release.to_string(), e))?;
        let artifacts = relative_artifacts(&text)
            .map_err(|e| StoreError::NotAManifest(release.to_string(), e))?;
        let sha = artifacts
            .get(name)
            .ok_or_else(|| StoreError::NoSuchArtifact {
                release: release.to_string(),
                name: name.chars().take(200).collect(),
            })?;
        self.blob(sha)
    }

    /// A new blob being written: its bytes go to a temporary file while their digest is
    /// computed; [`Upload::commit`] keeps it only under the name it was announced with.
    pub fn upload(&self, sha256: &str) -> Result<Upload, StoreError> {
        check_digest(sha256)?;
        let mut suffix = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
            .map_err(|_| io(&self.tmp())(std::io::Error::other("no randomness")))?;
        let path = self.tmp().join(format!("{sha256}.{}", hex(&suffix)));
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        Ok(Upload {
            expected: sha256.to_string(),
            path,
            file: Some(file),
            hashing: Hashing::default(),
            limit: self.max_blob_bytes,
            dest: self.blobs().join(sha256),
        })
    }

    /// Puts the bytes of `file` in the store when their sha256 is `sha256` (a copy).
    pub fn put_file(&self, sha256: &str, file: &Path) -> Result<(), StoreError> {
        if self.has(sha256) {
            return Ok(());
        }
        let mut upload = self.upload(sha256)?;
        let mut f = std::fs::File::open(file).map_err(io(file))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(io(file))?;
            if n == 0 {
                break;
            }
            upload.write(&buf[..n])?;
        }
        upload.commit()
    }

    /// An installed native release (`dir`: its installed manifest `software.toml` and
    /// its artifacts at their `dest`) put in the store, so that this gateway serves the
    /// release it runs from under the same address it was published at. None when the
    /// release cannot be served again (an artifact was unpacked: its archive is gone).
    pub fn import_installed(&self, dir: &Path) -> Result<Option<String>, StoreError> {
        let manifest_path = dir.join(MANIFEST);
        let text =
            read_bounded(&manifest_path, MAX_MANIFEST_BYTES).map_err(|e| StoreError::Io {
                path: manifest_path.clone(),
                source: std::io::Error::other(e),
            })?;
        let digest = sha256_hex(text.as_bytes());
        let doc: toml::Table = toml::from_str(&text)
            .map_err(|e| StoreError::NotAManifest(digest.clone(), e.to_string()))?;
        let artifacts = doc
            .get("artifact")
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default();
        let mut files = Vec::new();
        for a in &artifacts {
            let field = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            if field("url").contains("://") {
                continue;
            }
            if a.get("unpack").and_then(|v| v.as_bool()) == Some(true) {
                return Ok(None);
            }
            let dest = Path::new(field("dest"));
            if dest.is_absolute()
                || dest
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(StoreError::NotAManifest(
                    digest,
                    format!("artifact dest {:?} leaves the release", field("dest")),
                ));
            }
            files.push((field("sha256").to_ascii_lowercase(), dir.join(dest)));
        }
        for (sha, path) in &files {
            if !self.has(sha) {
                let mut h = Hashing::default();
                let mut f = std::fs::File::open(path).map_err(io(path))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).map_err(io(path))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let actual = h.finish();
                if &actual != sha {
                    return Err(StoreError::DigestMismatch {
                        expected: sha.clone(),
                        actual,
                    });
                }
                self.put_file(sha, path)?;
            }
        }
        if !self.has(&digest) {
            let mut upload = self.upload(&digest)?;
            upload.write(text.as_bytes())?;
            upload.commit()?;
        }
        Ok(Some(digest))
    }
}

/// A blob being written (see [`ReleaseStore::upload`]); dropped without a commit, its
/// temporary file is removed.
pub struct Upload {
    expected: String,
    path: PathBuf,
    file: Option<std::fs::File>,
    hashing: Hashing,
    limit: u64,
    dest: PathBuf,
}

impl Upload {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.hashing.len() + bytes.len() as u64 > self.limit {
            return Err(StoreError::TooLarge { limit: self.limit });
        }
        self.hashing.update(bytes);
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io(&self.path)),
            None => Ok(()),
        }
    }

    /// Keeps the blob when its digest is the announced one (synced, then renamed into
    /// place: a blob in the store is always whole).
    pub fn commit(mut self) -> Result<(), StoreError> {
        let file = self.file.take();
        let hashing = std::mem::take(&mut self.hashing);
        let actual = hashing.finish();
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        if let Some(f) = file {
            f.sync_all().map_err(io(&self.path))?;
        }
        std::fs::rename(&self.path, &self.dest).map_err(io(&self.dest))?;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Committed: renamed away already (nothing to remove).
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_bounded(path: &Path, limit: u64) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(artifact_sha: &str) -> String {
        format!(
            "[release]\nname = \"t\"\n\n[[artifact]]\nurl = \"bin/tool\"\nsha256 = \"{artifact_sha}\"\ndest = \"bin/tool\"\n\n[[artifact]]\nurl = \"https://elsewhere/x\"\nsha256 = \"{}\"\ndest = \"x\"\n",
            "0".repeat(64)
        )
    }

    #[test]
    fn blobs_are_kept_only_under_their_own_digest() {
        let d = tempfile::tempdir().unwrap();
        let store = ReleaseStore::open(d.path(), 1 << 20).unwrap();
        let tool = b"#!/bin/sh\necho tool\n";
        let sha = sha256_hex(tool);
        // Announced under another digest: refused, nothing kept.
        let other = sha256_hex(b"other");
        let mut up = store.upload(&other).unwrap();
        up.write(tool).unwrap();
        assert!(matches!(
            up.commit(),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!store.has(&other));
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);

        let mut up = store.upload(&sha).unwrap();
        up.write(tool).unwrap();
        up.commit().unwrap();
        let text = manifest(&sha);
        let msha = sha256_hex(text.as_bytes());
        let mut up = store.upload(&msha).unwrap();
        up.write(text.as_bytes()).unwrap();
        up.commit().unwrap();

        assert_eq!(
            std::fs::read(store.resolve(&msha, MANIFEST).unwrap()).unwrap(),
            text.as_bytes()
        );
        assert_eq!(
            std::fs::read(store.resolve(&msha, "bin/tool").unwrap()).unwrap(),
            tool
        );
        // Only what the manifest names by a relative URL, never a path of the store.
        for name in [
            "https://elsewhere/x",
            "../blobs",
            "tool",
            "../../etc/passwd",
        ] {
            assert!(matches!(
                store.resolve(&msha, name),
                Err(StoreError::NoSuchArtifact { .. })
            ));
        }
        assert!(matches!(
            store.resolve("../x", MANIFEST),
            Err(StoreError::NotADigest(_))
        ));
        assert!(matches!(
            store.resolve(&sha.to_uppercase(), MANIFEST),
            Err(StoreError::NotADigest(_))
        ));
        // A blob that is no manifest serves no artifact.
        assert!(matches!(
            store.resolve(&sha, "bin/tool"),
            Err(StoreError::NotAManifest(..))
        ));
    }

    #[test]
    fn an_oversized_blob_is_refused_while_written() {
        let d = tempfile::tempdir().unwrap();
        let store = ReleaseStore::open(d.path(), 10).unwrap();
        let mut up = store.upload(&sha256_hex(b"0123456789ab")).unwrap();
        up.write(b"01234").unwrap();
        assert!(matches!(
            up.write(b"56789ab"),
            Err(StoreError::TooLarge { limit: 10 })
        ));
        drop(up);
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn an_installed_release_is_served_again_under_its_published_address() {
        let d = tempfile::tempdir().unwrap();
        let store = ReleaseStore::open(&d.path().join("store"), 1 << 20).unwrap();
        let installed = d.path().join("sr");
        std::fs::create_dir_all(installed.join("bin")).unwrap();
        let tool = b"tool bytes";
        std::fs::write(installed.join("bin/tool"), tool).unwrap();
        let text = manifest(&sha256_hex(tool));
        std::fs::write(installed.join(MANIFEST), &text).unwrap();
        let digest = store.import_installed(&installed).unwrap().unwrap();
        assert_eq!(digest, sha256_hex(text.as_bytes()));
        assert_eq!(
            std::fs::read(store.resolve(&digest, "bin/tool").unwrap()).unwrap(),
            tool
        );
        // A file changed since it was installed is not served as the release's.
        std::fs::write(installed.join("bin/tool"), b"changed").unwrap();
        let store2 = ReleaseStore::open(&d.path().join("store2"), 1 << 20).unwrap();
        assert!(matches!(
            store2.import_installed(&installed),
            Err(StoreError::DigestMismatch { .. })
        ));
    }
}
