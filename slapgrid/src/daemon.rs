//! `slapos node daemon`: the software, instance, report and format loops, each in its
//! own thread on its own period with jitter, so a long build never delays instance
//! convergence, and the watch ([`crate::watch`]): a long poll of the computer's view that
//! wakes the software and instance loops as soon as the view changes (their periods, 300 s
//! by default, stay as a safety net). A release installed wakes the instance loop too; a
//! failed run is tried again sooner than its period (5 s doubling). Each run takes the
//! same lock as the manual command. The client fails over between the configured
//! gateways; while none answers, the instance loop keeps every service running (offline
//! mode) and the loops simply try again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::instance::InstanceOptions;
use crate::node::{Node, RunLock};
use crate::software::SoftwareOptions;
use crate::watch::{self, Bell, WatchOptions};

/// A period with up to ±10 % of jitter (so a fleet does not poll in step).
pub fn jittered(period: Duration, salt: u64) -> Duration {
    let x = watch::pseudo_random(salt);
    let span = period.as_millis() as u64 / 5; // 20 % wide
    let offset = if span == 0 { 0 } else { x % span };
    (period + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(span / 2))
}

/// A failed run is tried again after this, doubled at each failure in a row, up to the
/// loop's period.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Woken runs a loop may make back to back (a token bucket of this many, one more every
/// [`WAKE_REFILL`]): a run whose own reports changed the view, and so woke it again,
/// cannot spin, while the bursts of a busy node (a few wakes per request) run at once.
const WAKE_BURST: f64 = 10.0;
const WAKE_REFILL: Duration = Duration::from_secs(1);

/// Takes a token of the bucket (`tokens`, refilled since `at`): how long to wait for it.
fn wake_delay(tokens: &mut f64, at: &mut Instant) -> Duration {
    let now = Instant::now();
    let refilled = now.duration_since(*at).as_secs_f64() / WAKE_REFILL.as_secs_f64();
    *tokens = (*tokens + refilled).min(WAKE_BURST) - 1.0;
    *at = now;
    if *tokens >= 0.0 {
        Duration::ZERO
    } else {
        WAKE_REFILL.mul_f64(-*tokens)
    }
}

fn sleep_until_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
    }
}

/// What a run did: its summary, and whether it changed something another loop waits
/// for (a release installed: the instance loop).
#[derive(Debug, Clone, Default)]
pub struct Ran {
    pub summary: String,
    pub changed: bool,
}

impl Ran {
    fn said(summary: impl Into<String>) -> Ran {
        Ran {
            summary: summary.into(),
            changed: false,
        }
    }
}

/// One loop of the daemon.
struct Loop<T> {
    name: &'static str,
    period: Duration,
    job: fn(&T) -> Result<Ran, String>,
    /// Rung when the loop should run now (the view changed, a release was installed).
    bell: Option<Arc<Bell>>,
    /// Rung after a run that [`Ran::changed`] something.
    rings: Option<Arc<Bell>>,
}

fn software_job(node: &Node) -> Result<Ran, String> {
    let _lock = RunLock::acquire(&node.cfg.pidfile_software).map_err(|e| e.to_string())?;
    let r = crate::software::run(node, &SoftwareOptions::default()).map_err(|e| e.to_string())?;
    if r.failed.is_empty() {
        Ok(Ran {
            summary: format!(
                "{} installed, {} destroyed",
                r.installed.len(),
                r.destroyed.len()
            ),
            changed: !r.installed.is_empty(),
        })
    } else {
        Err(format!("{} release(s) failed", r.failed.len()))
    }
}

fn instance_job(node: &Node) -> Result<Ran, String> {
    let _lock = RunLock::acquire(&node.cfg.pidfile_instance).map_err(|e| e.to_string())?;
    let r = crate::instance::run(node, &InstanceOptions::default()).map_err(|e| e.to_string())?;
    match r.exit_code() {
        0 => Ok(Ran::said(format!(
            "{} processed, {} unchanged",
            r.processed.len(),
            r.skipped.len()
        ))),
        // (a failure: tried again soon, the services kept running meanwhile)
        3 => Err("master unreachable: services kept running".into()),
        _ => Err(format!(
            "{} failed, {} broken promises",
            r.failed.len(),
            r.promise_failed.len()
        )),
    }
}

fn report_job(node: &Node) -> Result<Ran, String> {
    let _lock = RunLock::acquire(&node.cfg.pidfile_report).map_err(|e| e.to_string())?;
    let r = crate::report::run(node).map_err(|e| e.to_string())?;
    Ok(Ran::said(format!(
        "{} movements, {} destroyed",
        r.movements,
        r.destroyed.len()
    )))
}

/// Certificates are renewed this long before they end.
const RENEW_WITHIN: Duration = Duration::from_secs(30 * 86400);

