//! A linearizability checker for one read/write register (one key), in the style of
//! Wing & Gong as improved by Lowe ("WGL"), the algorithm behind Jepsen's Knossos `wgl`
//! checker and Porcupine.
//!
//! The history is turned into a doubly-linked list of call and return events sorted by
//! time. The search walks the list from its head: at a call it tries to linearize that
//! operation now (apply it to the register; a read must see the register's value), and
//! if that works it takes the operation's call and return out of the list and starts
//! again from the head. Reaching a return means the operation it belongs to should have
//! taken effect already and no pending operation can go first, so the search backtracks
//! the last choice. Every (set of linearized operations, register value) configuration
//! is remembered, so none is explored twice: with low concurrency the search is roughly
//! linear in the length of the history.
//!
//! Writes whose outcome is unknown (the client timed out) get their return at +infinity:
//! they may take effect at any point after their call, or never. Such a write whose value
//! no read ever saw is dropped up front (linearizing it can never help a read, and leaving
//! it out is always allowed), which keeps timed-out writes from multiplying the states
//! to explore when the history is not linearizable.

use serde::Serialize;
use std::collections::HashMap;

/// One operation on one register (one key) as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOp {
    /// The caller's index for this operation (returned in counterexamples).
    pub id: usize,
    /// When the client invoked it (any monotonic unit, e.g. ns since the run began).
    pub invoke: u64,
    /// When the client saw it complete; None when its outcome is unknown (timed out): an
    /// unknown write may have taken effect at any time after `invoke`, or never.
    pub complete: Option<u64>,
    /// What the operation did.
    pub kind: RegisterKind,
}

/// What an operation did to the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterKind {
    /// Set the register to this value (acknowledged, or unknown when complete is None).
    Write(String),
    /// Read and saw this value (None: the register had never been written). Reads with an
    /// unknown outcome must not be passed in (the caller drops them); one passed with
    /// `complete == None` is ignored.
    Read(Option<String>),
}

/// The outcome of [`check_register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Some order of the operations, each taking effect between its invocation and its
    /// completion, explains every value that was read.
    Linearizable,
    /// No order of the operations explains what was observed. `ops` are the ids (sorted,
    /// without duplicates) of the operations involved at the deepest point the search
    /// reached (the largest number of operations it managed to linearize): the operation
    /// that could not be linearized there, the operations with a known outcome still
    /// pending at that point (they could have gone first), the writes that produced the
    /// values the register could hold there, and the writes of the value a failing read
    /// saw. `explanation` is a human sentence such as "read by op 17 saw \"v3\" but the
    /// register can only hold \"v5\" (written by op 12) or \"v6\" (written by op 15) at
    /// that point".
    NotLinearizable {
        /// Ids of the operations involved (see above).
        ops: Vec<usize>,
        /// What went wrong, in a sentence.
        explanation: String,
    },
    /// The search exceeded its budget of explored states.
    Unknown {
        /// How many distinct states were explored before giving up.
        explored: usize,
    },
}

/// Checks that `ops`, the history of one register whose value starts as `initial`, is
/// linearizable. `budget` bounds the number of distinct search states explored (each one
/// costs about `ops.len() / 8` bytes of memory); past it the verdict is
/// [`Verdict::Unknown`].
pub fn check_register(initial: Option<String>, ops: &[RegisterOp], budget: usize) -> Verdict {
    let mut values = Values::default();
    let initial = values.intern(initial.as_deref());

    // Values some read saw: unknown writes of anything else are dropped (see module docs).
    let read_values: std::collections::HashSet<Option<&str>> = ops
        .iter()
        .filter(|op| op.complete.is_some())
        .filter_map(|op| match &op.kind {
            RegisterKind::Read(v) => Some(v.as_deref()),
            RegisterKind::Write(_) => None,
        })
        .collect();

    let mut history: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        let step = match (&op.kind, op.complete) {
            (RegisterKind::Read(_), None) => continue,
            (RegisterKind::Write(v), None) if !read_values.contains(&Some(v.as_str())) => continue,
            (RegisterKind::Read(v), Some(_)) => Step::Read(values.intern(v.as_deref())),
            (RegisterKind::Write(v), _) => Step::Write(values.intern(Some(v))),
        };
        history.push(Op {
            id: op.id,
            invoke: op.invoke,
            // A completion before the invocation is malformed; treat it as instantaneous.
            complete: op.complete.map(|c| c.max(op.invoke)),
            step,
        });
    }

    Search::new(&history, initial, &values).run(budget)
}

