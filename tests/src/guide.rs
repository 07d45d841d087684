//! The guide's example files (`docs/examples/`), as the tests run them: a file with its
//! machine-specific addresses and paths replaced. Every such value must be replaced
//! (none left for this host to lack), so an example cannot name something the tests do
//! not exercise.

use std::path::Path;

/// What marks an address or path of the guide's machines in an example's settings.
const MACHINE_SPECIFIC: [&str; 5] = ["2001:db8", "/etc/slapos", "/srv/", "/etc/opt/", "/opt/"];

/// Whether `marker` begins a value in `line` (not inside a longer path such as
/// `/tmp/x/etc/slapos.json`).
fn starts_a_value(line: &str, marker: &str) -> bool {
    line.match_indices(marker).any(|(k, _)| {
        line[..k]
            .chars()
            .next_back()
            .is_none_or(|c| matches!(c, ' ' | '"' | '=' | '\'' | '['))
    })
}

/// `docs/examples/<name>` with each `(from, to)` replaced (each `from` must occur).
pub fn example(name: &str, replace: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{} lacks {from}", path.display());
        text = text.replace(from, to);
    }
    let unreplaced: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| MACHINE_SPECIFIC.iter().any(|m| starts_a_value(l, m)))
        .collect();
    assert!(unreplaced.is_empty(), "{name}: {unreplaced:?}");
    text
}
