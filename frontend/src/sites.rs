//! The table of sites in force: loaded from the sites file, swapped whole at a reload.
//! A site whose parameters, certificate and key did not change keeps its `Site` (its
//! pool of backend connections and its log file); requests in flight hold the `Site`
//! they started with, so a reload disturbs none of them.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::sign::CertifiedKey;

use crate::access_log::AccessLog;
use crate::config::{self, SiteEntry, SiteSpec, SiteStatus, SitesFile, Status};
use crate::error::{ConfigError, SiteError};
use crate::tls;
use http_client::Connector;

/// What goes to a backend: the client's body, bounded.
pub(crate) type ReqBody = http_body_util::Limited<hyper::body::Incoming>;

/// PEM bytes of a certificate and of its key, when a site has its own.
type Pems = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A site's parameters, PEM files, log path and whether local backends are allowed: what
/// decides whether it changed.
type MadeOf = (SiteSpec, Pems, Option<std::path::PathBuf>, bool);

/// One site being served.
pub(crate) struct Site {
    pub(crate) spec: SiteSpec,
    /// Its own certificate; none: the default one.
    pub(crate) cert: Option<Arc<CertifiedKey>>,
    pub(crate) client: Client<Connector, ReqBody>,
    pub(crate) log: Option<Arc<AccessLog>>,
    /// What it was made of: the same at the next load keeps this `Site`.
    made_of: MadeOf,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("reference", &self.spec.reference)
            .field("domains", &self.spec.domains)
            .finish_non_exhaustive()
    }
}

/// The sites in force.
#[derive(Debug)]
pub(crate) struct Table {
    by_domain: HashMap<String, Arc<Site>>,
    by_reference: HashMap<String, Arc<Site>>,
    pub(crate) default_cert: Arc<CertifiedKey>,
    pub(crate) https_port: Option<u16>,
}

