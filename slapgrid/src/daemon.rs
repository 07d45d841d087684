//! `slapos node daemon`: the software, instance, report and format loops, each in its
//! own thread on its own period with jitter, so a long build never delays instance
//! convergence. Each run takes the same lock as the manual command. The client fails over
//! between the configured gateways; while none answers, the instance loop keeps every
//! service running (offline mode) and the loops simply try again next period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::instance::InstanceOptions;
use crate::node::{Node, RunLock};
use crate::software::SoftwareOptions;

/// A period with up to ±10 % of jitter (so a fleet does not poll in step).
pub fn jittered(period: Duration, salt: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let span = period.as_millis() as u64 / 5; // 20 % wide
    let offset = if span == 0 { 0 } else { x % span };
    (period + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(span / 2))
}

fn sleep_until_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
    }
}

/// One loop of the daemon: its name, its period and its job on `T`.
type Loop<T> = (&'static str, Duration, fn(&T) -> Result<String, String>);

fn software_job(node: &Node) -> Result<String, String> {
    let _lock = RunLock::acquire(&node.cfg.pidfile_software).map_err(|e| e.to_string())?;
    let r = crate::software::run(node, &SoftwareOptions::default()).map_err(|e| e.to_string())?;
    if r.failed.is_empty() {
        Ok(format!(
            "{} installed, {} destroyed",
            r.installed.len(),
            r.destroyed.len()
        ))
    } else {
        Err(format!("{} release(s) failed", r.failed.len()))
    }
}

fn instance_job(node: &Node) -> Result<String, String> {
    let _lock = RunLock::acquire(&node.cfg.pidfile_instance).map_err(|e| e.to_string())?;
    let r = crate::instance::run(node, &InstanceOptions::default()).map_err(|e| e.to_string())?;
    match r.exit_code() {
        0 => Ok(format!(
            "{} processed, {} unchanged",
            r.processed.len(),
            r.skipped.len()
        )),
        3 => Ok("master unreachable: services kept running".into()),
        _ => Err(format!(
            "{} failed, {} broken promises",
            r.failed.len(),
            r.promise_failed.len()
        )),
    }
}

fn report_job(node: &Node) -> Result<String, String> {
    let _lock = RunLock::acquire(&node.cfg.pidfile_report).map_err(|e| e.to_string())?;
    let r = crate::report::run(node).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} movements, {} destroyed",
        r.movements,
        r.destroyed.len()
    ))
}

/// Certificates are renewed this long before they end.
const RENEW_WITHIN: Duration = Duration::from_secs(30 * 86400);

fn format_job(node: &Node) -> Result<String, String> {
    if let Err(e) = crate::register::renew_if_needed(&node.cfg, RENEW_WITHIN, false) {
        tracing::warn!(error = %e, "node certificate not renewed");
    }
    crate::format_and_post(node, false)
        .map(|posted| {
            if posted {
                "formatted".into()
            } else {
                "formatted, master unreachable".into()
            }
        })
        .map_err(|e| e.to_string())
}

/// How long a stop waits for the runs in progress before the daemon returns anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs the loops until `stop` is set, then returns once the runs in progress finished
/// or after [`STOP_GRACE`], whichever comes first: a run cut short is safe to redo (an
/// install builds aside and renames, an instance run leaves its timestamp only once
/// done), and the supervisor keeps every service running meanwhile, so a stop never
/// waits on a master that does not answer or a promise that hangs.
pub fn run(node: Arc<Node>, stop: Arc<AtomicBool>) {
    let cfg = &node.cfg;
    let loops: Vec<Loop<Node>> = vec![
        ("format", cfg.format_interval, format_job),
        ("software", cfg.software_interval, software_job),
        ("instance", cfg.instance_interval, instance_job),
        ("report", cfg.report_interval, report_job),
    ];
    run_loops(node, loops, &stop, STOP_GRACE);
}

/// [`run`] over any loops (each a name, a period and a job).
fn run_loops<T: Send + Sync + 'static>(
    subject: Arc<T>,
    loops: Vec<Loop<T>>,
    stop: &Arc<AtomicBool>,
    grace: Duration,
) {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<&'static str>();
    let mut running = 0usize;
    for (i, (name, period, job)) in loops.into_iter().enumerate() {
        let subject = subject.clone();
        let stop = stop.clone();
        let done = done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("node-{name}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match job(&subject) {
                        Ok(summary) => tracing::info!(target: "slapgrid::daemon", run = name, took_ms = started.elapsed().as_millis() as u64, "{summary}"),
                        Err(e) => tracing::warn!(target: "slapgrid::daemon", run = name, "{e}"),
                    }
                    sleep_until_stopped(&stop, jittered(period, i as u64));
                }
                let _ = done.send(name);
            });
        match spawned {
            Ok(_) => running += 1,
            Err(e) => tracing::error!(run = name, error = %e, "cannot start the loop"),
        }
    }
    drop(done_tx);
    while !stop.load(Ordering::Relaxed) && running > 0 {
        match done_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(_) => running -= 1,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
    let deadline = Instant::now() + grace;
    while running > 0 {
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => running -= 1,
            Err(_) => {
                tracing::warn!(
                    target: "slapgrid::daemon",
                    runs = running,
                    "stopping with runs in progress (they start over at the next start)"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck(_: &()) -> Result<String, String> {
        // A run that waits on something that never answers.
        std::thread::sleep(Duration::from_secs(600));
        Ok(String::new())
    }

    fn quick(_: &()) -> Result<String, String> {
        Ok("done".into())
    }

    /// A stop does not wait for a run that hangs (a master that does not answer, a
    /// promise that never ends): the daemon returns after its grace period.
    #[test]
    fn a_stop_does_not_wait_for_a_run_that_hangs() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            run_loops(
                Arc::new(()),
                vec![
                    ("stuck", Duration::from_secs(1), stuck),
                    ("quick", Duration::from_millis(50), quick),
                ],
                &flag,
                Duration::from_millis(100),
            );
            let _ = tx.send(());
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "returned before being stopped");
        stop.store(true, Ordering::Relaxed);
        // Far below the stuck run's 600 s: the daemon did not wait for it.
        assert!(
            rx.recv_timeout(Duration::from_secs(60)).is_ok(),
            "the daemon waited for the run that hangs"
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for salt in 0..50 {
            let d = jittered(Duration::from_secs(100), salt);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
