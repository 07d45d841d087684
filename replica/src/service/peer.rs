//! Raft traffic from the other replicas: append entries, votes, snapshots.

use super::{encode_json, wire, MAX_SNAPSHOT_BYTES};
use crate::network::{encode_wire, is_binary, CODEC_BINARY_V1, CODEC_HEADER, MAX_RAFT_MESSAGE};
use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{Snapshot, SnapshotMeta, Vote};
use slapos_proto::rpc::raft::raft_server;
use slapos_proto::rpc::raft::{RaftMessage, SnapshotChunk};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// When this replica last heard from a leader (monotonic milliseconds since start).
#[derive(Debug)]
pub struct LeaderContact {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            start: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Milliseconds since the last contact, None if never.
    pub fn millis_since(&self) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        Some((self.start.elapsed().as_millis() as u64).saturating_sub(last))
    }
}

pub struct RaftService {
    pub raft: Raft,
    pub contact: Arc<LeaderContact>,
    /// This replica's state, for its group id.
    pub state: crate::types::StateHandle,
}

impl RaftService {
    /// Refuses a message from another group's replica: a group restored from a backup
    /// has a new id, and the old group's replicas (same authority, valid certificates)
    /// must not join it nor it them. A side that names no group (a replica that has not
    /// applied its group's authority yet, or a group made before groups had ids) is not
    /// refused.
    fn same_group<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let theirs = request
            .metadata()
            .get(crate::network::GROUP_HEADER)
            .and_then(|v| v.to_str().ok());
        let ours = crate::network::group_of(&self.state);
        match (theirs, ours.as_deref()) {
            (Some(theirs), Some(ours)) if theirs != ours => {
                tracing::warn!(theirs, ours, "refused a Raft message from another group");
                Err(Status::failed_precondition(format!(
                    "this replica belongs to group {ours}, the message comes from group {theirs}"
                )))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.same_group(&request)?;
        let data = &request.get_ref().data;
        let binary = is_binary(data);
        let req: AppendEntriesRequest<TypeConfig> = wire::append_entries(data)?;
        let result = self.raft.append_entries(req).await;
        if result.is_ok() {
            self.contact.touch();
        }
        answer(&result, binary)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.same_group(&request)?;
        let data = &request.get_ref().data;
        let binary = is_binary(data);
        let req: VoteRequest<NodeId> = wire::vote(data)?;
        let result = self.raft.vote(req).await;
        answer(&result, binary)
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.same_group(&request)?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta<NodeId, NodeInfo>) =
            wire::snapshot_header(&first.header)?;
        let mut data = first.data;
        while let Some(chunk) = stream.message().await? {
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "snapshot over {MAX_SNAPSHOT_BYTES} bytes"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        tracing::info!(bytes = data.len(), snapshot = %meta.snapshot_id, "snapshot received");
        self.contact.touch();
        let result = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                },
            )
            .await;
        Ok(Response::new(RaftMessage {
            data: encode_json(&result)?,
        }))
    }
}

/// An answer in the encoding of the request, saying that this replica reads binary.
fn answer<T: serde::Serialize>(value: &T, binary: bool) -> Result<Response<RaftMessage>, Status> {
    let data = encode_wire(value, binary).map_err(|e| Status::internal(format!("encode: {e}")))?;
    let mut response = Response::new(RaftMessage { data });
    response.metadata_mut().insert(
        CODEC_HEADER,
        tonic::metadata::MetadataValue::from_static(CODEC_BINARY_V1),
    );
    Ok(response)
}

pub fn raft_server(service: RaftService) -> raft_server::RaftServer<RaftService> {
    raft_server::RaftServer::new(service)
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE)
}
