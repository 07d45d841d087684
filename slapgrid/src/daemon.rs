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

type Job = fn(&Node) -> Result<String, String>;

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

/// Runs the loops until `stop` is set.
pub fn run(node: Arc<Node>, stop: Arc<AtomicBool>) {
    let cfg = &node.cfg;
    let loops: [(&str, Duration, Job); 4] = [
        ("format", cfg.format_interval, format_job),
        ("software", cfg.software_interval, software_job),
        ("instance", cfg.instance_interval, instance_job),
        ("report", cfg.report_interval, report_job),
    ];
    let mut threads = Vec::new();
    for (i, (name, period, job)) in loops.into_iter().enumerate() {
        let node = node.clone();
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("node-{name}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match job(&node) {
                        Ok(summary) => tracing::info!(target: "slapgrid::daemon", run = name, took_ms = started.elapsed().as_millis() as u64, "{summary}"),
                        Err(e) => tracing::warn!(target: "slapgrid::daemon", run = name, "{e}"),
                    }
                    sleep_until_stopped(&stop, jittered(period, i as u64));
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(run = name, error = %e, "cannot start the loop"),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
