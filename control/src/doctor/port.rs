//! Port checks: driver and zero-copy, queues, MTU against the XDP frame limit, link, IRQs.

use super::{Finding, Root, Target, TargetPort, kernel::Facts, kernel::Version};
use crate::cpulist::{self, Cpus};

/// Bytes the kernel keeps in front of every XDP frame (`XDP_PACKET_HEADROOM`); in an AF_XDP
/// UMEM chunk the frame starts after it.
const XDP_PACKET_HEADROOM: u32 = 256;
/// Ethernet header plus one VLAN tag: what a frame adds to the MTU (the FCS is stripped).
const L2_OVERHEAD: u32 = 14 + 4;

/// In-tree drivers with AF_XDP zero-copy (`NETDEV_XDP_ACT_XSK_ZEROCOPY`), and the first
/// mainline release that has it where it is recent.
const ZERO_COPY_DRIVERS: &[(&str, Version)] = &[
    ("i40e", (4, 18, 0)),
    ("ixgbe", (4, 20, 0)),
    ("mlx5_core", (5, 3, 0)),
    ("ice", (5, 5, 0)),
    ("stmmaceth", (5, 13, 0)),
    ("igc", (5, 14, 0)),
    ("virtio_net", (6, 11, 0)),
    ("igb", (6, 14, 0)),
];

/// The driver behind an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// Driver name (`ixgbe`) or kind of virtual device (`veth`, `bridge`).
    pub name: String,
    /// Whether it is a virtual device (no `device` link in sysfs).
    pub virtual_dev: bool,
    /// The bus address (`0000:03:00.0`), for hardware.
    pub bus: Option<String>,
}

/// Reads the driver of `ifname`: `device/driver` for hardware, `uevent`'s DEVTYPE or the
/// sysfs layout for virtual devices.
pub fn driver(root: &Root, ifname: &str) -> Driver {
    let dir = format!("sys/class/net/{ifname}");
    if root.exists(&format!("{dir}/device")) {
        let uevent = root
            .read(&format!("{dir}/device/uevent"))
            .unwrap_or_default();
        let key = |k: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::to_owned)
        };
        let name = root
            .link_name(&format!("{dir}/device/driver"))
            .or_else(|| key("DRIVER="))
            .unwrap_or_else(|| "unknown".into());
        let bus = key("PCI_SLOT_NAME=").or_else(|| root.link_name(&format!("{dir}/device")));
        return Driver {
            name,
            virtual_dev: false,
            bus,
        };
    }
    let uevent = root.read(&format!("{dir}/uevent")).unwrap_or_default();
    let devtype = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .map(str::to_owned);
    let name = if let Some(t) = devtype {
        t
    } else if root.exists(&format!("{dir}/tun_flags")) {
        "tun".into()
    } else if root.read_trim(&format!("{dir}/type")).as_deref() == Some("772") {
        "loopback".into()
    } else if root.read_trim(&format!("{dir}/speed")).is_some() {
        // A virtual Ethernet device that reports a speed and has no DEVTYPE: veth.
        "veth".into()
    } else {
        "virtual".into()
    };
    Driver {
        name,
        virtual_dev: true,
        bus: None,
    }
}

/// The port checks.
pub fn check(root: &Root, f: &Facts, target: &Target, port: &TargetPort) -> Vec<Finding> {
    let name = port.name.as_str();
    let dir = format!("sys/class/net/{name}");
    if !root.exists(&dir) {
        return vec![
            Finding::fail("port.driver", name)
                .detail(format!("no interface {name} in this network namespace"))
                .why("isopathd refuses to start when a configured port is missing")
                .fix(
                    "check the name with `ip link`; for a port in a namespace run `ip netns exec NS isopath doctor ...`",
                ),
        ];
    }
    let drv = driver(root, name);
    vec![
        driver_finding(&drv, name),
        zero_copy(f, &drv, name),
        queues(root, target, port, &drv),
        mtu(root, target, &drv, name),
        link(root, name),
        irqs(root, f, target, &drv, name),
    ]
}

fn driver_finding(drv: &Driver, name: &str) -> Finding {
    Finding::ok("port.driver", name)
        .detail(match (&drv.bus, drv.virtual_dev) {
            (Some(bus), _) => format!("{} at {bus}", drv.name),
            (None, true) => format!("{} (virtual device)", drv.name),
            (None, false) => drv.name.clone(),
        })
        .why("the driver decides zero-copy, native XDP and the frame size limit")
}

