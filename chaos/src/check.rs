//! The checkers of a chaos run and its report: linearizability per register, lost
//! acknowledged writes, phantom values in bounded-staleness reads, replicas compared,
//! the longest windows without progress.

use crate::kind::{FaultEvent, FaultKind};
use crate::linearizability::{check_register, RegisterKind, RegisterOp, Verdict};
use crate::options::ChaosOptions;
use crate::workload::{
    self, register_by_title, registers_of, History, Key, OpKind, OpRecord, Outcome,
};
use serde::Serialize;
use slapos_domain::State;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub struct RegisterVerdict {
    pub register: String,
    pub ops: usize,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaCheck {
    pub id: u64,
    pub applied_index: u64,
    pub entries: usize,
    pub identical_to_first: bool,
    pub invariants: Result<(), String>,
    /// Registers whose value on this replica is not one the history allows as final.
    pub lost_writes: Vec<String>,
    /// Usage journals this replica lost, doubled, or recorded without being asked.
    pub usage_errors: Vec<String>,
}

/// A replica's usage on the spare computer: stop date (µs) -> (partition, quantity) lines.
pub type UsageOnReplica = BTreeMap<u64, Vec<(String, String)>>;

/// The usage a replica holds, from its state read with the period's usage.
pub(crate) fn usage_on(state: &State) -> UsageOnReplica {
    let mut out: UsageOnReplica = BTreeMap::new();
    for m in state.all_movements() {
        if m.kind != slapos_domain::MovementKind::Usage || *m.computer != *workload::SPARE_COMPUTER
        {
            continue;
        }
        let (Some(stop), Some(quantity)) = (m.stop, m.quantity) else {
            continue;
        };
        out.entry(stop.micros())
            .or_default()
            .push((m.partition.to_string(), quantity.to_string()));
    }
    for lines in out.values_mut() {
        lines.sort();
    }
    out
}

/// Every acknowledged journal recorded exactly once with its lines, every refused one
/// absent, every unknown one absent or recorded once, nothing recorded that nobody
/// posted, and no acknowledged journal refused when posted again.
pub(crate) fn usage_errors(on: &UsageOnReplica, history: &History) -> Vec<String> {
    let mut out = Vec::new();
    let mut posted = std::collections::BTreeSet::new();
    for u in history.usage.iter().filter(|u| !u.repost) {
        posted.insert(u.stop_us);
        let mut want = u.lines.clone();
        want.sort();
        let got = on.get(&u.stop_us);
        let fine = match (u.outcome, got) {
            (Outcome::Ok, Some(got)) => *got == want,
            (Outcome::Ok, None) => false,
            (Outcome::Unknown, None) | (Outcome::Fail, None) => true,
            (Outcome::Unknown, Some(got)) => *got == want,
            (Outcome::Fail, Some(_)) => false,
        };
        if !fine {
            out.push(format!(
                "journal {} ({:?}, lines {want:?}) recorded as {got:?}",
                u.stop_us, u.outcome
            ));
        }
    }
    for stop in on.keys().filter(|s| !posted.contains(s)) {
        out.push(format!("journal {stop} recorded but never posted"));
    }
    for u in history.usage.iter().filter(|u| u.repost) {
        if u.status.is_some_and(|s| (400..500).contains(&s)) {
            out.push(format!(
                "acknowledged journal {} refused when posted again: {:?}",
                u.stop_us, u.error
            ));
        }
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub mode: String,
    pub replicas: u64,
    pub clients: usize,
    pub keys: usize,
    pub duration_s: f64,
    pub not_injectable: Vec<FaultKind>,
    pub faults: Vec<FaultEvent>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub ops_by_outcome: BTreeMap<String, usize>,
    pub local_reads: usize,
    /// Values the local reads showed, each checked against the writes.
    pub local_values_checked: usize,
    pub failed_local_reads: u64,
    pub longest_without_write_ms: u64,
    /// When that window began (ms since the clients started).
    pub longest_without_write_at_ms: u64,
    pub longest_without_read_ms: u64,
    pub longest_without_read_at_ms: u64,
    pub linearizable: bool,
    pub first_violation: Option<RegisterVerdict>,
    pub registers_checked: usize,
    pub unknown_verdicts: usize,
    pub lost_writes: usize,
    pub replicas_identical: bool,
    pub replica_checks: Vec<ReplicaCheck>,
    pub phantom_local_reads: Vec<String>,
    /// Usage journals: posted (first time) by outcome, re-posts, and the errors found on
    /// any replica.
    pub usage_by_outcome: BTreeMap<String, usize>,
    pub usage_reposts: usize,
    pub usage_errors: usize,
    pub passed: bool,
}

/// Registers whose value in `state` is none of the values the history allows at the end.
pub(crate) fn lost_writes(state: &State, keys: &[Key], history: &History) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys {
        let (request, connection) = registers_of(state, key);
        for (register, value) in [
            (key.request_register(), request),
            (key.connection_register(), connection),
        ] {
            if let Some(lost) = final_value_lost(history, &register, value.as_deref()) {
                out.push(lost);
            }
        }
    }
    // instances created with unique references: an acknowledged one exists everywhere,
    // a refused one nowhere
    let created: std::collections::BTreeSet<&str> = history
        .ops
        .iter()
        .filter(|o| o.register.starts_with(workload::NEW_PREFIX))
        .map(|o| o.register.as_str())
        .collect();
    for register in created {
        let value = register_by_title(state, register).flatten();
        if let Some(lost) = final_value_lost(history, register, value.as_deref()) {
            out.push(lost);
        }
    }
    out
}

/// Whether `value`, found in `register` once everything settled, loses an acknowledged
/// write: a write `w` (acknowledged or unknown) may be the last one unless an
/// acknowledged write began after `w` completed; anything else means that write was lost.
fn final_value_lost(history: &History, register: &str, value: Option<&str>) -> Option<String> {
    let writes: Vec<&OpRecord> = history
        .ops
        .iter()
        .filter(|o| o.register == register && o.outcome != Outcome::Fail)
        .filter(|o| matches!(o.kind, OpKind::Write { .. }))
        .collect();
    let latest_acked_start = writes
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.invoke_us)
        .max();
    let allowed: Vec<&str> = writes
        .iter()
        .filter(|w| match (w.complete_us, latest_acked_start) {
            (Some(done), Some(last)) => done >= last,
            _ => true,
        })
        .filter_map(|w| match &w.kind {
            OpKind::Write { value } => Some(value.as_str()),
            OpKind::Read { .. } => None,
        })
        .collect();
    let ok = match value {
        None => latest_acked_start.is_none(),
        Some(v) => allowed.contains(&v),
    };
    (!ok).then(|| {
        format!("{register}: {value:?} is not among the values that may be last {allowed:?}")
    })
}

