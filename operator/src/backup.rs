//! Backups of the master's state (issue 25): `slapos cluster backup --out FILE` takes a
//! consistent copy from one replica, online (the replica reads one RocksDB snapshot:
//! writes go on); `backup verify FILE` checks one without starting anything;
//! `cluster restore FILE --config REPLICA.toml` starts a new group from it.
//!
//! The file, self-describing and checksummed end to end:
//!
//! ```text
//! "SLAPOS-BACKUP\n"
//! u32 BE header length, header JSON (BackupHeader: format, group, index, applied log id,
//!                                     replica, taken_at, release)
//! pairs: u32 BE key length, key, u32 BE value length, value   (the replica's order)
//! u32 BE 0xFFFF_FFFF                                            (end of pairs)
//! u64 BE number of pairs
//! SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! It is written to `FILE.partial` and renamed once complete and synced, so a `FILE` is
//! never a backup cut short.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use slapos_proto::rpc::master::backup_chunk::Part;

use crate::OperatorError;

/// The first bytes of every backup.
pub const MAGIC: &[u8] = b"SLAPOS-BACKUP\n";
/// The format this release writes (and the newest it reads).
pub const FORMAT: u32 = 1;
/// Marks the end of the pairs (no key is 4 GiB long).
const END: u32 = u32::MAX;
/// The largest header, key or value a reader accepts (a corrupt length must not make
/// it allocate gigabytes).
const MAX_FIELD: u32 = 256 << 20;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// The group it was taken from (None: a group made before groups had ids).
    pub group: Option<String>,
    /// The applied index it holds the state at.
    pub index: u64,
    /// That index's log id, as the replica stores it (a restore needs its term).
    pub applied: serde_json::Value,
    /// The replica it was taken from.
    pub replica: u64,
    /// When (microseconds since the epoch, the replica's clock).
    pub taken_at: u64,
    /// The release that wrote the file.
    pub release: String,
}

/// A backup's description once read back whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupSummary {
    #[serde(flatten)]
    pub header: BackupHeader,
    pub pairs: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Why a file is not a backup this release can read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a SlapOS backup (no SLAPOS-BACKUP header)")]
    NotABackup(PathBuf),
    #[error("{path}: format {format}, this release reads up to {FORMAT}")]
    Format { path: PathBuf, format: u32 },
    #[error("{path}: truncated at byte {at} (while reading {what})")]
    Truncated {
        path: PathBuf,
        at: u64,
        what: &'static str,
    },
    #[error("{path}: malformed at byte {at}: {what}")]
    Malformed {
        path: PathBuf,
        at: u64,
        what: String,
    },
    #[error("{path}: checksum mismatch (the file was altered or damaged): expected {expected}, computed {computed}")]
    Checksum {
        path: PathBuf,
        expected: String,
        computed: String,
    },
    #[error("the replica's backup stream: {0}")]
    Stream(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a backup file while hashing what it writes.
struct Writer {
    out: BufWriter<File>,
    hash: Context,
    bytes: u64,
    /// Bytes written when the file was last synced.
    synced: u64,
}

/// The file is synced every this many bytes: its writeback comes in small pieces along
/// the way rather than all at the end, where it would hold up the replicas' own log
/// syncs on a shared disk (ext4's journal commits wait for the data of every file written
/// since: a sync of a replica's log would wait for megabytes of the backup).
const SYNC_EVERY: u64 = 1 << 20;

impl Writer {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)?;
        if self.bytes - self.synced >= SYNC_EVERY {
            self.out.flush()?;
            let file = self.out.get_ref();
            file.sync_data()?;
            // Written and synced: out of the page cache, where the replicas of this
            // machine keep what they read (a hint; the backup goes on without it).
            let synced = i64::try_from(self.bytes).unwrap_or(i64::MAX);
            let _ = nix::fcntl::posix_fadvise(
                file,
                0,
                synced,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            self.synced = self.bytes;
        }
        Ok(())
    }
}