impl Table {
    /// The site serving a (lower-case) host name.
    pub(crate) fn site_of(&self, host: &str) -> Option<&Arc<Site>> {
        self.by_domain.get(host)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_reference.len()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A site checked and its files read, before the domains are shared out.
struct Candidate {
    spec: SiteSpec,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// Loads the file into a new table; `previous` gives its unchanged sites and the
/// precedence of domains already served. Errors of one site refuse that site only.
pub(crate) fn load(
    file: &SitesFile,
    previous: Option<&Table>,
    bound_https_port: u16,
) -> Result<(Table, Status), ConfigError> {
    let default_cert = tls::certified_key(
        &read(&file.default_certificate).map_err(ConfigError::DefaultCertificate)?,
        &read(&file.default_key).map_err(ConfigError::DefaultCertificate)?,
    )
    .map_err(ConfigError::DefaultCertificate)?;
    if let Some(dir) = &file.log_dir {
        std::fs::create_dir_all(dir).map_err(|source| ConfigError::LogDir {
            path: dir.clone(),
            source,
        })?;
    }
    let port = file.https_port.unwrap_or(bound_https_port);
    let mut status = Status::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut seen = HashSet::new();
    for entry in &file.sites {
        let (checked, warnings) = config::check_site(entry, file.domain.as_deref());
        let mut st = SiteStatus {
            warning_list: warnings,
            ..SiteStatus::default()
        };
        let result = checked.and_then(|spec| {
            if !seen.insert(entry.reference.clone()) {
                return Err(vec![SiteError::DuplicateReference]);
            }
            files_of(entry).map(|(cert, key)| Candidate { spec, cert, key })
        });
        match result {
            Ok(c) => candidates.push(c),
            Err(errors) => {
                st.state = "refused".into();
                st.request_error_list = errors.iter().map(ToString::to_string).collect();
                // A duplicate's status must not hide the first one's.
                if !status.contains_key(&entry.reference) {
                    status.insert(entry.reference.clone(), st);
                }
                continue;
            }
        }
        status.insert(entry.reference.clone(), st);
    }
    // Domains are shared out: a domain a site serves stays its own while the site still
    // claims it; the others go to the first claimant in the file's order.
    let mut reserved: HashMap<&str, &str> = HashMap::new();
    for c in &candidates {
        for d in &c.spec.domains {
            let owner = previous.and_then(|t| t.by_domain.get(d));
            if owner.is_some_and(|s| s.spec.reference == c.spec.reference) {
                reserved.insert(d, &c.spec.reference);
            }
        }
    }
    let mut by_domain = HashMap::new();
    let mut by_reference = HashMap::new();
    for c in &candidates {
        let reference = c.spec.reference.clone();
        let taken: Vec<&String> = c
            .spec
            .domains
            .iter()
            .filter(|d| {
                by_domain.contains_key(*d)
                    || reserved
                        .get(d.as_str())
                        .is_some_and(|owner| *owner != reference)
            })
            .collect();
        let st = status.entry(reference.clone()).or_default();
        if !taken.is_empty() {
            st.state = "refused".into();
            st.request_error_list = taken
                .iter()
                .map(|d| {
                    SiteError::DomainTaken {
                        domain: (*d).clone(),
                    }
                    .to_string()
                })
                .collect();
            continue;
        }
        let site = match build(c, file, previous) {
            Ok(site) => site,
            Err(e) => {
                st.state = "refused".into();
                st.request_error_list = vec![e.to_string()];
                continue;
            }
        };
        for d in &c.spec.domains {
            by_domain.insert(d.clone(), site.clone());
        }
        by_reference.insert(reference, site);
        let domain = c.spec.domains[0].clone();
        let url = if port == 443 {
            format!("https://{domain}")
        } else {
            format!("https://{domain}:{port}")
        };
        st.state = "serving".into();
        st.domain = Some(domain);
        st.url = Some(url.clone());
        st.site_url = Some(url.clone());
        st.secure_access = Some(url);
    }
    Ok((
        Table {
            by_domain,
            by_reference,
            default_cert,
            https_port: file.https_port,
        },
        status,
    ))
}

fn files_of(entry: &SiteEntry) -> Result<Pems, Vec<SiteError>> {
    match (&entry.certificate, &entry.key) {
        (None, None) => Ok((None, None)),
        (Some(c), Some(k)) => {
            let cert = read(c).map_err(|e| vec![SiteError::Certificate(e)])?;
            let key = read(k).map_err(|e| vec![SiteError::Certificate(e)])?;
            Ok((Some(cert), Some(key)))
        }
        _ => Err(vec![SiteError::Certificate(
            "a certificate needs its key and a key its certificate".into(),
        )]),
    }
}

fn build(
    c: &Candidate,
    file: &SitesFile,
    previous: Option<&Table>,
) -> Result<Arc<Site>, SiteError> {
    let log_path = file
        .log_dir
        .as_ref()
        .map(|dir| dir.join(config::log_file_name(&c.spec.reference)));
    let made_of: MadeOf = (
        c.spec.clone(),
        (c.cert.clone(), c.key.clone()),
        log_path.clone(),
        file.allow_local_backends,
    );
    if let Some(old) = previous.and_then(|t| t.by_reference.get(&c.spec.reference)) {
        if old.made_of == made_of {
            // Unchanged: the same pool and log; the log reopened (after a rotation).
            if let Some(log) = &old.log {
                if let Err(e) = log.reopen() {
                    tracing::warn!(site = %c.spec.reference, "access log: {e}");
                }
            }
            return Ok(old.clone());
        }
    }
    let cert = match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => {
            Some(tls::certified_key(cert, key).map_err(SiteError::Certificate)?)
        }
        _ => None,
    };
    let https_backend = c.spec.url.scheme_str() == Some("https")
        || c.spec
            .https_url
            .as_ref()
            .is_some_and(|u| u.scheme_str() == Some("https"));
    let tls = if https_backend {
        let config = tls::backend_config(c.spec.backend_ca.as_deref()).map_err(|reason| {
            SiteError::BadValue {
                param: "ssl_proxy_ca_crt",
                reason,
            }
        })?;
        Some(config)
    } else {
        None
    };
    // backends on this machine or its link are refused unless the file allows them
    let connector = Connector::new(tls, c.spec.connect_timeout);
    let connector = if file.allow_local_backends {
        connector
    } else {
        connector.refusing_local()
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .set_host(false)
        .build(connector);
    let log = match &log_path {
        Some(path) => match AccessLog::open(path) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::warn!(site = %c.spec.reference, path = %path.display(), "access log: {e}");
                None
            }
        },
        None => None,
    };
    Ok(Arc::new(Site {
        spec: c.spec.clone(),
        cert,
        client,
        log,
        made_of,
    }))
}
