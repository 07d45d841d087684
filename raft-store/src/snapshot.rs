//! The snapshot format: compact, self-describing, checksummed.
//!
//! ```text
//! magic      8 bytes   "RSTSNAP\0"
//! version    u32 BE    SNAPSHOT_FORMAT_VERSION
//! meta_len   u32 BE
//! meta       JSON      openraft SnapshotMeta { last_log_id, last_membership, snapshot_id }
//! count      u64 BE    number of pairs
//! pairs      count x ( key_len u32 BE | key | value_len u32 BE | value ),
//!                      keys strictly increasing (RocksDB order)
//! checksum   u32 BE    CRC-32C of every byte before it
//! ```
//!
//! Decoding checks the magic, the version, the checksum, the header, the key order, the
//! pair count and that nothing trails, before the caller writes anything.

use openraft::{Node, SnapshotMeta};

use crate::error::SnapshotError;

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RSTSNAP\0";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

const HEADER_FIXED: usize = 8 + 4 + 4;
const CHECKSUM_LEN: usize = 4;

/// Builds an encoded snapshot from pairs given in strictly increasing key order.
pub struct SnapshotEncoder {
    buf: Vec<u8>,
    count_at: usize,
    count: u64,
    last_key: Option<Vec<u8>>,
}

impl SnapshotEncoder {
    pub fn new<N: Node>(meta: &SnapshotMeta<u64, N>) -> Result<Self, SnapshotError> {
        let meta_json =
            serde_json::to_vec(meta).map_err(|e| SnapshotError::BadHeader(e.to_string()))?;
        let meta_len = u32::try_from(meta_json.len())
            .map_err(|_| SnapshotError::BadHeader("metadata longer than 4 GiB".into()))?;
        let mut buf = Vec::with_capacity(HEADER_FIXED + meta_json.len() + 64);
        buf.extend_from_slice(&SNAPSHOT_MAGIC);
        buf.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        buf.extend_from_slice(&meta_len.to_be_bytes());
        buf.extend_from_slice(&meta_json);
        let count_at = buf.len();
        buf.extend_from_slice(&0u64.to_be_bytes());
        Ok(SnapshotEncoder {
            buf,
            count_at,
            count: 0,
            last_key: None,
        })
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        if let Some(last) = &self.last_key {
            if key <= last.as_slice() {
                return Err(SnapshotError::KeysNotSorted { index: self.count });
            }
        }
        let klen = u32::try_from(key.len())
            .map_err(|_| SnapshotError::BadHeader("key longer than 4 GiB".into()))?;
        let vlen = u32::try_from(value.len())
            .map_err(|_| SnapshotError::BadHeader("value longer than 4 GiB".into()))?;
        self.buf.extend_from_slice(&klen.to_be_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&vlen.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.count += 1;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[self.count_at..self.count_at + 8].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

/// A verified snapshot: its metadata and its pairs, borrowed from the encoded bytes.
#[derive(Debug)]
pub struct DecodedSnapshot<'a, N: Node> {
    pub meta: SnapshotMeta<u64, N>,
    pub pairs: Vec<(&'a [u8], &'a [u8])>,
}

/// Encodes a snapshot in one call.
pub fn encode<'a, N: Node>(
    meta: &SnapshotMeta<u64, N>,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Vec<u8>, SnapshotError> {
    let mut enc = SnapshotEncoder::new(meta)?;
    for (k, v) in pairs {
        enc.push(k, v)?;
    }
    Ok(enc.finish())
}

/// Verifies and decodes an encoded snapshot. Never panics on any input.
pub fn decode<N: Node>(bytes: &[u8]) -> Result<DecodedSnapshot<'_, N>, SnapshotError> {
    if bytes.len() < SNAPSHOT_MAGIC.len() {
        return Err(SnapshotError::Truncated {
            what: "magic",
            offset: 0,
            needed: SNAPSHOT_MAGIC.len() - bytes.len(),
        });
    }
    if bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let mut r = Reader {
        bytes,
        pos: SNAPSHOT_MAGIC.len(),
        end: bytes.len(),
    };
    let version = r.u32("format version")?;
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let min = HEADER_FIXED + 8 + CHECKSUM_LEN;
    if bytes.len() < min {
        return Err(SnapshotError::Truncated {
            what: "header",
            offset: bytes.len(),
            needed: min - bytes.len(),
        });
    }
    let body_end = bytes.len() - CHECKSUM_LEN;
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[body_end..]);
    let stored = u32::from_be_bytes(stored);
    let computed = crc32c(&bytes[..body_end]);
    if stored != computed {
        return Err(SnapshotError::ChecksumMismatch { stored, computed });
    }
    r.end = body_end;
    let meta_len = r.u32("metadata length")? as usize;
    let meta_json = r.take(meta_len, "metadata")?;
    let meta: SnapshotMeta<u64, N> =
        serde_json::from_slice(meta_json).map_err(|e| SnapshotError::BadHeader(e.to_string()))?;
    let count = r.u64("pair count")?;
    // Each pair takes at least 8 bytes: never reserve more than the input can hold.
    let cap = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(r.remaining() / 8);
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(cap);
    for index in 0..count {
        let klen = r.u32("key length")? as usize;
        let key = r.take(klen, "key")?;
        let vlen = r.u32("value length")? as usize;
        let value = r.take(vlen, "value")?;
        if let Some((last, _)) = pairs.last() {
            if key <= *last {
                return Err(SnapshotError::KeysNotSorted { index });
            }
        }
        pairs.push((key, value));
    }
    if r.remaining() != 0 {
        return Err(SnapshotError::TrailingBytes {
            declared: count,
            read: count,
            trailing: r.remaining(),
        });
    }
    Ok(DecodedSnapshot { meta, pairs })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnapshotError> {
        if self.remaining() < n {
            return Err(SnapshotError::Truncated {
                what,
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(b))
    }
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Incremental CRC-32C (Castagnoli).
#[derive(Debug, Clone, Copy)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c(!0)
    }
}

impl Crc32c {
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c = CRC32C_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = Crc32c::default();
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{BasicNode, StoredMembership};
    use proptest::prelude::*;

