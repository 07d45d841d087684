//! The connector the pooled client opens connections with: TCP (each resolved address in
//! turn, each within the connect timeout, no Nagle), then TLS for `https` URIs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A connector for hyper-util's pooled client: what [`crate::Client`] uses, and what a
/// proxy's own pooled client (the frontend's backends) can use with its own options.
#[derive(Clone)]
pub struct Connector {
    pub(crate) tls: Option<TlsConnector>,
    /// Bounds each address's TCP connect, and then the TLS handshake.
    pub(crate) timeout: Duration,
    /// Refuse addresses of this machine or link ([`is_local`]), checked after name
    /// resolution on the address connected to.
    pub(crate) refuse_local: bool,
}

impl Connector {
    /// A connector; `tls` for `https` URIs (without it they are refused).
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Connector {
        Connector {
            tls: tls.map(tls_connector),
            timeout,
            refuse_local: false,
        }
    }

    /// The same, refusing to connect to an address of this machine or its link (a
    /// proxy whose destinations come from users).
    pub fn refusing_local(mut self) -> Connector {
        self.refuse_local = true;
        self
    }
}

/// An address on this machine or its link: loopback, unspecified, link-local,
/// broadcast, multicast (IPv4-mapped IPv6 addresses as their IPv4).
pub fn is_local(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6.is_multicast()
        }
    }
}

/// A connection: plain TCP or TLS over it.
pub enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> io::Result<Stream> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| invalid(format!("{uri}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = self.tcp(&host, port).await?;
        if !https {
            return Ok(Stream::Plain(TokioIo::new(tcp)));
        }
        let connector = self
            .tls
            .ok_or_else(|| invalid(format!("{uri}: https without a TLS configuration")))?;
        let name =
            ServerName::try_from(host.clone()).map_err(|e| invalid(format!("{host}: {e}")))?;
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {:?}", self.timeout),
                )
            })??;
        Ok(Stream::Tls(Box::new(TokioIo::new(tls))))
    }

    async fn tcp(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
        for addr in tokio::net::lookup_host((host, port)).await? {
            if self.refuse_local && is_local(addr.ip()) {
                last = io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{addr}: an address of this machine or its link"),
                );
                continue;
            }
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{addr}: not connected within {:?}", self.timeout),
                    )
                }
            }
        }
        Err(last)
    }
}

/// The TLS connector of a client configuration.
pub(crate) fn tls_connector(config: Arc<rustls::ClientConfig>) -> TlsConnector {
    TlsConnector::from(config)
}

/// The certificate (DER) the TLS server at `endpoint` presents, the handshake made with
/// `config` (so verified as it says, and presenting its identity); nothing is sent over
/// the session. What an operator learns a server's identity by (the gateway a
/// bootstrap retires).
pub async fn server_certificate(
    endpoint: &crate::Endpoint,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Vec<u8>, crate::Error> {
    if !endpoint.tls {
        return Err(crate::Error::Tls(format!(
            "{}: not https, no certificate to read",
            endpoint.url
        )));
    }
    let uri: Uri = format!("https://{}/", endpoint.authority())
        .parse()
        .map_err(|_| crate::Error::BadUrl(endpoint.url.clone()))?;
    let connector = Connector::new(Some(config), timeout);
    let stream = connector
        .connect(uri)
        .await
        .map_err(|e| crate::error::Error::NotSent(crate::error::NotSent::of(&e)))?;
    let Stream::Tls(tls) = stream else {
        return Err(crate::Error::Tls(format!(
            "{}: no TLS session",
            endpoint.url
        )));
    };
    let (_, session) = tls.inner().get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| der.as_ref().to_vec())
        .ok_or_else(|| crate::Error::Tls(format!("{}: presented no certificate", endpoint.url)))
}
