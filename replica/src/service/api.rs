//! The master API's writes and reads as a gateway or an operator calls them: submit (the
//! caller's request ids namespaced by its identity), read at a consistency, status.

use super::{hint_of, wire, MasterService, BACKUP_CHUNK};
use crate::types::{NodeId, NodeInfo};
use openraft::ServerState;
use slapos_domain::{Command, Op, Query};
use slapos_proto::rpc::master::{backup_chunk, BackupChunk, BackupRequest};
use slapos_proto::rpc::master::{
    read_response, submit_response, Consistency, Member, ReadRequest, ReadResponse, StatusRequest,
    StatusResponse, SubmitRequest, SubmitResponse, ViewsChanged, WatchViewsRequest,
};
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};

/// The client part of a request id as the state keeps it: prefixed with the caller's
/// identity (`gateway:gw1/…`, `operator:alice/…`), so that no caller can use another's
/// request ids, nor the ones a replica uses for its own writes (`master-<id>-ca`, which
/// carry no `kind:` prefix). A replica's are kept as they are: it forwards ids the replica
/// that received them already prefixed, and its own. Without TLS there are no identities
/// (plain mode trusts every caller).
fn namespaced_client(caller: Option<&slapos_ca::Identity>, client: String) -> String {
    match caller {
        None | Some(slapos_ca::Identity::Replica(_)) => client,
        Some(other) => format!("{}/{client}", other.common_name()),
    }
}

impl MasterService {
    pub(super) async fn submit_rpc(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let show = request.get_ref().show;
        let mut command: Command = wire::command(&request.get_ref().command)?;
        let caller = crate::tls::peer_identity(&request);
        command.request_id.client = namespaced_client(caller.as_ref(), command.request_id.client);
        // Under mTLS a gateway writes what SLAP and its registration calls need; the
        // operator's commands (the authority, certificates and their revocation, servers'
        // tokens, retiring a replica, admin rights) come through a replica's or an
        // operator's certificate only, and tokens are spent by the masters themselves
        // when they issue what a token grants (`Issue`).
        if let Some(slapos_ca::Identity::Gateway(g)) = &caller {
            let operator_only = match &command.op {
                Op::InstallAuthority { .. }
                | Op::RecordCertificate { .. }
                | Op::Revoke { .. }
                | Op::RetireReplica { .. }
                | Op::SetAdmin { .. }
                | Op::ConsumeToken { .. } => true,
                Op::CreateToken { server, .. } => server.is_some(),
                // A person sets their own password (or an admin anyone's) through a
                // gateway; without `by` it is an operator's.
                Op::SetPassword { by, .. } => by.is_none(),
                _ => false,
            };
            if operator_only {
                return Err(Status::permission_denied(format!(
                    "gateway {g} may not {}: an operator's command",
                    command.op.name()
                )));
            }
        }
        let bytes = request.get_ref().command.len();
        let answer = self.write(command.clone(), bytes).await;
        if let Some(submit_response::Result::NotLeader(h)) = &answer.response.result {
            if !forwarded {
                if let Some(mut leader) = self.forward_target(&Some(h.clone())) {
                    self.metrics.forwarded();
                    if let Ok(r) = leader.submit_once_showing(&command, show).await {
                        return Ok(Response::new(r));
                    }
                }
            }
        }
        let shown = if show {
            self.shown(&answer).await
        } else {
            Vec::new()
        };
        Ok(Response::new(SubmitResponse {
            shown,
            ..answer.response
        }))
    }

