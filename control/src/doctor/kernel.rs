//! Kernel checks: version-gated AF_XDP features, build options, JIT, BTF. Also reads the facts
//! the other checks share (release, kernel config, command line, online CPUs).

use std::collections::BTreeMap;

use super::{Finding, Root, Target, online_cpus};
use crate::cpulist::Cpus;

/// A kernel version (major, minor, patch).
pub type Version = (u32, u32, u32);

/// What the kernel features below need (mainline Linux releases).
const BPF_LINK_XDP: Version = (5, 9, 0);
const NEED_WAKEUP: Version = (5, 4, 0);
const PREFER_BUSY_POLL: Version = (5, 11, 0);
const MAX_TX_SKB_BUDGET: Version = (6, 17, 0);

/// Facts about the host every check group uses.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `uname -r`.
    pub release: Option<String>,
    /// Parsed from the release.
    pub version: Option<Version>,
    /// The kernel's build configuration and where it was read, if found.
    pub config: Option<(String, BTreeMap<String, String>)>,
    /// Kernel command line parameters (`key` → value; flags without `=` map to "").
    pub cmdline: BTreeMap<String, String>,
    /// The raw command line.
    pub cmdline_raw: String,
    /// Online CPUs.
    pub online: Cpus,
}

impl Facts {
    /// Reads them under `root`.
    pub fn read(root: &Root) -> Self {
        let release = root.read_trim("proc/sys/kernel/osrelease");
        let version = release.as_deref().and_then(parse_version);
        let config = release.as_deref().and_then(|r| {
            root.read_gz("proc/config.gz")
                .map(|s| ("/proc/config.gz".to_owned(), s))
                .or_else(|| {
                    let p = format!("boot/config-{r}");
                    root.read(&p).map(|s| (format!("/{p}"), s))
                })
                .map(|(p, s)| (p, parse_config(&s)))
        });
        let cmdline_raw = root.read_trim("proc/cmdline").unwrap_or_default();
        Self {
            release,
            version,
            config,
            cmdline: parse_cmdline(&cmdline_raw),
            cmdline_raw,
            online: online_cpus(root),
        }
    }

    /// A build option: `Some(true)` if `=y` or `=m`, `Some(false)` if unset, `None` if the
    /// configuration is unknown.
    pub fn kconfig(&self, name: &str) -> Option<bool> {
        let (_, c) = self.config.as_ref()?;
        Some(c.get(name).is_some_and(|v| v == "y" || v == "m"))
    }

    fn at_least(&self, v: Version) -> Option<bool> {
        self.version.map(|have| have >= v)
    }

    /// The highest CPU number.
    pub fn last_cpu(&self) -> usize {
        self.online.last().copied().unwrap_or(0)
    }
}

/// `6.18.44-fc-v669` → (6, 18, 44); `6.1.0-18-amd64` → (6, 1, 0).
pub fn parse_version(release: &str) -> Option<Version> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    let major = it.next()?.ok()?;
    let minor = it.next()?.ok()?;
    let patch = it.next().and_then(Result::ok).unwrap_or(0);
    Some((major, minor, patch))
}

/// `CONFIG_X=y` lines into a map (`# CONFIG_X is not set` lines are simply absent).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Kernel parameters, up to a bare `--` (what follows goes to init). A quoted value keeps its
/// spaces. The last occurrence of a key wins, as for most kernel parameters.
pub fn parse_cmdline(line: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut tokens = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    for t in tokens {
        if t == "--" {
            break;
        }
        match t.split_once('=') {
            Some((k, v)) => params.insert(k.to_owned(), v.to_owned()),
            None => params.insert(t, String::new()),
        };
    }
    params
}

fn ver(v: Version) -> String {
    format!("{}.{}", v.0, v.1)
}

