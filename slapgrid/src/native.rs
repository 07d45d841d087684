//! Native software releases: a TOML manifest of our own for releases that need no
//! Python (the master itself is deployed this way). The format is documented in
//! DESIGN.md ("Native releases"); in short:
//!
//! ```toml
//! [release]
//! name = "hello"
//! periodicity = 3600              # optional: reprocess instances at least this often (s)
//!
//! [[artifact]]
//! url = "hello.tar.gz"            # relative to the manifest, absolute path, file:// or http(s)://
//! sha256 = "…"                    # required: the install fails on any mismatch
//! dest = "."                      # inside the release directory
//! unpack = true                   # tar archive (.tar, .tar.gz, .tgz) unpacked into dest
//! mode = "0755"                   # optional, for a copied file
//!
//! [[instance.file]]               # rendered into the partition at each instance run
//! path = "etc/service/hello"
//! mode = "0750"
//! content = "#!/bin/sh\nexec {{software_path}}/bin/hello --listen [{{ipv6}}]:{{param.port|8080}}\n"
//! # or: template = "templates/hello.in" (a file of the installed release)
//!
//! [instance.connection]           # connection parameters published once started
//! url = "http://[{{ipv6}}]:{{param.port|8080}}/"
//! ```
//!
//! Templates know `{{name}}` and `{{name|default}}`, nothing else (no logic, no escapes):
//! an instance profile is configuration, and a variable the template names but the
//! partition does not have is an error that names it, never an empty string.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The file name a native manifest has (any URL ending so is a native release).
pub const MANIFEST_SUFFIX: &str = ".toml";
/// Where the installed release keeps its manifest.
pub const INSTALLED_MANIFEST: &str = "software.toml";
/// Largest manifest read.
const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("artifact {url}: {message}")]
    Artifact { url: String, message: String },
    #[error("template {file}: {message}")]
    Template { file: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NativeError + '_ {
    move |source| NativeError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub release: ReleaseInfo,
    #[serde(default)]
    pub artifact: Vec<Artifact>,
    #[serde(default)]
    pub instance: InstanceProfile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInfo {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub periodicity: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    pub sha256: String,
    #[serde(default = "dot")]
    pub dest: String,
    #[serde(default)]
    pub unpack: bool,
    #[serde(default)]
    pub mode: Option<String>,
}

fn dot() -> String {
    ".".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceProfile {
    #[serde(default)]
    pub file: Vec<InstanceFile>,
    #[serde(default)]
    pub connection: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    pub path: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
}

/// Whether a release URL names a native manifest.
pub fn is_native(url: &str) -> bool {
    url.split(['?', '#'])
        .next()
        .is_some_and(|u| u.ends_with(MANIFEST_SUFFIX))
}

/// A relative path that stays inside its base (no `..`, not absolute).
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Parses an octal mode (`"0755"`).
pub fn parse_mode(mode: &str) -> Option<u32> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, NativeError> {
        let m: Manifest = toml::from_str(text).map_err(|e| NativeError::Manifest(e.to_string()))?;
        for a in &m.artifact {
            if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(NativeError::Manifest(format!(
                    "artifact {}: sha256 must be 64 hex digits",
                    a.url
                )));
            }
            if safe_relative(&a.dest).is_none() {
                return Err(NativeError::Manifest(format!(
                    "artifact {}: dest {:?} leaves the release directory",
                    a.url, a.dest
                )));
            }
            if let Some(mode) = &a.mode {
                parse_mode(mode).ok_or_else(|| {
                    NativeError::Manifest(format!("artifact {}: bad mode {mode:?}", a.url))
                })?;
            }
        }
        for f in &m.instance.file {
            if safe_relative(&f.path).is_none_or(|p| p.as_os_str().is_empty()) {
                return Err(NativeError::Manifest(format!(
                    "instance file {:?} leaves the partition",
                    f.path
                )));
            }
            if f.content.is_some() == f.template.is_some() {
                return Err(NativeError::Manifest(format!(
                    "instance file {:?}: give exactly one of content and template",
                    f.path
                )));
            }
            if let Some(mode) = &f.mode {
                parse_mode(mode).ok_or_else(|| {
                    NativeError::Manifest(format!("instance file {}: bad mode {mode:?}", f.path))
                })?;
            }
            if let Some(t) = &f.template {
                safe_relative(t).ok_or_else(|| {
                    NativeError::Manifest(format!("template {t:?} leaves the release directory"))
                })?;
            }
        }
        Ok(m)
    }
}

