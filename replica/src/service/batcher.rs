//! Group commit on the leader: the writes that arrive while earlier batches are in flight
//! go into one log entry, stamped with the leader's time.

use super::hint_of;
use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use slapos_domain::Command;
use slapos_proto::rpc::master::{submit_response, SubmitResponse};
use std::sync::Arc;
use std::time::Duration;

/// What openraft answers a proposal.
type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
>;

/// How long a write may wait for commit before the caller is told to retry.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How far ahead of the leader's clock a proposer's time may be: a command stamped
/// further in the future is refused (the leader's own time is what the state uses).
pub const MAX_PROPOSER_AHEAD: Duration = Duration::from_secs(30);
/// How far behind: a write retried under its request id keeps its first stamp for its
/// caller's whole deadline (30 s for a gateway), plus room for a slow election.
pub const MAX_PROPOSER_BEHIND: Duration = Duration::from_secs(300);

/// Most commands in one log entry.
pub const MAX_BATCH: usize = 512;
/// Most bytes of commands (as their proposers encoded them) in one log entry, unless its
/// one command is larger: an entry stays well within what one AppendEntries carries
/// (`raft-store`'s `max_read_bytes`, 512 KiB), so many large commands never make one
/// entry that must be sent whole in a heartbeat's time.
pub const MAX_BATCH_BYTES: usize = 256 << 10;
/// Batches proposed and not yet answered. While all are in flight, new writes wait and
/// gather into the next batch: one synced append then carries many commands.
pub const MAX_IN_FLIGHT: usize = 4;

type Pending = (Command, tokio::sync::oneshot::Sender<Answer>);

/// A command waiting for an entry, and its encoded size.
struct Queued {
    pending: Pending,
    bytes: usize,
}

/// The commands of one entry: `first`, then what `next` has ready, up to [`MAX_BATCH`]
/// commands and [`MAX_BATCH_BYTES`] (the first is always taken, whatever its size); the
/// command that would cross the byte limit is handed back to open the next entry.
fn gather(
    first: Queued,
    mut next: impl FnMut() -> Option<Queued>,
) -> (Vec<Pending>, Option<Queued>) {
    let mut bytes = first.bytes;
    let mut batch = vec![first.pending];
    while batch.len() < MAX_BATCH {
        let Some(q) = next() else {
            break;
        };
        if bytes.saturating_add(q.bytes) > MAX_BATCH_BYTES {
            return (batch, Some(q));
        }
        bytes += q.bytes;
        batch.push(q.pending);
    }
    (batch, None)
}

/// A command's answer, and the instance its outcome names (what `show` reads), taken
/// from the outcome before it is encoded.
pub struct Answer {
    pub response: SubmitResponse,
    pub shows: Option<slapos_domain::InstanceId>,
}

impl From<SubmitResponse> for Answer {
    fn from(response: SubmitResponse) -> Self {
        Answer {
            response,
            shows: None,
        }
    }
}

/// Packs concurrent writes into batches, one Raft entry each.
#[derive(Clone)]
pub struct Batcher {
    tx: tokio::sync::mpsc::Sender<Queued>,
}

/// The leader's clock, as it stamps entries: every command of an entry carries the
/// leader's time (never earlier than the previous entry's), whatever its proposer said;
/// a proposer whose time is outside [`MAX_PROPOSER_AHEAD`] / [`MAX_PROPOSER_BEHIND`] of it
/// is refused before anything reaches the log, so a gateway cannot move the master's
/// time (and with it, what has expired).
#[derive(Debug, Default)]
struct LeaderClock {
    last: slapos_domain::Timestamp,
}

impl LeaderClock {
    /// Stamps a batch with the leader's time; answers (and drops) the commands whose
    /// proposer's time is too far from it.
    fn stamp(&mut self, batch: Vec<Pending>) -> Vec<Pending> {
        let now = master_client::proposer_time().max(self.last);
        self.last = now;
        let mut kept = Vec::with_capacity(batch.len());
        for (mut command, reply) in batch {
            match clock_skew(command.at, now) {
                None => {
                    command.at = now;
                    kept.push((command, reply));
                }
                Some(error) => {
                    tracing::warn!(request_id = %command.request_id, %error, "command refused");
                    let _ = reply.send(refused(error));
                }
            }
        }
        kept
    }
}

