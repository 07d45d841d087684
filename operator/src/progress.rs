//! What an operator's command tells its user while it runs. The library prints nothing
//! itself: every step goes through a [`Progress`] the caller gives (the `slapos` binary
//! prints steps as `- <text>` lines on its standard output, lines as they are, warnings
//! on its standard error).

/// Where a command's progress goes.
pub trait Progress: Send + Sync {
    /// A step, as it starts or as it is found done ("request master-2 (replica) on
    /// COMP-1", "replica 2 on COMP-1/slappart0 votes already").
    fn step(&self, text: &str);
    /// A line of the command's own output: what it made, where things run, what to run
    /// next.
    fn line(&self, text: &str);
    /// Something that went wrong without stopping the command (a process that exited,
    /// one that had to be killed).
    fn warn(&self, text: &str);
}

/// Tells nobody (tests, callers that only want the result).
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn line(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}
