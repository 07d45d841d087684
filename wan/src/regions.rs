//! The regions file: regions by name and what lies between each pair of them, parsed
//! into a [`Matrix`].
//!
//! ```toml
//! seed = 7                      # optional: the loss and jitter draws
//!
//! [[region]]
//! name = "lille"
//! [[region]]
//! name = "montreal"
//!
//! [[pair]]
//! between = ["lille", "montreal"]
//! rtt_ms = 90                   # split evenly: 45 ms each way...
//! # one_way_ms = [40, 50]       # ...unless stated (lille→montreal, montreal→lille)
//! # jitter_ms = 2               # optional, each way: the delay wanders within ± this
//! # loss_percent = 0.1          # optional, each way
//! # bandwidth_mbit = 100        # optional, each way
//! ```
//!
//! Every pair of distinct regions must be given once; a pair of a region with itself is
//! optional (traffic inside a region; none: no delay).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::matrix::{LinkParams, Matrix};

#[derive(Debug, thiserror::Error)]
pub enum RegionsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error("no region: a regions file names one at least ([[region]] name = \"...\")")]
    NoRegions,
    #[error("region {0:?} is named twice")]
    DuplicateRegion(String),
    #[error("pair {pair}: unknown region {name:?} (the [[region]]s are {known})")]
    UnknownRegion {
        pair: String,
        name: String,
        known: String,
    },
    #[error("pair {0} is given twice")]
    DuplicatePair(String),
    #[error("no pair between {0:?} and {1:?}: every two regions need one ([[pair]] between = [{0:?}, {1:?}] rtt_ms = ...)")]
    MissingPair(String, String),
    #[error("pair {pair}: {field} is {value}; it must be a finite number, zero or more")]
    Negative {
        pair: String,
        field: &'static str,
        value: f64,
    },
    #[error("pair {pair}: loss_percent is {value}; at most 100")]
    LossOver100 { pair: String, value: f64 },
    #[error("pair {pair}: give rtt_ms or one_way_ms")]
    NoDelay { pair: String },
    #[error("pair {pair}: one_way_ms {one_way:?} does not add up to rtt_ms {rtt}")]
    Mismatch {
        pair: String,
        rtt: f64,
        one_way: [f64; 2],
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    seed: Option<u64>,
    #[serde(default)]
    region: Vec<RegionEntry>,
    #[serde(default)]
    pair: Vec<PairEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionEntry {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PairEntry {
    between: [String; 2],
    rtt_ms: Option<f64>,
    one_way_ms: Option<[f64; 2]>,
    jitter_ms: Option<f64>,
    loss_percent: Option<f64>,
    bandwidth_mbit: Option<f64>,
}

/// The regions file at `path`.
pub fn load(path: &Path) -> Result<Matrix, RegionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegionsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

fn non_negative(pair: &str, field: &'static str, value: f64) -> Result<f64, RegionsError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(RegionsError::Negative {
            pair: pair.to_string(),
            field,
            value,
        })
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

/// A regions file's text.
pub fn parse(text: &str) -> Result<Matrix, RegionsError> {
    let file: File = toml::from_str(text)?;
    if file.region.is_empty() {
        return Err(RegionsError::NoRegions);
    }
    let mut names: Vec<String> = Vec::new();
    for r in file.region {
        if names.contains(&r.name) {
            return Err(RegionsError::DuplicateRegion(r.name));
        }
        names.push(r.name);
    }
    let mut matrix = Matrix::new(names.clone());
    if let Some(seed) = file.seed {
        matrix = matrix.with_seed(seed);
    }
    let mut seen = BTreeSet::new();
    for p in &file.pair {
        let label = format!("{}–{}", p.between[0], p.between[1]);
        let id = |name: &str| {
            matrix
                .region(name)
                .ok_or_else(|| RegionsError::UnknownRegion {
                    pair: label.clone(),
                    name: name.to_string(),
                    known: names.join(", "),
                })
        };
        let (a, b) = (id(&p.between[0])?, id(&p.between[1])?);
        if !seen.insert((a.min(b), a.max(b))) {
            return Err(RegionsError::DuplicatePair(label));
        }
        let rtt = p
            .rtt_ms
            .map(|v| non_negative(&label, "rtt_ms", v))
            .transpose()?;
        let one_way = match p.one_way_ms {
            Some([x, y]) => Some([
                non_negative(&label, "one_way_ms", x)?,
                non_negative(&label, "one_way_ms", y)?,
            ]),
            None => None,
        };
        let [ab, ba] = match (rtt, one_way) {
            (None, None) => return Err(RegionsError::NoDelay { pair: label }),
            (Some(rtt), None) => [rtt / 2.0, rtt / 2.0],
            (rtt, Some(ow)) => {
                let off = rtt.is_some_and(|r| (ow[0] + ow[1] - r).abs() > 1e-6);
                if off || (a == b && ow[0] != ow[1]) {
                    return Err(RegionsError::Mismatch {
                        pair: label,
                        rtt: rtt.unwrap_or(ow[0] + ow[1]),
                        one_way: ow,
                    });
                }
                ow
            }
        };
        let jitter = non_negative(&label, "jitter_ms", p.jitter_ms.unwrap_or(0.0))?;
        let loss = non_negative(&label, "loss_percent", p.loss_percent.unwrap_or(0.0))?;
        if loss > 100.0 {
            return Err(RegionsError::LossOver100 {
                pair: label,
                value: loss,
            });
        }
        let bandwidth = p
            .bandwidth_mbit
            .map(|v| non_negative(&label, "bandwidth_mbit", v))
            .transpose()?
            .map(|mbit| (mbit * 1e6) as u64)
            .filter(|b| *b > 0);
        let params = |delay: f64| LinkParams {
            delay: ms(delay),
            jitter: ms(jitter),
            loss: loss / 100.0,
            bandwidth_bps: bandwidth,
        };
        matrix.set_link(a, b, params(ab));
        matrix.set_link(b, a, params(ba));
    }
    for a in 0..names.len() {
        for b in a + 1..names.len() {
            if !seen.contains(&(a, b)) {
                return Err(RegionsError::MissingPair(
                    names[a].clone(),
                    names[b].clone(),
                ));
            }
        }
    }
    Ok(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"
seed = 3
[[region]]
name = "lille"
[[region]]
name = "montreal"
[[region]]
name = "tokyo"
[[pair]]
between = ["lille", "montreal"]
rtt_ms = 90
[[pair]]
between = ["montreal", "tokyo"]
rtt_ms = 150
jitter_ms = 1.5
loss_percent = 0.5
bandwidth_mbit = 100
[[pair]]
between = ["tokyo", "lille"]
one_way_ms = [110, 120]
"#;

    #[test]
    fn a_good_file_becomes_a_matrix() {
        let m = parse(THREE).unwrap();
        assert_eq!(m.names(), ["lille", "montreal", "tokyo"]);
        assert_eq!(m.seed(), 3);
        assert_eq!(m.link(0, 1).delay, Duration::from_millis(45));
        assert_eq!(m.link(1, 0).delay, Duration::from_millis(45));
        let mt = m.link(1, 2);
        assert_eq!(mt.delay, Duration::from_millis(75));
        assert_eq!(mt.jitter, Duration::from_micros(1500));
        assert!((mt.loss - 0.005).abs() < 1e-12);
        assert_eq!(mt.bandwidth_bps, Some(100_000_000));
        assert_eq!(m.link(2, 0).delay, Duration::from_millis(110));
        assert_eq!(m.link(0, 2).delay, Duration::from_millis(120));
        assert_eq!(m.rtt(0, 2), Duration::from_millis(230));
        assert_eq!(m.link(0, 0), LinkParams::LAN);
    }

    #[test]
    fn the_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regions.toml");
        let m = load(&path).unwrap();
        let id = |n: &str| m.region(n).unwrap();
        let (l, mo, t) = (id("lille"), id("montreal"), id("tokyo"));
        assert_eq!(m.rtt(l, mo), Duration::from_millis(90));
        assert_eq!(m.rtt(mo, t), Duration::from_millis(150));
        assert_eq!(m.rtt(l, t), Duration::from_millis(230));
    }

    fn err(text: &str) -> RegionsError {
        parse(text).unwrap_err()
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let regions = "[[region]]\nname = \"a\"\n[[region]]\nname = \"b\"\n";
        assert!(matches!(err(""), RegionsError::NoRegions));
        assert!(
            matches!(err("[[region]]\nname = \"a\"\n[[region]]\nname = \"a\"\n"), RegionsError::DuplicateRegion(n) if n == "a")
        );
        assert!(matches!(err(regions), RegionsError::MissingPair(a, b) if a == "a" && b == "b"));
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"c\"]\nrtt_ms = 9\n"
        ));
        assert!(
            matches!(&e, RegionsError::UnknownRegion { name, .. } if name == "c"),
            "{e}"
        );
        assert!(e.to_string().contains("a, b"), "{e}");
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"b\"]\nrtt_ms = -9\n"
        ));
        assert!(
            matches!(
                e,
                RegionsError::Negative {
                    field: "rtt_ms",
                    ..
                }
            ),
            "{e}"
        );
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"b\"]\nrtt_ms = 9\njitter_ms = -1\n"
        ));
        assert!(
            matches!(
                e,
                RegionsError::Negative {
                    field: "jitter_ms",
                    ..
                }
            ),
            "{e}"
        );
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"b\"]\none_way_ms = [1, -1]\n"
        ));
        assert!(
            matches!(
                e,
                RegionsError::Negative {
                    field: "one_way_ms",
                    ..
                }
            ),
            "{e}"
        );
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"b\"]\nrtt_ms = 9\nloss_percent = 101\n"
        ));
        assert!(matches!(e, RegionsError::LossOver100 { .. }), "{e}");
        let e = err(&format!("{regions}[[pair]]\nbetween = [\"a\", \"b\"]\n"));
        assert!(matches!(e, RegionsError::NoDelay { .. }), "{e}");
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"b\"]\nrtt_ms = 9\none_way_ms = [1, 2]\n"
        ));
        assert!(matches!(e, RegionsError::Mismatch { .. }), "{e}");
        let e = err(&format!("{regions}[[pair]]\nbetween = [\"a\", \"b\"]\nrtt_ms = 9\n[[pair]]\nbetween = [\"b\", \"a\"]\nrtt_ms = 9\n"));
        assert!(matches!(e, RegionsError::DuplicatePair(_)), "{e}");
        let e = err(&format!(
            "{regions}[[pair]]\nbetween = [\"a\", \"b\"]\nrtt = 9\n"
        ));
        assert!(matches!(e, RegionsError::Syntax(_)), "{e}");
        assert!(e.to_string().contains("rtt"), "{e}");
    }
}