/// How a backup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeOptions {
    /// At most this many bytes a second from the replica (0: as fast as it reads).
    pub max_bytes_per_sec: u64,
    /// From an up-to-date follower when the group has one, so that the leader (which
    /// every write goes through) does not also read and send the whole state.
    pub prefer_follower: bool,
}

impl Default for TakeOptions {
    fn default() -> Self {
        TakeOptions {
            max_bytes_per_sec: DEFAULT_RATE,
            prefer_follower: true,
        }
    }
}

/// `slapos cluster backup`'s default pace: 16 MiB/s, seconds for a large provider's
/// state (119 MB for 10,000 computers and 100,000 instances: 7 s), and little enough
/// of a shared disk's writeback and a core's time that the group's writes keep their
/// latency (measured with `slapos bench backup`: at 64 MiB/s on this project's test
/// machine, the file's writeback held up the replicas' log syncs).
pub const DEFAULT_RATE: u64 = 16 << 20;

/// `via` in the order to ask for a backup: first the followers, the least behind (as the
/// leader sees them) first, then the others as given. Unchanged when no status answers.
async fn backup_order(via: &[String]) -> Vec<String> {
    let mut client = master_client::MasterClient::new(via.iter().cloned())
        .with_deadline(std::time::Duration::from_secs(5));
    let Ok(first) = client.status().await else {
        return via.to_vec();
    };
    let leader = first
        .members
        .iter()
        .find(|m| first.has_leader && m.id == first.leader_id)
        .map(|m| m.api_addr.clone());
    // The leader's view knows every member's lag.
    let view = match &leader {
        Some(addr) if first.state != "leader" => client.status_of(addr).await.unwrap_or(first),
        _ => first,
    };
    let mut followers: Vec<&slapos_proto::rpc::master::Member> = view
        .members
        .iter()
        .filter(|m| Some(&m.api_addr) != leader.as_ref())
        .collect();
    followers.sort_by_key(|m| m.lag);
    let mut order: Vec<String> = followers.iter().map(|m| m.api_addr.clone()).collect();
    let rest: Vec<String> = via.iter().filter(|a| !order.contains(a)).cloned().collect();
    order.extend(rest);
    order
}