/// An operation as the search sees it, with its value interned.
struct Op {
    id: usize,
    invoke: u64,
    complete: Option<u64>,
    step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Write(Value),
    Read(Value),
}

/// An interned register value; `NEVER_WRITTEN` is the register before any write.
type Value = u32;
const NEVER_WRITTEN: Value = 0;

/// Maps register values to small integers so states are cheap to copy and compare.
#[derive(Default)]
struct Values {
    names: Vec<String>,
    index: HashMap<String, Value>,
}

impl Values {
    fn intern(&mut self, value: Option<&str>) -> Value {
        let Some(v) = value else {
            return NEVER_WRITTEN;
        };
        if let Some(&id) = self.index.get(v) {
            return id;
        }
        self.names.push(v.to_owned());
        let id = Value::try_from(self.names.len()).unwrap_or(Value::MAX);
        self.index.insert(v.to_owned(), id);
        id
    }

    fn describe(&self, value: Value) -> String {
        match value
            .checked_sub(1)
            .and_then(|i| self.names.get(i as usize))
        {
            Some(name) => format!("{name:?}"),
            None => "no value (never written)".to_owned(),
        }
    }
}

/// Index of the list's head and tail sentinels; events follow.
const HEAD: usize = 0;
const TAIL: usize = 1;

#[derive(Debug, Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    /// Index into the search's operations (unused for the sentinels).
    op: usize,
    is_call: bool,
    /// For a call, the node of its return.
    ret: usize,
}

/// The doubly-linked list of call and return events, in a Vec.
struct Events {
    nodes: Vec<Node>,
}

impl Events {
    fn new(ops: &[Op]) -> Events {
        // Sort key: unknown returns after everything else, then time, then calls before
        // returns on equal timestamps (operations that touch are taken as overlapping).
        let mut events: Vec<(bool, u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((false, op.invoke, 0, i));
            match op.complete {
                Some(t) => events.push((false, t, 1, i)),
                None => events.push((true, u64::MAX, 1, i)),
            }
        }
        events.sort_unstable();

        let sentinel = Node {
            prev: HEAD,
            next: TAIL,
            op: usize::MAX,
            is_call: false,
            ret: usize::MAX,
        };
        let mut nodes = vec![sentinel; 2 + events.len()];
        let mut call_node = vec![usize::MAX; ops.len()];
        let mut prev = HEAD;
        for (k, &(_, _, kind, op)) in events.iter().enumerate() {
            let n = k + 2;
            nodes[prev].next = n;
            nodes[n] = Node {
                prev,
                next: TAIL,
                op,
                is_call: kind == 0,
                ret: usize::MAX,
            };
            if kind == 0 {
                call_node[op] = n;
            } else if let Some(&c) = call_node.get(op) {
                if let Some(call) = nodes.get_mut(c) {
                    call.ret = n;
                }
            }
            prev = n;
        }
        nodes[prev].next = TAIL;
        nodes[TAIL].prev = prev;
        Events { nodes }
    }

    fn next(&self, n: usize) -> usize {
        self.nodes[n].next
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.nodes[call].ret;
        for n in [call, ret] {
            let Node { prev, next, .. } = self.nodes[n];
            self.nodes[prev].next = next;
            self.nodes[next].prev = prev;
        }
    }