fn format_job(node: &Node) -> Result<Ran, String> {
    if let Err(e) = crate::register::renew_if_needed(&node.cfg, RENEW_WITHIN, false) {
        tracing::warn!(error = %e, "node certificate not renewed");
    }
    crate::format_and_post(node, false)
        .map(|posted| {
            Ran::said(if posted {
                "formatted"
            } else {
                "formatted, master unreachable"
            })
        })
        .map_err(|e| e.to_string())
}

/// How long a stop waits for the runs in progress before the daemon returns anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs the watch and the loops until `stop` is set, then returns once the runs in
/// progress finished or after [`STOP_GRACE`], whichever comes first: a run cut short is
/// safe to redo (an install builds aside and renames, an instance run leaves its
/// timestamp only once done), and the supervisor keeps every service running meanwhile,
/// so a stop never waits on a master that does not answer or a promise that hangs (nor
/// on a long poll in progress: the watch's thread is left to end with the process).
pub fn run(node: Arc<Node>, stop: Arc<AtomicBool>) {
    let cfg = &node.cfg;
    let software = Bell::new();
    let instance = Bell::new();
    {
        let (node, stop) = (node.clone(), stop.clone());
        let bells = watch::Bells {
            software: software.clone(),
            instance: instance.clone(),
        };
        let opts = WatchOptions {
            status_file: Some(watch::status_path(&node.cfg.instance_root)),
            ..WatchOptions::default()
        };
        let spawned = std::thread::Builder::new()
            .name("node-watch".into())
            .spawn(move || {
                watch::run(&node.client, &node.cfg.computer_id, &bells, &stop, &opts);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the watch: the runs poll at their periods");
        }
    }
    let loops: Vec<Loop<Node>> = vec![
        Loop {
            name: "format",
            period: cfg.format_interval,
            job: format_job,
            bell: None,
            rings: None,
        },
        Loop {
            name: "software",
            period: cfg.software_interval,
            job: software_job,
            bell: Some(software),
            rings: Some(instance.clone()),
        },
        Loop {
            name: "instance",
            period: cfg.instance_interval,
            job: instance_job,
            bell: Some(instance),
            rings: None,
        },
        Loop {
            name: "report",
            period: cfg.report_interval,
            job: report_job,
            bell: None,
            rings: None,
        },
    ];
    run_loops(node, loops, &stop, STOP_GRACE);
}

/// One loop's thread: a run, then a wait for its period (a failed run: the retry delay)
/// or its bell, until `stop`.
fn run_loop<T>(subject: &T, l: &Loop<T>, salt: u64, stop: &AtomicBool) {
    let name = l.name;
    let mut failures = 0u32;
    let (mut tokens, mut refilled) = (WAKE_BURST, Instant::now());
    let mut woken = false;
    while !stop.load(Ordering::Relaxed) {
        if woken {
            sleep_until_stopped(stop, wake_delay(&mut tokens, &mut refilled));
        }
        // Rung from here on (even during the run): run again.
        let seen = l.bell.as_ref().map_or(0, |b| b.generation());
        let started = Instant::now();
        let took = || started.elapsed().as_millis() as u64;
        let wait = match (l.job)(subject) {
            Ok(ran) => {
                tracing::info!(target: "slapgrid::daemon", run = name, woken, took_ms = took(), "{}", ran.summary);
                failures = 0;
                if ran.changed {
                    if let Some(other) = &l.rings {
                        other.ring();
                    }
                }
                jittered(l.period, salt)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let retry = watch::backoff(failures, RETRY_FIRST, l.period, salt).min(l.period);
                tracing::warn!(target: "slapgrid::daemon", run = name, woken, took_ms = took(), retry_in_s = retry.as_secs(), "{e}");
                retry
            }
        };
        let until = Instant::now() + wait;
        woken = match &l.bell {
            Some(bell) => bell.wait(seen, until, stop),
            None => {
                sleep_until_stopped(stop, wait);
                false
            }
        };
    }
}

/// [`run`]'s loops over any subject.
fn run_loops<T: Send + Sync + 'static>(
    subject: Arc<T>,
    loops: Vec<Loop<T>>,
    stop: &Arc<AtomicBool>,
    grace: Duration,
) {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<&'static str>();
    let mut running = 0usize;
    for (i, l) in loops.into_iter().enumerate() {
        let name = l.name;
        let subject = subject.clone();
        let stop = stop.clone();
        let done = done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("node-{name}"))
            .spawn(move || {
                run_loop(&*subject, &l, i as u64, &stop);
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

    use std::sync::atomic::AtomicU32;

    fn stuck(_: &()) -> Result<Ran, String> {
        // A run that waits on something that never answers.
        std::thread::sleep(Duration::from_secs(600));
        Ok(Ran::default())
    }

    fn quick(_: &()) -> Result<Ran, String> {
        Ok(Ran::said("done"))
    }

    fn plain<T>(
        name: &'static str,
        period: Duration,
        job: fn(&T) -> Result<Ran, String>,
    ) -> Loop<T> {
        Loop {
            name,
            period,
            job,
            bell: None,
            rings: None,
        }
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
                    plain("stuck", Duration::from_secs(1), stuck),
                    plain("quick", Duration::from_millis(50), quick),
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

    /// Two loops with the SlapOS period (300 s), as the daemon's software and instance
    /// loops: counters of their runs, and how each run goes.
    #[derive(Default)]
    struct Node2 {
        software_runs: AtomicU32,
        instance_runs: AtomicU32,
        /// The software run installs something (rings the instance loop) this many times.
        installs: AtomicU32,
        /// The instance run fails this many times.
        failures: AtomicU32,
        /// Rung by the instance run itself (a run whose reports change the view).
        echo: Option<Arc<Bell>>,
    }

    fn software(n: &Node2) -> Result<Ran, String> {
        n.software_runs.fetch_add(1, Ordering::SeqCst);
        let installed = n
            .installs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
            .is_ok();
        Ok(Ran {
            summary: "software".into(),
            changed: installed,
        })
    }

    fn instance(n: &Node2) -> Result<Ran, String> {
        n.instance_runs.fetch_add(1, Ordering::SeqCst);
        if let Some(echo) = &n.echo {
            echo.ring();
        }
        match n
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
        {
            Ok(_) => Err("failed".into()),
            Err(_) => Ok(Ran::said("instance")),
        }
    }

    const SLAPOS_PERIOD: Duration = Duration::from_secs(300);

    fn start(
        node: Arc<Node2>,
        software_bell: Arc<Bell>,
        instance_bell: Arc<Bell>,
    ) -> Arc<AtomicBool> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            run_loops(
                node,
                vec![
                    Loop {
                        name: "software",
                        period: SLAPOS_PERIOD,
                        job: software,
                        bell: Some(software_bell),
                        rings: Some(instance_bell.clone()),
                    },
                    Loop {
                        name: "instance",
                        period: SLAPOS_PERIOD,
                        job: instance,
                        bell: Some(instance_bell),
                        rings: None,
                    },
                ],
                &flag,
                Duration::from_millis(100),
            )
        });
        stop
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A bell (the watch saw the view change) makes a loop with a 300 s period run now,
    /// once per ring; a release installed wakes the instance loop too.
    #[test]
    fn a_ring_runs_a_loop_now_and_an_install_wakes_the_instance_loop() {
        let node = Arc::new(Node2::default());
        let (sb, ib) = (Bell::new(), Bell::new());
        let stop = start(node.clone(), sb.clone(), ib.clone());
        let runs = |c: &AtomicU32| c.load(Ordering::SeqCst);
        wait_until("the first runs", || {
            runs(&node.software_runs) == 1 && runs(&node.instance_runs) == 1
        });
        // the view changed: both run again, long before their period
        sb.ring();
        ib.ring();
        wait_until("runs after a ring", || {
            runs(&node.software_runs) == 2 && runs(&node.instance_runs) == 2
        });
        // a software run that installs wakes the instance loop
        node.installs.store(1, Ordering::SeqCst);
        sb.ring();
        wait_until("the instance run after an install", || {
            runs(&node.instance_runs) == 3
        });
        assert_eq!(runs(&node.software_runs), 3);
        // and nothing more runs without a ring
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            (runs(&node.software_runs), runs(&node.instance_runs)),
            (3, 3)
        );
        stop.store(true, Ordering::Relaxed);
    }

    /// A failed run is tried again long before its period, and not again once it passed.
    #[test]
    fn a_failed_run_is_tried_again_before_its_period() {
        let node = Arc::new(Node2 {
            failures: AtomicU32::new(1),
            ..Node2::default()
        });
        let stop = start(node.clone(), Bell::new(), Bell::new());
        wait_until("the retry of the failed run", || {
            node.instance_runs.load(Ordering::SeqCst) == 2
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(node.instance_runs.load(Ordering::SeqCst), 2);
        stop.store(true, Ordering::Relaxed);
    }

    /// A run that wakes itself (its own reports change the view it watches) does not
    /// spin: after a burst of woken runs, the next ones wait for their turn.
    #[test]
    fn a_run_that_wakes_itself_does_not_spin() {
        let ib = Bell::new();
        let node = Arc::new(Node2 {
            echo: Some(ib.clone()),
            ..Node2::default()
        });
        let stop = start(node.clone(), Bell::new(), ib);
        std::thread::sleep(Duration::from_secs(3));
        let runs = node.instance_runs.load(Ordering::SeqCst);
        stop.store(true, Ordering::Relaxed);
        // the first run, WAKE_BURST woken ones, then one a second (unguarded: thousands)
        assert!(runs <= 1 + WAKE_BURST as u32 + 4, "{runs} runs in 3 s");
        assert!(runs > 1, "the ring did not wake the loop");
    }
}