/// Fetches `url` (http(s)://, file:// or a path, relative ones against `base`, the
/// manifest's own URL) into `dest`.
pub fn fetch(
    url: &str,
    base: &str,
    dest: &Path,
    get_http: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<(), NativeError> {
    let resolved = resolve(url, base);
    let remote = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    if remote(base) && !remote(&resolved) {
        // A manifest from the network never makes the agent read a local file.
        return Err(NativeError::Artifact {
            url: resolved,
            message: "a manifest fetched over the network may only name http(s) artifacts".into(),
        });
    }
    if remote(&resolved) {
        let body = get_http(&resolved).map_err(|message| NativeError::Artifact {
            url: resolved.clone(),
            message,
        })?;
        std::fs::write(dest, body).map_err(io(dest))
    } else {
        let path = resolved.strip_prefix("file://").unwrap_or(&resolved);
        std::fs::copy(path, dest)
            .map(|_| ())
            .map_err(|e| NativeError::Artifact {
                url: resolved.clone(),
                message: e.to_string(),
            })
    }
}

/// `url` resolved against the manifest URL `base` when relative.
pub fn resolve(url: &str, base: &str) -> String {
    if url.contains("://") || url.starts_with('/') {
        return url.to_owned();
    }
    match base.rfind('/') {
        Some(i) => format!("{}/{url}", &base[..i]),
        None => url.to_owned(),
    }
}

/// Reads a manifest from a URL or path (bounded).
pub fn read_manifest(
    url: &str,
    get_http: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<(String, Manifest), NativeError> {
    let text = if url.starts_with("http://") || url.starts_with("https://") {
        let body = get_http(url).map_err(|message| NativeError::Artifact {
            url: url.to_owned(),
            message,
        })?;
        String::from_utf8(body).map_err(|_| NativeError::Manifest("not UTF-8".into()))?
    } else {
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        let meta = std::fs::metadata(path).map_err(io(path))?;
        if meta.len() > MAX_MANIFEST {
            return Err(NativeError::Manifest(format!(
                "larger than {MAX_MANIFEST} bytes"
            )));
        }
        std::fs::read_to_string(path).map_err(io(path))?
    };
    let manifest = Manifest::parse(&text)?;
    Ok((text, manifest))
}

/// Renders `{{name}}` / `{{name|default}}` with `vars`.
pub fn render(
    template: &str,
    vars: &BTreeMap<String, String>,
    file: &str,
) -> Result<String, NativeError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| NativeError::Template {
            file: file.to_owned(),
            message: "unclosed {{".into(),
        })?;
        let expr = after[..end].trim();
        let (name, default) = match expr.split_once('|') {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (expr, None),
        };
        match (vars.get(name), default) {
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(NativeError::Template {
                    file: file.to_owned(),
                    message: format!("unknown variable {name:?}"),
                })
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r##"
[release]
name = "hello"
periodicity = 60

[[artifact]]
url = "hello.sh"
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
dest = "bin/hello"
mode = "0755"

[[instance.file]]
path = "etc/service/hello"
mode = "0750"
content = "#!/bin/sh\nexec {{software_path}}/bin/hello {{param.port|8080}}\n"

[instance.connection]
url = "http://[{{ipv6}}]:{{param.port|8080}}/"
"##;

    #[test]
    fn parses_and_renders() {
        let m = Manifest::parse(MANIFEST).unwrap();
        assert_eq!(m.release.periodicity, Some(60));
        assert_eq!(m.artifact[0].dest, "bin/hello");
        let mut vars = BTreeMap::new();
        vars.insert("software_path".to_string(), "/opt/x".to_string());
        vars.insert("ipv6".to_string(), "::1".to_string());
        let content = m.instance.file[0].content.as_deref().unwrap();
        assert_eq!(
            render(content, &vars, "f").unwrap(),
            "#!/bin/sh\nexec /opt/x/bin/hello 8080\n"
        );
        vars.insert("param.port".to_string(), "9".to_string());
        assert_eq!(
            render(&m.instance.connection["url"], &vars, "c").unwrap(),
            "http://[::1]:9/"
        );
        let err = render("{{nope}}", &vars, "f").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(render("{{open", &vars, "f").is_err());
    }

    #[test]
    fn refuses_escapes_and_bad_fields() {
        for bad in [
            MANIFEST.replace("dest = \"bin/hello\"", "dest = \"../../etc\""),
            MANIFEST.replace("path = \"etc/service/hello\"", "path = \"/etc/passwd\""),
            MANIFEST.replace("sha256 = \"ba78", "sha256 = \"zz78"),
            MANIFEST.replace("periodicity = 60", "periodicity = 60\nsurprise = 1"),
            MANIFEST.replace("mode = \"0750\"", "mode = \"rwx\""),
        ] {
            assert!(Manifest::parse(&bad).is_err(), "accepted:\n{bad}");
        }
    }

    #[test]
    fn resolves_relative_urls() {
        assert_eq!(resolve("a.tgz", "/srv/rel/software.toml"), "/srv/rel/a.tgz");
        assert_eq!(
            resolve("a.tgz", "http://h/rel/software.toml"),
            "http://h/rel/a.tgz"
        );
        assert_eq!(resolve("/abs/a", "http://h/x.toml"), "/abs/a");
        assert!(is_native("http://h/x/software.toml?v=1"));
        assert!(!is_native("http://h/x/software.cfg"));
    }
}
