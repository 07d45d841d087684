//! The files of a node's identity (its key and certificate, and a partition's): how a
//! renewal stages their replacement and how one that a crash interrupted is completed,
//! so that the key and the certificate always form a pair. Below the client, the
//! registration and the partitions' certificates, which all use it.

use std::path::{Path, PathBuf};

/// A key or certificate file that could not be moved into place or dropped.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct KeyFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError {
        path: path.to_owned(),
        source,
    }
}

/// Where a renewal stages a file's replacement.
pub(crate) fn staged(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    path.with_file_name(name)
}

/// Completes a renewal a crash interrupted, so that the key and certificate files always
/// form a pair. A renewal stages `<key>.next`, then `<cert>.next` (each written whole),
/// then renames the key, then the certificate. So: a staged certificate means the new
/// pair was complete (rename what is left); a staged key alone means the certificate
/// never arrived whole (drop it; the old pair still holds). Called before every use of
/// the node's identity (`SlapClient::from_config`).
pub fn finish_renewal(key_file: &Path, cert_file: &Path) -> Result<(), KeyFileError> {
    let (key_next, cert_next) = (staged(key_file), staged(cert_file));
    if cert_next.exists() {
        if key_next.exists() {
            std::fs::rename(&key_next, key_file).map_err(at(key_file))?;
        }
        std::fs::rename(&cert_next, cert_file).map_err(at(cert_file))?;
    } else if key_next.exists() {
        std::fs::remove_file(&key_next).map_err(at(&key_next))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files of a node in the middle of a renewal: (key, cert) and what is staged.
    fn node(dir: &Path, key_next: bool, cert_next: bool, key_renamed: bool) -> (PathBuf, PathBuf) {
        let (key, cert) = (dir.join("computer.key"), dir.join("computer.crt"));
        std::fs::write(&key, if key_renamed { "new key" } else { "old key" }).unwrap();
        std::fs::write(&cert, "old cert").unwrap();
        if key_next {
            std::fs::write(staged(&key), "new key").unwrap();
        }
        if cert_next {
            std::fs::write(staged(&cert), "new cert").unwrap();
        }
        (key, cert)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn an_interrupted_renewal_always_ends_with_a_matching_pair() {
        // (key staged, cert staged, key already renamed) -> the pair afterwards
        for (key_next, cert_next, key_renamed, pair) in [
            (false, false, false, ("old key", "old cert")), // nothing was under way
            (true, false, false, ("old key", "old cert")),  // the certificate never arrived
            (true, true, false, ("new key", "new cert")),   // both staged, none renamed
            (false, true, true, ("new key", "new cert")),   // the key renamed, not the cert
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (key, cert) = node(dir.path(), key_next, cert_next, key_renamed);
            finish_renewal(&key, &cert).unwrap();
            assert_eq!(
                (read(&key).as_str(), read(&cert).as_str()),
                pair,
                "staged key {key_next}, staged cert {cert_next}, key renamed {key_renamed}"
            );
            assert!(!staged(&key).exists() && !staged(&cert).exists());
            // And again: nothing left to do.
            finish_renewal(&key, &cert).unwrap();
            assert_eq!((read(&key).as_str(), read(&cert).as_str()), pair);
        }
    }
}