    /// Puts back a call and its return taken out by `lift` (in reverse order).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].ret;
        for n in [ret, call] {
            let Node { prev, next, .. } = self.nodes[n];
            self.nodes[prev].next = n;
            self.nodes[next].prev = n;
        }
    }
}

/// The configurations already explored: (linearized set, register value). Keyed by an
/// incrementally maintained (Zobrist) hash of the set, so a lookup costs O(1) hashing and
/// a full comparison of the set only on a hash match.
#[derive(Default)]
struct Memo {
    buckets: HashMap<u64, Vec<Explored>>,
}

/// One explored configuration: the register's value and the set of linearized operations
/// as a bitset.
type Explored = (Value, Box<[u64]>);

impl Memo {
    /// Records the configuration; false when it had been explored already.
    fn insert(&mut self, set_hash: u64, value: Value, set: &[u64]) -> bool {
        let key = set_hash ^ splitmix64(u64::from(value) ^ 0xa076_1d64_78bd_642f);
        let bucket = self.buckets.entry(key).or_default();
        if bucket.iter().any(|(v, s)| *v == value && **s == *set) {
            return false;
        }
        bucket.push((value, set.into()));
        true
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A choice the search made, to undo when backtracking.
struct Frame {
    call: usize,
    value: Value,
    last_writer: Option<usize>,
}

/// Where the search got stuck: the return of `op` was reached with the register holding
/// `value`, last written by `last_writer` (None: the initial value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    value: Value,
    last_writer: Option<usize>,
}

/// The deepest point where the search got stuck.
struct Deepest {
    depth: usize,
    op: usize,
    /// Operations with a known outcome whose call preceded the stuck return there.
    pending: Vec<usize>,
}

/// How many distinct register values are remembered per stuck operation.
const MAX_BLOCKS_PER_OP: usize = 16;

struct Search<'a> {
    ops: &'a [Op],
    values: &'a Values,
    events: Events,
    initial: Value,
    known: usize,
    zobrist: Vec<u64>,
    blocks: HashMap<usize, Vec<Block>>,
    deepest: Option<Deepest>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op], initial: Value, values: &'a Values) -> Search<'a> {
        Search {
            ops,
            values,
            events: Events::new(ops),
            initial,
            known: ops.iter().filter(|op| op.complete.is_some()).count(),
            zobrist: (0..ops.len() as u64).map(splitmix64).collect(),
            blocks: HashMap::new(),
            deepest: None,
        }
    }

    fn run(mut self, budget: usize) -> Verdict {
        let mut memo = Memo::default();
        let mut linearized = vec![0u64; self.ops.len().div_ceil(64)];
        let mut set_hash = 0u64;
        let mut stack: Vec<Frame> = Vec::new();
        let mut value = self.initial;
        let mut last_writer: Option<usize> = None;
        let mut done = 0usize; // linearized operations with a known outcome
        let mut explored = 0usize;
        let mut entry = self.events.next(HEAD);

        loop {
            if done == self.known {
                return Verdict::Linearizable;
            }
            if entry == TAIL {
                // Unreachable: an operation with a known outcome is left, so its return
                // comes before the tail. Treat it as a dead end all the same.
                return self.not_linearizable();
            }
            let node = self.events.nodes[entry];
            if node.is_call {
                let op = node.op;
                let next_value = match self.ops[op].step {
                    Step::Write(v) => Some(v),
                    Step::Read(v) => (v == value).then_some(v),
                };
                if let Some(next_value) = next_value {
                    let (word, bit) = (op / 64, 1u64 << (op % 64));
                    linearized[word] |= bit;
                    let next_hash = set_hash ^ self.zobrist[op];
                    if memo.insert(next_hash, next_value, &linearized) {
                        explored += 1;
                        if explored > budget {
                            return Verdict::Unknown { explored };
                        }
                        stack.push(Frame {
                            call: entry,
                            value,
                            last_writer,
                        });
                        if matches!(self.ops[op].step, Step::Write(_)) {
                            last_writer = Some(op);
                        }
                        value = next_value;
                        set_hash = next_hash;
                        self.events.lift(entry);
                        if self.ops[op].complete.is_some() {
                            done += 1;
                        }
                        entry = self.events.next(HEAD);
                        continue;
                    }
                    linearized[word] &= !bit;
                }
                entry = node.next;
            } else {
                // The return of an operation not yet linearized: nothing pending can go
                // first, so undo the last choice and try the next candidate after it.
                self.record_block(node.op, entry, done, value, last_writer);
                let Some(frame) = stack.pop() else {
                    return self.not_linearizable();
                };
                let op = self.events.nodes[frame.call].op;
                linearized[op / 64] &= !(1u64 << (op % 64));
                set_hash ^= self.zobrist[op];
                value = frame.value;
                last_writer = frame.last_writer;
                self.events.unlift(frame.call);
                if self.ops[op].complete.is_some() {
                    done -= 1;
                }
                entry = self.events.next(frame.call);
            }
        }
    }

    fn record_block(
        &mut self,
        op: usize,
        ret: usize,
        depth: usize,
        value: Value,
        last_writer: Option<usize>,
    ) {
        let blocks = self.blocks.entry(op).or_default();
        if blocks.len() < MAX_BLOCKS_PER_OP && !blocks.iter().any(|b| b.value == value) {
            blocks.push(Block { value, last_writer });
        }
        if self.deepest.as_ref().is_some_and(|d| d.depth >= depth) {
            return;
        }
        let mut pending = Vec::new();
        let mut n = self.events.next(HEAD);
        while n != ret && n != TAIL {
            let node = self.events.nodes[n];
            if node.is_call && self.ops[node.op].complete.is_some() {
                pending.push(node.op);
            }
            n = node.next;
        }
        self.deepest = Some(Deepest { depth, op, pending });
    }

    fn not_linearizable(&self) -> Verdict {
        let Some(deepest) = &self.deepest else {
            return Verdict::NotLinearizable {
                ops: Vec::new(),
                explanation: "no order of the operations explains what was observed".into(),
            };
        };
        let stuck = &self.ops[deepest.op];
        let blocks = self.blocks.get(&deepest.op).map_or(&[][..], Vec::as_slice);

        let mut ids: Vec<usize> = vec![stuck.id];
        ids.extend(deepest.pending.iter().map(|&i| self.ops[i].id));
        ids.extend(
            blocks
                .iter()
                .filter_map(|b| b.last_writer)
                .map(|i| self.ops[i].id),
        );

        let explanation = match stuck.step {
            Step::Read(seen) if blocks.iter().any(|b| b.value != seen) => {
                let writers: Vec<&Op> = self
                    .ops
                    .iter()
                    .filter(|op| op.step == Step::Write(seen))
                    .filter(|op| stuck.complete.is_none_or(|c| op.invoke <= c))
                    .collect();
                ids.extend(writers.iter().map(|op| op.id));
                let possible: Vec<String> = blocks
                    .iter()
                    .filter(|b| b.value != seen)
                    .map(|b| match b.last_writer {
                        Some(w) => format!(
                            "{} (written by op {})",
                            self.values.describe(b.value),
                            self.ops[w].id
                        ),
                        None => format!("{} (the initial value)", self.values.describe(b.value)),
                    })
                    .collect();
                let mut sentence = format!(
                    "read by op {} saw {} but the register can only hold {} at that point",
                    stuck.id,
                    self.values.describe(seen),
                    join_or(&possible)
                );
                if writers.is_empty() && seen != self.initial && seen != NEVER_WRITTEN {
                    sentence.push_str(&format!(
                        "; no operation ever wrote {}",
                        self.values.describe(seen)
                    ));
                } else if !writers.is_empty() {
                    let w: Vec<String> = writers.iter().map(|op| op.id.to_string()).collect();
                    sentence.push_str(&format!(
                        "; {} was written by op {}",
                        self.values.describe(seen),
                        join_or(&w)
                    ));
                }
                sentence
            }
            step => {
                let what = match step {
                    Step::Read(v) => {
                        format!("read by op {} of {}", stuck.id, self.values.describe(v))
                    }
                    Step::Write(v) => {
                        format!("write by op {} of {}", stuck.id, self.values.describe(v))
                    }
                };
                format!(
                    "{what} could not be linearized after {} operations: no order of the \
                     operations pending at that point explains it",
                    deepest.depth
                )
            }
        };
        ids.sort_unstable();
        ids.dedup();
        Verdict::NotLinearizable {
            ops: ids,
            explanation,
        }
    }
}