    pub(super) async fn read_rpc(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<ReadResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let req = request.into_inner();
        let query: Query = wire::query(&req.query)?;
        let consistency =
            Consistency::try_from(req.consistency).unwrap_or(Consistency::Unspecified);
        match consistency {
            Consistency::Linearizable | Consistency::Unspecified => {
                match self.raft.ensure_linearizable().await {
                    Ok(_) => Ok(Response::new(self.local_read(&query).await?)),
                    Err(e) => {
                        let hint = e
                            .forward_to_leader::<NodeInfo>()
                            .and_then(|f| hint_of(f.leader_id, f.leader_node.as_ref()));
                        if !forwarded {
                            if let Some(mut leader) = self.forward_target(&hint) {
                                if let Ok(r) =
                                    leader.read_once(&query, Consistency::Linearizable, 0).await
                                {
                                    return Ok(Response::new(r));
                                }
                            }
                        }
                        Ok(Response::new(ReadResponse {
                            result: Some(match hint {
                                Some(h) => read_response::Result::NotLeader(h),
                                None => read_response::Result::Unavailable(format!(
                                    "cannot confirm leadership: {e}"
                                )),
                            }),
                            applied_index: 0,
                            view_version: 0,
                        }))
                    }
                }
            }
            Consistency::Local => {
                // The node's polling path: read the two fields, do not clone the metrics.
                let (leading, quorum_ack, applied) = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    (
                        m.state == ServerState::Leader,
                        m.millis_since_quorum_ack,
                        m.last_applied.map_or(0, |l| l.index),
                    )
                };
                let staleness = if leading {
                    quorum_ack
                } else {
                    self.contact.millis_since()
                };
                let fresh = staleness.is_some_and(|s| s <= req.max_staleness_ms);
                if fresh && self.applied_at_least(req.min_applied_index).await {
                    return Ok(Response::new(self.local_read(&query).await?));
                }
                let hint = self.leader_hint();
                if !forwarded {
                    if let Some(mut leader) = self.forward_target(&hint) {
                        if let Ok(r) = leader
                            .read_once_at_least(
                                &query,
                                Consistency::Local,
                                req.max_staleness_ms,
                                req.min_applied_index,
                            )
                            .await
                        {
                            return Ok(Response::new(r));
                        }
                    }
                }
                let why = if fresh {
                    format!(
                        "replica {} has not applied index {} yet (it is at {})",
                        self.id, req.min_applied_index, applied
                    )
                } else {
                    format!(
                        "replica {} last heard from a leader {} ago, over the allowed {} ms",
                        self.id,
                        staleness.map_or("never".to_string(), |s| format!("{s} ms")),
                        req.max_staleness_ms
                    )
                };
                Ok(Response::new(ReadResponse {
                    result: Some(read_response::Result::Unavailable(why)),
                    applied_index: applied,
                    view_version: 0,
                }))
            }
        }
    }

    /// The stream behind `WatchViews`: one task per watcher, woken by every applied
    /// batch, telling what changed since the last message (a slow watcher gets the
    /// changes of several batches in one message: nothing queues up here).
    pub(super) fn watch_views_rpc(
        &self,
        request: Request<WatchViewsRequest>,
    ) -> tokio::sync::mpsc::Receiver<Result<ViewsChanged, Status>> {
        let request = request.into_inner();
        let state = self.state.clone();
        let group = crate::network::group_of(&state).unwrap_or_default();
        // An index of another group's history (this group was restored from a backup
        // under the same addresses) says nothing of this one: start over, with a reset.
        let other_history = !request.group.is_empty() && request.group != group;
        let after = if other_history {
            0
        } else {
            request.after_index
        };
        let mut applied = state.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.metrics.view_watchers(1);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // None: tell the watcher where we are first.
            let mut last = (after != 0).then_some(after);
            loop {
                applied.borrow_and_update();
                let message = state.read(|m, applied| {
                    let applied = applied.map_or(0, |l| l.index);
                    match last {
                        None => ViewsChanged {
                            index: applied,
                            computers: Vec::new(),
                            reset: other_history,
                            group: group.clone(),
                        },
                        Some(after) => match m.views().changed_since(after, applied) {
                            crate::sm::Changed::Computers { index, computers } => ViewsChanged {
                                index,
                                computers,
                                reset: false,
                                group: group.clone(),
                            },
                            crate::sm::Changed::Reset { index } => ViewsChanged {
                                index,
                                computers: Vec::new(),
                                reset: true,
                                group: group.clone(),
                            },
                        },
                    }
                });
                let send = last.is_none() || message.reset || !message.computers.is_empty();
                // A replica behind the watcher's index (it came from another replica)
                // says nothing until it passes it.
                if last.is_none_or(|l| message.index >= l) {
                    last = Some(message.index);
                    if send && tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
            metrics.view_watchers(-1);
        });
        rx
    }

    /// The stream behind `Backup` (chunk sizes: [`chunk_bytes`]): the persisted pairs of one RocksDB snapshot, read on
    /// a blocking thread and sent in chunks of about [`BACKUP_CHUNK`] bytes, the sending
    /// paced by the reader (a bounded channel), so memory stays bounded and writes go on.
    pub(super) fn backup_rpc(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<BackupChunk, Status>>, Status> {
        if let Some(who @ slapos_ca::Identity::Gateway(_)) = crate::tls::peer_identity(&request) {
            return Err(Status::permission_denied(format!(
                "{} may not take a backup: an operator's command",
                who.common_name()
            )));
        }
        let state = self.state.clone();
        let replica = self.id;
        let rate = request.get_ref().max_bytes_per_sec;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            // Paced: no chunk leaves before `rate` allows its bytes, so the reads and the
            // sending spread out instead of taking the machine from the writes.
            let pace = |sent: u64| {
                if rate > 0 {
                    let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            };
            let group = crate::network::group_of(&state);
            let taken_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let send = |part: backup_chunk::Part| {
                tx.blocking_send(Ok(BackupChunk { part: Some(part) }))
                    .is_ok()
            };
            let mut buf: Vec<u8> = Vec::with_capacity(BACKUP_CHUNK + 4096);
            let mut pairs = 0u64;
            let done = state.export(
                |applied| {
                    let header = serde_json::json!({
                        "group": group,
                        "applied": applied,
                        "replica": replica,
                        "taken_at": taken_at,
                    });
                    send(backup_chunk::Part::Header(header.to_string().into_bytes()))
                },
                |k, v| {
                    buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
                    buf.extend_from_slice(k);
                    buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    buf.extend_from_slice(v);
                    pairs += 1;
                    if buf.len() >= chunk_bytes(rate) {
                        let chunk =
                            std::mem::replace(&mut buf, Vec::with_capacity(BACKUP_CHUNK + 4096));
                        sent += chunk.len() as u64;
                        pace(sent);
                        return send(backup_chunk::Part::Pairs(chunk));
                    }
                    true
                },
            );
            match done {
                Ok(true) => {
                    if !buf.is_empty() && !send(backup_chunk::Part::Pairs(buf)) {
                        return;
                    }
                    send(backup_chunk::Part::EndPairs(pairs));
                    tracing::info!(pairs, "backup sent");
                }
                Ok(false) => tracing::info!("backup abandoned by its reader"),
                Err(e) => {
                    tracing::warn!(error = %e, "backup failed");
                    let _ = tx.blocking_send(Err(Status::unavailable(format!("backup: {e}"))));
                }
            }
        });
        Ok(rx)
    }

    pub(super) async fn status_rpc(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        // A replica that left keeps its last vote: it only names itself leader while it
        // actually leads.
        let leader = m
            .current_leader
            .filter(|l| *l != m.id || m.state == ServerState::Leader);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index);
                let matched = if *id == m.id { Some(last) } else { matched };
                // what this replica measured, shown while it leads (a follower only
                // talks to peers when it campaigns)
                let contact = (m.state == ServerState::Leader && *id != m.id)
                    .then(|| self.peers.get(*id))
                    .flatten();
                Member {
                    id: *id,
                    raft_addr: node.raft_addr.clone(),
                    api_addr: node.api_addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    matched_index: matched.unwrap_or(0),
                    lag: matched.map_or(0, |x| last.saturating_sub(x)),
                    region: node.region.clone(),
                    hosted_by: node.hosted_by.clone(),
                    gateway_url: node.gateway_url.clone(),
                    contacted: contact.is_some(),
                    rtt_us: contact
                        .and_then(|c| c.rtt)
                        .map_or(0, |d| d.as_micros() as u64),
                    millis_since_answer: contact
                        .map_or(0, |c| c.last_answer.elapsed().as_millis() as u64),
                }
            })
            .collect();
        let stats = &self.log_stats;
        let stopped = crate::node::stopped_reason(&m, stats);
        Ok(Response::new(StatusResponse {
            id: m.id,
            state: match stopped {
                Some(why) => format!("stopped: {why}"),
                None => match m.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                }
                .into(),
            },
            term: m.current_term,
            leader_id: leader.unwrap_or(0),
            has_leader: leader.is_some(),
            last_log_index: last,
            committed_index: stats.committed_index().unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            log_size_bytes: stats.log_size_bytes(),
            snapshot_size_bytes: stats.snapshot_size_bytes(),
            members,
            group: crate::network::group_of(&self.state).unwrap_or_default(),
            heartbeat_ms: self.raft.config().heartbeat_interval,
            election_timeout_min_ms: self.raft.config().election_timeout_min,
            election_timeout_max_ms: self.raft.config().election_timeout_max,
            millis_since_leader_contact: if m.state == ServerState::Leader {
                m.millis_since_quorum_ack.unwrap_or(0)
            } else {
                self.contact.millis_since().unwrap_or(u64::MAX)
            },
        }))
    }
}

/// The pairs sent in one chunk: [`BACKUP_CHUNK`] unpaced; paced, about a hundredth of a
/// second's worth (64 KiB to [`BACKUP_CHUNK`]), so that each burst of reading and
/// sending is short.
fn chunk_bytes(rate: u64) -> usize {
    if rate == 0 {
        return BACKUP_CHUNK;
    }
    usize::try_from(rate / 100)
        .unwrap_or(BACKUP_CHUNK)
        .clamp(64 << 10, BACKUP_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slapos_ca::Identity;

    #[test]
    fn request_ids_are_namespaced_by_the_caller() {
        let gw = Identity::Gateway("gw1".into());
        assert_eq!(
            namespaced_client(Some(&gw), "master-2-ca".into()),
            "gateway:gw1/master-2-ca"
        );
        let op = Identity::Operator("alice".into());
        assert_eq!(
            namespaced_client(Some(&op), "cli-x".into()),
            "operator:alice/cli-x"
        );
        // A replica forwards ids the first replica already prefixed, and its own.
        assert_eq!(
            namespaced_client(Some(&Identity::Replica(2)), "gateway:gw1/x".into()),
            "gateway:gw1/x"
        );
        assert_eq!(namespaced_client(None, "x".into()), "x");
    }
}
