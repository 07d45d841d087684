//! The sites file (JSON, rendered by the frontend release) and the validation of each
//! site's parameters: every value of `parameters` comes from a user's shared-instance
//! request and is checked here before it reaches a header, a URL, a file name or a log
//! line (`DESIGN.md`, threat model).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ConfigError, SiteError};

/// The file as the release renders it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SitesFile {
    /// Sites without `custom_domain` are served at `<reference without _ and ->.<domain>`.
    #[serde(default)]
    pub domain: Option<String>,
    /// The public HTTPS port (in redirects and published URLs; 443 is left out). Default:
    /// the port the HTTPS listener is bound to.
    #[serde(default)]
    pub https_port: Option<u16>,
    /// The certificate (PEM chain) and key presented to a client whose SNI names no site
    /// (and to sites that have no certificate of their own).
    pub default_certificate: PathBuf,
    pub default_key: PathBuf,
    /// Where the access logs go, one file per site (`<escaped reference>.log`); none: no
    /// access log.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// Where what each site publishes is written (JSON) after each load.
    #[serde(default)]
    pub status_file: Option<PathBuf>,
    /// Whether a backend may be a loopback, link-local, unspecified, broadcast or
    /// multicast address (default: no; a site's `url` pointing there gets 502). For a
    /// frontend whose backends are on its own machine (tests, a single-node setup).
    #[serde(default)]
    pub allow_local_backends: bool,
    #[serde(default)]
    pub sites: Vec<SiteEntry>,
}

/// One shared instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteEntry {
    /// The shared instance's reference (the master's id of it).
    pub reference: String,
    /// Its certificate chain and key (PEM files the release wrote); none: the default.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The shared instance's parameters as requested (strings as SlapOS sends them, or
    /// JSON booleans, numbers and arrays).
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
}

/// What `type` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SiteType {
    /// A reverse proxy to the backend.
    Default,
    /// A reverse proxy that also passes WebSocket upgrades on every path.
    Websocket,
    /// A redirect to `url`, keeping the path.
    Redirect,
}

/// A site's parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSpec {
    pub reference: String,
    /// The domain it is served at, then its aliases (lower case).
    pub domains: Vec<String>,
    /// The backend of requests that came over plain HTTP (and over HTTPS without
    /// `https-url`).
    pub url: Uri,
    /// The backend of requests that came over HTTPS.
    pub https_url: Option<Uri>,
    pub kind: SiteType,
    /// Prefix added before the request's path on the backend (`/x`, no trailing `/`).
    pub path: String,
    pub https_only: bool,
    pub websocket_paths: Vec<String>,
    /// `Strict-Transport-Security: max-age=N`, 0: none.
    pub hsts_seconds: u64,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Check an https backend's certificate against this CA (PEM); none: not checked (as
    /// SlapOS's frontend does by default).
    pub backend_ca: Option<String>,
}

/// The bounds of the values.
pub const MAX_REFERENCE: usize = 200;
pub const MAX_URL: usize = 2048;
pub const MAX_DOMAIN: usize = 253;
pub const MAX_ALIASES: usize = 32;
pub const MAX_PATHS: usize = 32;
pub const MAX_HSTS: u64 = 10 * 365 * 24 * 3600;
pub const MAX_TIMEOUT: f64 = 24.0 * 3600.0;
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn parse_file(text: &str) -> Result<SitesFile, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
}

/// The parameters this frontend reads; any other is reported in `warning-list`.
const KNOWN: &[&str] = &[
    "url",
    "https-url",
    "custom_domain",
    "server-alias",
    "type",
    "path",
    "https-only",
    "websocket-path-list",
    "strict-transport-security",
    "request-timeout",
    "backend-connect-timeout",
    "ssl-proxy-verify",
    "ssl_proxy_ca_crt",
];