fn zero_copy(f: &Facts, drv: &Driver, name: &str) -> Finding {
    let why = "zero-copy lets the NIC write frames straight into the UMEM; copy mode costs a copy and an skb per frame (about 1 Mpps per core)";
    let known = ZERO_COPY_DRIVERS.iter().find(|(d, _)| *d == drv.name);
    match known {
        _ if drv.virtual_dev => Finding::warn("port.zero_copy", name)
            .detail(format!(
                "{}: a virtual device has AF_XDP copy mode only",
                drv.name
            ))
            .why(why)
            .fix("expected on a lab; on an appliance use a NIC whose driver has zero-copy (ice, i40e, ixgbe, mlx5_core, igc)"),
        Some((_, since)) if f.version.is_some_and(|v| v < *since) => {
            Finding::warn("port.zero_copy", name)
                .detail(format!(
                    "{} has zero-copy from Linux {}.{} only",
                    drv.name, since.0, since.1
                ))
                .why(why)
                .fix(format!("boot a kernel >= {}.{}", since.0, since.1))
        }
        Some(_) => Finding::ok("port.zero_copy", name)
            .detail(format!("{} supports AF_XDP zero-copy", drv.name))
            .why(why),
        None => Finding::warn("port.zero_copy", name)
            .detail(format!(
                "{} is not known to support AF_XDP zero-copy: isopathd tries it and falls back to copy mode (logged at bind)",
                drv.name
            ))
            .why(why)
            .fix("set zero_copy = \"require\" in [rings] to refuse copy mode, or use a NIC with a zero-copy driver"),
    }
}

fn queues(root: &Root, target: &Target, port: &TargetPort, drv: &Driver) -> Finding {
    let name = port.name.as_str();
    let dir = format!("sys/class/net/{name}/queues");
    let entries = root.list(&dir);
    let rx = entries.iter().filter(|e| e.starts_with("rx-")).count() as u32;
    let tx = entries.iter().filter(|e| e.starts_with("tx-")).count() as u32;
    let workers = target.worker_cores.len().max(1) as u32;
    let combined = |n: u32| format!("ethtool -L {name} combined {n}");
    match port.queues {
        Some(q) if q < rx => Finding::fail("port.queues", name)
            .detail(format!(
                "{rx} RX queues but sockets on {q} only: frames hashed to queues {q}-{} are dropped (rx_drop_no_socket)",
                rx - 1
            ))
            .why("RSS spreads flows over every queue; the XDP program drops frames of queues without a socket")
            .fix(format!("{} (or remove `queues` from the port's config)", combined(q))),
        _ if rx > workers => Finding::warn("port.queues", name)
            .detail(format!(
                "{rx} RX / {tx} TX queues for {workers} worker core(s): each worker polls {} rings of {name}",
                rx.div_ceil(workers)
            ))
            .why("every ring a worker polls costs a check per loop and spreads each flow's frames thin; one queue per worker core is enough")
            .fix(if drv.virtual_dev {
                format!("{} (a veth's queues are chosen by the sender's CPU)", combined(workers))
            } else {
                combined(workers)
            }),
        _ => Finding::ok("port.queues", name)
            .detail(format!(
                "{rx} RX / {tx} TX queues for {workers} worker core(s)"
            ))
            .why("one socket per queue; frames on a queue without a socket would be dropped"),
    }
}

fn mtu(root: &Root, target: &Target, drv: &Driver, name: &str) -> Finding {
    let Some(mtu) = root
        .read_trim(&format!("sys/class/net/{name}/mtu"))
        .and_then(|s| s.parse::<u32>().ok())
    else {
        return Finding::warn("port.mtu", name)
            .detail("MTU unreadable")
            .why("a frame larger than a UMEM frame cannot be received")
            .fix(format!("ip link show dev {name}"));
    };
    let frame = mtu + L2_OVERHEAD;
    let umem_max = target.frame_size - XDP_PACKET_HEADROOM;
    // ixgbe checks `mtu + ETH_HLEN + ETH_FCS_LEN + VLAN_HLEN` against its RX buffer (3 KiB at
    // most) when a program is attached (ixgbe_main.c, ixgbe_xdp_setup) and refuses with EINVAL.
    let ixgbe_max = (drv.name == "ixgbe").then_some(3072 - 22);
    if let Some(max) = ixgbe_max
        && mtu > max
    {
        return Finding::fail("port.mtu", name)
            .detail(format!(
                "MTU {mtu}: ixgbe refuses an XDP program with frames larger than its 3 KiB RX buffer (MTU <= {max})"
            ))
            .why("attaching the XDP program fails (EINVAL) and isopathd does not start")
            .fix(format!(
                "ip link set dev {name} mtu {}",
                umem_max - L2_OVERHEAD
            ));
    }
    if frame > umem_max {
        return Finding::fail("port.mtu", name)
            .detail(format!(
                "MTU {mtu}: frames up to {frame} bytes, but a {}-byte UMEM frame holds {umem_max} after the XDP headroom",
                target.frame_size
            ))
            .why("larger frames are dropped by the kernel (rx_dropped in XDP_STATISTICS)")
            .fix(if target.frame_size < 4096 && mtu + L2_OVERHEAD <= 4096 - XDP_PACKET_HEADROOM {
                format!(
                    "ip link set dev {name} mtu {} (or frame_size = 4096 in [rings])",
                    umem_max - L2_OVERHEAD
                )
            } else {
                format!("ip link set dev {name} mtu {}", umem_max - L2_OVERHEAD)
            });
    }
    Finding::ok("port.mtu", name)
        .detail(format!(
            "MTU {mtu}: frames up to {frame} bytes fit a {}-byte UMEM frame ({umem_max} after the XDP headroom)",
            target.frame_size
        ))
        .why("a frame larger than a UMEM frame cannot be received")
}

