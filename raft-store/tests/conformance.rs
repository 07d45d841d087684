//! openraft's own storage conformance suite against raft-store.

mod common;

use common::{Kv, Logs, Sm, TC};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use raft_store::StoreOptions;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TC, Logs, Sm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, Logs, Sm), StorageError<u64>> {
        let err = |e: &dyn std::fmt::Display| -> StorageError<u64> {
            StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::error(e)).into()
        };
        let dir = tempfile::tempdir().map_err(|e| err(&e))?;
        let (logs, sm) =
            raft_store::open::<TC, Kv>(&dir.path().join("raft"), StoreOptions::default())
                .await
                .map_err(|e| err(&e))?;
        Ok((dir, logs, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}
