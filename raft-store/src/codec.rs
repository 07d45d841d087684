//! The encoding of log entries: one version byte, [`ENTRY_BINARY_V1`], then the entry in
//! postcard's wire format. Entries written by earlier releases are JSON and still read
//! (a JSON text never starts with 0xB1).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// First byte of an entry in the binary encoding, version 1.
pub const ENTRY_BINARY_V1: u8 = 0xB1;

/// Why an entry could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EntryCodecError {
    #[error("JSON entry: {0}")]
    Json(#[from] serde_json::Error),
    #[error("binary entry: {0}")]
    Binary(#[from] postcard::Error),
}

pub fn encode_entry<T: Serialize>(entry: &T) -> Result<Vec<u8>, EntryCodecError> {
    Ok(postcard::to_extend(entry, vec![ENTRY_BINARY_V1])?)
}

pub fn decode_entry<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EntryCodecError> {
    match bytes.split_first() {
        Some((&ENTRY_BINARY_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}
