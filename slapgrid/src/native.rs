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
//! url = "hello.tar.gz"            # relative to the manifest (inside its directory), or http(s)://
//! sha256 = "…"                    # required: the install fails on any mismatch
//! dest = "."                      # inside the release directory
//! unpack = true                   # tar archive (.tar, .tar.gz, .tgz) unpacked into dest
//! mode = "0755"                   # optional, for a copied file
//!
//! [instance.parameter.port]       # optional: a typed parameter (refused unless an integer)
//! type = "integer"
//!
//! [[instance.file]]               # rendered into the partition at each instance run
//! path = "etc/service/hello"
//! mode = "0750"
//! kind = "shell"                  # required: shell, toml, json or plain (how values are escaped)
//! content = "#!/bin/sh\nexec {{software_path}}/bin/hello --port {{param.port|8080}} --name {{param.name}}\n"
//! # or: template = "templates/hello.in" (a file of the installed release)
//!
//! [instance.connection]           # connection parameters published once started (plain values)
//! url = "http://[{{ipv6}}]:{{param.port|8080}}/"
//! ```
//!
//! One release may deploy instances of several **software types** (the type a request
//! names, `{{software_type}}`): a file with `software_types = ["replica"]` is rendered
//! only into instances of those types (a file without the key into every instance), and
//! `[instance.connection.<type>]` (a table) holds the connection parameters only
//! instances of that type publish, besides the plain ones every instance publishes. A
//! release that names types refuses an instance of any other type.
//!
//! Templates know `{{name}}` and `{{name|default}}`, nothing else (no logic): an instance
//! profile is configuration, and a variable the template names but the partition does not
//! have is an error that names it, never an empty string. **Every value is escaped for the
//! file's kind** (`template.rs`): in a shell file `{{param.name}}` is one single-quoted
//! word whatever the requester sent, so templates write it without quotes, and a
//! substitution inside quotes (or anywhere escaping would not protect it) is refused when
//! the manifest is parsed.
//!
//! Local artifacts are files of the release's own directory: a relative path without
//! `..`, opened without following a symbolic link (`fsutil`); absolute paths and
//! `file://` are refused, and the whole install runs as the software user, never root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

pub use crate::template::{
    FileKind, ParamType, ParameterSpec, ParameterTypes, Template, TemplateError,
};

/// The file name a native manifest has (any URL ending so is a native release).
pub const MANIFEST_SUFFIX: &str = ".toml";
/// Where the installed release keeps its manifest.
pub const INSTALLED_MANIFEST: &str = "software.toml";
/// Largest manifest (and template) read.
pub const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("artifact {url}: {message}")]
    Artifact { url: String, message: String },
    /// A local artifact the release may not name: outside its own directory, absolute,
    /// `file://`, through a symbolic link.
    #[error("artifact {artifact}: refused: {reason}")]
    ArtifactPath { artifact: String, reason: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// An instance of a software type the release does not deploy.
    #[error("this release has no software type {wanted:?} (it has: {known})")]
    SoftwareType { wanted: String, known: String },
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
    pub connection: Connection,
    /// Typed parameters (`[instance.parameter.port] type = "integer"`).
    #[serde(default)]
    pub parameter: ParameterTypes,
}

/// The software type of an instance whose master names none.
pub const DEFAULT_SOFTWARE_TYPE: &str = "default";

/// `[instance.connection]`: plain values are published by every instance; a table
/// (`[instance.connection.<type>]`) holds what instances of that software type publish
/// besides (a key of both: the type's value).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "BTreeMap<String, toml::Value>")]
pub struct Connection {
    pub common: BTreeMap<String, String>,
    pub by_type: BTreeMap<String, BTreeMap<String, String>>,
}

impl TryFrom<BTreeMap<String, toml::Value>> for Connection {
    type Error = String;

    fn try_from(table: BTreeMap<String, toml::Value>) -> Result<Self, String> {
        let mut out = Connection::default();
        for (key, value) in table {
            match value {
                toml::Value::String(s) => {
                    out.common.insert(key, s);
                }
                toml::Value::Table(t) => {
                    let mut params = BTreeMap::new();
                    for (k, v) in t {
                        let toml::Value::String(s) = v else {
                            return Err(format!(
                                "connection parameter {k} of software type {key}: a string \
                                 template is expected"
                            ));
                        };
                        params.insert(k, s);
                    }
                    out.by_type.insert(key, params);
                }
                _ => {
                    return Err(format!(
                        "connection {key}: a string (a parameter every instance publishes) \
                         or a table (those instances of software type {key} publish)"
                    ))
                }
            }
        }
        Ok(out)
    }
}