/// Why a proposer's time `at` is refused by a leader whose time is `now`, if it is.
fn clock_skew(
    at: slapos_domain::Timestamp,
    now: slapos_domain::Timestamp,
) -> Option<slapos_domain::DomainError> {
    let ahead = at.micros().saturating_sub(now.micros());
    let behind = now.micros().saturating_sub(at.micros());
    let (skew, bound) = if ahead > MAX_PROPOSER_AHEAD.as_micros() as u64 {
        (format!("{} s ahead", ahead / 1_000_000), MAX_PROPOSER_AHEAD)
    } else if behind > MAX_PROPOSER_BEHIND.as_micros() as u64 {
        (
            format!("{} s behind", behind / 1_000_000),
            MAX_PROPOSER_BEHIND,
        )
    } else {
        return None;
    };
    Some(slapos_domain::DomainError::ClockSkew {
        proposer: slapos_domain::format_date(at),
        leader: slapos_domain::format_date(now),
        skew,
        bound: format!("{} s", bound.as_secs()),
    })
}

/// The answer to a command refused before it reached the log (nothing was written, so
/// a retry is judged again).
fn refused(error: slapos_domain::DomainError) -> Answer {
    let outcome: slapos_domain::Outcome = Err(error);
    match serde_json::to_vec(&outcome) {
        Ok(bytes) => SubmitResponse {
            result: Some(submit_response::Result::Outcome(bytes)),
            log_index: 0,
            shown: Vec::new(),
        }
        .into(),
        Err(e) => unavailable(&format!("encode outcome: {e}")).into(),
    }
}

/// Why a batch was answered before its commit.
enum Stalled {
    /// Not committed within [`WRITE_TIMEOUT`].
    Timeout,
    /// This leader lost its quorum or its leadership while the batch was in flight.
    Deposed(String),
}

