//! Membership, one change at a time: a replica added as a learner, caught up, then
//! promoted; a replica removed after its retirement is recorded (its id never reused).

use super::{MasterService, ServiceError, CATCH_UP_TIMEOUT, NO_LEADER};
use crate::types::{NodeId, NodeInfo};
use master_client::MasterClient;
use openraft::{ChangeMembers, ServerState};
use slapos_domain::{Command, Op, RequestId};
use slapos_proto::rpc::master::{
    membership_response, AddReplicaRequest, MembershipResponse, RemoveReplicaRequest,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

fn membership_error(message: impl Into<String>) -> MembershipResponse {
    MembershipResponse {
        result: Some(membership_response::Result::Error(message.into())),
    }
}

/// What a failed membership write means for the caller: leadership moved or was lost
/// (retry) or a refusal.
fn write_error(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, NodeInfo>>,
) -> ServiceError {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ServiceError::Unavailable(format!(
                "leadership moved ({})",
                f.leader_id
                    .map_or("no leader known".into(), |l| format!("to {l}"))
            ))
        }
        RaftError::Fatal(f) => ServiceError::Unavailable(f.to_string()),
        other => ServiceError::Refused(other.to_string()),
    }
}

/// A step of a membership change that failed: retry (unavailable) or refused.
fn membership_failure(what: &str, e: &ServiceError) -> MembershipResponse {
    let message = format!("{what}: {e}");
    MembershipResponse {
        result: Some(if e.is_unavailable() {
            membership_response::Result::Unavailable(message)
        } else {
            membership_response::Result::Error(message)
        }),
    }
}

/// Under mTLS, membership is the operator's (a replica's or an operator's certificate),
/// never a gateway's.
fn refuse_gateway<T>(request: &Request<T>, what: &str) -> Result<(), Status> {
    match crate::tls::peer_identity(request) {
        Some(slapos_ca::Identity::Gateway(g)) => Err(Status::permission_denied(format!(
            "gateway {g} may not {what}: an operator's command"
        ))),
        _ => Ok(()),
    }
}

