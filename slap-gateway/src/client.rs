//! A client of the gateway's JSON-RPC API, for the `slapos` commands that read or change
//! accounting (`slapos usage`, `slapos invoice`, `slapos price`): one POST per call over
//! HTTP/1.1, plain or TLS (the server verified against a CA file, the caller's certificate
//! presented when given). The transport is the workspace's one HTTP client
//! (`http-client`); what is JSON-RPC stays here: the method as the path, the JSON body,
//! the gateway's `title` on a refusal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_client::{Client, Endpoint, Options, Request};
use serde_json::Value;

/// Largest answer read (an invoice of a busy customer over a long period is large).
const MAX_ANSWER: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid gateway URL {0:?}: expected http://host:port/ or https://host:port/")]
    BadUrl(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The gateway's certificate is not signed by the CA the client trusts: it is not
    /// one of the group's gateways (or the configuration names another group's CA).
    #[error(
        "the gateway at {url} presented a certificate that is not from the group's CA \
         (verified against {ca}); refusing to talk to it ({detail})"
    )]
    UntrustedGateway {
        url: String,
        ca: String,
        detail: String,
    },
    /// Nothing listens at the gateway's address.
    #[error("cannot connect to the gateway at {url}: connection refused")]
    ConnectionRefused { url: String },
    /// A person's tree that does not exist (`get instance_tree`).
    #[error("no instance named {0:?}: not one of your instance trees")]
    UnknownInstance(String),
    /// The call did not reach the gateway.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: http_client::Error,
    },
    #[error("exchange with {addr} failed: {source}")]
    Io {
        addr: String,
        source: http_client::Error,
    },
    #[error("malformed answer: {0}")]
    BadAnswer(String),
    /// The gateway refused the call: its status and message.
    #[error("{status}: {title}")]
    Refused { status: u16, title: String },
}

/// Where the gateway is and how to talk to it.
#[derive(Clone)]
pub struct JsonRpcClient {
    url: String,
    /// The CA file the gateway is verified against (named in errors).
    ca: Option<String>,
    endpoint: Endpoint,
    /// The TLS configuration of an `https://` gateway (also what [`Self::certificate`]
    /// handshakes with).
    tls: Option<Arc<http_client::ClientConfig>>,
    http: Client,
}

