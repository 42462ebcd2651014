//! The kernel's CPU list format, as in `/sys/devices/system/cpu/online`, `isolcpus=` and
//! `/proc/irq/N/smp_affinity_list`: comma-separated CPUs and ranges, e.g. `0-3,8,10-15:2/4`.
//!
//! The grammar is the kernel's `bitmap_parselist()` (lib/bitmap-str.c): `N`, `A-B`, and
//! `A-B:used/group` (in every group of `group` CPUs from `A`, the first `used`); since 5.10 the
//! letter `N` stands for the last CPU (`nr_cpu_ids - 1`), in which case `last` must be given.
//! `all` is also accepted on the command line (`nohz_full=all`, `rcu_nocbs=all`).

use std::collections::BTreeSet;

/// A set of CPU numbers.
pub type Cpus = BTreeSet<usize>;

/// Parses a CPU list. `last` is the highest CPU number, for `N` and `all`.
///
/// # Errors
/// The list is malformed, with the offending part.
pub fn parse(list: &str, last: Option<usize>) -> Result<Cpus, String> {
    let list = list.trim();
    let mut cpus = Cpus::new();
    if list.is_empty() {
        return Ok(cpus);
    }
    let num = |s: &str| -> Result<usize, String> {
        if s == "N" {
            return last.ok_or_else(|| format!("{list:?}: `N` needs the number of CPUs"));
        }
        s.parse()
            .map_err(|_| format!("{list:?}: {s:?} is not a CPU number"))
    };
    for part in list.split(',') {
        if part == "all" {
            let last = last.ok_or_else(|| format!("{list:?}: `all` needs the number of CPUs"))?;
            cpus.extend(0..=last);
            continue;
        }
        let (range, groups) = match part.split_once(':') {
            Some((r, g)) => (r, Some(g)),
            None => (part, None),
        };
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let a = num(range)?;
                (a, a)
            }
        };
        if a > b {
            return Err(format!("{list:?}: range {range:?} is reversed"));
        }
        let (used, size) = match groups {
            None => (1, 1),
            Some(g) => {
                let (u, s) = g
                    .split_once('/')
                    .ok_or_else(|| format!("{list:?}: {g:?} is not used/group"))?;
                let (u, s) = (num(u)?, num(s)?);
                if u == 0 || s == 0 || u > s {
                    return Err(format!("{list:?}: bad group {g:?}"));
                }
                (u, s)
            }
        };
        cpus.extend((a..=b).filter(|c| (c - a) % size < used));
    }
    Ok(cpus)
}

/// Formats a set back into the shortest list (`0-3,8`).
pub fn format(cpus: &Cpus) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(a) = it.next() {
        let mut b = a;
        while it.peek() == Some(&(b + 1)) {
            b += 1;
            it.next();
        }
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    out.join(",")
}

/// The online CPUs of the running system (`/sys/devices/system/cpu/online`). Unlike
/// `std::thread::available_parallelism`, this does not shrink with the process's affinity mask
/// (systemd's `CPUAffinity=`, `taskset`), which must not hide the worker cores.
pub fn online() -> Option<Cpus> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse(&s, None).ok().filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> Cpus {
        v.iter().copied().collect()
    }

    #[test]
    fn lists_parse_like_the_kernel() {
        let cases: &[(&str, Option<usize>, &[usize])] = &[
            ("", None, &[]),
            ("0", None, &[0]),
            ("0-3", None, &[0, 1, 2, 3]),
            ("1,3,5-6\n", None, &[1, 3, 5, 6]),
            ("0-15:2/4", None, &[0, 1, 4, 5, 8, 9, 12, 13]),
            ("2-N", Some(5), &[2, 3, 4, 5]),
            ("all", Some(3), &[0, 1, 2, 3]),
        ];
        for &(list, last, want) in cases {
            assert_eq!(parse(list, last), Ok(set(want)), "{list:?}");
        }
        for bad in ["3-1", "x", "1-", "0-7:0/4", "0-7:5/4", "N"] {
            assert!(parse(bad, None).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sets_format_as_short_lists() {
        assert_eq!(format(&set(&[0, 1, 2, 3, 8, 10, 11])), "0-3,8,10-11");
        assert_eq!(format(&set(&[5])), "5");
        assert_eq!(format(&Cpus::new()), "");
    }
}