/// "a", "a or b", "a, b or c".
fn join_or(items: &[String]) -> String {
    match items.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn w(id: usize, invoke: u64, complete: u64, v: &str) -> RegisterOp {
        RegisterOp {
            id,
            invoke,
            complete: Some(complete),
            kind: RegisterKind::Write(v.to_owned()),
        }
    }

    fn w_unknown(id: usize, invoke: u64, v: &str) -> RegisterOp {
        RegisterOp {
            id,
            invoke,
            complete: None,
            kind: RegisterKind::Write(v.to_owned()),
        }
    }

    fn r(id: usize, invoke: u64, complete: u64, v: Option<&str>) -> RegisterOp {
        RegisterOp {
            id,
            invoke,
            complete: Some(complete),
            kind: RegisterKind::Read(v.map(str::to_owned)),
        }
    }

    const BUDGET: usize = 1_000_000;

    fn check(ops: &[RegisterOp]) -> Verdict {
        check_register(None, ops, BUDGET)
    }

    fn assert_not_linearizable(verdict: &Verdict, culprit: usize) -> String {
        match verdict {
            Verdict::NotLinearizable { ops, explanation } => {
                assert!(
                    ops.contains(&culprit),
                    "counterexample {ops:?} ({explanation}) should name op {culprit}"
                );
                explanation.clone()
            }
            other => panic!("expected NotLinearizable naming op {culprit}, got {other:?}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = vec![
            r(0, 0, 1, None),
            w(1, 2, 3, "v1"),
            r(2, 4, 5, Some("v1")),
            w(3, 6, 7, "v2"),
            r(4, 8, 9, Some("v2")),
            r(5, 10, 11, Some("v2")),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
        // With an initial value, the first read must see it.
        assert_eq!(
            check_register(Some("v0".into()), &ops, BUDGET),
            Verdict::NotLinearizable {
                ops: vec![0],
                explanation: "read by op 0 saw no value (never written) but the register can \
                              only hold \"v0\" (the initial value) at that point"
                    .into()
            }
        );
        let mut with_initial = ops.clone();
        with_initial[0] = r(0, 0, 1, Some("v0"));
        assert_eq!(
            check_register(Some("v0".into()), &with_initial, BUDGET),
            Verdict::Linearizable
        );
        assert_eq!(check(&[]), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        let ops = vec![
            w(10, 0, 10, "v1"),
            w(11, 20, 30, "v2"),
            r(17, 40, 50, Some("v1")),
        ];
        let verdict = check(&ops);
        let explanation = assert_not_linearizable(&verdict, 17);
        assert_eq!(
            explanation,
            "read by op 17 saw \"v1\" but the register can only hold \"v2\" (written by op 11) \
             at that point; \"v1\" was written by op 10"
        );
        assert_eq!(
            verdict,
            Verdict::NotLinearizable {
                ops: vec![10, 11, 17],
                explanation
            }
        );
        // The verdict serializes with a tag.
        let json = serde_json::to_value(&verdict).unwrap();
        assert_eq!(json["verdict"], "not_linearizable");
        assert_eq!(json["ops"], serde_json::json!([10, 11, 17]));
    }

    #[test]
    fn read_concurrent_with_write_may_see_old_or_new() {
        for seen in ["v1", "v2"] {
            let ops = vec![
                w(0, 0, 10, "v1"),
                w(1, 20, 40, "v2"),
                r(2, 25, 35, Some(seen)),
            ];
            assert_eq!(check(&ops), Verdict::Linearizable, "read saw {seen}");
        }
        // Two reads inside the write: once the new value was seen, the old one can't be.
        let ops = vec![
            w(0, 0, 10, "v1"),
            w(1, 20, 60, "v2"),
            r(2, 25, 30, Some("v2")),
            r(3, 35, 40, Some("v1")),
        ];
        assert_not_linearizable(&check(&ops), 3);
        // Touching intervals count as overlapping.
        let ops = vec![w(0, 0, 10, "v1"), r(1, 10, 20, None)];
        assert_eq!(check(&ops), Verdict::Linearizable);
        // But a read that starts after the write completed must see it.
        let ops = vec![w(0, 0, 10, "v1"), r(1, 11, 20, None)];
        assert_not_linearizable(&check(&ops), 1);
    }

    #[test]
    fn lost_acknowledged_write_is_not_linearizable() {
        let ops = vec![
            w(0, 0, 10, "v1"),
            w(1, 20, 30, "v2"),
            r(2, 40, 50, Some("v1")),
        ];
        let explanation = assert_not_linearizable(&check(&ops), 2);
        assert!(explanation.contains("\"v2\""), "{explanation}");
        // Overlapping writes can complete in either order.
        let ops = vec![
            w(0, 0, 30, "v1"),
            w(1, 10, 20, "v2"),
            r(2, 40, 50, Some("v1")),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        // Seen by a later read.
        let ops = vec![
            w(0, 0, 10, "v1"),
            w_unknown(1, 20, "v2"),
            r(2, 100, 110, Some("v2")),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
        // Taking effect long after its call, once an earlier read saw the old value.
        let ops = vec![
            w(0, 0, 10, "v1"),
            w_unknown(1, 20, "v2"),
            r(2, 30, 40, Some("v1")),
            r(3, 50, 60, Some("v2")),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
        // Never seen.
        let ops = vec![
            w(0, 0, 10, "v1"),
            w_unknown(1, 20, "v2"),
            r(2, 30, 40, Some("v1")),
            r(3, 50, 60, Some("v1")),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
        // Seen, then unseen again: it took effect once, so v1 can't come back.
        let ops = vec![
            w(0, 0, 10, "v1"),
            w_unknown(1, 20, "v2"),
            r(2, 30, 40, Some("v2")),
            r(3, 50, 60, Some("v1")),
        ];
        assert_not_linearizable(&check(&ops), 3);
        // Seen before it was even invoked.
        let ops = vec![
            w(0, 0, 10, "v1"),
            r(1, 12, 15, Some("v2")),
            w_unknown(2, 20, "v2"),
        ];
        assert_not_linearizable(&check(&ops), 1);
        // A read with an unknown outcome is ignored.
        let ops = vec![
            w(0, 0, 10, "v1"),
            RegisterOp {
                id: 1,
                invoke: 20,
                complete: None,
                kind: RegisterKind::Read(Some("garbage".into())),
            },
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
    }

    #[test]
    fn read_of_value_never_written_is_not_linearizable() {
        let ops = vec![w(0, 0, 10, "v1"), r(1, 20, 30, Some("zz"))];
        let explanation = assert_not_linearizable(&check(&ops), 1);
        assert!(
            explanation.contains("no operation ever wrote \"zz\""),
            "{explanation}"
        );
    }

    #[test]
    fn resurrected_value_is_not_linearizable() {
        let ops = vec![
            w(0, 0, 10, "v1"),
            w(1, 20, 30, "v2"),
            r(2, 40, 50, Some("v2")),
            r(3, 60, 70, Some("v1")),
        ];
        assert_not_linearizable(&check(&ops), 3);
    }

    /// xorshift64*: a tiny deterministic generator for the long histories.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// A linearizable history of `n` operations, mostly sequential with small overlaps
    /// (concurrency up to about 4), a few writes timing out. Built by picking a
    /// linearization point inside each operation's interval and replaying the points in
    /// order on a real register.
    fn generated_history(n: usize, seed: u64) -> Vec<RegisterOp> {
        let mut rng = Rng(seed);
        let mut t = 0u64;
        // (linearization point, index, op)
        let mut planned: Vec<(u64, usize, RegisterOp)> = Vec::with_capacity(n);
        for i in 0..n {
            let invoke = t + rng.below(3);
            let duration = 1 + rng.below(12);
            let point = invoke + rng.below(duration + 1);
            t += 1 + rng.below(4);
            let op = if rng.below(2) == 0 {
                if rng.below(100) == 0 {
                    w_unknown(i, invoke, &format!("v{i}"))
                } else {
                    w(i, invoke, invoke + duration, &format!("v{i}"))
                }
            } else {
                r(i, invoke, invoke + duration, None) // value filled in below
            };
            planned.push((point, i, op));
        }
        planned.sort_by_key(|(point, i, _)| (*point, *i));
        let mut register: Option<String> = None;
        let mut ops = Vec::with_capacity(n);
        for (_, _, mut op) in planned {
            match &mut op.kind {
                RegisterKind::Write(v) => register = Some(v.clone()),
                RegisterKind::Read(seen) => *seen = register.clone(),
            }
            ops.push(op);
        }
        ops.sort_by_key(|op| op.id);
        ops
    }

    #[test]
    fn long_history_is_checked_quickly() {
        let n = 5_000;
        let ops = generated_history(n, 0x5eed_1234_abcd_0001);
        let unknown = ops.iter().filter(|op| op.complete.is_none()).count();
        assert!(unknown > 5, "the history should have some timed-out writes");

        let started = Instant::now();
        let verdict = check(&ops);
        let elapsed = started.elapsed();
        assert_eq!(verdict, Verdict::Linearizable);
        eprintln!("5000 linearizable ops checked in {elapsed:?}");

        // Inject a stale read deep in the history: a read around op 4,000 now sees the
        // value of the first acknowledged write, overwritten by thousands since.
        let early = ops
            .iter()
            .find(|op| op.complete.is_some() && matches!(op.kind, RegisterKind::Write(_)))
            .unwrap();
        let RegisterKind::Write(stale) = early.kind.clone() else {
            unreachable!()
        };
        let mut injected = ops.clone();
        let victim = injected[4_000..]
            .iter_mut()
            .find(|op| matches!(op.kind, RegisterKind::Read(_)))
            .unwrap();
        victim.kind = RegisterKind::Read(Some(stale.clone()));
        let stale_id = victim.id;
        let started = Instant::now();
        let verdict = check(&injected);
        let elapsed = started.elapsed();
        eprintln!("5000 ops with a stale read checked in {elapsed:?}: {verdict:?}");
        let explanation = assert_not_linearizable(&verdict, stale_id);
        assert!(
            explanation.starts_with(&format!("read by op {stale_id} saw {stale:?}")),
            "{explanation}"
        );
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        let ops = vec![
            w(0, 0, 100, "v1"),
            w(1, 0, 100, "v2"),
            w(2, 0, 100, "v3"),
            r(3, 0, 100, Some("v1")),
            r(4, 0, 100, Some("v2")),
        ];
        match check_register(None, &ops, 1) {
            Verdict::Unknown { explored } => assert!(explored > 1),
            other => panic!("expected Unknown, got {other:?}"),
        }
        // With room to search, the verdict is known.
        assert!(matches!(
            check_register(None, &ops, BUDGET),
            Verdict::Linearizable
        ));
    }
}