/// Checks one site's parameters: the spec, or every error found; and the warnings.
pub fn check_site(
    entry: &SiteEntry,
    frontend_domain: Option<&str>,
) -> (Result<SiteSpec, Vec<SiteError>>, Vec<String>) {
    let p = &entry.parameters;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for key in p.keys() {
        if !KNOWN.contains(&key.as_str()) {
            warnings.push(format!(
                "{}: not supported by this frontend, ignored",
                printable(key, 64)
            ));
        }
    }
    if let Err(e) = check_reference(&entry.reference) {
        errors.push(e);
    }
    let url = match text(p, "url") {
        Ok(Some(u)) => match check_url("url", &u) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Ok(None) => {
            errors.push(SiteError::Missing("url"));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let https_url = match text(p, "https-url") {
        Ok(Some(u)) if !u.is_empty() => match check_url("https-url", &u) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let kind = match text(p, "type") {
        Ok(None) => SiteType::Default,
        Ok(Some(t)) => match t.as_str() {
            "" => SiteType::Default,
            "websocket" => SiteType::Websocket,
            "redirect" => SiteType::Redirect,
            other => {
                errors.push(SiteError::UnknownType(printable(other, 64)));
                SiteType::Default
            }
        },
        Err(e) => {
            errors.push(e);
            SiteType::Default
        }
    };
    let mut domains = Vec::new();
    match text(p, "custom_domain") {
        Ok(Some(d)) if !d.is_empty() => match check_domain(&d) {
            Ok(d) => domains.push(d),
            Err(reason) => errors.push(SiteError::BadDomain {
                param: "custom_domain",
                domain: printable(&d, 80),
                reason,
            }),
        },
        Ok(_) => match frontend_domain {
            Some(base) => {
                let label: String = entry
                    .reference
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .flat_map(char::to_lowercase)
                    .collect();
                match check_domain(&format!("{label}.{base}")) {
                    Ok(d) => domains.push(d),
                    Err(reason) => errors.push(SiteError::BadDomain {
                        param: "reference",
                        domain: printable(&label, 80),
                        reason,
                    }),
                }
            }
            None => errors.push(SiteError::NoDomain),
        },
        Err(e) => errors.push(e),
    }
    match list(p, "server-alias") {
        Ok(aliases) => {
            if aliases.len() > MAX_ALIASES {
                errors.push(SiteError::BadValue {
                    param: "server-alias",
                    reason: format!("more than {MAX_ALIASES} aliases"),
                });
            }
            for a in aliases.iter().take(MAX_ALIASES) {
                match check_domain(a) {
                    Ok(d) => {
                        if !domains.contains(&d) {
                            domains.push(d)
                        }
                    }
                    Err(reason) => errors.push(SiteError::BadDomain {
                        param: "server-alias",
                        domain: printable(a, 80),
                        reason,
                    }),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    let path = match text(p, "path") {
        Ok(Some(s)) => match check_path("path", &s) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                String::new()
            }
        },
        Ok(None) => String::new(),
        Err(e) => {
            errors.push(e);
            String::new()
        }
    };
    let https_only = flag(p, "https-only", true).unwrap_or_else(|e| {
        errors.push(e);
        true
    });
    let mut websocket_paths = Vec::new();
    match list(p, "websocket-path-list") {
        Ok(paths) if paths.len() > MAX_PATHS => errors.push(SiteError::BadValue {
            param: "websocket-path-list",
            reason: format!("more than {MAX_PATHS} paths"),
        }),
        Ok(paths) => {
            for s in paths {
                match check_path("websocket-path-list", &s) {
                    Ok(s) if s.is_empty() => websocket_paths.push("/".to_owned()),
                    Ok(s) => websocket_paths.push(s),
                    Err(e) => errors.push(e),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    let hsts_seconds = match seconds(p, "strict-transport-security") {
        Ok(None) => 0,
        Ok(Some(s)) if s.fract() == 0.0 && s <= MAX_HSTS as f64 => s as u64,
        Ok(Some(_)) => {
            errors.push(SiteError::BadValue {
                param: "strict-transport-security",
                reason: format!("a whole number of seconds up to {MAX_HSTS}"),
            });
            0
        }
        Err(e) => {
            errors.push(e);
            0
        }
    };
    let mut timeout = |name: &'static str, default: Duration| match seconds(p, name) {
        Ok(None) => default,
        Ok(Some(s)) if s > 0.0 => Duration::from_secs_f64(s),
        Ok(Some(_)) => {
            errors.push(SiteError::BadValue {
                param: name,
                reason: "must be more than 0 seconds".into(),
            });
            default
        }
        Err(e) => {
            errors.push(e);
            default
        }
    };
    let request_timeout = timeout("request-timeout", DEFAULT_REQUEST_TIMEOUT);
    let connect_timeout = timeout("backend-connect-timeout", DEFAULT_CONNECT_TIMEOUT);
    let verify = flag(p, "ssl-proxy-verify", false).unwrap_or_else(|e| {
        errors.push(e);
        false
    });
    let backend_ca = match text(p, "ssl_proxy_ca_crt") {
        Ok(Some(pem)) if !pem.trim().is_empty() => Some(pem),
        Ok(_) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let backend_ca = match (verify, backend_ca) {
        (true, Some(pem)) => Some(pem),
        (true, None) => {
            errors.push(SiteError::BadValue {
                param: "ssl-proxy-verify",
                reason: "needs ssl_proxy_ca_crt (this frontend holds no public roots)".into(),
            });
            None
        }
        (false, Some(_)) => {
            warnings.push("ssl_proxy_ca_crt: ignored without ssl-proxy-verify".into());
            None
        }
        (false, None) => None,
    };
    if kind == SiteType::Redirect && https_url.is_some() {
        warnings.push("https-url: ignored by type redirect".into());
    }
    if !errors.is_empty() {
        return (Err(errors), warnings);
    }
    let Some(url) = url else {
        return (Err(vec![SiteError::Missing("url")]), warnings);
    };
    (
        Ok(SiteSpec {
            reference: entry.reference.clone(),
            domains,
            url,
            https_url,
            kind,
            path,
            https_only,
            websocket_paths,
            hsts_seconds,
            request_timeout,
            connect_timeout,
            backend_ca,
        }),
        warnings,
    )
}

fn check_reference(r: &str) -> Result<(), SiteError> {
    if r.is_empty() || r.len() > MAX_REFERENCE || r.chars().any(|c| c.is_control()) {
        return Err(SiteError::BadReference(format!(
            "1 to {MAX_REFERENCE} bytes, no control characters"
        )));
    }
    Ok(())
}

/// A parameter as text (a string, or a number or boolean written out).
fn text(
    p: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, SiteError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(SiteError::BadValue {
            param: name,
            reason: "not a text".into(),
        }),
    }
}

/// A list: a string of items separated by white space (as SlapOS sends it), or an array
/// of strings.
fn list(p: &serde_json::Map<String, Value>, name: &'static str) -> Result<Vec<String>, SiteError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(SiteError::BadValue {
                    param: name,
                    reason: "not a list of texts".into(),
                }),
            })
            .collect(),
        Some(_) => Err(SiteError::BadValue {
            param: name,
            reason: "not a list".into(),
        }),
    }
}

fn flag(
    p: &serde_json::Map<String, Value>,
    name: &'static str,
    default: bool,
) -> Result<bool, SiteError> {
    match text(p, name)?
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(SiteError::BadValue {
            param: name,
            reason: "true or false".into(),
        }),
    }
}

fn seconds(
    p: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<f64>, SiteError> {
    match text(p, name)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=MAX_TIMEOUT.max(MAX_HSTS as f64)).contains(&v) => {
                if name != "strict-transport-security" && v > MAX_TIMEOUT {
                    return Err(SiteError::BadValue {
                        param: name,
                        reason: format!("at most {MAX_TIMEOUT} seconds"),
                    });
                }
                Ok(Some(v))
            }
            _ => Err(SiteError::BadValue {
                param: name,
                reason: "a number of seconds".into(),
            }),
        },
    }
}