/// Longest gap between successive completions in `times` within `[from, to]`, and
/// where it began (both in ms).
fn longest_gap(mut times: Vec<u64>, from: u64, to: u64) -> (u64, u64) {
    times.retain(|t| *t >= from && *t <= to);
    times.sort_unstable();
    times.push(to);
    let mut last = from;
    let (mut gap, mut at) = (0, from);
    for t in times {
        if t - last > gap {
            gap = t - last;
            at = last;
        }
        last = t;
    }
    (gap / 1000, at / 1000)
}

/// A local read may be stale, but never shows a value nobody wrote (or one whose write
/// began after the read completed). Returns how many values were checked, and the
/// phantoms.
fn phantom_reads(history: &History, keys: &[Key]) -> (usize, Vec<String>) {
    let mut written: HashMap<(&str, &str), u64> = HashMap::new();
    for o in history.ops.iter().filter(|o| o.outcome != Outcome::Fail) {
        if let OpKind::Write { value } = &o.kind {
            let e = written
                .entry((o.register.as_str(), value.as_str()))
                .or_insert(u64::MAX);
            *e = (*e).min(o.invoke_us);
        }
    }
    let mut checked = 0;
    let mut phantoms = Vec::new();
    for v in &history.views {
        for (register, value) in &v.seen {
            if !keys.iter().any(|k| &k.reference == register) {
                continue;
            }
            checked += 1;
            match written.get(&(register.as_str(), value.as_str())) {
                Some(invoked) if *invoked <= v.complete_us => {}
                _ => phantoms.push(format!(
                    "client {} at {} ms through {} showed {register} = {value:?}, which no write had set",
                    v.client,
                    v.complete_us / 1000,
                    v.via
                )),
            }
        }
    }
    (checked, phantoms)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn judge(
    opts: &ChaosOptions,
    history: &History,
    keys: &[Key],
    faults: Vec<FaultEvent>,
    not_injectable: Vec<FaultKind>,
    replica_checks: Vec<ReplicaCheck>,
    from_us: u64,
    to_us: u64,
) -> Report {
    let mut by_register: BTreeMap<&str, Vec<RegisterOp>> = BTreeMap::new();
    let mut ops_by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for (i, o) in history.ops.iter().enumerate() {
        let kind = match &o.kind {
            OpKind::Write { .. } => "write",
            OpKind::Read { .. } => "read",
        };
        let outcome = match o.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "failed",
            Outcome::Unknown => "unknown",
        };
        *ops_by_outcome
            .entry(format!("{kind} {outcome}"))
            .or_default() += 1;
        let kind = match (&o.kind, o.outcome) {
            (_, Outcome::Fail) => continue,
            (OpKind::Write { value }, _) => RegisterKind::Write(value.clone()),
            (OpKind::Read { value }, Outcome::Ok) => RegisterKind::Read(value.clone()),
            (OpKind::Read { .. }, Outcome::Unknown) => continue,
        };
        by_register
            .entry(o.register.as_str())
            .or_default()
            .push(RegisterOp {
                id: i,
                invoke: o.invoke_us,
                complete: o.complete_us,
                kind,
            });
    }
    let mut verdicts = Vec::new();
    for (register, ops) in &by_register {
        verdicts.push(RegisterVerdict {
            register: register.to_string(),
            ops: ops.len(),
            verdict: check_register(None, ops, 5_000_000),
        });
    }
    let first_violation = verdicts
        .iter()
        .find(|v| matches!(v.verdict, Verdict::NotLinearizable { .. }))
        .cloned();
    let unknown_verdicts = verdicts
        .iter()
        .filter(|v| matches!(v.verdict, Verdict::Unknown { .. }))
        .count();
    let linearizable = verdicts
        .iter()
        .all(|v| matches!(v.verdict, Verdict::Linearizable));

    let (local_values_checked, phantom_local_reads) = phantom_reads(history, keys);

    let write_times: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches!(o.kind, OpKind::Write { .. }))
        .filter_map(|o| o.complete_us)
        .collect();
    let read_times: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches!(o.kind, OpKind::Read { .. }))
        .filter_map(|o| o.complete_us)
        .chain(history.views.iter().map(|v| v.complete_us))
        .collect();
    let no_write = longest_gap(write_times, from_us, to_us);
    let no_read = longest_gap(read_times, from_us, to_us);
    let mut faults_by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in &faults {
        if f.error.is_none() {
            *faults_by_kind.entry(f.kind.name().to_string()).or_default() += 1;
        }
    }
    let lost: usize = replica_checks.iter().map(|c| c.lost_writes.len()).sum();
    let usage_errors: usize = replica_checks.iter().map(|c| c.usage_errors.len()).sum();
    let mut usage_by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for u in history.usage.iter().filter(|u| !u.repost) {
        *usage_by_outcome
            .entry(format!("{:?}", u.outcome).to_lowercase())
            .or_default() += 1;
    }
    let usage_reposts = history.usage.iter().filter(|u| u.repost).count();
    let replicas_identical = replica_checks.len() as u64 == opts.replicas
        && replica_checks.iter().all(|c| c.identical_to_first);
    let invariants_ok = replica_checks.iter().all(|c| c.invariants.is_ok());
    // a run where nothing got through proves nothing
    let progressed = ops_by_outcome.get("write ok").copied().unwrap_or(0) > 0
        && ops_by_outcome.get("read ok").copied().unwrap_or(0) > 0;
    let passed = progressed
        && linearizable
        && lost == 0
        && usage_errors == 0
        && replicas_identical
        && invariants_ok
        && phantom_local_reads.is_empty();
    Report {
        seed: opts.seed,
        mode: if opts.self_hosted {
            "self-hosted: replicas in partitions of nodes, each node a network namespace".into()
        } else if let (true, Some(m), Some(hosts)) =
            (opts.namespaces, &opts.regions, opts.host_regions())
        {
            let placed: Vec<String> = hosts
                .iter()
                .enumerate()
                .map(|(i, r)| format!("h{} {}", i + 1, m.names()[*r]))
                .collect();
            format!(
                "network namespaces behind the WAN emulator, in regions ({})",
                placed.join(", ")
            )
        } else if opts.namespaces {
            "network namespaces".into()
        } else {
            "loopback".into()
        },
        replicas: opts.replicas,
        clients: opts.clients,
        keys: opts.keys,
        duration_s: opts.duration.as_secs_f64(),
        not_injectable,
        faults,
        faults_by_kind,
        ops_by_outcome,
        local_reads: history.views.len(),
        local_values_checked,
        failed_local_reads: history.failed_views,
        longest_without_write_ms: no_write.0,
        longest_without_write_at_ms: no_write.1,
        longest_without_read_ms: no_read.0,
        longest_without_read_at_ms: no_read.1,
        linearizable,
        first_violation,
        registers_checked: verdicts.len(),
        unknown_verdicts,
        lost_writes: lost,
        replicas_identical,
        replica_checks,
        phantom_local_reads,
        usage_by_outcome,
        usage_reposts,
        usage_errors,
        passed,
    }
}

