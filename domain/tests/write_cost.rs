//! What one command writes: keys and bytes per command of the `slapos bench raft`
//! workload (writers each supplying releases to one computer, group-committed in batches
//! of 256), once every writer's window of remembered outcomes is full. Prints the figures
//! (`cargo test -p slapos-domain --test write_cost -- --nocapture`) and bounds them.

use slapos_domain::{
    AddressSpec, Command, ComputerSpec, Op, PartitionSpec, RequestId, State, Timestamp,
};

fn supply(writer: usize, seq: u64) -> Op {
    Op::Supply {
        computer: "COMP-BENCH".into(),
        url: format!("https://bench.invalid/{writer}/{}.cfg", seq % 8),
        state: "available".into(),
    }
}

/// (keys per command, bytes per command) over the measured batches.
pub fn measure(writers: usize, warm_batches: u64, batches: u64) -> (f64, f64) {
    let mut state = State::new();
    let mut at = 1_800_000_000_000_000u64;
    let setup = Command {
        request_id: RequestId::new("bench-setup", 1),
        at: Timestamp(at),
        op: Op::FormatComputer {
            computer: "COMP-BENCH".into(),
            spec: ComputerSpec {
                address: None,
                netmask: None,
                partitions: vec![PartitionSpec {
                    id: "slappart0".into(),
                    tap: None,
                    addresses: vec![AddressSpec {
                        addr: "127.0.0.2".into(),
                        netmask: "255.0.0.0".into(),
                        gateway: None,
                        network: None,
                    }],
                }],
            },
        },
    };
    state.apply(&setup).expect("setup");
    state.take_changes().expect("changes");
    let (mut keys, mut bytes, mut commands) = (0u64, 0u64, 0u64);
    for batch in 0..warm_batches + batches {
        for w in 0..writers {
            at += 10;
            let seq = batch + 1;
            let cmd = Command {
                request_id: RequestId::new(format!("gateway:gw1/bench-{w}"), seq),
                at: Timestamp(at),
                op: supply(w, seq),
            };
            state.apply(&cmd).expect("supply");
        }
        let changes = state.take_changes().expect("changes");
        if batch >= warm_batches {
            commands += writers as u64;
            keys += changes.len() as u64;
            bytes += changes
                .iter()
                .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
                .sum::<u64>();
        }
    }
    (
        keys as f64 / commands as f64,
        bytes as f64 / commands as f64,
    )
}

#[test]
fn keys_and_bytes_per_command() {
    let (keys, bytes) = measure(256, 300, 40);
    println!("bench-raft workload, 256 writers, batches of 256: {keys:.2} keys/command, {bytes:.1} bytes/command");
    // 4.00 keys and 299.8 bytes per command with JSON values, outcomes by sequence
    // number and a session key per client (the release before).
    assert!(keys <= 2.01, "{keys} keys per command");
    assert!(bytes < 150.0, "{bytes} bytes per command");
}

#[test]
fn log_bytes_per_command() {
    let cmd = Command {
        request_id: RequestId::new("gateway:gw1/bench-17", 1234),
        at: Timestamp(1_800_000_000_000_000),
        op: supply(17, 1234),
    };
    let json = serde_json::to_vec(&cmd).expect("json");
    let binary = slapos_domain::codec::encode(&cmd).expect("binary");
    println!(
        "bench-raft command in the log: {} bytes as JSON (earlier releases), {} in binary",
        json.len(),
        binary.len()
    );
    assert!(binary.len() * 2 < json.len());
}
