//! The software releases of `deploy/software`, embedded, and written out for a node to
//! install: `slapos-master` (the master as a release: a `replica` and a `gateway` type)
//! and `tunnel` (certificate-checked tunnels: a `server` and a `client` type), both for
//! this very binary, and `hello`, the sample of `slapos up`. A node installs only
//! files of the release's own directory, named relative to the manifest, verified
//! against the checksums filled in here; the files are readable by a node's software
//! user.

use crate::error::OperatorError;
use crate::files;
use std::path::Path;

const MASTER_MANIFEST: &str = include_str!("../../deploy/software/slapos-master/software.toml");
const MASTER_SCRIPT: &str = include_str!("../../deploy/software/slapos-master/slapos-master.sh");
const TUNNEL_MANIFEST: &str = include_str!("../../deploy/software/tunnel/software.toml");
const HELLO_MANIFEST: &str = include_str!("../../deploy/software/hello/software.toml");
const HELLO_SCRIPT: &str = include_str!("../../deploy/software/hello/hello.sh");
const HELLO_CFG_JSON: &str = include_str!("../../deploy/software/hello/software.cfg.json");
const HELLO_SCHEMA: &str = include_str!("../../deploy/software/hello/instance-input-schema.json");

/// The slapos-master release for `binary` (this program), written into `dir`: the
/// manifest, its script and a copy of the binary beside them; the manifest's path.
pub fn write_master_release(dir: &Path, binary: &Path) -> Result<String, OperatorError> {
    files::create_dir_all(dir)?;
    let dir = files::absolute(dir)?;
    let script = dir.join("slapos-master.sh");
    files::write(&script, MASTER_SCRIPT)?;
    let (copy, sum) = copy_binary(&dir, binary)?;
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

/// A copy of `binary` as `<dir>/slapos` (unless it is there already), and its sha256.
fn copy_binary(dir: &Path, binary: &Path) -> Result<(std::path::PathBuf, String), OperatorError> {
    let sum = files::sha256(binary)?;
    let copy = dir.join("slapos");
    if !copy.exists() || files::sha256(&copy)? != sum {
        // A copy, not a link, swapped in whole (a node may be reading the previous one).
        let tmp = dir.join(".slapos.partial");
        files::copy(binary, &tmp)?;
        files::rename(&tmp, &copy)?;
    }
    Ok((copy, sum))
}

/// The tunnel release for `binary` (this program), written into `dir`: the manifest and
/// a copy of the binary beside it; the manifest's path.
pub fn write_tunnel_release(dir: &Path, binary: &Path) -> Result<String, OperatorError> {
    files::create_dir_all(dir)?;
    let dir = files::absolute(dir)?;
    let (copy, sum) = copy_binary(&dir, binary)?;
    let path = dir.join("software.toml");
    files::write(&path, TUNNEL_MANIFEST.replace("@SLAPOS_SHA256@", &sum))?;
    files::set_mode(&dir, 0o755)?;
    for f in [&path, &copy] {
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
    let cfg_json = release.join("software.cfg.json");
    files::write(&cfg_json, HELLO_CFG_JSON)?;
    let schema = release.join("instance-input-schema.json");
    files::write(&schema, HELLO_SCHEMA)?;
    let manifest = release.join("software.toml");
    files::write(
        &manifest,
        HELLO_MANIFEST
            .replace("@HELLO_SHA256@", &sum)
            .replace("@CFG_JSON_SHA256@", &files::sha256(&cfg_json)?)
            .replace("@SCHEMA_SHA256@", &files::sha256(&schema)?),
    )?;
    if slapgrid::process::is_root() {
        for d in [dir.join("software"), release.clone()] {
            files::set_mode(&d, 0o755)?;
        }
        for f in [&script, &cfg_json, &schema, &manifest] {
            files::set_mode(f, 0o644)?;
        }
    }
    Ok(manifest.display().to_string())
}

/// A release published to a gateway: the address nodes install it from, and what was
/// uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `<gateway>/software/<manifest sha256>/software.toml`.
    pub url: String,
    /// The manifest's sha256 (the release's content address).
    pub digest: String,
    /// Blobs sent (the others the gateway had already), and their bytes.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// The manifest as published (checksums filled in).
    pub manifest: String,
}

/// The release in `dir` (its `software.toml` and the files its artifacts name by a
/// relative URL) as it is published: each such artifact's sha256 filled in from the file
/// (placeholders and stale values alike; comments and layout kept), checked as a node
/// will check it. The manifest text and the artifacts' (sha256, file).
pub fn prepare(dir: &Path) -> Result<(String, Vec<(String, std::path::PathBuf)>), OperatorError> {
    let path = dir.join("software.toml");
    let text = files::read_to_string(&path)?;
    let bad = |why: String| OperatorError::Precondition(format!("{}: {why}", path.display()));
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| bad(format!("{e}")))?;
    let top = files::absolute(dir)?
        .canonicalize()
        .map_err(OperatorError::io("resolve", dir))?;
    let mut blobs = Vec::new();
    if let Some(artifacts) = doc
        .get_mut("artifact")
        .and_then(|a| a.as_array_of_tables_mut())
    {
        for artifact in artifacts.iter_mut() {
            let url = artifact
                .get("url")
                .and_then(|u| u.as_str())
                .ok_or_else(|| bad("an artifact has no url".into()))?
                .to_string();
            if url.contains("://") {
                // Fetched from elsewhere: its checksum must be given.
                let given = artifact.get("sha256").and_then(|s| s.as_str());
                if !given.is_some_and(slap_gateway::releases::is_digest) {
                    return Err(bad(format!(
                        "artifact {url} is fetched from elsewhere: give its sha256 (64 lowercase hex digits)"
                    )));
                }
                continue;
            }
            let rel = slapgrid::native::safe_relative(&url)
                .ok_or_else(|| bad(format!("artifact {url:?} is not a path inside the release")))?;
            let file = dir.join(&rel);
            // A link may not take the publisher outside the release's directory.
            let real = file
                .canonicalize()
                .map_err(OperatorError::io("read artifact", &file))?;
            if !real.starts_with(&top) || !real.is_file() {
                return Err(bad(format!(
                    "artifact {url:?} is not a file inside {}",
                    top.display()
                )));
            }
            let sum = files::sha256(&real)?;
            artifact["sha256"] = toml_edit::value(sum.clone());
            blobs.push((sum, real));
        }
    }
    let manifest = doc.to_string();
    slapgrid::native::Manifest::parse(&manifest).map_err(|e| bad(e.to_string()))?;
    Ok((manifest, blobs))
}

