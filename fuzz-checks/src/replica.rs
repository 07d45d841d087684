//! What a replica decodes from the network: its peers' Raft messages
//! (`master_replica::service::wire`: `AppendEntries`, `Vote`, the snapshot header; in
//! JSON or the binary encoding, `bin1`), the master API's `Command` and `Query`, and
//! snapshots (`raft_store::snapshot::decode`) with the state their pairs rebuild
//! (`State::from_entries`: every persisted value's decoder, JSON and binary).

use master_replica::network::{decode_wire, encode_wire};
use master_replica::service::wire;
use master_replica::NodeInfo;
use raft_store::snapshot;
use serde::de::DeserializeOwned;
use serde::Serialize;
use slapos_domain::State;

/// Whatever `decode` accepts encodes, and the encoding decodes to a value that encodes
/// to the same bytes (so what a replica accepts, it forwards and stores unchanged).
fn round_trips<T: Serialize + DeserializeOwned, E: std::fmt::Display>(
    value: T,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> T {
    let first = match serde_json::to_vec(&value) {
        Ok(b) => b,
        Err(e) => panic!("an accepted value does not encode: {e}"),
    };
    let again = match decode(&first) {
        Ok(v) => v,
        Err(e) => panic!(
            "our own encoding does not decode: {e}: {}",
            String::from_utf8_lossy(&first)
        ),
    };
    let second = match serde_json::to_vec(&again) {
        Ok(b) => b,
        Err(e) => panic!("a re-decoded value does not encode: {e}"),
    };
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "encoding is not stable"
    );
    again
}

/// As [`round_trips`], then through the binary encoding a peer sends once the other side
/// said it reads it: what decodes encodes, decodes again to the same value (compared by
/// its JSON) and encodes to the same bytes.
fn round_trips_both<T: Serialize + DeserializeOwned, E: std::fmt::Display>(
    value: T,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) {
    let value = round_trips(value, decode);
    let binary = match encode_wire(&value, true) {
        Ok(b) => b,
        Err(e) => panic!("an accepted value does not encode in binary: {e}"),
    };
    let again: T = match decode_wire(&binary) {
        Ok(v) => v,
        Err(e) => panic!("our own binary encoding does not decode: {e}"),
    };
    match encode_wire(&again, true) {
        Ok(b) => assert_eq!(b, binary, "the binary encoding is not stable"),
        Err(e) => panic!("a re-decoded value does not encode in binary: {e}"),
    }
    let (json, json_again) = (serde_json::to_vec(&value), serde_json::to_vec(&again));
    match (json, json_again) {
        (Ok(a), Ok(b)) => assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "the binary encoding changed the value"
        ),
        _ => panic!("a value decoded from binary does not encode in JSON"),
    }
}

/// `replica_peer`: byte 0 picks the message (`0 mod 3` AppendEntries, `1` Vote, `2` the
/// snapshot header), the rest is its JSON or its binary encoding (byte `0xB1`, then
/// postcard). Asserts [`round_trips_both`] for the Raft messages, [`round_trips`] for the
/// header (JSON only).
pub fn peer(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(v) = wire::append_entries(body) {
                round_trips_both(v, wire::append_entries);
            }
        }
        1 => {
            if let Ok(v) = wire::vote(body) {
                round_trips_both(v, wire::vote);
            }
        }
        _ => {
            if let Ok(v) = wire::snapshot_header(body) {
                round_trips(v, wire::snapshot_header);
            }
        }
    }
}

/// `replica_api`: byte 0 picks the message (even: a `Submit`'s command, odd: a `Read`'s
/// query), the rest is its JSON. Asserts [`round_trips`]; an accepted command is also
/// applied to an empty state, twice: applying never panics, and the retry (same request
/// id) gets the first outcome back.
pub fn api(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector % 2 == 1 {
        if let Ok(q) = wire::query(body) {
            round_trips(q, wire::query);
        }
        return;
    }
    let Ok(command) = wire::command(body) else {
        return;
    };
    let command = round_trips(command, wire::command);
    let mut state = State::default();
    let first = state.apply(&command);
    let retry = state.apply(&command);
    assert_eq!(first, retry, "a retried command got another outcome");
}

/// `raft_snapshot`: the input is a snapshot without its checksum, which is appended
/// (so the fuzzer explores the body rather than CRC-32C); the input as is is decoded
/// too. Asserts that an accepted snapshot encodes again (`snapshot::encode`), and that
/// this encoding decodes to the same metadata and pairs and re-encodes to the same bytes.
/// Then the pairs are what an installing replica rebuilds its state from: that never
/// panics, and a state they rebuild gives pairs that rebuild the same state.
pub fn snapshot(data: &[u8]) {
    let _ = snapshot::decode::<NodeInfo>(data);
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&snapshot::crc32c(data).to_be_bytes());
    let Ok(decoded) = snapshot::decode::<NodeInfo>(&bytes) else {
        return;
    };
    let encoded = match snapshot::encode(&decoded.meta, decoded.pairs.iter().copied()) {
        Ok(e) => e,
        Err(e) => panic!("an accepted snapshot does not encode: {e}"),
    };
    let again = match snapshot::decode::<NodeInfo>(&encoded) {
        Ok(a) => a,
        Err(e) => panic!("our own snapshot does not decode: {e}"),
    };
    assert_eq!(again.meta, decoded.meta);
    assert_eq!(again.pairs, decoded.pairs);
    match snapshot::encode(&again.meta, again.pairs.iter().copied()) {
        Ok(e) => assert_eq!(e, encoded, "snapshot encoding is not stable"),
        Err(e) => panic!("{e}"),
    }
    rebuilds(&decoded.pairs);
}

/// A state rebuilt from `pairs` (when they make one) writes pairs that rebuild a state
/// writing the same pairs.
fn rebuilds(pairs: &[(&[u8], &[u8])]) {
    let Ok(state) = State::from_entries(pairs.iter().copied()) else {
        return;
    };
    let first = match state.entries() {
        Ok(e) => e,
        Err(e) => panic!("a rebuilt state does not write its pairs: {e}"),
    };
    let again = match State::from_entries(first.iter().map(|(k, v)| (k, v))) {
        Ok(s) => s,
        Err(e) => panic!("a state's own pairs do not rebuild it: {e}"),
    };
    match again.entries() {
        Ok(second) => assert!(first == second, "the rebuilt state is not the same"),
        Err(e) => panic!("{e}"),
    }
}