fn link(root: &Root, name: &str) -> Finding {
    let dir = format!("sys/class/net/{name}");
    let oper = root
        .read_trim(&format!("{dir}/operstate"))
        .unwrap_or_else(|| "unknown".into());
    let admin_up = root
        .read_trim(&format!("{dir}/flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .map(|f| f & 1 != 0);
    let why = "frames sent to a port without link are dropped (tx_drop_link_down)";
    match (oper.as_str(), admin_up) {
        ("up", _) => Finding::ok("port.link", name)
            .detail("link up")
            .why(why),
        (_, Some(false)) => Finding::warn("port.link", name)
            .detail(format!("administratively down (operstate {oper})"))
            .why(why)
            .fix(format!("ip link set dev {name} up")),
        _ => Finding::warn("port.link", name)
            .detail(format!("no carrier (operstate {oper})"))
            .why(why)
            .fix(format!(
                "check the cable or the peer; `ip link show dev {name}` and `ethtool {name}` show the link"
            )),
    }
}

/// An interrupt line: number and name (the last column of `/proc/interrupts`).
fn interrupt_names(root: &Root) -> Vec<(u32, String)> {
    root.read("proc/interrupts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (irq, rest) = l.trim_start().split_once(':')?;
            let irq = irq.parse().ok()?;
            Some((irq, rest.split_whitespace().last()?.to_owned()))
        })
        .collect()
}

/// The IRQs of a port: its PCI function's MSI vectors (`device/msi_irqs`), else the lines of
/// `/proc/interrupts` named after the interface or its device (`eth2-TxRx-0`, `virtio2-input.0`).
fn port_irqs(root: &Root, name: &str) -> Vec<(u32, String)> {
    let dir = format!("sys/class/net/{name}/device");
    let names = interrupt_names(root);
    let label = |irq: u32| {
        names
            .iter()
            .find(|(n, _)| *n == irq)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    let msi: Vec<u32> = root
        .list(&format!("{dir}/msi_irqs"))
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if !msi.is_empty() {
        let mut v: Vec<(u32, String)> = msi.into_iter().map(|i| (i, label(i))).collect();
        v.sort();
        return v;
    }
    let dev = root.link_name(&dir);
    names
        .into_iter()
        .filter(|(_, n)| {
            n == name
                || n.starts_with(&format!("{name}-"))
                || n.contains(&format!("-{name}-"))
                || dev
                    .as_ref()
                    .is_some_and(|d| n.starts_with(&format!("{d}-")))
        })
        .collect()
}

fn irqs(root: &Root, f: &Facts, target: &Target, drv: &Driver, name: &str) -> Finding {
    let why = "a queue's interrupt and the softirq it raises run on the CPUs in its affinity; on a worker core they preempt the poll loop";
    if drv.virtual_dev {
        return Finding::ok("port.irqs", name)
            .detail("no IRQs (virtual device: its receive work runs on the sending CPU)")
            .why(why);
    }
    let irqs = port_irqs(root, name);
    if irqs.is_empty() {
        return Finding::warn("port.irqs", name)
            .detail(
                "no IRQ found for the port (no device/msi_irqs, no named line in /proc/interrupts)",
            )
            .why(why)
            .fix(format!("grep {name} /proc/interrupts"));
    }
    let workers = &target.worker_cores;
    let on_workers: Vec<(u32, String, Cpus)> = irqs
        .iter()
        .filter_map(|(irq, label)| {
            let aff = root
                .read(&format!("proc/irq/{irq}/smp_affinity_list"))
                .and_then(|s| cpulist::parse(&s, Some(f.last_cpu())).ok())?;
            (!aff.is_disjoint(workers)).then(|| (*irq, label.clone(), aff))
        })
        .collect();
    if on_workers.is_empty() {
        return Finding::ok("port.irqs", name)
            .detail(format!(
                "{} IRQs, none on the worker cores {}",
                irqs.len(),
                cpulist::format(workers)
            ))
            .why(why);
    }
    let housekeeping: Cpus = f.online.difference(workers).copied().collect();
    let shown: Vec<String> = on_workers
        .iter()
        .take(4)
        .map(|(irq, label, aff)| format!("{irq} {label} -> {}", cpulist::format(aff)))
        .collect();
    let more = on_workers.len() - shown.len();
    let list: Vec<String> = on_workers.iter().map(|(i, _, _)| i.to_string()).collect();
    Finding::warn("port.irqs", name)
        .detail(format!(
            "{} of {} IRQs can fire on worker cores: {}{}",
            on_workers.len(),
            irqs.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
        .why(why)
        .fix(format!(
            "for i in {}; do echo {} > /proc/irq/$i/smp_affinity_list; done (stop irqbalance first, or it moves them back)",
            list.join(" "),
            cpulist::format(&housekeeping)
        ))
}
