//! `isopath`: the command-line client of `isopathd`.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use isopath_control::{
    client::Client,
    doctor,
    nlserver::cli as nlcli,
    request::{
        CaptureReply, MemberChanged, OptionSet, PortAdded, PortsRemoved, Reloaded, Request,
        Switched,
    },
    status::{BondStatus, render},
    topology,
};

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
    /// Read the daemon's configuration file again and apply what can change live (bond
    /// options, flow timeouts and strictness, metrics, IPFIX, ports added or removed), all of
    /// it or nothing; as `systemctl reload isopath` (SIGHUP) does.
    Reload,
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
    /// Links (ports and bonds) as `ip link` shows them, read over the netlink-format socket
    /// (the control socket's path with `.nl` appended).
    Link {
        #[command(subcommand)]
        cmd: LinkCmd,
    },
    /// Events as they happen, like `ip monitor`: links (registered, up, down, gone) and bond
    /// events (member link, active changed, ...), over the netlink-format socket.
    Monitor {
        /// Which: links, bonds, flows (root or the admin group) or all (links and bonds).
        #[arg(default_value = "all")]
        what: String,
        /// Prefix each event with its time.
        #[arg(short = 't', long)]
        timestamp: bool,
        /// Stop after this many events (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Flows in the workers' tables: counts, and records like `conntrack -L`.
    Flow {
        #[command(subcommand)]
        cmd: isopath_control::flows::FlowCmd,
    },
}

