//! The operator library's progress, printed: steps as `- <text>` and lines as they are
//! on standard output, warnings on standard error.

use slapos_operator::Progress;

pub struct Printer;

impl Progress for Printer {
    fn step(&self, text: &str) {
        println!("- {text}");
    }

    fn line(&self, text: &str) {
        println!("{text}");
    }

    fn warn(&self, text: &str) {
        eprintln!("{text}");
    }
}