/// The kernel checks.
pub fn check(root: &Root, f: &Facts, target: &Target) -> Vec<Finding> {
    let mut out = Vec::new();
    let rel = f.release.clone().unwrap_or_else(|| "unknown".into());
    let no_config = || {
        "kernel config not found (/proc/config.gz, /boot/config-RELEASE): cannot tell".to_owned()
    };
    let config_fix = "modprobe configs (exposes /proc/config.gz), or compare with the distribution's /boot/config-$(uname -r)";

    // Version: what isopathd cannot do without.
    out.push(match f.at_least(BPF_LINK_XDP) {
        Some(true) => Finding::ok("kernel.version", "kernel")
            .detail(format!("Linux {rel}"))
            .why(format!(
                "isopathd attaches XDP through BPF links (Linux {}), which the kernel removes when the daemon dies",
                ver(BPF_LINK_XDP)
            )),
        Some(false) => Finding::fail("kernel.version", "kernel")
            .detail(format!("Linux {rel} is older than {}", ver(BPF_LINK_XDP)))
            .why("isopathd attaches XDP through BPF links; without them a crashed daemon's program stays on the port")
            .fix(format!("boot a kernel >= {} (Debian 12: apt install linux-image-amd64)", ver(BPF_LINK_XDP))),
        None => Finding::warn("kernel.version", "kernel")
            .detail("no /proc/sys/kernel/osrelease: version unknown")
            .why("AF_XDP features are gated on the kernel version")
            .fix("uname -r"),
    });

    // BPF syscall and JIT: the XDP program itself.
    let jit = root.read_trim("proc/sys/net/core/bpf_jit_enable");
    out.push(match (f.kconfig("CONFIG_BPF_SYSCALL"), jit.as_deref()) {
        (Some(false), _) => Finding::fail("kernel.xdp", "kernel")
            .detail("built without CONFIG_BPF_SYSCALL: no BPF programs, no XDP")
            .why("isopathd's XDP program steers every frame into its socket")
            .fix("a kernel with CONFIG_BPF_SYSCALL=y (every distribution kernel has it)"),
        (_, Some("0")) if f.kconfig("CONFIG_BPF_JIT_ALWAYS_ON") != Some(true) => Finding::warn(
            "kernel.xdp",
            "kernel",
        )
        .detail("BPF JIT off (net.core.bpf_jit_enable = 0): the XDP program is interpreted")
        .why(
            "the XDP program runs once per received frame; interpreted it costs several times more",
        )
        .fix("sysctl -w net.core.bpf_jit_enable=1 (persist in /etc/sysctl.d/90-isopath.conf)"),
        (cfg, jit) => Finding::ok("kernel.xdp", "kernel")
            .detail(format!(
                "BPF syscall {}, JIT {}",
                match cfg {
                    Some(true) => "built in",
                    _ => "assumed (config unknown)",
                },
                match (jit, f.kconfig("CONFIG_BPF_JIT_ALWAYS_ON")) {
                    (_, Some(true)) => "always on",
                    (Some("1"), _) => "on",
                    (Some("2"), _) => "on (debug)",
                    _ => "state unknown",
                }
            ))
            .why("isopathd's XDP program steers every frame into its socket"),
    });

    // AF_XDP sockets.
    out.push(match f.kconfig("CONFIG_XDP_SOCKETS") {
        Some(true) => Finding::ok("kernel.af_xdp", "kernel")
            .detail("CONFIG_XDP_SOCKETS=y")
            .why("AF_XDP sockets carry every frame between the NIC queues and the workers"),
        Some(false) => Finding::fail("kernel.af_xdp", "kernel")
            .detail("built without CONFIG_XDP_SOCKETS: no AF_XDP sockets")
            .why("AF_XDP sockets carry every frame between the NIC queues and the workers")
            .fix("a kernel with CONFIG_XDP_SOCKETS=y"),
        None => Finding::warn("kernel.af_xdp", "kernel")
            .detail(no_config())
            .why("AF_XDP sockets carry every frame between the NIC queues and the workers")
            .fix(config_fix),
    });

    // need_wakeup: the rings say when the kernel must be kicked.
    out.push(match f.at_least(NEED_WAKEUP) {
        Some(true) => Finding::ok("kernel.need_wakeup", "kernel")
            .detail(format!("XDP_USE_NEED_WAKEUP (Linux {})", ver(NEED_WAKEUP)))
            .why("the workers make a syscall only when a ring asks for one"),
        _ => Finding::fail("kernel.need_wakeup", "kernel")
            .detail(format!("Linux {rel}: no XDP_USE_NEED_WAKEUP (needs {})", ver(NEED_WAKEUP)))
            .why("without it every TX burst costs a syscall and RX needs the kernel's NAPI on the worker core")
            .fix(format!("boot a kernel >= {}", ver(NEED_WAKEUP))),
    });

    // Preferred busy polling.
    let busy = match (
        f.kconfig("CONFIG_NET_RX_BUSY_POLL"),
        f.at_least(PREFER_BUSY_POLL),
    ) {
        (Some(true), Some(true)) => Some(true),
        (Some(false), _) | (_, Some(false)) => Some(false),
        _ => None,
    };
    let used = target.busy_poll_budget > 0;
    let busy_why = "rings.busy_poll_budget lets a worker run the driver's NAPI itself (SO_PREFER_BUSY_POLL) instead of waiting for softirq";
    out.push(match (busy, used) {
        (Some(true), _) => Finding::ok("kernel.busy_poll", "kernel")
            .detail(format!(
                "SO_PREFER_BUSY_POLL available (CONFIG_NET_RX_BUSY_POLL, Linux {}); {}",
                ver(PREFER_BUSY_POLL),
                if used { "used" } else { "not used (rings.busy_poll_budget = 0)" }
            ))
            .why(busy_why),
        (Some(false), true) => Finding::fail("kernel.busy_poll", "kernel")
            .detail(format!(
                "rings.busy_poll_budget = {} but the kernel has no preferred busy polling",
                target.busy_poll_budget
            ))
            .why(busy_why)
            .fix("set rings.busy_poll_budget = 0, or boot a kernel >= 5.11 with CONFIG_NET_RX_BUSY_POLL=y"),
        (Some(false), false) => Finding::ok("kernel.busy_poll", "kernel")
            .detail("no preferred busy polling; not used (rings.busy_poll_budget = 0)")
            .why(busy_why),
        (None, _) => Finding::warn("kernel.busy_poll", "kernel")
            .detail(no_config())
            .why(busy_why)
            .fix(config_fix),
    });

    // The copy-mode TX budget.
    out.push(match f.at_least(MAX_TX_SKB_BUDGET) {
        Some(true) => Finding::ok("kernel.tx_budget", "kernel")
            .detail(format!("XDP_MAX_TX_SKB_BUDGET (Linux {})", ver(MAX_TX_SKB_BUDGET)))
            .why("in copy mode one sendto may transmit a whole TX ring instead of 32 frames"),
        _ => Finding::warn("kernel.tx_budget", "kernel")
            .detail(format!(
                "Linux {rel}: no XDP_MAX_TX_SKB_BUDGET (needs {}): copy-mode TX sends 32 frames per sendto",
                ver(MAX_TX_SKB_BUDGET)
            ))
            .why("in copy mode (veth, drivers without zero-copy) each TX burst then costs more syscalls")
            .fix(format!("boot a kernel >= {} (optional: zero-copy ports are not affected)", ver(MAX_TX_SKB_BUDGET))),
    });

    // BTF.
    out.push(if root.exists("sys/kernel/btf/vmlinux") {
        Finding::ok("kernel.btf", "kernel")
            .detail("/sys/kernel/btf/vmlinux present")
            .why("bpftool shows the program's maps with their types; BTF-based tools work")
    } else {
        Finding::warn("kernel.btf", "kernel")
            .detail("no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF off)")
            .why("isopathd does not need it, but bpftool and CO-RE tracing tools used to debug the datapath do")
            .fix("a kernel with CONFIG_DEBUG_INFO_BTF=y (Debian's has it)")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_version("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse_version("6.1.0-18-amd64"), Some((6, 1, 0)));
        assert_eq!(parse_version("5.10"), Some((5, 10, 0)));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn cmdline_parses_up_to_the_init_arguments() {
        let c = parse_cmdline(
            "BOOT_IMAGE=/vmlinuz ro quiet isolcpus=domain,managed_irq,2-3 acpi=\"a b\" -- --init-arg x=1",
        );
        assert_eq!(c["isolcpus"], "domain,managed_irq,2-3");
        assert_eq!(c["quiet"], "");
        assert_eq!(c["acpi"], "a b");
        assert!(!c.contains_key("x"));
        assert!(!c.contains_key("--init-arg"));
    }

    #[test]
    fn config_lines_parse() {
        let c = parse_config("# CONFIG_X is not set\nCONFIG_XDP_SOCKETS=y\nCONFIG_HZ=\"250\"\n");
        assert_eq!(c.get("CONFIG_XDP_SOCKETS").map(String::as_str), Some("y"));
        assert_eq!(c.get("CONFIG_HZ").map(String::as_str), Some("250"));
        assert!(!c.contains_key("CONFIG_X"));
    }
}