impl JsonRpcClient {
    /// A client of the gateway at `url` (`http://` or `https://`, optional path prefix);
    /// for HTTPS, `ca` is the PEM file of the certificate authority that signed the
    /// gateway's certificate, and `identity` the caller's certificate and key (PEM files)
    /// for a gateway that requires client certificates.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::parse(url).map_err(|_| ClientError::BadUrl(url.to_string()))?;
        let tls = if endpoint.tls {
            let ca = ca.ok_or_else(|| {
                ClientError::Tls(
                    "an https:// gateway needs the CA certificate that signed it (--ca)".into(),
                )
            })?;
            let config = http_client::tls::verified_by_file(ca, identity).map_err(|e| match e {
                http_client::Error::Tls(m) => ClientError::Tls(m),
                other => ClientError::Tls(other.to_string()),
            })?;
            Some(Arc::new(config))
        } else {
            None
        };
        let options = Options {
            // (the ledger's answers can take a while to make, and to send)
            timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(600),
            max_body: MAX_ANSWER,
            ..Options::default()
        };
        Ok(JsonRpcClient {
            url: url.to_string(),
            ca: ca.map(|p| p.display().to_string()),
            endpoint,
            http: Client::new(tls.clone(), options),
            tls,
        })
    }

    /// The certificate (DER) the gateway presents, verified against the CA: who the
    /// gateway is (its `gateway:ID` identity). A plain `http://` gateway has none
    /// ([`ClientError::Tls`]).
    pub async fn certificate(&self) -> Result<Vec<u8>, ClientError> {
        let Some(tls) = self.tls.clone() else {
            return Err(ClientError::Tls(format!(
                "{} is not https: it presents no certificate",
                self.url
            )));
        };
        http_client::server_certificate(&self.endpoint, tls, Duration::from_secs(10))
            .await
            .map_err(|source| match source {
                http_client::Error::NotSent(_) => self.not_sent(self.endpoint.authority(), source),
                other => ClientError::Tls(other.to_string()),
            })
    }

    /// Whether the gateway's release store has blob `sha256` (`HEAD /software/blob/...`).
    pub async fn has_blob(&self, sha256: &str) -> Result<bool, ClientError> {
        let answer = self
            .send(Request::head(format!("software/blob/{sha256}")))
            .await?;
        match answer.status {
            200 => Ok(true),
            // (also when it serves no releases: the PUT that follows says so)
            404 => Ok(false),
            status => Err(ClientError::Refused {
                status,
                title: "asking for a release blob".into(),
            }),
        }
    }

    /// The group's gateways as this one names them (`X-Slapos-Gateways`; empty when it
    /// names none).
    pub async fn group_gateways(&self) -> Result<Vec<String>, ClientError> {
        let answer = self
            .send(Request::head(format!("software/blob/{}", "0".repeat(64))))
            .await?;
        Ok(answer
            .header("x-slapos-gateways")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// Puts blob `sha256` (`bytes`) in the gateway's release store.
    pub async fn put_blob(
        &self,
        sha256: &str,
        bytes: impl Into<http_client::Bytes>,
    ) -> Result<(), ClientError> {
        let answer = self
            .send(Request::put(
                format!("software/blob/{sha256}"),
                "application/octet-stream",
                bytes,
            ))
            .await?;
        match answer.status {
            200 | 201 => Ok(()),
            status => Err(ClientError::Refused {
                status,
                title: String::from_utf8_lossy(&answer.body).trim().to_string(),
            }),
        }
    }

    async fn send(&self, request: Request) -> Result<http_client::Response, ClientError> {
        let addr = self.endpoint.authority();
        match self.http.send(&self.endpoint, request).await {
            Ok(answer) => Ok(answer),
            Err(source) if source.is_not_sent() => Err(self.not_sent(addr, source)),
            Err(source) => Err(ClientError::Io { addr, source }),
        }
    }

    /// POSTs `body` to `method`; the answer's JSON on 200, [`ClientError::Refused`] with
    /// the gateway's `title` otherwise.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, ClientError> {
        let addr = self.endpoint.authority();
        let request =
            Request::post_json(method, body.to_string()).header("Accept", "application/json");
        let answer = match self.http.send(&self.endpoint, request).await {
            Ok(answer) => answer,
            Err(http_client::Error::TooLarge { .. }) => {
                return Err(ClientError::BadAnswer(format!(
                    "answer over {MAX_ANSWER} bytes"
                )))
            }
            Err(source) if source.is_not_sent() => return Err(self.not_sent(addr, source)),
            Err(source) => return Err(ClientError::Io { addr, source }),
        };
        let status = answer.status;
        let value: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| ClientError::BadAnswer(format!("status {status}, not JSON: {e}")))?;
        if status != 200 {
            let title = value
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(ClientError::Refused { status, title });
        }
        Ok(value)
    }

    /// What a call that never reached the gateway says: a gateway certificate the CA
    /// does not vouch for and a refused connection are told apart (the HTTP client reads
    /// them from rustls's and the OS's errors).
    fn not_sent(&self, addr: String, source: http_client::Error) -> ClientError {
        match &source {
            http_client::Error::NotSent(n) if n.why == http_client::Unreached::UntrustedServer => {
                ClientError::UntrustedGateway {
                    url: self.url.clone(),
                    ca: self.ca.clone().unwrap_or_default(),
                    detail: n.detail.clone(),
                }
            }
            http_client::Error::NotSent(n) if n.why == http_client::Unreached::Refused => {
                ClientError::ConnectionRefused {
                    url: self.url.clone(),
                }
            }
            _ => ClientError::Connect { addr, source },
        }
    }

    /// The titles of the caller's instance trees (`slapos.allDocs.v0.instance_tree_list`).
    pub async fn instance_trees(&self) -> Result<Vec<String>, ClientError> {
        let answer = self
            .call(
                "slapos.allDocs.v0.instance_tree_list",
                &serde_json::json!({}),
            )
            .await?;
        let list = answer["result_list"]
            .as_array()
            .ok_or_else(|| ClientError::BadAnswer("no result_list".into()))?;
        list.iter()
            .map(|item| {
                item["title"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ClientError::BadAnswer("a tree without a title".into()))
            })
            .collect()
    }

    /// The root instance of the caller's tree `title` (`slapos.get.v0.instance_tree`):
    /// its state, release, parameters and connection parameters;
    /// [`ClientError::UnknownInstance`] when the caller has no such tree.
    pub async fn instance_tree(&self, title: &str) -> Result<Value, ClientError> {
        match self
            .call(
                "slapos.get.v0.instance_tree",
                &serde_json::json!({ "title": title }),
            )
            .await
        {
            Err(ClientError::Refused {
                status: 403,
                title: why,
            }) if why.starts_with("No instance tree ") => {
                Err(ClientError::UnknownInstance(title.to_string()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls() {
        let c = JsonRpcClient::new("http://127.0.0.1:8080/", None, None).unwrap();
        assert_eq!(
            (c.endpoint.authority(), c.endpoint.path("m")),
            ("127.0.0.1:8080".into(), "/m".into())
        );
        let c = JsonRpcClient::new("http://[::1]:9/slap", None, None).unwrap();
        assert_eq!(
            (c.endpoint.authority(), c.endpoint.path("m")),
            ("[::1]:9".into(), "/slap/m".into())
        );
        assert!(JsonRpcClient::new("ftp://x", None, None).is_err());
        assert!(JsonRpcClient::new("http://:1/", None, None).is_err());
        assert!(matches!(
            JsonRpcClient::new("https://gw:1/", None, None),
            Err(ClientError::Tls(_))
        ));
    }

    /// A server answering each connection's first request with the next of `answers`;
    /// the requests it read.
    async fn serve(answers: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for a in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 65536];
                let mut n = 0;
                while !String::from_utf8_lossy(&buf[..n]).contains("{\"a\":1}") {
                    n += s.read(&mut buf[n..]).await.unwrap();
                }
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(a).await.unwrap();
            }
            requests
        });
        (url, server)
    }

    #[tokio::test]
    async fn answers_and_refusals() {
        let (url, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"r\":1}",
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nf\r\n{\"title\":\"no!\"}\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{}",
        ])
        .await;
        let c = JsonRpcClient::new(&url, None, None).unwrap();
        let body = serde_json::json!({"a": 1});
        assert_eq!(c.call("slapos.get.v0.x", &body).await.unwrap()["r"], 1);
        assert!(matches!(
            c.call("slapos.get.v0.x", &body).await,
            Err(ClientError::Refused { status: 403, title }) if title == "no!"
        ));
        // cut short
        assert!(matches!(
            c.call("slapos.get.v0.x", &body).await,
            Err(ClientError::Io { .. })
        ));
        let requests = server.await.unwrap();
        assert!(requests[0].starts_with("POST /slapos.get.v0.x HTTP/1.1\r\n"));
        assert!(requests[0].contains("Content-Type: application/json\r\n"));
        assert!(requests[0].contains("Accept: application/json\r\n"));
    }
}