/// Publishes the release in `dir` (see [`prepare`]) to the gateway `gateway` (its URL,
/// reached with `client`): the artifacts it lacks, then the manifest. Idempotent: the
/// same files give the same address, and nothing already there is sent again.
pub async fn publish(
    dir: &Path,
    gateway: &str,
    client: &slap_gateway::client::JsonRpcClient,
) -> Result<Published, OperatorError> {
    use crate::error::Context;
    let (manifest, blobs) = prepare(dir)?;
    may_publish(client)
        .await
        .with_context(|| format!("publishing to {gateway}"))?;
    let digest = slap_gateway::releases::sha256_hex(manifest.as_bytes());
    let (mut uploaded, mut uploaded_bytes) = (0, 0u64);
    for (sum, file) in &blobs {
        if client.has_blob(sum).await? {
            continue;
        }
        let bytes = std::fs::read(file).map_err(OperatorError::io("read", file))?;
        uploaded_bytes += bytes.len() as u64;
        put_again(client, sum, bytes)
            .await
            .with_context(|| format!("publishing {} to {gateway}", file.display()))?;
        uploaded += 1;
    }
    if !client.has_blob(&digest).await? {
        uploaded_bytes += manifest.len() as u64;
        client
            .put_blob(&digest, manifest.clone().into_bytes())
            .await
            .with_context(|| {
                format!("publishing the manifest of {} to {gateway}", dir.display())
            })?;
        uploaded += 1;
    }
    Ok(Published {
        url: slap_gateway::releases::release_url(gateway, &digest),
        digest,
        uploaded,
        uploaded_bytes,
        manifest,
    })
}

/// Whether the gateway takes blobs from this caller, asked with the empty blob (no body
/// to lose when a refusal comes before the body is read: a large upload refused that way
/// shows only a broken connection). Admin rights granted just now reach a gateway within
/// its refresh period (`revocation_refresh_ms`), so a refusal is asked again for a few
/// seconds before it is the answer.
async fn may_publish(client: &slap_gateway::client::JsonRpcClient) -> Result<(), OperatorError> {
    let empty = slap_gateway::releases::sha256_hex(b"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client.put_blob(&empty, Vec::new()).await {
            Ok(()) => return Ok(()),
            Err(slap_gateway::client::ClientError::Refused { status: 403, .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Puts a blob, sent again (up to three times in all) when the exchange broke off: the
/// store keeps a blob only whole, so a resent one is never kept twice nor half.
async fn put_again(
    client: &slap_gateway::client::JsonRpcClient,
    sum: &str,
    bytes: Vec<u8>,
) -> Result<(), OperatorError> {
    // (shared between the attempts, not copied)
    let bytes = http_client::Bytes::from(bytes);
    let mut tries = 0;
    loop {
        tries += 1;
        match client.put_blob(sum, bytes.clone()).await {
            Err(slap_gateway::client::ClientError::Io { addr, source }) if tries < 3 => {
                tracing::warn!(%addr, error = %source, "a release blob was cut off: sent again");
            }
            other => return Ok(other?),
        }
    }
}

/// [`publish`] to `gateway`, then to every other https gateway of the group it names
/// (`X-Slapos-Gateways`): a release stays reachable at the same content address
/// whichever gateway is lost (nodes fall back to the others, slapgrid/DESIGN.md). The
/// first gateway must take it; each other one's outcome is given (a gateway that is down
/// does not stop the rest). `client_of` makes the client of a gateway URL.
pub async fn publish_to_group(
    dir: &Path,
    gateway: &str,
    client_of: &dyn Fn(&str) -> Result<slap_gateway::client::JsonRpcClient, OperatorError>,
) -> Result<(Published, Vec<(String, Result<Published, OperatorError>)>), OperatorError> {
    let first_client = client_of(gateway)?;
    let first = publish(dir, gateway, &first_client).await?;
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let others: Vec<String> = first_client
        .group_gateways()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.starts_with("https://") && !same(g, gateway))
        .collect();
    let mut outcomes = Vec::new();
    for other in others {
        let outcome = match client_of(&other) {
            Ok(client) => publish(dir, &other, &client).await,
            Err(e) => Err(e),
        };
        outcomes.push((other, outcome));
    }
    Ok((first, outcomes))
}
