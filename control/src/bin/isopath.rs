//! `isopath`: the command-line client of `isopathd`.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use isopath_control::{client, doctor, topology};
use serde_json::Value;

/// Query and control a running isopathd.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The daemon's control socket.
    #[arg(
        short,
        long,
        default_value = "/run/isopath/isopathd.sock",
        global = true
    )]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ports, counters and workers.
    Status {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Per-port packet rates, one line per port per interval (plain lines, for logs and pipes).
    Rates {
        /// Interval between samples, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Number of intervals to print (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Packet captures on a port or a bond, written as pcap (read with `tcpdump -r`).
    Capture {
        #[command(subcommand)]
        cmd: CaptureCmd,
    },
    /// Ports: add an interface to the running datapath, or take one out.
    Port {
        #[command(subcommand)]
        cmd: PortCmd,
    },
    /// Bonds: status like /proc/net/bonding, planned switches.
    Bond {
        #[command(subcommand)]
        cmd: BondCmd,
    },
    /// Check that this host is ready for isopathd: kernel features, CPU isolation, each
    /// configured port's driver, queues, MTU, link and IRQs. Reads only; changes nothing.
    /// Exit status 1 if any check fails.
    Doctor {
        /// The daemon's configuration (ports, worker cores); default ROOT/etc/isopath/isopath.toml.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Read the host's /proc, /sys and /boot under this directory (tests use fixtures).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Workers: where they would run on this host, and why.
    Worker {
        #[command(subcommand)]
        cmd: WorkerCmd,
    },
    /// Flows in the workers' tables: counts, and records like `conntrack -L`.
    Flow {
        #[command(subcommand)]
        cmd: isopath_control::flows::FlowCmd,
    },
}

#[derive(Debug, Subcommand)]
enum WorkerCmd {
    /// The placement isopathd makes at start: topology (packages, NUMA nodes, cores,
    /// hyperthreads, caches, each port's NIC), isolated CPUs, each worker's CPU and queues, the
    /// housekeeping CPUs, and warnings with their fixes. Needs no daemon.
    Plan {
        /// Print one JSON document.
        #[arg(short = 'j', long)]
        json: bool,
        /// Read the host under this directory: its /proc, /sys and a topology.xml
        /// (`lstopo --of xml`) or topology.synthetic (tests use fixtures).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The daemon's configuration (ports, [workers]); default ROOT/etc/isopath/isopath.toml.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print this host's topology as hwloc XML instead (what `lstopo --of xml` writes:
        /// a fixture's topology.xml).
        #[arg(long, conflicts_with_all = ["json", "config"])]
        topology_xml: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CaptureCmd {
    /// Start capturing on a port or bond; its ports go promiscuous while it runs.
    Start {
        /// Port or bond.
        target: String,
        /// pcap file to write (made absolute).
        file: PathBuf,
        /// Which direction: in, out or both.
        #[arg(long, default_value = "both")]
        dir: String,
    },
    /// Stop the capture on a port or bond; flushes its file.
    Stop {
        /// Port or bond.
        target: String,
    },
    /// Running captures.
    List,
}

#[derive(Debug, Subcommand)]
enum PortCmd {
    /// Register an interface as a port while the daemon runs: its XDP program, a socket per RX
    /// queue on the workers' UMEMs (spare slots: workers.spare_queues). Its frames go nowhere
    /// until it joins a bond (`isopath bond add`).
    Add {
        /// The interface.
        ifname: String,
    },
    /// Unregister ports while the daemon runs (all or none): each leaves its bond, its
    /// captures stop, its XDP program is detached, its sockets close, and the frames they held
    /// return to their worker. Cross-connected ports cannot go.
    Del {
        /// The interfaces.
        #[arg(required = true)]
        ifnames: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BondCmd {
    /// Mode, active member, options, and per member: link, failures, MAC, counters; events.
    Show {
        /// Only this bond.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// How many recent events to print.
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
    /// Change a bond option at run time (primary, primary_reselect, miimon, updelay,
    /// downdelay, drain_ms, peer_notif_delay, num_grat_arp, num_unsol_na, reannounce,
    /// all_members_active, fail_over_mac; "none" clears primary).
    Set {
        /// The bond.
        bond: String,
        /// The option.
        option: String,
        /// Its new value.
        value: String,
    },
    /// Add a port to the bond at run time (any interface that is neither cross-connected nor
    /// another bond's member: one that is not a port yet is added as one first), or re-add a
    /// released member.
    Add {
        /// The bond.
        bond: String,
        /// The port.
        port: String,
    },
    /// Take a member out of the bond at run time (its frames are then dropped as no_output).
    Release {
        /// The bond.
        bond: String,
        /// The member.
        member: String,
    },
    /// Planned switch of the active member; loses no frame in either direction.
    Switch {
        /// The bond.
        bond: String,
        /// The member to make active.
        member: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::Doctor { config, root, json } = &args.cmd {
        return match doctor::run_cli(root, config.as_deref(), *json) {
            Ok(doctor::Status::Fail) => ExitCode::FAILURE,
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("isopath doctor: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Cmd::Worker {
        cmd:
            WorkerCmd::Plan {
                json,
                root,
                config,
                topology_xml,
            },
    } = &args.cmd
    {
        if *topology_xml {
            return match topology::machine::Machine::live_xml() {
                Ok(xml) => {
                    print!("{xml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("isopath worker plan: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        return match topology::run_cli(root, config.as_deref(), *json) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("isopath worker plan: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("isopath: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        // Handled in main: its exit status is the worst finding's.
        Cmd::Doctor { .. } | Cmd::Worker { .. } => unreachable!("handled in main"),
        Cmd::Flow { cmd } => isopath_control::flows::run_cli(&args.socket, &cmd)?,
        Cmd::Capture { cmd } => {
            let req = match cmd {
                CaptureCmd::Start { target, file, dir } => {
                    let file = std::path::absolute(&file)?;
                    let file = file.to_str().context("the capture path is not UTF-8")?;
                    if [&target, file, &dir]
                        .iter()
                        .any(|w| w.is_empty() || w.contains(char::is_whitespace))
                    {
                        anyhow::bail!("target, file and direction must be single words");
                    }
                    format!("capture start {target} {file} {dir}")
                }
                CaptureCmd::Stop { target } => format!("capture stop {target}"),
                CaptureCmd::List => "status".into(),
            };
            let v = client::request(&args.socket, &req)?;
            match v.get("capture") {
                Some(c) => println!("{}", serde_json::to_string_pretty(c)?),
                None => println!("{}", serde_json::to_string_pretty(&v["captures"])?),
            }
        }
        Cmd::Bond {
            cmd: BondCmd::Add { bond, port: name } | BondCmd::Release { bond, member: name },
        } if [&bond, &name]
            .iter()
            .any(|w| w.is_empty() || w.contains(char::is_whitespace)) =>
        {
            anyhow::bail!("bond and port names are single words");
        }
        Cmd::Port {
            cmd: PortCmd::Add { ifname },
        } => {
            if ifname.is_empty() || ifname.contains(char::is_whitespace) {
                anyhow::bail!("an interface name is a single word");
            }
            let v = client::request(&args.socket, &format!("port add {ifname}"))?;
            println!(
                "{ifname}: port added, {} queues, {} mode, XDP {}",
                u(&v, "queues"),
                v["bind"].as_str().unwrap_or("?"),
                v["xdp_mode"].as_str().unwrap_or("?")
            );
        }
        Cmd::Port {
            cmd: PortCmd::Del { ifnames },
        } => {
            if ifnames
                .iter()
                .any(|n| n.is_empty() || n.contains(char::is_whitespace))
            {
                anyhow::bail!("interface names are single words");
            }
            let v = client::request(&args.socket, &format!("port del {}", ifnames.join(" ")))?;
            println!(
                "{}: unregistered ({} sockets)",
                ifnames.join(", "),
                u(&v, "sockets")
            );
        }
        Cmd::Bond {
            cmd: BondCmd::Add { bond, port },
        } => {
            client::request(&args.socket, &format!("bond add {bond} {port}"))?;
            println!("{bond}: {port} added");
        }
        Cmd::Bond {
            cmd: BondCmd::Release { bond, member },
        } => {
            client::request(&args.socket, &format!("bond release {bond} {member}"))?;
            println!("{bond}: {member} released");
        }
        Cmd::Bond {
            cmd:
                BondCmd::Set {
                    bond,
                    option,
                    value,
                },
        } => {
            if [&bond, &option, &value]
                .iter()
                .any(|w| w.is_empty() || w.contains(char::is_whitespace))
            {
                anyhow::bail!("bond, option and value are single words");
            }
            client::request(&args.socket, &format!("bond set {bond} {option} {value}"))?;
            println!("{bond}: {option} = {value}");
        }
        Cmd::Bond {
            cmd: BondCmd::Switch { bond, member },
        } => {
            // Names travel as single words in the request line.
            if [&bond, &member]
                .iter()
                .any(|w| w.is_empty() || w.contains(char::is_whitespace))
            {
                anyhow::bail!("bond and member names are single words");
            }
            let v = client::request(&args.socket, &format!("bond switch {bond} {member}"))?;
            let changed = v["changed"].as_bool().unwrap_or(false);
            println!(
                "{bond}: active member {member}{}",
                if changed { "" } else { " (already)" }
            );
        }
        Cmd::Bond {
            cmd: BondCmd::Show { name, json, events },
        } => {
            let v = client::request(&args.socket, "status")?;
            let bonds: Vec<&Value> = v["bonds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| name.as_deref().is_none_or(|n| b["name"] == n))
                .collect();
            if let Some(n) = &name
                && bonds.is_empty()
            {
                anyhow::bail!("no bond named {n:?}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&bonds)?);
            } else {
                for b in bonds {
                    print_bond(b, &v, events);
                }
            }
        }
        Cmd::Status { json } => {
            let v = client::request(&args.socket, "status")?;
            if json {
                println!("{v}");
            } else {
                print_status(&v);
            }
        }
        Cmd::Rates { interval_ms, count } => {
            let interval = Duration::from_millis(interval_ms.max(10));
            // On a terminal one line is redrawn in place; in a pipe or a log, plain lines.
            let tty = std::io::stdout().is_terminal();
            let mut prev = client::request(&args.socket, "status")?;
            let mut n = 0;
            while count == 0 || n < count {
                std::thread::sleep(interval);
                let cur = client::request(&args.socket, "status")?;
                let line = rates_line(&prev, &cur).context("malformed status")?;
                if tty {
                    print!("\r\x1b[2K{line}");
                    std::io::stdout().flush()?;
                } else {
                    println!("{line}");
                }
                prev = cur;
                n += 1;
            }
            if tty {
                println!();
            }
        }
    }
    Ok(())
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn print_bond(b: &Value, status: &Value, events: usize) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let o = &b["options"];
    println!("Bond: {}", s(&b["name"]));
    println!("Bonding Mode: fault-tolerance (active-backup)");
    println!("Carrier: {}", s(&b["carrier"]));
    println!("Currently Active Member: {}", s(&b["active"]));
    println!(
        "Primary Member: {} (primary_reselect {})",
        s(&o["primary"]),
        s(&o["primary_reselect"])
    );
    println!(
        "MII Polling Interval (ms): {} (carrier events from rtnetlink)",
        o["miimon_ms"]
    );
    println!(
        "Up Delay (ms): {}  Down Delay (ms): {}",
        o["updelay_ms"], o["downdelay_ms"]
    );
    println!(
        "Peer Notification: num_grat_arp {} num_unsol_na {} delay {} ms, reannounce {}",
        o["num_grat_arp"], o["num_unsol_na"], o["peer_notif_delay_ms"], o["reannounce"]
    );
    println!(
        "fail_over_mac: {}  MAC: {}  all_members_active: {}",
        s(&o["fail_over_mac"]),
        s(&b["mac"]),
        o["all_members_active"]
    );
    println!(
        "Failovers: {}  Notifications: {}",
        b["failovers"], b["notifications"]
    );
    let addrs = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("Addresses: {}", addrs(&b["addresses"]));
    for v in b["vlans"].as_array().into_iter().flatten() {
        println!("VLAN {}: {}", v["id"], addrs(&v["addresses"]));
    }
    for m in b["members"].as_array().into_iter().flatten() {
        let name = s(&m["name"]);
        let port = status["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name.as_str()));
        println!();
        println!("Member Interface: {name} ({})", s(&m["state"]));
        println!("MII Status: {}", s(&m["link"]));
        println!("Speed: {} Mbps  Prio: {}", m["speed_mbps"], m["prio"]);
        println!("Link Failure Count: {}", m["link_failures"]);
        println!("Permanent HW addr: {}", s(&m["perm_mac"]));
        if let Some(p) = port {
            println!(
                "Queues: {}  rx {} tx {}  rx_drop_backup {}",
                p["queues"], p["rx_packets"], p["tx_packets"], p["drops"]["rx_drop_backup"]
            );
        }
    }
    let evs = b["events"].as_array().cloned().unwrap_or_default();
    println!();
    println!("Recent events:");
    for e in evs.iter().skip(evs.len().saturating_sub(events)) {
        let ns = e["unix_ns"].as_u64().unwrap_or(0);
        println!(
            "  {}.{:09} {} {} {}",
            ns / 1_000_000_000,
            ns % 1_000_000_000,
            s(&e["kind"]),
            s(&e["member"]),
            s(&e["detail"])
        );
    }
}

fn print_status(v: &Value) {
    println!(
        "isopathd pid {} uptime {} ms",
        u(v, "pid"),
        u(v, "uptime_ms")
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        println!(
            "port {} link {} queues {} bind {} xdp {}",
            p["name"].as_str().unwrap_or("?"),
            p["link"].as_str().unwrap_or("?"),
            u(p, "queues"),
            p["bind"].as_str().unwrap_or("-"),
            p["xdp_mode"].as_str().unwrap_or("-"),
        );
        println!(
            "    rx {} pkts {} bytes   tx {} pkts {} bytes",
            u(p, "rx_packets"),
            u(p, "rx_bytes"),
            u(p, "tx_packets"),
            u(p, "tx_bytes")
        );
        for (label, key) in [
            ("drops", "drops"),
            ("parse errors", "parse_errors"),
            ("classes", "classes"),
            ("kernel xsk", "xsk"),
        ] {
            let kv: Vec<String> = p[key]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
                .collect();
            println!("    {label}: {}", kv.join(", "));
        }
    }
    for w in v["workers"].as_array().into_iter().flatten() {
        let f = &w["frames"];
        println!(
            "worker core {} loops {} busy {}  frames total {} free {} in_fill {} in_tx {}",
            w["core"],
            u(w, "loops"),
            u(w, "busy_loops"),
            u(f, "total"),
            u(f, "free"),
            u(f, "in_fill"),
            u(f, "in_tx")
        );
    }
    let house: Vec<String> = v["placement"]["housekeeping_cores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    let t = &v["threads"];
    let offenders = t["offenders"].as_array().cloned().unwrap_or_default();
    println!(
        "housekeeping CPUs {}; threads {}, workers pinned {}, others on worker CPUs {}",
        house.join(","),
        u(t, "threads"),
        u(t, "workers_pinned"),
        offenders.len()
    );
    for o in &offenders {
        println!(
            "    thread {} ({}) may run on CPUs {}: {}",
            o["tid"],
            o["name"].as_str().unwrap_or("?"),
            o["allowed"].as_str().unwrap_or("?"),
            o["problem"].as_str().unwrap_or("?")
        );
    }
}

fn rates_line(prev: &Value, cur: &Value) -> Option<String> {
    let dt = (u(cur, "uptime_ms").saturating_sub(u(prev, "uptime_ms"))).max(1) as f64 / 1000.0;
    let mut line = String::new();
    for p in cur["ports"].as_array()? {
        let name = p["name"].as_str()?;
        let q = prev["ports"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == name)?;
        let rate = |k: &str| u(p, k).saturating_sub(u(q, k)) as f64 / dt;
        let drops: u64 = p["drops"]
            .as_object()?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        let pdrops: u64 = q["drops"]
            .as_object()?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        line.push_str(&format!(
            "{name}: rx {:>9.0} pps {:>8.2} Mb/s  tx {:>9.0} pps  drop {:>7.0} pps | ",
            rate("rx_packets"),
            rate("rx_bytes") * 8.0 / 1e6,
            rate("tx_packets"),
            drops.saturating_sub(pdrops) as f64 / dt
        ));
    }
    Some(line.trim_end_matches(" | ").to_owned())
}