impl Report {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "chaos run: seed {} ({}), {} replicas, {} clients, {} keys, {:.0} s\n",
            self.seed, self.mode, self.replicas, self.clients, self.keys, self.duration_s
        ));
        if !self.not_injectable.is_empty() {
            s.push_str(&format!(
                "  not injectable here: {:?}\n",
                self.not_injectable
            ));
        }
        s.push_str(&format!("  faults: {:?}\n", self.faults_by_kind));
        let failed: Vec<String> = self
            .faults
            .iter()
            .filter_map(|f| {
                f.error
                    .as_ref()
                    .map(|e| format!("{:?} at {} ms: {e}", f.kind, f.start_ms))
            })
            .collect();
        if !failed.is_empty() {
            s.push_str(&format!(
                "  faults that could not be injected: {failed:?}\n"
            ));
        }
        let mut elections: Vec<u64> = self
            .faults
            .iter()
            .filter_map(|f| f.new_leader_after_ms)
            .collect();
        elections.sort_unstable();
        if !elections.is_empty() {
            s.push_str(&format!(
                "  a leader again after a leader fault: median {} ms, max {} ms ({} faults, {} of them only once healed)\n",
                elections[elections.len() / 2],
                elections[elections.len() - 1],
                elections.len(),
                self.faults.iter().filter(|f| f.leader_after_heal).count()
            ));
        }
        s.push_str(&format!("  operations: {:?}\n", self.ops_by_outcome));
        s.push_str(&format!(
            "  local (bounded-staleness) reads: {} ok ({} values checked), {} failed; phantom values: {}\n",
            self.local_reads,
            self.local_values_checked,
            self.failed_local_reads,
            self.phantom_local_reads.len()
        ));
        s.push_str(&format!(
            "  longest window without a successful write: {} ms (from {:.1} s), without a successful read: {} ms (from {:.1} s)\n",
            self.longest_without_write_ms,
            self.longest_without_write_at_ms as f64 / 1000.0,
            self.longest_without_read_ms,
            self.longest_without_read_at_ms as f64 / 1000.0
        ));
        s.push_str(&format!(
            "  linearizability: {} ({} registers, {} undecided)\n",
            if self.linearizable {
                "linearizable"
            } else {
                "NOT linearizable"
            },
            self.registers_checked,
            self.unknown_verdicts
        ));
        if let Some(v) = &self.first_violation {
            s.push_str(&format!(
                "    first counterexample: {} {:?}\n",
                v.register, v.verdict
            ));
        }
        s.push_str(&format!(
            "  lost acknowledged writes: {}; replicas identical: {}; invariants: {}\n",
            self.lost_writes,
            self.replicas_identical,
            if self.replica_checks.iter().all(|c| c.invariants.is_ok()) {
                "hold"
            } else {
                "BROKEN"
            }
        ));
        s.push_str(&format!(
            "  usage journals: {:?}, {} re-posts; lost, doubled or phantom on any replica: {}\n",
            self.usage_by_outcome, self.usage_reposts, self.usage_errors
        ));
        if let Some(e) = self
            .replica_checks
            .iter()
            .find_map(|c| c.usage_errors.first())
        {
            s.push_str(&format!("    first: {e}\n"));
        }
        s.push_str(&format!(
            "  verdict: {}\n",
            if self.passed { "PASS" } else { "FAIL" }
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(register: &str, value: &str, invoke: u64, complete: Option<u64>) -> OpRecord {
        OpRecord {
            client: 0,
            register: register.into(),
            kind: OpKind::Write {
                value: value.into(),
            },
            invoke_us: invoke,
            complete_us: complete,
            outcome: if complete.is_some() {
                Outcome::Ok
            } else {
                Outcome::Unknown
            },
            via: String::new(),
            error: None,
        }
    }

    fn history(ops: Vec<OpRecord>) -> History {
        History {
            ops,
            ..History::default()
        }
    }

    fn journal(
        stop: u64,
        lines: &[(&str, &str)],
        outcome: Outcome,
        repost: bool,
    ) -> crate::workload::UsageRecord {
        crate::workload::UsageRecord {
            client: 0,
            stop_us: stop,
            lines: lines
                .iter()
                .map(|(p, q)| (p.to_string(), q.to_string()))
                .collect(),
            repost,
            invoke_us: 0,
            complete_us: Some(1),
            outcome,
            status: match outcome {
                Outcome::Ok => Some(200),
                Outcome::Fail => Some(409),
                Outcome::Unknown => None,
            },
            via: String::new(),
            error: None,
        }
    }

    #[test]
    fn lost_doubled_phantom_and_refused_usage_is_caught() {
        let mut history = History {
            usage: vec![
                journal(10, &[("slappart1", "11")], Outcome::Ok, false),
                journal(
                    20,
                    &[("slappart2", "21"), ("slappart3", "22")],
                    Outcome::Ok,
                    false,
                ),
                journal(30, &[("slappart4", "31")], Outcome::Unknown, false),
                journal(40, &[("slappart5", "41")], Outcome::Fail, false),
            ],
            ..History::default()
        };
        let line = |p: &str, q: &str| (p.to_string(), q.to_string());
        let mut good: UsageOnReplica = BTreeMap::new();
        good.insert(10, vec![line("slappart1", "11")]);
        good.insert(20, vec![line("slappart2", "21"), line("slappart3", "22")]);
        assert!(usage_errors(&good, &history).is_empty());
        // the unknown one may have landed
        let mut landed = good.clone();
        landed.insert(30, vec![line("slappart4", "31")]);
        assert!(usage_errors(&landed, &history).is_empty());
        // lost
        let mut lost = good.clone();
        lost.remove(&20);
        assert_eq!(usage_errors(&lost, &history).len(), 1);
        // doubled
        let mut doubled = good.clone();
        doubled.insert(10, vec![line("slappart1", "11"), line("slappart1", "11")]);
        assert_eq!(usage_errors(&doubled, &history).len(), 1);
        // the refused one recorded, and one nobody posted
        let mut phantom = good.clone();
        phantom.insert(40, vec![line("slappart5", "41")]);
        phantom.insert(50, vec![line("slappart6", "1")]);
        assert_eq!(usage_errors(&phantom, &history).len(), 2);
        // an acknowledged journal refused when posted again
        history
            .usage
            .push(journal(10, &[("slappart1", "11")], Outcome::Fail, true));
        assert_eq!(usage_errors(&good, &history).len(), 1);
    }

    #[test]
    fn a_final_value_older_than_an_acknowledged_write_is_a_lost_write() {
        let h = history(vec![
            write("K", "v1", 0, Some(10)),
            write("K", "v2", 20, Some(30)),
            write("K", "v3", 25, None),
            write("other", "x", 40, Some(50)),
        ]);
        assert_eq!(final_value_lost(&h, "K", Some("v2")), None);
        // an unknown write may have landed last
        assert_eq!(final_value_lost(&h, "K", Some("v3")), None);
        let lost = final_value_lost(&h, "K", Some("v1")).unwrap();
        assert!(lost.contains("\"v1\""), "{lost}");
        assert!(final_value_lost(&h, "K", None).is_some());
        assert!(final_value_lost(&h, "K", Some("x")).is_some());
        assert_eq!(final_value_lost(&h, "never-written", None), None);
    }

    #[test]
    fn concurrent_acknowledged_writes_may_land_in_either_order() {
        let h = history(vec![
            write("K", "v1", 0, Some(10)),
            write("K", "v2", 5, Some(15)),
        ]);
        assert_eq!(final_value_lost(&h, "K", Some("v1")), None);
        assert_eq!(final_value_lost(&h, "K", Some("v2")), None);
    }

    #[test]
    fn failed_writes_are_not_candidates() {
        let mut failed = write("K", "v2", 20, Some(30));
        failed.outcome = Outcome::Fail;
        let h = history(vec![write("K", "v1", 0, Some(10)), failed]);
        assert_eq!(final_value_lost(&h, "K", Some("v1")), None);
        assert!(final_value_lost(&h, "K", Some("v2")).is_some());
    }

    #[test]
    fn a_local_read_of_a_value_nobody_wrote_is_a_phantom() {
        let key = Key {
            reference: "K".into(),
            instance: 1,
            computer: "COMP".into(),
            partition: "slappart0".into(),
        };
        let mut h = history(vec![
            write("K", "v1", 0, Some(10)),
            write("K", "v2", 50, None),
        ]);
        let view = |seen: &str, at: u64| crate::workload::ViewRecord {
            client: 1,
            invoke_us: at - 5,
            complete_us: at,
            via: "gw".into(),
            seen: vec![("K".into(), seen.into())],
        };
        h.views = vec![
            view("v1", 20),
            view("v2", 60),
            view("v2", 30),
            view("v9", 70),
        ];
        let (checked, phantoms) = phantom_reads(&h, &[key]);
        assert_eq!(checked, 4);
        assert_eq!(phantoms.len(), 2, "{phantoms:?}");
        assert!(phantoms[0].contains("\"v2\"") && phantoms[1].contains("\"v9\""));
    }

    #[test]
    fn gaps_count_the_edges_of_the_window() {
        assert_eq!(
            longest_gap(vec![3_000, 4_000, 9_000], 1_000, 10_000),
            (5, 4)
        );
        assert_eq!(longest_gap(vec![], 0, 7_000), (7, 0));
        assert_eq!(longest_gap(vec![500, 20_000], 1_000, 10_000), (9, 1));
    }
}
