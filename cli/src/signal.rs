//! SIGINT (Ctrl-C) and SIGTERM, which stop every long-running command.

use anyhow::Result;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Both signals, caught from now on (a signal that comes before anyone waits is kept).
pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    pub fn catch() -> Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Until either comes.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Until SIGINT or SIGTERM.
pub async fn wait_for_signal() -> Result<()> {
    Stop::catch()?.wait().await;
    Ok(())
}