impl MasterService {
    /// Change membership on the leader: one change at a time (openraft refuses a change
    /// while another is in progress).
    /// A membership change; one still committing (the last change's final configuration,
    /// appended but not yet committed) is waited for, up to 10 s, rather than refused.
    pub(super) async fn change(
        &self,
        changes: ChangeMembers<NodeId, NodeInfo>,
    ) -> Result<(), ServiceError> {
        use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.raft.change_membership(changes.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(write_error(e)),
            }
        }
    }

    /// A membership change that reached a follower: forward it once to the leader, or
    /// answer where the leader is.
    pub(super) async fn membership_elsewhere(
        &self,
        forwarded: bool,
        call: impl AsyncFnOnce(MasterClient) -> Result<MembershipResponse, master_client::ClientError>,
    ) -> MembershipResponse {
        self.ask_leader(forwarded, call, |hint| MembershipResponse {
            result: Some(match hint {
                Some(h) => membership_response::Result::NotLeader(h),
                None => membership_response::Result::Unavailable(NO_LEADER.into()),
            }),
        })
        .await
    }

    /// Wait until the leader's replication to `id` has matched the leader's last log
    /// index as it was when we started waiting.
    pub(super) async fn wait_caught_up(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<(), ServiceError> {
        let mut rx = self.raft.metrics();
        let target = rx.borrow().last_log_index.unwrap_or(0);
        let deadline = Instant::now() + timeout;
        loop {
            let matched = {
                let m = rx.borrow();
                if m.state != ServerState::Leader {
                    return Err(ServiceError::Unavailable(
                        "leadership moved while the new replica was catching up".into(),
                    ));
                }
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            if matched.is_some_and(|i| i >= target) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ServiceError::Refused(format!(
                    "replica {id} did not catch up to index {target} within {} s (it has {}); it stays a learner",
                    timeout.as_secs(),
                    matched.map_or("nothing".to_string(), |i| i.to_string())
                )));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    pub(super) async fn retire(&self, id: NodeId) -> Result<(), ServiceError> {
        let command = Command {
            request_id: RequestId::new(
                format!("master-{}-membership", self.id),
                master_client::proposer_time().micros(),
            ),
            at: master_client::proposer_time(),
            op: Op::RetireReplica { id },
        };
        self.write_reply(command).await.map(|_| ())
    }

    pub(super) async fn add_replica_rpc(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        refuse_gateway(&request, "add_replica")?;
        let forwarded = Self::is_forwarded(&request);
        let req = request.into_inner();
        if !self.is_leader() {
            let r = self
                .membership_elsewhere(forwarded, async |mut leader: MasterClient| {
                    leader.add_replica_once(&req).await
                })
                .await;
            return Ok(Response::new(r));
        }
        if req.raft_addr.is_empty() || req.api_addr.is_empty() {
            return Ok(Response::new(membership_error(
                "raft_addr and api_addr are required",
            )));
        }
        // Ids are never reused: not a current member's, not a retired one's.
        if let Err(e) = self.raft.ensure_linearizable().await {
            return Ok(Response::new(membership_failure(
                "cannot confirm leadership",
                &ServiceError::Unavailable(e.to_string()),
            )));
        }
        let m = self.raft.metrics().borrow().clone();
        let existing = m.membership_config.membership().get_node(&req.id).cloned();
        let node = NodeInfo {
            raft_addr: req.raft_addr.clone(),
            api_addr: req.api_addr.clone(),
            region: req.region.clone(),
            hosted_by: req.hosted_by.clone(),
            gateway_url: req.gateway_url.clone(),
        };
        if let Some(existing) = &existing {
            if !existing.same_replica(&node) {
                return Ok(Response::new(membership_error(format!(
                    "replica id {} is already a member at {existing}; a replica that lost its data rejoins under a new id",
                    req.id
                ))));
            }
        }
        if self.state.read(|s, _| s.is_retired_replica(req.id)) {
            return Ok(Response::new(membership_error(format!(
                "replica id {} was used before and retired; ids are never reused",
                req.id
            ))));
        }
        // As a learner first, then wait until it holds everything the leader had when it
        // was added (openraft's own blocking add_learner counts a learner within
        // `replication_lag_threshold` entries as caught up, even an empty one).
        if existing.is_none() {
            tracing::info!(id = req.id, %node, "adding learner");
            if let Err(e) = self.raft.add_learner(req.id, node.clone(), false).await {
                return Ok(Response::new(membership_failure(
                    "add learner",
                    &write_error(e),
                )));
            }
        }
        if let Err(e) = self.wait_caught_up(req.id, CATCH_UP_TIMEOUT).await {
            return Ok(Response::new(membership_failure("catching up", &e)));
        }
        if req.voter {
            tracing::info!(id = req.id, "promoting to voter");
            let mut ids = BTreeSet::new();
            ids.insert(req.id);
            if let Err(e) = self.change(ChangeMembers::AddVoterIds(ids)).await {
                return Ok(Response::new(membership_failure("promote to voter", &e)));
            }
        }
        Ok(Response::new(MembershipResponse {
            result: Some(membership_response::Result::Ok(format!(
                "replica {} joined as {}",
                req.id,
                if req.voter { "voter" } else { "learner" }
            ))),
        }))
    }

    pub(super) async fn remove_replica_rpc(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        refuse_gateway(&request, "remove_replica")?;
        let forwarded = Self::is_forwarded(&request);
        let req = request.into_inner();
        if !self.is_leader() {
            let r = self
                .membership_elsewhere(forwarded, async |mut leader: MasterClient| {
                    leader.remove_replica_once(req.id).await
                })
                .await;
            return Ok(Response::new(r));
        }
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&req.id).is_none() {
            return Ok(Response::new(membership_error(format!(
                "replica {} is not a member",
                req.id
            ))));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&req.id) {
            return Ok(Response::new(membership_error(
                "refusing to remove the last voter",
            )));
        }
        // Record the retirement first, while this leader surely leads: from then on the
        // others refuse the removed replica's traffic. Not when the leader removes itself
        // (the others would refuse the very entries that remove it): then the
        // retirement is recorded through the remaining members once the new
        // configuration committed.
        let self_removal = req.id == self.id;
        let others: Vec<String> = membership
            .nodes()
            .filter(|(id, _)| **id != req.id)
            .map(|(_, n)| n.api_addr.clone())
            .collect();
        if !self_removal {
            if let Err(e) = self.retire(req.id).await {
                return Ok(Response::new(membership_failure("record retirement", &e)));
            }
        }
        let mut ids = BTreeSet::new();
        ids.insert(req.id);
        if voters.contains(&req.id) {
            if let Err(e) = self.change(ChangeMembers::RemoveVoters(ids.clone())).await {
                return Ok(Response::new(membership_failure("remove voter", &e)));
            }
        }
        // `RemoveVoters` without `retain` drops the node entirely; a learner is removed
        // with `RemoveNodes`. Removing the leader itself: the new configuration commits
        // and this replica steps down.
        if !voters.contains(&req.id) {
            if let Err(e) = self.change(ChangeMembers::RemoveNodes(ids)).await {
                return Ok(Response::new(membership_failure("remove node", &e)));
            }
        }
        if self_removal {
            let command = Command {
                request_id: RequestId::new(
                    format!("master-{}-membership", self.id),
                    master_client::proposer_time().micros(),
                ),
                at: master_client::proposer_time(),
                op: Op::RetireReplica { id: req.id },
            };
            let mut client = MasterClient::new(others).with_deadline(Duration::from_secs(30));
            if let Err(e) = client.submit(&command).await {
                return Ok(Response::new(membership_failure(
                    "left the group, but recording its retirement failed",
                    &ServiceError::Unavailable(e.to_string()),
                )));
            }
        }
        Ok(Response::new(MembershipResponse {
            result: Some(membership_response::Result::Ok(format!(
                "replica {} left the group",
                req.id
            ))),
        }))
    }
}
