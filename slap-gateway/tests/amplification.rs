//! End to end, issue 17 item 4: a `connection_xml` of 2.2 MB whose 50,000 references to
//! one 100 KB string stand for 5 GB, posted to `setComputerPartitionConnectionXml` of a
//! `slapos gateway run` process (in front of a real master), is answered 400 with the
//! decoder's message, and the gateway's memory stays within 100 MB of what it held before.
//! The gateway runs as its own process so that its memory can be read from
//! `/proc/<pid>/status`: its peak resident set (`VmHWM`) after the request against its
//! resident set (`VmRSS`) before it. Nothing here depends on time.

use std::net::SocketAddr;
use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use axum::body::Body;
use hyper::http::header;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use slap_gateway::server::GatewayConfig;
use slapos_e2e::slapos_bin;
use slapos_harness::{free_port, ProcessCluster};
use slapos_proto::marshal::{self, Value};
use tokio::net::TcpStream;

/// The document of the finding: a dictionary whose first value is a list holding one
/// 100 KB string and whose 49,999 other values are references to that list.
fn attack_document() -> String {
    let mut doc = String::with_capacity(2_300_000);
    doc.push_str("<marshal><dictionary id=\"i2\"><string>k0</string><list id=\"i3\"><string>");
    doc.push_str(&"x".repeat(100 * 1024));
    doc.push_str("</string></list>");
    for i in 1..50_000 {
        doc.push_str(&format!("<string>k{i}</string><reference id=\"i3\"/>"));
    }
    doc.push_str("</dictionary></marshal>");
    doc
}

/// A field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))?;
    let kib: u64 = line
        .trim()
        .strip_suffix("kB")
        .ok_or_else(|| anyhow!("{field}: unexpected unit in {line:?}"))?
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// One form POST on a fresh connection; the status and the body.
async fn post(addr: SocketAddr, method: &str, fields: &[(&str, String)]) -> Result<(u16, String)> {
    let body = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let request = hyper::Request::builder()
        .method(hyper::http::Method::POST)
        .uri(format!("/{method}"))
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))?;
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX).await?;
    Ok((status, String::from_utf8(bytes.to_vec())?))
}

fn computer_xml(computer: &str) -> String {
    let partition = Value::Dict(vec![
        (
            "address_list".into(),
            Value::List(vec![Value::str_dict([
                ("addr", "10.0.0.10"),
                ("netmask", "255.255.255.0"),
            ])]),
        ),
        ("reference".into(), "slappart0".into()),
        ("tap".into(), Value::str_dict([("name", "slaptap0")])),
    ]);
    let computer = Value::Dict(vec![
        ("address".into(), "10.0.0.1".into()),
        ("netmask".into(), "255.255.255.0".into()),
        ("partition_list".into(), Value::List(vec![partition])),
        ("reference".into(), computer.into()),
    ]);
    marshal::encode(&computer).unwrap_or_default()
}

/// Kills the gateway when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_bomb_is_refused_within_bounded_memory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut masters = ProcessCluster::new(&slapos_bin(), &dir.path().join("masters"));
    masters
        .start(1)
        .await
        .map_err(|e| anyhow!("cluster start: {e}"))?;
    let port = free_port()?;
    let config = GatewayConfig::insecure(format!("127.0.0.1:{port}"), masters.api_addrs());
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, config.to_toml())?;
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path)?;
    let gateway = Reaped(
        Process::new(slapos_bin())
            .args(["gateway", "run", "--config"])
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let pid = gateway.0.id();
    let result = async {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).await.is_err() {
            ensure!(
                Instant::now() < deadline,
                "the gateway did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Warm up the paths the attack takes: a write through the master, and a refused
        // connection_xml.
        let (status, body) = post(
            addr,
            "loadComputerConfigurationFromXML",
            &[("xml", computer_xml("COMP-1"))],
        )
        .await?;
        ensure!((status, body.as_str()) == (200, "done"), "{status} {body}");
        let small =
            "<marshal><list id=\"i2\"><list id=\"i3\"/><reference id=\"i9\"/></list></marshal>";
        let fields = |xml: String| {
            vec![
                ("computer_id", "COMP-1".to_string()),
                ("computer_partition_id", "slappart0".to_string()),
                ("connection_xml", xml),
            ]
        };
        let (status, _) = post(
            addr,
            "setComputerPartitionConnectionXml",
            &fields(small.into()),
        )
        .await?;
        ensure!(status == 400, "a dangling reference: {status}");

        let doc = attack_document();
        let before = status_bytes(pid, "VmRSS")?;
        let (status, body) = post(
            addr,
            "setComputerPartitionConnectionXml",
            &fields(doc.clone()),
        )
        .await?;
        let peak = status_bytes(pid, "VmHWM")?;
        let growth = peak.saturating_sub(before);
        eprintln!(
            "gateway pid {pid}: VmRSS {before} bytes before, VmHWM {peak} bytes after \
             (+{growth}); answer {status}: {body}"
        );

        // Refused at the first reference past 8 MiB: the document's 2,241,360 bytes plus
        // the copy kept of the list and one per reference, 102,431 bytes each (the list up
        // to its end tag), cross 8,388,608 at the 60th reference.
        let offset = doc
            .match_indices("<reference id=\"i3\"/>")
            .nth(59)
            .map(|(i, _)| i)
            .ok_or_else(|| anyhow!("too few references"))?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body,
            format!(
                "field 'connection_xml' is not a valid marshalled document: references \
                 expand the document beyond the limit of 8388608 bytes at byte {offset}"
            )
        );
        assert!(
            growth < 100 * 1024 * 1024,
            "the gateway grew by {growth} bytes refusing a {} byte document",
            doc.len()
        );

        // Still serving.
        let (status, body) = post(
            addr,
            "loadComputerConfigurationFromXML",
            &[("xml", computer_xml("COMP-2"))],
        )
        .await?;
        ensure!((status, body.as_str()) == (200, "done"), "{status} {body}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    drop(gateway);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    result.with_context(|| format!("gateway log:\n{log}"))
}
