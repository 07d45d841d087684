//! The new group put under mTLS as an operator would (README's "Certificates on every
//! link"): the seed replica, initialised with the group's authority, runs alone on plain
//! gRPC just long enough to have the certificates issued through its API (each seed
//! replica's, its gateway's, the admin person's, and an `operator:admin` one this process
//! then presents), and stops; every seed's configuration gets its `[tls]`.

use super::processes::{spawn, Children};
use crate::authority::{issue_to_files, set_admin};
use crate::error::{Context, OperatorError};
use crate::files;
use crate::progress::Progress;
use master_client::MasterClient;
use master_replica::node::ReplicaConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The person `slapos up` makes its admin (`[slap] admins`), and the operator it is.
pub(crate) const ADMIN: &str = "admin";

/// The admin's client identity on a cluster under mTLS (`D/tls/`).
#[derive(Clone, Debug)]
pub struct ClusterTls {
    pub ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// `operator:admin`: what the operator presents to the master API (membership,
    /// tokens, status), whichever replicas come and go.
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
}

impl ClusterTls {
    /// The admin's (certificate, key).
    pub fn identity(&self) -> (&Path, &Path) {
        (&self.admin_cert, &self.admin_key)
    }
}

fn replica_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    let tls = dir.join("tls");
    (
        tls.join(format!("replica-{id}.crt")),
        tls.join(format!("replica-{id}.key")),
    )
}

/// The certificate and key of the gateway beside seed replica `id`.
pub(crate) fn gateway_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    let tls = dir.join("tls");
    (
        tls.join(format!("gateway-r{id}.crt")),
        tls.join(format!("gateway-r{id}.key")),
    )
}

/// Has the certificates issued through seed replica 1's API (replicas and gateways with
/// `local` addresses in their names, the admin person, the operator), writes every
/// seed's `[tls]`, and has this process present the operator's certificate from now on.
pub(crate) async fn bootstrap_tls(
    bin: &Path,
    dir: &Path,
    replicas: &mut [(ReplicaConfig, PathBuf)],
    count: u64,
    local: Vec<String>,
    progress: Arc<dyn Progress>,
) -> Result<ClusterTls, OperatorError> {
    let out = dir.join("tls");
    files::create_dir_all(&out)?;
    let (first, first_path) = &replicas[0];
    let log = dir.join("replica-1-bootstrap.log");
    let mut seed = Children::new(progress);
    seed.push(
        "replica 1 (bootstrap)",
        spawn(bin, &["master", "run", "--config"], first_path, &log)?,
        &log,
    );
    let via = vec![first.api_addr.clone()];
    let mut client = MasterClient::single(&first.api_addr).with_deadline(Duration::from_secs(30));
    seed.while_running(async { client.status().await.map_err(OperatorError::from) })
        .await
        .context("the first replica does not answer")?;
    let ca = out.join("ca.pem");
    files::write(&ca, client.authority().await?)?;
    for id in 1..=count {
        // `gateway:r<id>`: the gateway beside replica <id>, whose certificates end with
        // the replica's membership (`RetireReplica`).
        for identity in [format!("replica:{id}"), format!("gateway:r{id}")] {
            issue_to_files(via.clone(), &identity, &out, vec![], local.clone(), None)
                .await
                .with_context(|| format!("issuing the certificate of {identity}"))?;
        }
    }
    let admin = issue_to_files(
        via.clone(),
        &format!("person:{ADMIN}"),
        &out,
        vec![],
        vec![],
        None,
    )
    .await
    .context("issuing the admin's certificate")?;
    set_admin(via.clone(), ADMIN, true)
        .await
        .context("granting the admin's rights")?;
    let operator = issue_to_files(
        via.clone(),
        &format!("operator:{ADMIN}"),
        &out,
        vec![],
        vec![],
        None,
    )
    .await
    .context("issuing the operator's certificate")?;
    seed.stop();
    for (config, path) in replicas.iter_mut() {
        let (cert, key) = replica_files(dir, config.id);
        config.tls = Some(master_client::tls::TlsFiles {
            cert,
            key,
            ca: ca.clone(),
        });
        files::write(path, config.to_toml())?;
    }
    // This process is the operator: it presents an operator's certificate to the masters
    // (the seed replica's own stops being accepted once the seed leaves the group).
    master_client::tls::set_client(&master_client::tls::TlsFiles {
        cert: operator.cert.clone(),
        key: operator.key.clone(),
        ca: ca.clone(),
    })?;
    Ok(ClusterTls {
        ca,
        admin_cert: admin.cert,
        admin_key: admin.key,
        operator_cert: operator.cert,
        operator_key: operator.key,
    })
}