/// Takes a backup from the first replica of `via` that answers (an up-to-date follower
/// first, with `prefer_follower`) and writes it to `out`.
pub async fn take(
    via: &[String],
    out: &Path,
    options: TakeOptions,
) -> Result<BackupSummary, OperatorError> {
    let partial = out.with_extension("partial");
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| OperatorError::Io {
            action,
            path,
            source,
        }
    };
    let order = if options.prefer_follower {
        backup_order(via).await
    } else {
        via.to_vec()
    };
    let count = order.len();
    let mut client = master_client::MasterClient::new(order);
    // The first replica that starts the stream (an address the leader advertises may not
    // be reachable from here: the next one then).
    let mut tried = 0;
    let (addr, mut stream) = loop {
        match client.backup(options.max_bytes_per_sec).await {
            Ok(started) => break started,
            Err(_) if tried + 1 < count => {
                tried += 1;
                client.next_replica();
            }
            Err(e) => return Err(e.into()),
        }
    };
    // The whole state, the group's authority included: readable by its owner only.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io("create", &partial))?
    };
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        hash: Context::new(&SHA256),
        bytes: 0,
        synced: 0,
    };
    w.put(MAGIC).map_err(io("write", &partial))?;
    let mut header: Option<BackupHeader> = None;
    let mut pairs = 0u64;
    let bad = |what: String| OperatorError::Precondition(format!("backup from {addr}: {what}"));
    let end = loop {
        let chunk = stream
            .message()
            .await
            .map_err(|s| bad(format!("the stream broke: {}", s.message())))?
            .ok_or_else(|| bad("the stream ended before the backup did".into()))?;
        match chunk.part {
            Some(Part::Header(bytes)) if header.is_none() => {
                #[derive(Deserialize)]
                struct Sent {
                    group: Option<String>,
                    applied: serde_json::Value,
                    replica: u64,
                    taken_at: u64,
                }
                let sent: Sent = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("unreadable header: {e}")))?;
                let index = sent
                    .applied
                    .get("index")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| bad("the replica has applied nothing yet".into()))?;
                let h = BackupHeader {
                    format: FORMAT,
                    group: sent.group,
                    index,
                    applied: sent.applied,
                    replica: sent.replica,
                    taken_at: sent.taken_at,
                    release: env!("CARGO_PKG_VERSION").to_owned(),
                };
                let json = serde_json::to_vec(&h).map_err(|e| bad(e.to_string()))?;
                w.put(&(json.len() as u32).to_be_bytes())
                    .and_then(|_| w.put(&json))
                    .map_err(io("write", &partial))?;
                header = Some(h);
            }
            Some(Part::Pairs(bytes)) if header.is_some() => {
                pairs += count_pairs(&bytes).map_err(bad)?;
                w.put(&bytes).map_err(io("write", &partial))?;
            }
            Some(Part::EndPairs(n)) if header.is_some() => break n,
            _ => return Err(bad("a message out of order".into())),
        }
    };
    if end != pairs {
        return Err(bad(format!("the replica sent {pairs} pairs, said {end}")));
    }
    w.put(&END.to_be_bytes())
        .and_then(|_| w.put(&pairs.to_be_bytes()))
        .map_err(io("write", &partial))?;
    let digest = w.hash.clone().finish();
    w.out
        .write_all(digest.as_ref())
        .map_err(io("write", &partial))?;
    let file = w.out.into_inner().map_err(|e| OperatorError::Io {
        action: "write",
        path: partial.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io("sync", &partial))?;
    std::fs::rename(&partial, out).map_err(io("rename into place", out))?;
    let header = header.ok_or_else(|| bad("no header".into()))?;
    Ok(BackupSummary {
        header,
        pairs,
        bytes: w.bytes + 32,
        sha256: hex(digest.as_ref()),
    })
}

/// The number of whole pairs in a chunk the replica sent.
fn count_pairs(bytes: &[u8]) -> Result<u64, String> {
    let mut at = 0usize;
    let mut n = 0u64;
    let field = |at: &mut usize| -> Result<(), String> {
        let len = bytes
            .get(*at..*at + 4)
            .ok_or("a chunk cut inside a length")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        *at += 4 + len;
        if *at > bytes.len() {
            return Err("a chunk cut inside a pair".into());
        }
        Ok(())
    };
    while at < bytes.len() {
        field(&mut at)?;
        field(&mut at)?;
        n += 1;
    }
    Ok(n)
}

/// Reads a backup file, checking everything as it goes; hands each pair to `pair`.
struct Reader {
    path: PathBuf,
    input: BufReader<File>,
    hash: Context,
    at: u64,
    /// The file's size when it was opened.
    size: u64,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, BackupError> {
        let io = |source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(Reader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            hash: Context::new(&SHA256),
            at: 0,
            size,
        })
    }

    fn exact(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
        hashed: bool,
    ) -> Result<(), BackupError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => BackupError::Truncated {
                path: self.path.clone(),
                at: self.at,
                what,
            },
            _ => BackupError::Io {
                path: self.path.clone(),
                source: e,
            },
        })?;
        if hashed {
            self.hash.update(buf);
        }
        self.at += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BackupError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what, true)?;
        Ok(u32::from_be_bytes(b))
    }

    fn field(&mut self, len: u32, what: &'static str) -> Result<Vec<u8>, BackupError> {
        if len > MAX_FIELD {
            return Err(BackupError::Malformed {
                path: self.path.clone(),
                at: self.at,
                what: format!("a {what} of {len} bytes"),
            });
        }
        // A length running past the end of the file: the file was cut there, or the
        // length itself was altered; the reader cannot tell which, and says both.
        let left = self.size.saturating_sub(self.at);
        if u64::from(len) > left {
            return Err(BackupError::Malformed {
                path: self.path.clone(),
                at: self.at,
                what: format!(
                    "a {what} of {len} bytes runs past the end of the file ({left} bytes left): the file was truncated or altered"
                ),
            });
        }
        let mut v = vec![0u8; len as usize];
        self.exact(&mut v, what, true)?;
        Ok(v)
    }
}

