//! The group as an operator sees it (`slapos cluster status`, the portal's group page):
//! its members with their roles, addresses, regions and hosting, each one's own view of
//! its log, the lag and round trips the leader measures, its timers and what those
//! round trips say of them.

use crate::{ClientError, MasterClient};
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
    /// The leader's smoothed round trip to this member (its heartbeats), in ms; None
    /// for the leader itself, or before the member answered one.
    pub rtt_ms: Option<f64>,
    /// How long ago the member last answered the leader's AppendEntries, in ms.
    pub last_answer_ms: Option<u64>,
    /// Why the member itself did not answer.
    pub error: Option<String>,
}

/// The Raft timers the leader runs with (milliseconds).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerStatus {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

/// What the measured round trips say of the timers, after etcd's tuning guide: the
/// heartbeat near the largest round trip between members (at least half of it), the
/// election timeout at least ten round trips (and three heartbeats: openraft's own
/// default ratio), else a follower may
/// start an election that no fault caused; and a member that has not answered for longer
/// than the election timeout is as good as cut off.
pub fn timer_warnings(timers: TimerStatus, members: &[MemberStatus]) -> Vec<String> {
    let mut warnings = Vec::new();
    let worst = members
        .iter()
        .filter_map(|m| m.rtt_ms.map(|r| (r, m.id)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((rtt, id)) = worst {
        if (timers.heartbeat_ms as f64) < rtt / 2.0 {
            warnings.push(format!(
                "the heartbeat ({} ms) is under half the largest round trip ({rtt:.1} ms, to replica {id}): give it about one round trip",
                timers.heartbeat_ms
            ));
        }
        if (timers.election_timeout_min_ms as f64) < rtt * 10.0 {
            warnings.push(format!(
                "the election timeout ({} ms) is under ten round trips to replica {id} ({rtt:.1} ms): a slow round trip may start an election; give it at least {:.0} ms",
                timers.election_timeout_min_ms,
                (rtt * 10.0).ceil()
            ));
        }
    }
    if timers.election_timeout_min_ms < timers.heartbeat_ms * 3 {
        warnings.push(format!(
            "the election timeout ({} ms) is under three heartbeats ({} ms)",
            timers.election_timeout_min_ms, timers.heartbeat_ms
        ));
    }
    for m in members {
        if let Some(age) = m.last_answer_ms {
            if age > timers.election_timeout_max_ms {
                warnings.push(format!(
                    "replica {} last answered the leader {age} ms ago",
                    m.id
                ));
            }
        }
    }
    warnings
}

#[derive(Serialize, Debug, Clone)]
pub struct GroupStatus {
    /// The group's id (empty for a group made before groups had ids).
    pub group: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
    /// The leader's timers (None when no leader answered).
    pub timers: Option<TimerStatus>,
    /// What the measured round trips say of the timers ([`timer_warnings`]).
    pub warnings: Vec<String>,
}

/// Asks `client`'s replicas, then the leader (which knows every member's lag), then
/// every member for its own view (2 s each); a member that does not answer is listed
/// with its error. An error: no replica of `client` answered.
pub async fn group_status(mut client: MasterClient) -> Result<GroupStatus, ClientError> {
    let first = client.status().await?;
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
        let own: Result<StatusResponse, ClientError> = if m.id == view.id {
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
            rtt_ms: (m.contacted && m.rtt_us > 0).then(|| m.rtt_us as f64 / 1000.0),
            last_answer_ms: m.contacted.then_some(m.millis_since_answer),
            error,
        });
    }
    let leads = view.state == "leader" && view.has_leader && view.leader_id == view.id;
    let timers = leads.then_some(TimerStatus {
        heartbeat_ms: view.heartbeat_ms,
        election_timeout_min_ms: view.election_timeout_min_ms,
        election_timeout_max_ms: view.election_timeout_max_ms,
    });
    let warnings = timers.map_or_else(Vec::new, |t| timer_warnings(t, &members));
    Ok(GroupStatus {
        group: view.group.clone(),
        leader: view.has_leader.then_some(view.leader_id),
        term: view.term,
        members,
        timers,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, rtt_ms: Option<f64>, last_answer_ms: Option<u64>) -> MemberStatus {
        MemberStatus {
            id,
            role: "voter".into(),
            state: Some("follower".into()),
            raft_addr: String::new(),
            api_addr: String::new(),
            region: String::new(),
            hosted_by: None,
            gateway_url: None,
            term: None,
            last_log_index: None,
            committed_index: None,
            applied_index: None,
            lag: 0,
            snapshot_index: None,
            purged_index: None,
            log_size_bytes: None,
            snapshot_size_bytes: None,
            rtt_ms,
            last_answer_ms,
            error: None,
        }
    }

    const LAN: TimerStatus = TimerStatus {
        heartbeat_ms: 100,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
    };

    #[test]
    fn lan_timers_fit_lan_round_trips_and_not_an_ocean() {
        let near = [member(1, None, None), member(2, Some(0.4), Some(20))];
        assert!(timer_warnings(LAN, &near).is_empty());
        let far = [
            member(2, Some(0.4), Some(20)),
            member(3, Some(230.0), Some(90)),
        ];
        let said = timer_warnings(LAN, &far);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("heartbeat (100 ms)") && said[0].contains("replica 3"));
        assert!(said[1].contains("at least 2300 ms"), "{said:?}");
        // timers chosen by the rule say nothing
        let wan = TimerStatus {
            heartbeat_ms: 230,
            election_timeout_min_ms: 2300,
            election_timeout_max_ms: 4600,
        };
        assert!(timer_warnings(wan, &far).is_empty());
    }

    #[test]
    fn a_silent_member_and_an_election_timeout_under_three_heartbeats_are_named() {
        let timers = TimerStatus {
            heartbeat_ms: 100,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 800,
        };
        let said = timer_warnings(timers, &[member(2, Some(1.0), Some(5_000))]);
        assert!(
            said.iter().any(|w| w.contains("under three heartbeats")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|w| w.contains("replica 2 last answered the leader 5000 ms ago")),
            "{said:?}"
        );
    }
}