impl Connection {
    /// The templates an instance of `software_type` publishes: the common ones, then
    /// its type's (which win).
    pub fn for_type(&self, software_type: &str) -> BTreeMap<&str, &str> {
        let mut out: BTreeMap<&str, &str> = self
            .common
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(own) = self.by_type.get(software_type) {
            out.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        out
    }

    /// Every template, with the name errors give it.
    pub fn all(&self) -> impl Iterator<Item = (String, &str)> {
        let common = self
            .common
            .iter()
            .map(|(k, v)| (format!("connection {k}"), v.as_str()));
        let typed = self.by_type.iter().flat_map(|(t, params)| {
            params
                .iter()
                .map(move |(k, v)| (format!("connection {k} of {t}"), v.as_str()))
        });
        common.chain(typed)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    pub path: String,
    #[serde(default)]
    pub mode: Option<String>,
    /// How values are escaped; required (`Manifest::parse` says so when missing).
    #[serde(default)]
    pub kind: Option<FileKind>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    /// Rendered only into instances of these software types (absent: every instance).
    #[serde(default)]
    pub software_types: Option<Vec<String>>,
}

impl InstanceFile {
    /// The file's kind (checked present by [`Manifest::parse`]).
    pub fn kind(&self) -> FileKind {
        self.kind.unwrap_or(FileKind::Plain)
    }

    /// Whether an instance of `software_type` gets this file.
    pub fn is_for(&self, software_type: &str) -> bool {
        self.software_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == software_type))
    }
}

/// A software type's name: letters, digits, `_`, `.` and `-`.
fn valid_software_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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

