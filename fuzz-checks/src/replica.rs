//! What a replica decodes from the network: its peers' Raft messages
//! (`master_replica::service::wire`: `AppendEntries`, `Vote`, the snapshot header), the
//! master API's `Command` and `Query`, and snapshots (`raft_store::snapshot::decode`).

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

/// `replica_peer`: byte 0 picks the message (`0 mod 3` AppendEntries, `1` Vote, `2` the
/// snapshot header), the rest is its JSON. Asserts [`round_trips`].
pub fn peer(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(v) = wire::append_entries(body) {
                round_trips(v, wire::append_entries);
            }
        }
        1 => {
            if let Ok(v) = wire::vote(body) {
                round_trips(v, wire::vote);
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
}
