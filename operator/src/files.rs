//! `std::fs` with the path in the error ([`OperatorError::Io`]).

use crate::error::OperatorError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub(crate) fn create_dir_all(path: &Path) -> Result<(), OperatorError> {
    std::fs::create_dir_all(path).map_err(OperatorError::io("create", path))
}

pub(crate) fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), OperatorError> {
    std::fs::write(path, contents).map_err(OperatorError::io("write", path))
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, OperatorError> {
    std::fs::read_to_string(path).map_err(OperatorError::io("read", path))
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), OperatorError> {
    std::fs::rename(from, to).map_err(OperatorError::io("rename into", to))
}

pub(crate) fn copy(from: &Path, to: &Path) -> Result<(), OperatorError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(OperatorError::io("copy into", to))
}

pub(crate) fn mode(path: &Path) -> Result<u32, OperatorError> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .map_err(OperatorError::io("read the mode of", path))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), OperatorError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(OperatorError::io("set the mode of", path))
}

/// `path` made absolute (not resolving links).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, OperatorError> {
    std::path::absolute(path).map_err(OperatorError::io("make absolute", path))
}

/// The SHA-256 of a file, in hex.
pub(crate) fn sha256(path: &Path) -> Result<String, OperatorError> {
    slapgrid::digest::sha256_file(path).map_err(OperatorError::io("read", path))
}

/// This very program (what the cluster's processes and the releases run).
pub(crate) fn current_exe() -> Result<PathBuf, OperatorError> {
    std::env::current_exe().map_err(OperatorError::io("find", Path::new("this program")))
}
