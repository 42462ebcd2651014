//! The process metrics every Prometheus client library exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` at each scrape.

use super::text::Family;

/// What `/proc/self/stat` says of the process (the fields the metrics need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// User and system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size, bytes.
    pub vsize: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself: the fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is rest's first; field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// `btime` of `/proc/stat`: boot time, seconds since the Unix epoch.
pub(crate) fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends the process families; a file that cannot be read leaves its families out.
pub fn families(out: &mut Vec<Family>) {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    if let Some(s) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
    {
        out.push(
            Family::counter("process_cpu_seconds", "User and system CPU time, seconds.")
                .with(&[], s.cpu_ticks as f64 / ticks),
        );
        out.push(
            Family::gauge("process_resident_memory_bytes", "Resident memory, bytes.")
                .with(&[], s.rss_pages * rustix::param::page_size() as u64),
        );
        out.push(
            Family::gauge("process_virtual_memory_bytes", "Virtual memory, bytes.")
                .with(&[], s.vsize),
        );
        if let Some(bt) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_btime)
        {
            out.push(
                Family::gauge(
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch, seconds.",
                )
                .with(&[], bt as f64 + s.start_ticks as f64 / ticks),
            );
        }
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        out.push(
            Family::gauge("process_open_fds", "Open file descriptors.").with(&[], d.count() as u64),
        );
    }
    if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        out.push(
            Family::gauge(
                "process_max_fds",
                "Most file descriptors the process may open.",
            )
            .with(&[], max),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A real line (isopathd, 6.1 kernel), its name changed to hold ") (" and spaces.
        let line = "4242 (iso) (path d) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    37 12 0 0 20 0 5 0 8123 1234567168 2560 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                cpu_ticks: 49,
                start_ticks: 8123,
                vsize: 1_234_567_168,
                rss_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let text = "cpu  1 2 3 4\nintr 5\nctxt 77\nbtime 1764720000\nprocesses 9\n";
        assert_eq!(parse_btime(text), Some(1_764_720_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn this_process_has_its_families() {
        let mut f = Vec::new();
        families(&mut f);
        let names: Vec<&str> = f.iter().map(Family::name).collect();
        for n in [
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(names.contains(&n), "{n} missing: {names:?}");
        }
        let rss = f
            .iter()
            .find(|x| x.name() == "process_resident_memory_bytes")
            .unwrap();
        // A test process holds at least a megabyte.
        assert!(
            matches!(rss.samples()[0].value(), crate::metrics::Value::Int(v) if v > 1 << 20),
            "{rss:?}"
        );
    }
}
