//! Where a server is.

use hyper::Uri;

use crate::Error;

/// `http(s)://host[:port][/prefix]`: a server and the path its calls go under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    pub tls: bool,
    /// The host without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// What follows the authority, from its `/` on (`/` when nothing follows).
    pub prefix: String,
}

impl Endpoint {
    /// `http://` or `https://`, a host (a name, an IPv4 address or an IPv6 one in
    /// brackets), an optional port (80 or 443 by default) and an optional path.
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = || Error::BadUrl(url.to_owned());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("http://").ok_or_else(bad)?)
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Endpoint {
            url: url.to_owned(),
            tls,
            host: host.to_owned(),
            port,
            prefix: format!("/{prefix}"),
        })
    }

    /// The server at `addr` (`host:port`, an IPv6 host in brackets), at the root.
    pub fn from_addr(addr: &str, tls: bool) -> Result<Endpoint, Error> {
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::parse(&format!("{scheme}://{addr}/"))?;
        endpoint.url = addr.to_owned();
        Ok(endpoint)
    }

    /// `host:port`, an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The path of `target` under the prefix (`target` empty: the prefix itself).
    pub fn path(&self, target: &str) -> String {
        if target.is_empty() {
            self.prefix.clone()
        } else {
            format!(
                "{}/{}",
                self.prefix.trim_end_matches('/'),
                target.trim_start_matches('/')
            )
        }
    }

    /// The absolute URI of `target` (a path under the prefix, with its query).
    pub(crate) fn uri(&self, target: &str) -> Result<Uri, Error> {
        let scheme = if self.tls { "https" } else { "http" };
        let uri = format!("{scheme}://{}{}", self.authority(), self.path(target));
        Uri::try_from(uri.as_str()).map_err(|e| Error::BadRequest(format!("{uri:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins() {
        let e = Endpoint::parse("https://[::1]:8443/slap/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("::1", 8443, true));
        assert_eq!(e.authority(), "[::1]:8443");
        assert_eq!(
            e.path("getFullComputerInformation"),
            "/slap/getFullComputerInformation"
        );
        assert_eq!(e.path(""), "/slap/");
        let e = Endpoint::parse("http://gw").unwrap();
        assert_eq!((e.authority(), e.prefix.as_str()), ("gw:80".into(), "/"));
        assert_eq!(e.path("/x?a=b"), "/x?a=b");
        assert_eq!(
            e.uri("x?a=b").unwrap().to_string(),
            "http://gw:80/x?a=b".to_string()
        );
        for bad in [
            "ftp://x",
            "http://:1/",
            "http://[::1/",
            "http://[::1]x/",
            "http://h:p/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let e = Endpoint::from_addr("127.0.0.1:9", true).unwrap();
        assert_eq!(
            (e.url.as_str(), e.tls, e.path("")),
            ("127.0.0.1:9", true, "/".into())
        );
    }
}
