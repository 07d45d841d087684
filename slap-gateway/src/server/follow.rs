//! Following the replicas' `WatchViews` stream: what wakes the held long polls of
//! `views.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::app::App;
use super::views::with_jitter;

/// Backoff of the `WatchViews` stream after it broke: from this...
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// ...doubling to this.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Follows the replicas' `WatchViews` stream for as long as the gateway runs, waking
/// held requests; reconnects (to the next replica after a failure) with a jittered
/// backoff, resuming after the last index it was told about.
pub async fn follow(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let mut client = app.masters.view_client();
    let mut backoff = RECONNECT_MIN;
    // The group whose history `followed` counts in (empty until a replica said).
    let mut group = String::new();
    loop {
        let after = app.views.followed.load(Ordering::Acquire);
        let opened = tokio::select! {
            o = client.watch_views(after, &group) => o,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match opened {
            Ok((addr, mut stream)) => {
                tracing::debug!(%addr, after, "following the node views");
                // The first time, the replica can only say where it is: a request held
                // before that may have missed a change, so everyone looks again.
                let mut first = after == 0;
                loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        _ = stopped.wait_for(|s| *s) => return,
                    };
                    match message {
                        Ok(Some(m)) => {
                            backoff = RECONNECT_MIN;
                            app.metrics.views_changed(m.computers.len(), m.reset);
                            let mut restarted = false;
                            if !m.group.is_empty() && m.group != group {
                                if !group.is_empty() {
                                    // A new group (restored from a backup) under the
                                    // same addresses: its indexes are its own, maybe
                                    // below ours. Everyone looks again, and we follow
                                    // from its index.
                                    tracing::info!(from = %group, to = %m.group, index = m.index, "the node views now follow another group");
                                    app.views.restart(m.index);
                                    restarted = true;
                                }
                                group = m.group.clone();
                            }
                            app.views
                                .changed(m.index, &m.computers, m.reset || first || restarted);
                            first = false;
                        }
                        Ok(None) => {
                            tracing::debug!(%addr, "the node views stream ended");
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "the node views stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow the node views");
                client.next_replica();
            }
        }
        let pause = with_jitter(backoff);
        backoff = (backoff * 2).min(RECONNECT_MAX);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
