//! The group as an operator sees it (`slapos cluster status`): its members with their
//! roles, addresses, regions and hosting, each one's own view of its log, and the lag
//! the leader measures.

use crate::error::{Context, OperatorError};
use master_client::MasterClient;
use serde::Serialize;
use slapos_proto::rpc::master::StatusResponse;
use std::time::Duration;

#[derive(Serialize, Debug, Clone)]
pub struct MemberStatus {
    pub id: u64,
    pub role: String,
    pub state: Option<String>,
    pub raft_addr: String,
    pub api_addr: String,
    pub region: String,
    /// `computer/partition` of a replica hosted in a partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_by: Option<String>,
    /// The SLAP gateway beside it, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    pub term: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Entries behind the leader's last log index (from the leader's replication state).
    pub lag: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub log_size_bytes: Option<u64>,
    pub snapshot_size_bytes: Option<u64>,
    /// Why the member itself did not answer.
    pub error: Option<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct GroupStatus {
    /// The group's id (empty for a group made before groups had ids).
    pub group: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
}

/// Asks `via`, then the leader (which knows every member's lag), then every member
/// for its own view; a member that does not answer is listed with its error.
pub async fn group_status(via: Vec<String>) -> Result<GroupStatus, OperatorError> {
    let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(10));
    let first = client.status().await.context("no replica answered")?;
    let view = if first.has_leader && !(first.leader_id == first.id && first.state == "leader") {
        let leader_addr = first
            .members
            .iter()
            .find(|m| m.id == first.leader_id)
            .map(|m| m.api_addr.clone());
        match leader_addr {
            Some(a) => client.status_of(&a).await.unwrap_or(first),
            None => first,
        }
    } else {
        first
    };
    let mut members = Vec::new();
    for m in &view.members {
        let own: Result<StatusResponse, master_client::ClientError> = if m.id == view.id {
            Ok(view.clone())
        } else {
            let mut c = MasterClient::single(&m.api_addr);
            c.call_timeout = Duration::from_secs(2);
            c.status_of(&m.api_addr).await
        };
        let (s, error) = match own {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        members.push(MemberStatus {
            id: m.id,
            role: m.role.clone(),
            state: s.as_ref().map(|s| s.state.clone()),
            raft_addr: m.raft_addr.clone(),
            api_addr: m.api_addr.clone(),
            region: m.region.clone(),
            hosted_by: (!m.hosted_by.is_empty()).then(|| m.hosted_by.clone()),
            gateway_url: (!m.gateway_url.is_empty()).then(|| m.gateway_url.clone()),
            term: s.as_ref().map(|s| s.term),
            last_log_index: s.as_ref().map(|s| s.last_log_index),
            committed_index: s.as_ref().map(|s| s.committed_index),
            applied_index: s.as_ref().map(|s| s.applied_index),
            lag: m.lag,
            snapshot_index: s.as_ref().map(|s| s.snapshot_index),
            purged_index: s.as_ref().map(|s| s.purged_index),
            log_size_bytes: s.as_ref().map(|s| s.log_size_bytes),
            snapshot_size_bytes: s.as_ref().map(|s| s.snapshot_size_bytes),
            error,
        });
    }
    Ok(GroupStatus {
        group: view.group.clone(),
        leader: view.has_leader.then_some(view.leader_id),
        term: view.term,
        members,
    })
}
