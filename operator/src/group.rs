//! [`Operator`]: how an operator reaches a group to host it in partitions, through the
//! public paths one would take by hand: the master API (presenting the process's
//! certificate, an operator's) for the group's membership and tokens, and a gateway as
//! the admin person for SLAP requests and JSON-RPC reads; and what it watches while a
//! step settles (the group's members, a new gateway answering).

use crate::error::{Context, OperatorError};
use master_client::MasterClient;
use slapgrid::client::SlapClient;
use slapos_proto::rpc::master::Member;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How the operator reaches the group: the master API and a gateway as the admin
/// person; where the slapos-master release comes from; how long a step may take.
#[derive(Clone, Debug)]
pub struct Operator {
    /// Master API addresses.
    pub via: Vec<String>,
    /// A gateway of the group (https://...): the admin's requests go through it, and a
    /// new replica and gateway enroll through it.
    pub gateway: String,
    /// The admin's certificate and key, and the group's CA.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The slapos-master release to use (URL or path); None: one written for this
    /// program into `release_dir`.
    pub release: Option<String>,
    pub release_dir: PathBuf,
    /// How long to wait for the group to count (or forget) a replica, for a gateway to
    /// answer, for an instance to come back on a release.
    pub timeout_secs: u64,
}

/// A partition an instance was given, and its addresses.
pub(crate) struct Placed {
    pub(crate) partition: String,
    pub(crate) ips: Vec<String>,
}

impl Placed {
    /// The partition's IPv6 address in brackets (its first address when it has none).
    pub(crate) fn host(&self) -> String {
        match self.ips.iter().find(|ip| ip.contains(':')) {
            Some(v6) => format!("[{v6}]"),
            None => self.ips.first().cloned().unwrap_or_default(),
        }
    }
}

/// Whether replica `id` is a voting member.
pub(crate) fn votes(members: &[Member], id: u64) -> bool {
    members.iter().any(|m| m.id == id && m.role == "voter")
}

impl Operator {
    /// The admin's SLAP client of the gateway.
    pub(crate) fn client(&self) -> Result<SlapClient, OperatorError> {
        Ok(SlapClient::new(
            &[slapgrid::config::normalize_master_url(&self.gateway)],
            Some((self.cert.as_path(), self.key.as_path())),
            Some(self.ca.as_path()),
        )?)
    }

    /// The admin's JSON-RPC client of the gateway (instance lists and documents).
    fn rpc(&self) -> Result<slap_gateway::client::JsonRpcClient, OperatorError> {
        self.rpc_of(&self.gateway)
    }

    /// The admin's JSON-RPC client of another gateway of the group.
    fn rpc_of(&self, url: &str) -> Result<slap_gateway::client::JsonRpcClient, OperatorError> {
        Ok(slap_gateway::client::JsonRpcClient::new(
            url,
            Some(self.ca.as_path()),
            Some((self.cert.as_path(), self.key.as_path())),
        )?)
    }

    /// Who the gateway at `gateway` is: the identity in the certificate it presents,
    /// verified against the group's CA (None for a plain `http://` gateway, which has
    /// none).
    pub(crate) async fn gateway_identity(
        &self,
    ) -> Result<Option<slapos_domain::Identity>, OperatorError> {
        if !self.gateway.starts_with("https://") {
            return Ok(None);
        }
        let der = self
            .rpc()?
            .certificate()
            .await
            .with_context(|| format!("reading the certificate of {}", self.gateway))?;
        Ok(Some(slapos_ca::identity_of(&der)?.0))
    }

    /// The release to supply: the one named, else one written for this program and, for
    /// an `https://` gateway, published to it (nodes in other regions fetch it from
    /// there, verified against the group's CA and the checksums; no path of this machine
    /// reaches them). A plain `http://` gateway (one machine, `slapos up --insecure`)
    /// takes the local path.
    pub(crate) async fn release(&self) -> Result<String, OperatorError> {
        if let Some(r) = &self.release {
            return Ok(r.clone());
        }
        let local =
            crate::release::write_master_release(&self.release_dir, &crate::files::current_exe()?)?;
        if !self.gateway.starts_with("https://") {
            return Ok(local);
        }
        let client_of = |url: &str| self.rpc_of(url);
        let (published, others) =
            crate::release::publish_to_group(&self.release_dir, &self.gateway, &client_of)
                .await
                .with_context(|| {
                    format!(
                        "publishing the slapos-master release to {} (a gateway with [releases])",
                        self.gateway
                    )
                })?;
        for (gateway, outcome) in others {
            if let Err(e) = outcome {
                tracing::warn!(%gateway, error = %e, "the release is not published there");
            }
        }
        Ok(published.url)
    }