    fn meta() -> SnapshotMeta<u64, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id(3, 1, 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "s-1".into(),
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn round_trip_and_every_truncation_is_refused() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b""), (b"c\0", b"xyz")];
        let bytes = encode(&meta(), pairs.clone()).unwrap();
        let d = decode::<BasicNode>(&bytes).unwrap();
        assert_eq!(d.meta, meta());
        assert_eq!(d.pairs, pairs);
        for n in 0..bytes.len() {
            assert!(
                decode::<BasicNode>(&bytes[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
    }

    #[test]
    fn specific_errors() {
        let bytes = encode(&meta(), Vec::<(&[u8], &[u8])>::new()).unwrap();
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(
            decode::<BasicNode>(&bad).unwrap_err(),
            SnapshotError::BadMagic
        );
        let mut bad = bytes.clone();
        bad[11] = 9;
        assert!(matches!(
            decode::<BasicNode>(&bad).unwrap_err(),
            SnapshotError::UnsupportedVersion { found, .. } if found != 1
        ));
        let mut bad = bytes.clone();
        let last = bad.len() - 6;
        bad[last] ^= 0x40;
        assert!(matches!(
            decode::<BasicNode>(&bad).unwrap_err(),
            SnapshotError::ChecksumMismatch { .. }
        ));
        let mut enc = SnapshotEncoder::new(&meta()).unwrap();
        enc.push(b"b", b"").unwrap();
        assert!(matches!(
            enc.push(b"a", b""),
            Err(SnapshotError::KeysNotSorted { index: 1 })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<BasicNode>(&bytes);
        }

        #[test]
        fn any_single_bit_flip_is_refused(
            map in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(any::<u8>(), 0..8), 0..8),
            pos in any::<usize>(), bit in 0u8..8,
        ) {
            let bytes = encode(&meta(), map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
            let d = decode::<BasicNode>(&bytes).unwrap();
            prop_assert_eq!(d.pairs.len(), map.len());
            let mut bad = bytes.clone();
            let p = pos % bad.len();
            bad[p] ^= 1 << bit;
            prop_assert!(decode::<BasicNode>(&bad).is_err());
        }
    }
}