/// A backend URL: `http` or `https`, a host, no credentials, no query or fragment.
pub fn check_url(param: &'static str, u: &str) -> Result<Uri, SiteError> {
    let bad = |reason: &str| SiteError::BadUrl {
        param,
        reason: reason.to_owned(),
    };
    if u.len() > MAX_URL {
        return Err(bad("too long"));
    }
    let lower = u.get(..8).unwrap_or(u).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(bad("only http and https backends are served"));
    }
    let uri: Uri = u.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("only http and https backends are served")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("credentials in a URL are refused"));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a query is not supported"));
    }
    Ok(uri)
}

/// A path prefix: `/a/b` (a leading `/` is added, a trailing one dropped), printable
/// ASCII of a URL path, no `.` or `..` segment.
pub fn check_path(param: &'static str, s: &str) -> Result<String, SiteError> {
    let bad = |reason: &str| SiteError::BadValue {
        param,
        reason: reason.to_owned(),
    };
    if s.len() > 1024 {
        return Err(bad("too long"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:@".contains(c);
    if !s.chars().all(ok) {
        return Err(bad("only the characters of a URL path"));
    }
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("empty, . or .. segments"));
    }
    Ok(format!("/{trimmed}"))
}

/// A domain a site may claim: a DNS name of letters, digits and hyphens, lower-cased;
/// no wildcard, no IP literal, no label over 63 bytes, 253 bytes at most.
pub fn check_domain(d: &str) -> Result<String, String> {
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() {
        return Err("empty".into());
    }
    if d.len() > MAX_DOMAIN {
        return Err(format!("longer than {MAX_DOMAIN} bytes"));
    }
    if d.contains('*') {
        return Err("wildcards are refused".into());
    }
    let unbracketed = d.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Err("an IP address is not a domain".into());
    }
    if !d.is_ascii() {
        return Err("not ASCII (write an internationalized name in punycode)".into());
    }
    let d = d.to_ascii_lowercase();
    let labels: Vec<&str> = d.split('.').collect();
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err("a label is empty or longer than 63 bytes".into());
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("only letters, digits, hyphens and dots".into());
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err("a label starts or ends with a hyphen".into());
        }
    }
    if labels.len() < 2 {
        return Err("a single label is not a public domain".into());
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("an IP address is not a domain".into());
    }
    Ok(d)
}