    /// Whether `a` and `b` name the same release: equal, or the same content address
    /// (published to two gateways of the group).
    pub(crate) fn same_release(a: &str, b: &str) -> bool {
        a == b
            || matches!(
                (slap_gateway::releases::content_address(a), slap_gateway::releases::content_address(b)),
                (Some(x), Some(y)) if x == y
            )
    }

    /// The leader (when one is known) and the members as the leader sees them (role,
    /// lag, hosting).
    pub async fn group(&self) -> Result<(Option<u64>, Vec<Member>), OperatorError> {
        let mut client = MasterClient::new(self.via.clone()).with_deadline(Duration::from_secs(10));
        let status = client.status().await.context("no replica answered")?;
        let leader = status.has_leader.then_some(status.leader_id);
        let view = match status.members.iter().find(|m| Some(m.id) == leader) {
            Some(l) if l.id != status.id => client.status_of(&l.api_addr).await.unwrap_or(status),
            _ => status,
        };
        Ok((leader, view.members))
    }

    /// Polls the group (every 500 ms, up to `timeout_secs`) until `done` holds.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(Option<u64>, &[Member]) -> bool,
    ) -> Result<(), OperatorError> {
        let deadline = Instant::now() + Duration::from_secs(self.timeout_secs);
        loop {
            if let Ok((leader, members)) = self.group().await {
                if done(leader, &members) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(OperatorError::Timeout(format!(
                    "{what}: not within {} s",
                    self.timeout_secs
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the gateway at `url` serves the admin the group's view of `computer`
    /// (that gateway alone: a fresh client, which has learned no other).
    pub(crate) fn gateway_answers(&self, url: &str, computer: &str) -> bool {
        let Ok(client) = SlapClient::new(
            &[url.to_string()],
            Some((self.cert.as_path(), self.key.as_path())),
            Some(self.ca.as_path()),
        ) else {
            return false;
        };
        let client = client.with_timeout(Duration::from_secs(5));
        tokio::task::block_in_place(|| client.full_computer_information(computer)).is_ok()
    }

    /// Polls the gateway at `url` (every 500 ms, up to `timeout_secs`) until it answers.
    pub(crate) async fn wait_for_gateway(
        &self,
        url: &str,
        computer: &str,
    ) -> Result<(), OperatorError> {
        let deadline = Instant::now() + Duration::from_secs(self.timeout_secs);
        while !self.gateway_answers(url, computer) {
            if Instant::now() > deadline {
                return Err(OperatorError::Timeout(format!(
                    "the gateway at {url} does not answer within {} s",
                    self.timeout_secs
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// The instances on `computer` (`compute_node_instance_list`: title, instance_guid,
    /// compute_partition_id, software_release_uri, state).
    pub(crate) async fn instances_on(
        &self,
        computer: &str,
    ) -> Result<Vec<serde_json::Value>, OperatorError> {
        let list = self
            .rpc()?
            .call(
                "slapos.allDocs.v0.compute_node_instance_list",
                &serde_json::json!({ "computer_guid": computer }),
            )
            .await
            .with_context(|| format!("listing the instances on {computer}"))?;
        Ok(list["result_list"].as_array().cloned().unwrap_or_default())
    }

    /// An instance's document (title, software_type, parameters, connection_parameters,
    /// ip_list...).
    pub(crate) async fn instance(
        &self,
        guid: &serde_json::Value,
    ) -> Result<serde_json::Value, OperatorError> {
        Ok(self
            .rpc()?
            .call(
                "slapos.get.v0.software_instance",
                &serde_json::json!({ "instance_guid": guid }),
            )
            .await?)
    }

    /// Where the instance `title` runs on `computer`, when it is there already.
    pub(crate) async fn placed(
        &self,
        computer: &str,
        title: &str,
    ) -> Result<Option<Placed>, OperatorError> {
        let Some(entry) = self
            .instances_on(computer)
            .await?
            .into_iter()
            .find(|i| i["title"] == title && i["state"] != "destroyed")
        else {
            return Ok(None);
        };
        let doc = self.instance(&entry["instance_guid"]).await?;
        let ips = doc["ip_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| pair.get(1)?.as_str().map(str::to_string))
            .collect();
        Ok(Some(Placed {
            partition: entry["compute_partition_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ips,
        }))
    }
}