fn is_remote(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
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
            let Some(kind) = f.kind else {
                return Err(NativeError::Manifest(format!(
                    "instance file {:?}: kind is required (shell, toml, json or plain): it \
                     says how the values substituted into it are escaped",
                    f.path
                )));
            };
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
            // Checked now, so a release that would escape a value badly never installs.
            if let Some(content) = &f.content {
                Template::compile(content, kind, &f.path)?;
            }
        }
        for (name, t) in m.instance.connection.all() {
            Template::compile(t, FileKind::Plain, &name)?;
        }
        m.check_software_types()?;
        Ok(m)
    }

    /// Type names are plain, a file's list is not empty, and no two files of one path
    /// go to the same type.
    fn check_software_types(&self) -> Result<(), NativeError> {
        let bad = |m: String| Err(NativeError::Manifest(m));
        for f in &self.instance.file {
            match &f.software_types {
                Some(types) if types.is_empty() => {
                    return bad(format!(
                        "instance file {:?}: software_types is empty (leave it out for every \
                         instance)",
                        f.path
                    ))
                }
                Some(types) => {
                    if let Some(t) = types.iter().find(|t| !valid_software_type(t)) {
                        return bad(format!(
                            "instance file {:?}: {t:?} is not a software type (letters, \
                             digits, _ . -)",
                            f.path
                        ));
                    }
                }
                None => {}
            }
        }
        if let Some(t) = self
            .instance
            .connection
            .by_type
            .keys()
            .find(|t| !valid_software_type(t))
        {
            return bad(format!(
                "[instance.connection.{t}]: not a software type (letters, digits, _ . -)"
            ));
        }
        let mut types: Vec<&str> = self.software_types().into_iter().collect();
        types.push(DEFAULT_SOFTWARE_TYPE);
        for t in types {
            let mut seen = BTreeSet::new();
            for f in self.instance.file.iter().filter(|f| f.is_for(t)) {
                if !seen.insert(safe_relative(&f.path).unwrap_or_default()) {
                    return bad(format!(
                        "instance file {:?} is given twice for software type {t}",
                        f.path
                    ));
                }
            }
        }
        Ok(())
    }

    /// The software types the release names (its files' and its connection tables').
    pub fn software_types(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self
            .instance
            .file
            .iter()
            .flat_map(|f| f.software_types.iter().flatten())
            .map(String::as_str)
            .collect();
        out.extend(self.instance.connection.by_type.keys().map(String::as_str));
        out
    }

    /// The files an instance of `software_type` gets; a type the release does not know
    /// (when it names any) is refused.
    pub fn files_for(&self, software_type: &str) -> Result<Vec<&InstanceFile>, NativeError> {
        let types = self.software_types();
        if !types.is_empty() && !types.contains(software_type) {
            return Err(NativeError::SoftwareType {
                wanted: software_type.to_owned(),
                known: types.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(self
            .instance
            .file
            .iter()
            .filter(|f| f.is_for(software_type))
            .collect())
    }

    /// Renders the instance file `file` (its `content`, or `template_text` read from the
    /// installed release) with `vars`, escaped for its kind.
    pub fn render_file(
        &self,
        file: &InstanceFile,
        template_text: Option<&str>,
        vars: &BTreeMap<String, String>,
    ) -> Result<String, NativeError> {
        let source = file
            .content
            .as_deref()
            .or(template_text)
            .unwrap_or_default();
        let template = Template::compile(source, file.kind(), &file.path)?;
        Ok(template.render(vars, &self.instance.parameter)?)
    }

    /// The connection parameters an instance of `software_type` publishes, rendered
    /// (plain values).
    pub fn render_connection(
        &self,
        software_type: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, NativeError> {
        let mut out = Vec::new();
        for (k, t) in self.instance.connection.for_type(software_type) {
            let template = Template::compile(t, FileKind::Plain, &format!("connection {k}"))?;
            out.push((
                k.to_owned(),
                template.render(vars, &self.instance.parameter)?,
            ));
        }
        Ok(out)
    }

    /// Every typed parameter the instance has is what its type says (checked before any
    /// file is written, used or not).
    pub fn check_parameters(&self, vars: &BTreeMap<String, String>) -> Result<(), NativeError> {
        for name in self.instance.parameter.keys() {
            let key = format!("param.{name}");
            if let Some(value) = vars.get(&key) {
                crate::template::check_parameter(&key, value, &self.instance.parameter)?;
            }
        }
        Ok(())
    }
}

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Downloaded.
    Http(String),
    /// A file of the (local) release's own directory: `dir` is the manifest's directory,
    /// `rel` a plain relative path in it.
    Local { dir: PathBuf, rel: PathBuf },
}

/// Where the artifact `url` of the manifest at `manifest_url` comes from. A local
/// manifest names only http(s) URLs and paths relative to its own directory (no `..`,
/// not absolute, not `file://`); a manifest from the network names only http(s) URLs
/// (relative ones resolved against it). Anything else is refused, naming the artifact.
pub fn artifact_source(url: &str, manifest_url: &str) -> Result<Source, NativeError> {
    let refuse = |reason: &str| NativeError::ArtifactPath {
        artifact: url.to_owned(),
        reason: reason.to_owned(),
    };
    if is_remote(url) {
        return Ok(Source::Http(url.to_owned()));
    }
    if url.contains("://") {
        return Err(refuse(
            "only http(s):// URLs and paths relative to the manifest's directory are allowed",
        ));
    }
    if url.starts_with('/') {
        return Err(refuse(
            "an absolute path: a local artifact is a file of the release's own directory, \
             named relative to the manifest",
        ));
    }
    if is_remote(manifest_url) {
        return Ok(Source::Http(resolve(url, manifest_url)));
    }
    let rel = safe_relative(url)
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| refuse("a path leaving the manifest's directory (..)"))?;
    let manifest = Path::new(manifest_url.strip_prefix("file://").unwrap_or(manifest_url));
    let dir = manifest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    Ok(Source::Local { dir, rel })
}

/// Fetches the artifact `url` of the manifest at `base` into `dest` (created; it must
/// not exist). Local files are opened below the manifest's directory without following
/// any symbolic link, and must be regular files.
pub fn fetch(
    url: &str,
    base: &str,
    dest: &Path,
    get_http: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<(), NativeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o640)
            .open(dest)
            .map_err(io(dest))
    };
    match artifact_source(url, base)? {
        Source::Http(resolved) => {
            let body = get_http(&resolved).map_err(|message| NativeError::Artifact {
                url: resolved.clone(),
                message,
            })?;
            create()?.write_all(&body).map_err(io(dest))
        }
        Source::Local { dir, rel } => {
            let mut file = crate::fsutil::open_file_in(&dir, &rel).map_err(|e| {
                use nix::errno::Errno;
                let errno = e.raw_os_error().map(Errno::from_raw);
                let reason = if matches!(errno, Some(Errno::ELOOP | Errno::ENOTDIR)) {
                    format!(
                        "a symbolic link on its path ({e}): artifacts are files of the \
                         release's own directory"
                    )
                } else {
                    format!("{}: {e}", dir.join(&rel).display())
                };
                NativeError::ArtifactPath {
                    artifact: url.to_owned(),
                    reason,
                }
            })?;
            let mut out = create()?;
            std::io::copy(&mut file, &mut out).map_err(io(dest))?;
            Ok(())
        }
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
    let text = if is_remote(url) {
        let body = get_http(url).map_err(|message| NativeError::Artifact {
            url: url.to_owned(),
            message,
        })?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(NativeError::Manifest(format!(
                "larger than {MAX_MANIFEST} bytes"
            )));
        }
        String::from_utf8(body).map_err(|_| NativeError::Manifest("not UTF-8".into()))?
    } else {
        use std::io::Read;
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        let file = std::fs::File::open(path).map_err(io(path))?;
        let meta = file.metadata().map_err(io(path))?;
        if !meta.is_file() {
            return Err(NativeError::Manifest(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(io(path))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(NativeError::Manifest(format!(
                "larger than {MAX_MANIFEST} bytes"
            )));
        }
        String::from_utf8(bytes).map_err(|_| NativeError::Manifest("not UTF-8".into()))?
    };
    // A published release's address names its manifest's digest: whichever gateway
    // answered, the manifest is the one published (and its checksums vouch for the rest).
    if let Some(digest) = slapos_proto::release_address::content_address(url) {
        let actual = crate::digest::sha256_hex(text.as_bytes());
        if actual != digest {
            return Err(NativeError::Manifest(format!(
                "its sha256 is {actual}, not the {digest} its address names"
            )));
        }
    }
    let manifest = Manifest::parse(&text)?;
    Ok((text, manifest))
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

[instance.parameter.port]
type = "integer"

[[instance.file]]
path = "etc/service/hello"
mode = "0750"
kind = "shell"
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
        let file = &m.instance.file[0];
        assert_eq!(
            m.render_file(file, None, &vars).unwrap(),
            "#!/bin/sh\nexec '/opt/x'/bin/hello '8080'\n"
        );
        vars.insert("param.port".to_string(), "9".to_string());
        assert_eq!(
            m.render_connection("default", &vars).unwrap(),
            vec![("url".to_string(), "http://[::1]:9/".to_string())]
        );
        vars.insert("param.port".to_string(), "9; reboot".to_string());
        let err = m.check_parameters(&vars).unwrap_err();
        assert!(err.to_string().contains("param.port"), "{err}");
        let mut empty = BTreeMap::new();
        empty.insert("software_path".to_string(), "/x".to_string());
        let err = Template::compile("{{nope}}", FileKind::Plain, "f")
            .unwrap()
            .render(&empty, &ParameterTypes::new())
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn refuses_escapes_and_bad_fields() {
        for bad in [
            MANIFEST.replace("dest = \"bin/hello\"", "dest = \"../../etc\""),
            MANIFEST.replace("path = \"etc/service/hello\"", "path = \"/etc/passwd\""),
            MANIFEST.replace("sha256 = \"ba78", "sha256 = \"zz78"),
            MANIFEST.replace("periodicity = 60", "periodicity = 60\nsurprise = 1"),
            MANIFEST.replace("mode = \"0750\"", "mode = \"rwx\""),
            MANIFEST.replace("type = \"integer\"", "type = \"float\""),
        ] {
            assert!(Manifest::parse(&bad).is_err(), "accepted:\n{bad}");
        }
    }

    #[test]
    fn an_instance_file_without_a_kind_is_refused_saying_why() {
        let bad = MANIFEST.replace("kind = \"shell\"\n", "");
        let err = Manifest::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("etc/service/hello") && err.contains("kind is required"),
            "{err}"
        );
    }

    #[test]
    fn a_shell_template_quoting_a_value_itself_is_refused_at_parse_time() {
        // (the double quotes escaped for the TOML string that holds the template)
        for quoted in ["'{{param.port|8080}}'", "\\\"{{param.port|8080}}\\\""] {
            let bad = MANIFEST.replace("{{param.port|8080}}\\n", &format!("{quoted}\\n"));
            let err = Manifest::parse(&bad).unwrap_err().to_string();
            assert!(
                err.contains("etc/service/hello") && err.contains("without quotes"),
                "{quoted}: {err}"
            );
        }
    }

    const TYPED: &str = r##"
[release]
name = "two-sides"

[[instance.file]]
path = "etc/common"
kind = "plain"
content = "{{software_type}}"

[[instance.file]]
path = "etc/service/run"
kind = "shell"
software_types = ["server"]
content = "#!/bin/sh\nexec server {{param.port}}\n"

[[instance.file]]
path = "etc/service/run"
kind = "shell"
software_types = ["proxy", "edge"]
content = "#!/bin/sh\nexec proxy {{param.upstream}}\n"

[instance.connection]
kind = "{{software_type}}"

[instance.connection.server]
url = "http://[{{ipv6}}]:{{param.port}}/"
kind = "the server"

[instance.connection.proxy]
upstream = "{{param.upstream}}"
"##;

    fn paths(files: &[&InstanceFile]) -> Vec<String> {
        files.iter().map(|f| f.path.clone()).collect()
    }

    #[test]
    fn files_and_connection_parameters_go_to_the_instances_of_their_software_types() {
        let m = Manifest::parse(TYPED).unwrap();
        assert_eq!(
            m.software_types().into_iter().collect::<Vec<_>>(),
            ["edge", "proxy", "server"]
        );
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("ipv6", "::1"),
            ("param.port", "80"),
            ("param.upstream", "a:1"),
        ] {
            vars.insert(k.to_string(), v.to_string());
        }
        let server = m.files_for("server").unwrap();
        assert_eq!(paths(&server), ["etc/common", "etc/service/run"]);
        assert_eq!(
            m.render_file(server[1], None, &vars).unwrap(),
            "#!/bin/sh\nexec server '80'\n"
        );
        let proxy = m.files_for("proxy").unwrap();
        assert_eq!(
            m.render_file(proxy[1], None, &vars).unwrap(),
            "#!/bin/sh\nexec proxy 'a:1'\n"
        );
        assert_eq!(paths(&m.files_for("edge").unwrap()), paths(&proxy));
        vars.insert("software_type".to_string(), "server".to_string());
        assert_eq!(
            m.render_connection("server", &vars).unwrap(),
            [
                ("kind".to_string(), "the server".to_string()),
                ("url".to_string(), "http://[::1]:80/".to_string())
            ]
        );
        vars.insert("software_type".to_string(), "edge".to_string());
        assert_eq!(
            m.render_connection("edge", &vars).unwrap(),
            [("kind".to_string(), "edge".to_string())]
        );
        // A type the release does not deploy: refused, naming those it has.
        let err = m.files_for("default").unwrap_err().to_string();
        assert!(
            err.contains("\"default\"") && err.contains("edge, proxy, server"),
            "{err}"
        );
    }

    #[test]
    fn a_release_without_software_types_deploys_every_type_the_same() {
        let m = Manifest::parse(MANIFEST).unwrap();
        assert!(m.software_types().is_empty());
        for t in ["default", "RootSoftwareInstance", "anything"] {
            assert_eq!(paths(&m.files_for(t).unwrap()), ["etc/service/hello"]);
            let mut vars = BTreeMap::new();
            vars.insert("ipv6".to_string(), "::1".to_string());
            assert_eq!(m.render_connection(t, &vars).unwrap().len(), 1);
        }
    }

    #[test]
    fn software_types_that_are_ambiguous_or_malformed_are_refused() {
        for (bad, why) in [
            (
                TYPED.replace("[\"proxy\", \"edge\"]", "[\"proxy\", \"server\"]"),
                "given twice for software type server",
            ),
            (
                TYPED.replace("software_types = [\"server\"]\n", ""),
                "given twice for software type",
            ),
            (
                TYPED.replace("[\"server\"]", "[]"),
                "software_types is empty",
            ),
            (
                TYPED.replace("[\"server\"]", "[\"a b\"]"),
                "not a software type",
            ),
            (
                TYPED.replace(
                    "[instance.connection.proxy]",
                    "[instance.connection.\"x/y\"]",
                ),
                "not a software type",
            ),
            (
                TYPED.replace("upstream = \"{{param.upstream}}\"", "upstream = 3"),
                "a string template is expected",
            ),
            (
                TYPED.replace("kind = \"{{software_type}}\"", "kind = 3"),
                "or a table",
            ),
        ] {
            let err = Manifest::parse(&bad).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}\n{bad}");
        }
    }

    #[test]
    fn a_published_manifest_must_hash_to_the_digest_its_address_names() {
        let good = crate::digest::sha256_hex(MANIFEST.as_bytes());
        let get = |_: &str| Ok(MANIFEST.as_bytes().to_vec());
        let at = |d: &str| format!("https://gw:8443/software/{d}/software.toml");
        assert!(read_manifest(&at(&good), &get).is_ok());
        // A gateway answering another manifest under that address is not believed.
        let forged = "c".repeat(64);
        let e = read_manifest(&at(&forged), &get).unwrap_err();
        assert!(
            matches!(&e, NativeError::Manifest(m) if m.contains(&forged)),
            "{e}"
        );
    }

    #[test]
    fn resolves_relative_urls() {
        assert_eq!(resolve("a.tgz", "/srv/rel/software.toml"), "/srv/rel/a.tgz");
        assert_eq!(
            resolve("a.tgz", "http://h/rel/software.toml"),
            "http://h/rel/a.tgz"
        );
        assert!(is_native("http://h/x/software.toml?v=1"));
        assert!(!is_native("http://h/x/software.cfg"));
        assert_eq!(
            artifact_source("a.tgz", "http://h/rel/software.toml").unwrap(),
            Source::Http("http://h/rel/a.tgz".into())
        );
        assert_eq!(
            artifact_source("bin/./a", "/srv/rel/software.toml").unwrap(),
            Source::Local {
                dir: "/srv/rel".into(),
                rel: "bin/a".into()
            }
        );
        assert_eq!(
            artifact_source("a", "file:///srv/rel/software.toml").unwrap(),
            Source::Local {
                dir: "/srv/rel".into(),
                rel: "a".into()
            }
        );
    }

    /// Issue 17.2: a local manifest named `…/etc/computer.key` and root copied the key
    /// into the release. A local artifact is now a file of the release's own directory.
    #[test]
    fn a_local_manifest_cannot_name_a_file_outside_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("computer.key");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        let rel = dir.path().join("rel");
        std::fs::create_dir(&rel).unwrap();
        std::fs::create_dir(rel.join("sub")).unwrap();
        std::os::unix::fs::symlink(&secret, rel.join("key-link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), rel.join("dir-link")).unwrap();
        std::fs::write(rel.join("sub/ok"), "fine").unwrap();
        let manifest = rel.join("software.toml").display().to_string();
        let no_http = |_: &str| -> Result<Vec<u8>, String> { Err("no network here".into()) };
        for (url, why) in [
            (secret.display().to_string(), "absolute path"),
            (format!("file://{}", secret.display()), "http(s)"),
            ("../computer.key".to_string(), "leaving"),
            ("sub/../../computer.key".to_string(), "leaving"),
            ("key-link".to_string(), "symbolic link"),
            ("dir-link/computer.key".to_string(), "symbolic link"),
            ("ftp://h/x".to_string(), "http(s)"),
        ] {
            let dest = dir.path().join("copy");
            let err = fetch(&url, &manifest, &dest, &no_http).unwrap_err();
            assert!(
                matches!(&err, NativeError::ArtifactPath { artifact, .. } if *artifact == url)
                    && err.to_string().contains(why),
                "{url}: {err}"
            );
            assert!(!dest.exists(), "{url} was copied");
        }
        // A file of the release's own directory is fine.
        let dest = dir.path().join("copy");
        fetch("sub/ok", &manifest, &dest, &no_http).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "fine");
        // A manifest from the network names no local file at all.
        let err = fetch(
            &secret.display().to_string(),
            "http://h/rel/software.toml",
            &dir.path().join("copy2"),
            &no_http,
        )
        .unwrap_err();
        assert!(matches!(err, NativeError::ArtifactPath { .. }), "{err}");
    }
}