/// Resolves once this replica, the leader when the batch was proposed, stops being one or
/// has not heard from a quorum for longer than `lease`: its in-flight writes will not
/// commit here soon (a cut or a pause), so their callers should retry elsewhere under the
/// same request ids now rather than after [`WRITE_TIMEOUT`]. Never resolves on a follower
/// (its writes answer at once with a leader hint).
async fn deposed(raft: &Raft, lease: Duration) -> String {
    let leading = raft.metrics().borrow().state == ServerState::Leader;
    if !leading {
        return std::future::pending().await;
    }
    loop {
        let why = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader {
                Some(format!("this replica stopped leading ({:?})", m.state))
            } else {
                m.millis_since_quorum_ack
                    .filter(|ms| *ms > lease.as_millis() as u64)
                    .map(|ms| format!("the leader has not heard from a quorum for {ms} ms"))
            }
        };
        if let Some(why) = why {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Batcher {
    /// `lease`: how long the leader may go without a quorum's acknowledgement before its
    /// in-flight writes are answered "unknown, retry" (twice the maximum election
    /// timeout: by then the followers have likely elected another leader, and a healthy
    /// but briefly slow quorum does not send every caller elsewhere).
    pub fn start(raft: Raft, lease: Duration) -> (Batcher, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(MAX_BATCH * MAX_IN_FLIGHT);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut clock = LeaderClock::default();
        let task = tokio::spawn(async move {
            let mut carried: Option<Queued> = None;
            loop {
                let first = match carried.take() {
                    Some(q) => q,
                    None => match rx.recv().await {
                        Some(q) => q,
                        None => return,
                    },
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (batch, rest) = gather(first, || rx.try_recv().ok());
                carried = rest;
                let raft = raft.clone();
                let batch = clock.stamp(batch);
                if batch.is_empty() {
                    drop(permit);
                    continue;
                }
                tokio::spawn(async move {
                    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
                    let n = commands.len();
                    let write = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(commands));
                    let result = tokio::select! {
                        // an answer that is there wins over the watch
                        biased;
                        r = write => r.map_err(|_| Stalled::Timeout),
                        why = deposed(&raft, lease) => Err(Stalled::Deposed(why)),
                    };
                    for (i, reply) in replies.into_iter().enumerate() {
                        let _ = reply.send(answer_of(&result, i, n));
                    }
                    drop(permit);
                });
            }
        });
        (Batcher { tx }, task)
    }

    /// Propose one command (`bytes`: its encoded size, as its proposer sent it) and wait
    /// for its own answer.
    pub async fn submit(&self, command: Command, bytes: usize) -> Answer {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = Queued {
            pending: (command, tx),
            bytes,
        };
        if self.tx.send(queued).await.is_err() {
            return unavailable("this replica is shutting down").into();
        }
        rx.await
            .unwrap_or_else(|_| unavailable("this replica is shutting down").into())
    }
}

fn unavailable(why: &str) -> SubmitResponse {
    SubmitResponse {
        result: Some(submit_response::Result::Unavailable(why.to_string())),
        log_index: 0,
        shown: Vec::new(),
    }
}

/// The answer of the `i`-th command of a batch of `n`.
fn answer_of(result: &Result<WriteResult, Stalled>, i: usize, n: usize) -> Answer {
    if let Ok(Ok(resp)) = result {
        if let Some(outcome) = resp.data.get(i) {
            return match serde_json::to_vec(outcome) {
                Ok(bytes) => Answer {
                    response: SubmitResponse {
                        result: Some(submit_response::Result::Outcome(bytes)),
                        log_index: resp.log_id.index,
                        shown: Vec::new(),
                    },
                    shows: slapos_domain::shown_instance(outcome),
                },
                Err(e) => unavailable(&format!("encode outcome: {e}")).into(),
            };
        }
    }
    refusal_of(result, n).into()
}

/// The answer to a command of a batch of `n` that did not get its own outcome.
fn refusal_of(result: &Result<WriteResult, Stalled>, n: usize) -> SubmitResponse {
    match result {
        Err(Stalled::Timeout) => unavailable(
            "the write was not committed in time; its outcome is unknown: retry with the same request id",
        ),
        Err(Stalled::Deposed(why)) => unavailable(&format!(
            "{why}; the write's outcome is unknown: retry with the same request id"
        )),
        Ok(Ok(resp)) => unavailable(&format!(
            "the batch of {n} commands answered {} outcomes",
            resp.data.len()
        )),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            match hint_of(f.leader_id, f.leader_node.as_ref()) {
                Some(h) => SubmitResponse {
                    result: Some(submit_response::Result::NotLeader(h)),
                    log_index: 0,
                    shown: Vec::new(),
                },
                None => unavailable("no leader is known at the moment"),
            }
        }
        Ok(Err(e)) => unavailable(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slapos_domain::{Op, RequestId, Timestamp};

    #[test]
    fn a_proposer_far_from_the_leaders_clock_is_refused() {
        let now = Timestamp::from_secs(1_800_000_000);
        assert!(clock_skew(now, now).is_none());
        assert!(clock_skew(Timestamp::from_secs(1_800_000_029), now).is_none());
        assert!(clock_skew(Timestamp::from_secs(1_799_999_701), now).is_none());
        let two_years = Timestamp::from_secs(1_800_000_000 + 2 * 365 * 86_400);
        match clock_skew(two_years, now) {
            Some(slapos_domain::DomainError::ClockSkew { skew, .. }) => {
                assert!(skew.ends_with("s ahead"), "{skew}")
            }
            other => panic!("{other:?}"),
        }
        assert!(clock_skew(Timestamp::from_secs(1_799_999_000), now).is_some());
    }

    #[test]
    fn the_leader_stamps_its_own_time_never_backwards() {
        let mut clock = LeaderClock {
            last: Timestamp(u64::MAX / 2),
        };
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let command = Command {
            request_id: RequestId::new("c", 1),
            at: Timestamp(u64::MAX / 2 + 1),
            op: Op::RetireReplica { id: 9 },
        };
        let kept = clock.stamp(vec![(command, tx)]);
        assert_eq!(kept.len(), 1);
        // The last stamp (ahead of the wall clock here) wins over an earlier now.
        assert_eq!(kept[0].0.at, Timestamp(u64::MAX / 2));
    }

    fn queued(n: u64, bytes: usize) -> Queued {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        Queued {
            pending: (
                Command {
                    request_id: RequestId::new("c", n),
                    at: Timestamp(0),
                    op: Op::RetireReplica { id: n },
                },
                tx,
            ),
            bytes,
        }
    }

    /// What `gather` takes, as request sequence numbers, and the one it hands back.
    fn entry(sizes: &[usize]) -> (Vec<u64>, Option<u64>) {
        let mut rest = sizes
            .iter()
            .enumerate()
            .map(|(i, b)| queued(i as u64 + 1, *b))
            .collect::<std::collections::VecDeque<_>>();
        let first = rest.pop_front().unwrap();
        let (batch, carried) = gather(first, || rest.pop_front());
        (
            batch.iter().map(|(c, _)| c.request_id.seq).collect(),
            carried.map(|q| q.pending.0.request_id.seq),
        )
    }

    #[test]
    fn an_entry_holds_at_most_its_count_and_its_bytes_of_commands() {
        // Small commands: up to MAX_BATCH of them.
        let (taken, carried) = entry(&vec![100; MAX_BATCH + 10]);
        assert_eq!((taken.len(), carried), (MAX_BATCH, None));
        // Large ones: the entry closes before the one that would cross the limit,
        // which opens the next.
        let big = MAX_BATCH_BYTES / 3;
        assert_eq!(entry(&[big, big, big, big]), (vec![1, 2, 3], Some(4)));
        // One larger than the limit still goes, alone.
        assert_eq!(entry(&[MAX_BATCH_BYTES * 4, 10]), (vec![1], Some(2)));
        assert_eq!(entry(&[10, MAX_BATCH_BYTES * 4]), (vec![1], Some(2)));
    }
}
