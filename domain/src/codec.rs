//! How persisted values (and what reads carry) are encoded.
//!
//! A value written by this release is one version byte, [`BINARY_V1`], followed by the
//! value in postcard's wire format (serde's data model, varint integers, no field
//! names). Values written by earlier releases are JSON; they still read: a JSON text never
//! starts with the byte 0xB1 (not ASCII), so the first byte tells the two apart. A later
//! layout takes another version byte, and its reader keeps the older ones.

use serde::{Deserialize, Serialize};

/// The first byte of a value in the binary encoding, version 1.
pub const BINARY_V1: u8 = 0xB1;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("binary: {0}")]
    Binary(#[from] postcard::Error),
}

/// Which encoding a value is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The compact binary encoding (what replicas store).
    #[default]
    Binary,
    /// JSON, as releases before the binary encoding wrote it (for readers that asked so).
    Json,
}

/// Encodes a value in the binary encoding.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let out = postcard::to_extend(value, vec![BINARY_V1])?;
    Ok(out)
}

/// Encodes a value in the given encoding.
pub fn encode_as<T: Serialize + ?Sized>(
    value: &T,
    encoding: Encoding,
) -> Result<Vec<u8>, CodecError> {
    match encoding {
        Encoding::Binary => encode(value),
        Encoding::Json => Ok(serde_json::to_vec(value)?),
    }
}

/// Decodes a value in either encoding.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&BINARY_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

/// Whether a value is in the binary encoding.
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BINARY_V1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CaMaterial;

    /// The binary encoding has no field names: a field left out when empty would shift
    /// every field after it. A record with its optional parts empty reads back whole.
    #[test]
    fn empty_fields_are_written_and_read_back() {
        let material = CaMaterial {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
            group: String::new(),
        };
        let bytes = encode(&material).expect("encodes");
        assert!(is_binary(&bytes));
        let back: CaMaterial = decode(&bytes).expect("decodes");
        assert_eq!(back, material);
        // and JSON of an earlier release, without the field, still reads
        let old: CaMaterial =
            decode(br#"{"cert_pem":"CERT","key_pem":"KEY"}"#).expect("decodes JSON");
        assert_eq!(old, material);
    }
}