/// Reads and checks a whole backup (structure, counts, checksum), giving every pair to
/// `pair` in file order. Nothing should be trusted before this returns Ok: a restore
/// verifies first, then reads again.
pub fn read(
    path: &Path,
    mut pair: impl FnMut(Vec<u8>, Vec<u8>),
) -> Result<BackupSummary, BackupError> {
    let mut r = Reader::open(path)?;
    let mut magic = [0u8; MAGIC.len()];
    r.exact(&mut magic, "the magic", true)
        .map_err(|_| BackupError::NotABackup(path.to_path_buf()))?;
    if magic != MAGIC {
        return Err(BackupError::NotABackup(path.to_path_buf()));
    }
    let len = r.u32("the header length")?;
    let json = r.field(len, "header")?;
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let malformed = |at, what: String| BackupError::Malformed {
        path: path.to_path_buf(),
        at,
        what,
    };
    let format: Format =
        serde_json::from_slice(&json).map_err(|e| malformed(r.at, format!("header: {e}")))?;
    if format.format > FORMAT || format.format == 0 {
        return Err(BackupError::Format {
            path: path.to_path_buf(),
            format: format.format,
        });
    }
    let header: BackupHeader =
        serde_json::from_slice(&json).map_err(|e| malformed(r.at, format!("header: {e}")))?;
    let mut pairs = 0u64;
    loop {
        let klen = r.u32("a key length")?;
        if klen == END {
            break;
        }
        let key = r.field(klen, "key")?;
        let vlen = r.u32("a value length")?;
        let value = r.field(vlen, "value")?;
        pair(key, value);
        pairs += 1;
    }
    let mut count = [0u8; 8];
    r.exact(&mut count, "the pair count", true)?;
    let declared = u64::from_be_bytes(count);
    let computed = hex(r.hash.clone().finish().as_ref());
    let mut digest = [0u8; 32];
    r.exact(&mut digest, "the checksum", false)?;
    let expected = hex(&digest);
    if expected != computed {
        return Err(BackupError::Checksum {
            path: path.to_path_buf(),
            expected,
            computed,
        });
    }
    if declared != pairs {
        return Err(malformed(
            r.at,
            format!("{pairs} pairs, {declared} declared"),
        ));
    }
    let mut rest = [0u8; 1];
    if r.input.read(&mut rest).map_err(|source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    })? != 0
    {
        return Err(malformed(r.at, "bytes after the checksum".into()));
    }
    Ok(BackupSummary {
        header,
        pairs,
        bytes: r.at,
        sha256: expected,
    })
}

/// Checks a backup without starting anything.
pub fn verify(path: &Path) -> Result<BackupSummary, BackupError> {
    read(path, |_, _| {})
}