#[derive(Debug, Subcommand)]
enum LinkCmd {
    /// Every link, or one: index, flags, kind, bond, state, queues, bind and XDP modes.
    Show {
        /// Only this link.
        dev: Option<String>,
        /// Counters too (as `ip -s link`).
        #[arg(short = 's', long)]
        stats: bool,
        /// Print JSON.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Register an interface as a port (`port add` over the netlink-format socket).
    Add {
        /// The interface.
        dev: String,
    },
    /// Unregister ports, all or none (`port del` over the netlink-format socket).
    Del {
        /// The links.
        #[arg(required = true)]
        devs: Vec<String>,
    },
    /// `link set DEV promisc on|off`: the operator's promiscuity (counted once however often
    /// it is repeated; one `off` undoes it; captures count on their own).
    Set {
        /// The link.
        dev: String,
        /// `promisc`.
        what: String,
        /// `on` or `off`.
        value: String,
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
    let client = Client::new(&args.socket);
    match args.cmd {
        // Handled in main: its exit status is the worst finding's.
        Cmd::Doctor { .. } | Cmd::Worker { .. } => unreachable!("handled in main"),
        Cmd::Flow { cmd } => isopath_control::flows::run_cli(&args.socket, &cmd)?,
        Cmd::Monitor {
            what,
            timestamp,
            count,
        } => {
            use isopath_proto::msg::Group;
            let groups = match what.as_str() {
                "links" => Group::Links.mask(),
                "bonds" => Group::Bonds.mask(),
                "flows" => Group::Flows.mask(),
                "all" => Group::Links.mask() | Group::Bonds.mask(),
                other => anyhow::bail!("monitor {other:?}: expected links, bonds, flows or all"),
            };
            let mut nl = args.socket.into_os_string();
            nl.push(".nl");
            nlcli::monitor(
                std::path::Path::new(&nl),
                groups,
                timestamp,
                count,
                &mut std::io::stdout(),
            )?;
        }
        Cmd::Link { cmd } => {
            let mut nl = args.socket.into_os_string();
            nl.push(".nl");
            let nl = std::path::Path::new(&nl);
            let (dev, stats, json) = match cmd {
                LinkCmd::Show { dev, stats, json } => (dev, stats, json),
                LinkCmd::Add { dev } => {
                    let add = isopath_proto::msg::LinkAdd {
                        name: dev.clone(),
                        kind: None,
                    };
                    nlcli::change(nl, &isopath_proto::msg::Request::AddLink(add))?;
                    println!("{dev}: port added");
                    return Ok(());
                }
                LinkCmd::Del { devs } => {
                    let del = isopath_proto::msg::LinkDel {
                        names: devs.clone(),
                    };
                    nlcli::change(nl, &isopath_proto::msg::Request::DelLink(del))?;
                    println!("{}: unregistered", devs.join(", "));
                    return Ok(());
                }
                LinkCmd::Set { dev, what, value } => {
                    let on = match (what.as_str(), value.as_str()) {
                        ("promisc", "on") => true,
                        ("promisc", "off") => false,
                        _ => anyhow::bail!("expected: link set DEV promisc on|off"),
                    };
                    let set = isopath_proto::msg::LinkSet::named(&dev)
                        .with_flag(isopath_proto::attrs::IFF_PROMISC, on);
                    nlcli::change(nl, &isopath_proto::msg::Request::SetLink(set))?;
                    println!("{dev}: promisc {value}");
                    return Ok(());
                }
            };
            let links = nlcli::links(nl, dev.as_deref(), stats)?;
            if json {
                let v: Vec<nlcli::LinkJson> = links.iter().map(Into::into).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                print!("{}", nlcli::render(&links, stats));
            }
        }
        Cmd::Capture { cmd } => {
            let req = match cmd {
                CaptureCmd::Start { target, file, dir } => {
                    let file = std::path::absolute(&file)?;
                    let file = file.to_str().context("the capture path is not UTF-8")?;
                    let req = Request::CaptureStart {
                        target,
                        file: file.to_owned(),
                        dir,
                    };
                    if !req.is_sendable() {
                        anyhow::bail!("target, file and direction must be single words");
                    }
                    req
                }
                CaptureCmd::Stop { target } => Request::CaptureStop(target),
                CaptureCmd::List => {
                    let captures = client.status()?.captures;
                    println!("{}", serde_json::to_string_pretty(&captures)?);
                    return Ok(());
                }
            };
            let r: CaptureReply = client.call(&req)?;
            println!("{}", serde_json::to_string_pretty(&r.capture)?);
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
            let req = Request::PortAdd(ifname.clone());
            if !req.is_sendable() {
                anyhow::bail!("an interface name is a single word");
            }
            let r: PortAdded = client.call(&req)?;
            println!(
                "{ifname}: port added, {} queues, {} mode, XDP {}",
                r.queues, r.bind, r.xdp_mode
            );
        }
        Cmd::Reload => {
            let r: Reloaded = client.call(&Request::Reload)?;
            if r.applied.is_empty() {
                println!("{}: reloaded, nothing changed", r.config);
            } else {
                println!("{}: reloaded", r.config);
                for line in &r.applied {
                    println!("    {line}");
                }
            }
        }
        Cmd::Port {
            cmd: PortCmd::Del { ifnames },
        } => {
            let req = Request::PortDel(ifnames.clone());
            if !req.is_sendable() {
                anyhow::bail!("interface names are single words");
            }
            let r: PortsRemoved = client.call(&req)?;
            println!(
                "{}: unregistered ({} sockets)",
                ifnames.join(", "),
                r.sockets
            );
        }
        Cmd::Bond {
            cmd: BondCmd::Add { bond, port },
        } => {
            let _: MemberChanged = client.call(&Request::BondAdd {
                bond: bond.clone(),
                port: port.clone(),
            })?;
            println!("{bond}: {port} added");
        }
        Cmd::Bond {
            cmd: BondCmd::Release { bond, member },
        } => {
            let _: MemberChanged = client.call(&Request::BondRelease {
                bond: bond.clone(),
                port: member.clone(),
            })?;
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
            let req = Request::BondSet {
                bond: bond.clone(),
                option: option.clone(),
                value: value.clone(),
            };
            if !req.is_sendable() {
                anyhow::bail!("bond, option and value are single words");
            }
            let _: OptionSet = client.call(&req)?;
            println!("{bond}: {option} = {value}");
        }
        Cmd::Bond {
            cmd: BondCmd::Switch { bond, member },
        } => {
            // Names travel as single words in the request line.
            let req = Request::BondSwitch {
                bond: bond.clone(),
                member: member.clone(),
            };
            if !req.is_sendable() {
                anyhow::bail!("bond and member names are single words");
            }
            let r: Switched = client.call(&req)?;
            println!(
                "{bond}: active member {member}{}",
                if r.changed { "" } else { " (already)" }
            );
        }
        Cmd::Bond {
            cmd: BondCmd::Show { name, json, events },
        } => {
            let v = client.status()?;
            let bonds: Vec<&BondStatus> = v
                .bonds
                .iter()
                .filter(|b| name.as_deref().is_none_or(|n| b.name == n))
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
                    print!("{}", render::bond(b, &v, events));
                }
            }
        }
        Cmd::Status { json } => {
            let v = client.status()?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                print!("{}", render::status(&v));
            }
        }
        Cmd::Rates { interval_ms, count } => {
            let interval = Duration::from_millis(interval_ms.max(10));
            // On a terminal one line is redrawn in place; in a pipe or a log, plain lines.
            let tty = std::io::stdout().is_terminal();
            let mut prev = client.status()?;
            let mut n = 0;
            while count == 0 || n < count {
                std::thread::sleep(interval);
                let cur = client.status()?;
                let line = render::rates_line(&prev, &cur).context("malformed status")?;
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