/// A value from a request, safe in a message or a log line: control and non-ASCII
/// characters escaped, at most `max` characters kept.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= max {
            out.push_str("...");
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        } else {
            out.push_str(&c.escape_default().to_string());
        }
    }
    out
}

/// The access log's file name of a reference: letters, digits and `-` as they are, any
/// other byte as `_XX` (so two references never share a file, and no name holds a `/` or
/// starts with `.`); a name that would pass 200 bytes is cut at 150 and ends with the
/// reference's SHA-256 (a file name has 255 bytes at most).
pub fn log_file_name(reference: &str) -> String {
    let mut out = String::new();
    for b in reference.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    if out.len() > 200 {
        out.truncate(150);
        out.push('~');
        let digest = ring::digest::digest(&ring::digest::SHA256, reference.as_bytes());
        for b in digest.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out.push_str(".log");
    out
}

/// What a site publishes (its names are SlapOS's frontend's).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SiteStatus {
    /// `serving` or `refused`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_access: Option<String>,
    #[serde(rename = "request-error-list")]
    pub request_error_list: Vec<String>,
    #[serde(rename = "warning-list")]
    pub warning_list: Vec<String>,
}

/// Every site's status after a load, by reference.
pub type Status = BTreeMap<String, SiteStatus>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(params: Value) -> SiteEntry {
        SiteEntry {
            reference: "_SHARED-1".into(),
            certificate: None,
            key: None,
            parameters: params.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn domains() {
        assert_eq!(check_domain("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(
            check_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            "*.example.com",
            "a.*.com",
            "127.0.0.1",
            "10.0.0.300",
            "::1",
            "[2001:db8::1]",
            "localhost",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            "a_b.example.com",
            "a b.example.com",
            "a\nb.example.com",
            "bücher.example",
            "example.com:443",
            "example.com/x",
            "a@b.example.com",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_domain(&format!("{}.com", "a".repeat(63))).is_ok());
        assert!(check_domain(&format!("{}.com", "a".repeat(64))).is_err());
        let long = vec!["a".repeat(50); 6].join(".");
        assert!(check_domain(&long).is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("url", "http://[2001:db8::1]:8080/app").is_ok());
        assert!(check_url("url", "HTTPS://h.example.com").is_ok());
        for bad in [
            "file:///etc/passwd",
            "gopher://h/",
            "javascript:alert(1)",
            "http://u:p@h/",
            "http://u@h/",
            "http:///x",
            "http://h/?q=1",
            "//h/",
            "h.example.com",
        ] {
            assert!(check_url("url", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parameters_as_slapos_sends_them_or_typed() {
        let (spec, warnings) = check_site(
            &entry(json!({
                "url": "http://b.example.com:8080", "server-alias": "x.example.com  y.example.com",
                "https-only": "false", "strict-transport-security": "3600",
                "request-timeout": "30", "websocket-path-list": "/ws /api/socket/",
                "health-check": "true",
            })),
            Some("frontend.example.net"),
        );
        let spec = spec.unwrap();
        assert_eq!(
            spec.domains,
            [
                "shared1.frontend.example.net",
                "x.example.com",
                "y.example.com"
            ]
        );
        assert!(!spec.https_only);
        assert_eq!(spec.hsts_seconds, 3600);
        assert_eq!(spec.request_timeout, Duration::from_secs(30));
        assert_eq!(spec.websocket_paths, ["/ws", "/api/socket"]);
        assert_eq!(
            warnings,
            ["health-check: not supported by this frontend, ignored"]
        );
        let (typed, _) = check_site(
            &entry(json!({"url": "http://b", "custom_domain": "c.example.com",
                          "server-alias": ["x.example.com"], "https-only": false,
                          "backend-connect-timeout": 2.5})),
            None,
        );
        let typed = typed.unwrap();
        assert_eq!(typed.domains, ["c.example.com", "x.example.com"]);
        assert_eq!(typed.connect_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn every_error_of_a_site_is_reported() {
        let (spec, _) = check_site(
            &entry(
                json!({"url": "ftp://x", "type": "zope", "custom_domain": "*.x.com",
                          "path": "../x", "ssl-proxy-verify": "true"}),
            ),
            None,
        );
        let errors = spec.unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        let (spec, _) = check_site(&entry(json!({"url": "http://b"})), None);
        assert_eq!(spec.unwrap_err(), [SiteError::NoDomain]);
    }

    #[test]
    fn log_file_names_stay_in_their_directory() {
        assert_eq!(log_file_name("SOFTINST-12"), "SOFTINST-12.log");
        assert_eq!(log_file_name("../x"), "_2E_2E_2Fx.log");
        assert_eq!(log_file_name("a_b"), "a_5Fb.log");
        assert_ne!(log_file_name("a/b"), log_file_name("a_2Fb"));
        let long = "é".repeat(100);
        let name = log_file_name(&long);
        assert!(name.len() <= 255 && !name.contains('/'), "{name}");
        assert_ne!(name, log_file_name(&"é".repeat(99)));
    }

    #[test]
    fn printable_escapes() {
        assert_eq!(
            printable("a\"b\\c\r\nd\u{1b}é", 100),
            "a\\\"b\\\\c\\r\\nd\\u{1b}\\u{e9}"
        );
        assert_eq!(printable("abcdef", 3), "abc...");
    }
}