/// Starts a new group from a backup: checked whole first, then written into the empty
/// data directory of the replica `config` describes (see `master_replica::restore`).
/// The replica is then started as usual (`slapos master run --config`): it is the new
/// group's only voter and elects itself.
pub fn restore(
    path: &Path,
    config: &master_replica::node::ReplicaConfig,
) -> Result<(BackupSummary, master_replica::restore::Restored), OperatorError> {
    let summary = verify(path).map_err(|e| OperatorError::Precondition(e.to_string()))?;
    // Read again into the store; a file changed between the two reads fails its
    // checksum here, and the half-written directory is removed.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(Vec<u8>, Vec<u8>), String>>(1024);
    let reader = {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let sent = read(&path, |k, v| {
                let _ = tx.send(Ok((k, v)));
            });
            if let Err(e) = &sent {
                let _ = tx.send(Err(e.to_string()));
            }
            sent
        })
    };
    let restored =
        master_replica::restore::restore(config, &summary.header.applied, &mut rx.into_iter());
    let reread = reader
        .join()
        .map_err(|_| OperatorError::Precondition("the backup reader panicked".into()))?;
    let restored = restored.map_err(|e| OperatorError::Precondition(e.to_string()))?;
    reread.map_err(|e| OperatorError::Precondition(e.to_string()))?;
    Ok((summary, restored))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup file written by hand the way `take` writes one.
    fn write(path: &Path, pairs: &[(&[u8], &[u8])]) {
        let mut w = Writer {
            out: BufWriter::new(File::create(path).unwrap()),
            hash: Context::new(&SHA256),
            bytes: 0,
            synced: 0,
        };
        w.put(MAGIC).unwrap();
        let header = BackupHeader {
            format: FORMAT,
            group: Some("g".into()),
            index: 7,
            applied: serde_json::json!({"leader_id": {"term": 2, "node_id": 1}, "index": 7}),
            replica: 1,
            taken_at: 1,
            release: "test".into(),
        };
        let json = serde_json::to_vec(&header).unwrap();
        w.put(&(json.len() as u32).to_be_bytes()).unwrap();
        w.put(&json).unwrap();
        for (k, v) in pairs {
            w.put(&(k.len() as u32).to_be_bytes()).unwrap();
            w.put(k).unwrap();
            w.put(&(v.len() as u32).to_be_bytes()).unwrap();
            w.put(v).unwrap();
        }
        w.put(&END.to_be_bytes()).unwrap();
        w.put(&(pairs.len() as u64).to_be_bytes()).unwrap();
        let digest = w.hash.clone().finish();
        w.out.write_all(digest.as_ref()).unwrap();
    }

    #[test]
    fn a_backup_reads_back_and_any_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        write(&good, &[(b"a", b"1"), (b"b", b"22")]);
        let mut seen = Vec::new();
        let s = read(&good, |k, v| seen.push((k, v))).unwrap();
        assert_eq!((s.pairs, s.header.index), (2, 7));
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"22".to_vec())
            ]
        );

        let bytes = std::fs::read(&good).unwrap();
        let bad = dir.path().join("bad");
        for cut in [3, MAGIC.len() + 2, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&bad, &bytes[..cut]).unwrap();
            let e = verify(&bad).unwrap_err();
            // a cut inside a field is told from its length running past the end
            let cut_field =
                matches!(e, BackupError::Malformed { .. }) && e.to_string().contains("truncated");
            assert!(
                cut_field
                    || matches!(
                        e,
                        BackupError::Truncated { .. } | BackupError::NotABackup(_)
                    ),
                "cut at {cut}: {e}"
            );
        }
        let mut altered = bytes.clone();
        let i = altered.len() - 40;
        altered[i] ^= 1;
        std::fs::write(&bad, &altered).unwrap();
        assert!(matches!(
            verify(&bad).unwrap_err(),
            BackupError::Checksum { .. }
        ));
        std::fs::write(&bad, b"not a backup at all").unwrap();
        assert!(matches!(
            verify(&bad).unwrap_err(),
            BackupError::NotABackup(_)
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&bad, &longer).unwrap();
        assert!(verify(&bad)
            .unwrap_err()
            .to_string()
            .contains("after the checksum"));
    }

    #[test]
    fn chunks_count_whole_pairs_only() {
        let mut chunk = Vec::new();
        for (k, v) in [(&b"k"[..], &b"v"[..]), (b"key2", b"")] {
            chunk.extend_from_slice(&(k.len() as u32).to_be_bytes());
            chunk.extend_from_slice(k);
            chunk.extend_from_slice(&(v.len() as u32).to_be_bytes());
            chunk.extend_from_slice(v);
        }
        assert_eq!(count_pairs(&chunk), Ok(2));
        assert!(count_pairs(&chunk[..chunk.len() - 1]).is_err());
    }
}
