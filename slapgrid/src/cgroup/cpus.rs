//! CPU lists as the kernel writes them (`0-3,6,8-9`), and how the machine's CPUs are
//! split between the reserved and the shared partitions.

/// More CPUs than any machine has: a list naming more is refused rather than expanded.
const MAX_CPUS: u32 = 1 << 16;

/// The CPUs of a list (`0-3,6`), sorted and without repeats; `None` if it is not one.
pub fn parse(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if a > b || b >= MAX_CPUS {
            return None;
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// The list of `cpus` (sorted), ranges folded: `[0, 1, 2, 5]` is `0-2,5`.
pub fn format(cpus: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// `(reserved, shared)`: the reserved partitions' quotas together (`held`, hundredths
/// of a CPU) buy whole CPUs, the last of `all`, that the shared partitions no longer
/// run on; the shared ones keep at least one CPU. Without a reserved quota, or on a
/// single CPU, both classes run everywhere (weights alone then favour the reserved).
pub fn split(all: &[u32], held: u64) -> (Vec<u32>, Vec<u32>) {
    if held == 0 || all.len() < 2 {
        return (all.to_vec(), all.to_vec());
    }
    let wanted = usize::try_from(held.div_ceil(100)).unwrap_or(usize::MAX);
    let reserved = wanted.clamp(1, all.len() - 1);
    let (shared, mine) = all.split_at(all.len() - reserved);
    (mine.to_vec(), shared.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_fold_as_the_kernel_writes_them() {
        assert_eq!(parse("0-3,6,8-9\n"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse("1"), Some(vec![1]));
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("3,1-2,2"), Some(vec![1, 2, 3]));
        assert_eq!(format(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(format(&[5]), "5");
        assert_eq!(format(&[]), "");
        for bad in ["a", "3-1", "1-", "-1", "0-4294967295", "1;2", "0-70000"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reserved_quotas_buy_whole_cpus_and_the_shared_keep_one() {
        let all: Vec<u32> = (0..8).collect();
        // No reservation: everybody everywhere.
        assert_eq!(split(&all, 0), (all.clone(), all.clone()));
        // Half a CPU reserved buys one; 150 hundredths buy two.
        assert_eq!(split(&all, 50), (vec![7], (0..7).collect()));
        assert_eq!(split(&all, 150), (vec![6, 7], (0..6).collect()));
        // More than the machine: the shared partitions keep CPU 0.
        assert_eq!(split(&all, 10_000), ((1..8).collect(), vec![0]));
        // One CPU cannot be split.
        assert_eq!(split(&[0], 50), (vec![0], vec![0]));
        // A cpuset with holes splits what it has.
        assert_eq!(split(&[0, 2, 4], 100), (vec![4], vec![0, 2]));
    }
}
