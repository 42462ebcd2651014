//! The daemon's TOML configuration, and its conversion into a validated [`Plan`].
//!
//! The file is read with `deny_unknown_fields` (a misspelt key is an error, not a silent
//! default), then every value is checked once, before anything touches an interface: a bad ring
//! size, a missing interface or a frame too small is refused with the field's name.

use std::{collections::BTreeMap, path::Path};

use isopath_datapath::{
    params::{Burst, FrameSize, ParamError, RingParams, RingSize, XdpMode, ZeroCopy},
    xsk::xdp::MAX_QUEUES,
};
use serde::Deserialize;

use crate::host;

/// Default of `workers.spare_queues`: room for one two-queue port to join at run time.
pub const DEFAULT_SPARE_QUEUES: u32 = 2;
/// Most spare sockets a worker reserves.
pub const MAX_SPARE_QUEUES: u32 = 64;

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Ring and socket defaults for every port.
    #[serde(default)]
    pub rings: RingConfig,
    /// Worker threads.
    #[serde(default)]
    pub workers: WorkerConfig,
    /// The ports (interfaces) the datapath owns.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// Active-backup bonds over ports.
    #[serde(default, rename = "bond")]
    pub bonds: Vec<BondConfig>,
    /// L2 cross-connects: a wire between two ports, or a port and a bond.
    #[serde(default, rename = "cross_connect")]
    pub cross_connects: Vec<CrossConnectConfig>,
    /// How frames are understood on the way through.
    #[serde(default)]
    pub flows: FlowsConfig,
    /// IPFIX flow export (`[ipfix]`); absent: off.
    pub ipfix: Option<crate::ipfix::IpfixConfig>,
    /// The Prometheus endpoint (no section: off).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`: the Prometheus endpoint, `http://LISTEN/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:PORT` to listen on (default `127.0.0.1:9469`).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9469".to_owned()
}

impl MetricsConfig {
    /// The address to listen on.
    ///
    /// # Errors
    /// `metrics.listen` is not `IP:PORT`.
    pub fn addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            field(
                "metrics.listen",
                format!(
                    "{:?}: expected IP:PORT (e.g. \"127.0.0.1:9469\", \"[::1]:9469\")",
                    self.listen
                ),
            )
        })
    }
}

pub use crate::flows_config::FlowsConfig;

/// `[[bond]]`: an active-backup bond (Linux bonding mode 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BondConfig {
    /// The bond's name (used in `[[cross_connect]]` and by the CLI).
    pub name: String,
    /// Member ports (each also a `[[port]]`), in order.
    pub members: Vec<String>,
    /// Only "active-backup".
    pub mode: Option<String>,
    /// Periodic carrier check in ms, behind rtnetlink events (default 10; 0: off).
    pub miimon: Option<u64>,
    /// ms a member's carrier must stay up before it counts (default 0).
    pub updelay: Option<u64>,
    /// ms a member's carrier must stay down before it counts (default 0).
    pub downdelay: Option<u64>,
    /// The preferred member.
    pub primary: Option<String>,
    /// "always" (default), "better" or "failure".
    pub primary_reselect: Option<String>,
    /// Accept frames received on backup members too (default false).
    pub all_members_active: Option<bool>,
    /// ms a planned switch keeps accepting frames on the old active member (default 500).
    pub drain_ms: Option<u64>,
    /// Per-member priority when choosing a new active member (higher wins; default 0).
    #[serde(default)]
    pub prio: BTreeMap<String, i32>,
    /// Per-member speed in Mb/s for `primary_reselect = "better"` where the NIC cannot report
    /// one (veth reports none; default 10000).
    #[serde(default)]
    pub speed: BTreeMap<String, u32>,
    /// The appliance's own addresses on the bond ("198.18.0.10", "2001:2::10"): announced by
    /// gratuitous ARP / unsolicited NA after every change of active member.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// VLANs on the bond with the appliance's addresses on each (`[[bond.vlan]]`): announced
    /// per VLAN, tagged, after every change of active member, and answered (ARP, NS, echo) on
    /// their VLAN.
    #[serde(default)]
    pub vlan: Vec<VlanConfig>,
    /// The bond's MAC ("02:..."); default: the first member's.
    pub mac: Option<String>,
    /// "none" (default), "active" or "follow", as in Linux.
    pub fail_over_mac: Option<String>,
    /// Gratuitous ARPs per own IPv4 address after a change (default 1; 0..=255).
    pub num_grat_arp: Option<u32>,
    /// Unsolicited NAs per own IPv6 address after a change (default 1; 0..=255).
    pub num_unsol_na: Option<u32>,
    /// ms between repeated notifications (default 0: 10 ms apart).
    pub peer_notif_delay: Option<u64>,
    /// Re-announce the MACs seen behind the bond after a change (default true).
    pub reannounce: Option<bool>,
    /// Entries of the seen-MAC table (default 256, at most 65536).
    pub reannounce_table: Option<usize>,
    /// Seconds after which a seen MAC is no longer re-announced (default 300).
    pub reannounce_max_age: Option<u16>,
    /// ARP monitor period in ms (0 or absent: carrier monitoring). Needs an IPv4 address in
    /// `addresses` (the probes' sender) and at least one `arp_ip_target`.
    pub arp_interval: Option<u64>,
    /// ARP monitor targets (at most 16).
    #[serde(default)]
    pub arp_ip_target: Vec<String>,
    /// IPv6 monitor targets, probed with neighbour solicitations (at most 16; needs an IPv6
    /// address in `addresses`).
    #[serde(default)]
    pub ns_ip6_target: Vec<String>,
    /// "none" (default), "active", "backup" or "all".
    pub arp_validate: Option<String>,
    /// "any" (default) or "all".
    pub arp_all_targets: Option<String>,
    /// Intervals without proof before a member is down (default 2, 1..=255).
    pub arp_missed_max: Option<u32>,
    /// Link-state tracking: while no member is up, the port cross-connected to the bond is set
    /// administratively down, so the other side sees carrier loss too (default false).
    pub link_state_tracking: Option<bool>,
}

/// `[[bond.vlan]]`: an 802.1Q VLAN over the bond.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    /// VLAN id, 1..=4094.
    pub id: u16,
    /// The appliance's own addresses on this VLAN.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Most VLANs per bond: a change of active member announces every VLAN's addresses at once,
/// and the announcements must fit the bond's mailbox.
pub const MAX_VLANS: usize = 64;

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Path of the control socket.
    #[serde(default = "default_socket")]
    pub control_socket: String,
    /// Path of the netlink-format control socket (default: the control socket's path with
    /// `.nl` appended).
    #[serde(default)]
    pub netlink_socket: Option<String>,
    /// Mode of the netlink-format socket file (default 0o660).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    /// Group of the netlink-format socket file (default `isopath`; left as it is when there is
    /// no such group).
    #[serde(default = "default_socket_group")]
    pub socket_group: String,
    /// Group whose members may change things and read flows (root always may; default
    /// `isopath-admin`).
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
    /// Most netlink-format connections at once (default 256); a client past it gets one
    /// `EUSERS` error.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// The log filter: a level (`info`, `debug`, ...) or `tracing` directives
    /// (`info,isopath_control::bond=debug`); `ISOPATH_LOG` overrides it. Changes on reload.
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            control_socket: default_socket(),
            netlink_socket: None,
            socket_mode: default_socket_mode(),
            socket_group: default_socket_group(),
            admin_group: default_admin_group(),
            max_clients: default_max_clients(),
            log_level: default_log_level(),
        }
    }
}

fn default_socket_mode() -> u32 {
    0o660
}

fn default_socket_group() -> String {
    "isopath".into()
}

fn default_admin_group() -> String {
    "isopath-admin".into()
}

fn default_log_level() -> String {
    "info".into()
}

fn default_max_clients() -> usize {
    256
}

/// The netlink-format control socket, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkPlan {
    /// Its path.
    pub path: String,
    /// Its mode.
    pub mode: u32,
    /// Its group's name.
    pub group: String,
    /// The admin group's name.
    pub admin_group: String,
    /// Most connections.
    pub max_clients: usize,
}

fn default_socket() -> String {
    "/run/isopath/isopathd.sock".into()
}

/// `[rings]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// RX ring descriptors (power of two).
    pub rx_ring_size: Option<u32>,
    /// TX ring descriptors (power of two).
    pub tx_ring_size: Option<u32>,
    /// Fill ring descriptors (power of two).
    pub fill_ring_size: Option<u32>,
    /// Completion ring descriptors (power of two).
    pub comp_ring_size: Option<u32>,
    /// UMEM frame size in bytes (2048 or 4096).
    pub frame_size: Option<u32>,
    /// Frames per RX burst (1..=256).
    pub burst: Option<u32>,
    /// "auto" (try zero-copy, fall back to copy), "require" or "off".
    pub zero_copy: Option<String>,
    /// "native", "generic" or "native-or-generic".
    pub xdp_mode: Option<String>,
    /// Preferred busy polling budget per socket (0: off).
    pub busy_poll_budget: Option<u32>,
}

/// `[workers] cores`: `"auto"` (the default) or the CPUs to pin workers to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cores {
    /// Chosen from the topology and the kernel's isolation ([`crate::topology`]).
    #[default]
    Auto,
    /// One worker per listed CPU, in order.
    List(Vec<usize>),
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cores;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\" or a list of CPU numbers")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cores, E> {
                match v {
                    "auto" => Ok(Cores::Auto),
                    other => Err(E::custom(format!(
                        "{other:?}: expected \"auto\" or a list of CPU numbers"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Cores, A::Error> {
                let mut v = Vec::new();
                while let Some(c) = a.next_element::<usize>()? {
                    v.push(c);
                }
                Ok(Cores::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[workers]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// `"auto"` (default): isolated cores, NIC-local NUMA node first, one worker per physical
    /// core; or one worker per listed CPU, each pinned there.
    #[serde(default)]
    pub cores: Cores,
    /// With `cores = "auto"`, let two workers share a physical core's hyperthreads (default
    /// false: a worker's sibling stays idle).
    pub allow_siblings: Option<bool>,
    /// UMEM frames per worker; default: enough to fill every ring the worker owns, spare
    /// sockets included.
    pub frame_count: Option<u32>,
    /// Sockets each worker keeps room for, for ports that join at run time (`isopath port
    /// add`, `isopath bond add` of an undeclared interface); default 2.
    pub spare_queues: Option<u32>,
}

/// `[[port]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Interface name.
    pub name: String,
    /// Queues to bind: all of the interface's RX queues unless given.
    pub queues: Option<u32>,
}

/// `[[cross_connect]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossConnectConfig {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

/// A configuration error. Always names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown/mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A parameter out of range.
    #[error("rings.{0}")]
    Param(#[from] ParamError),
    /// Anything else, with the field's path.
    #[error("{field}: {message}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A port, validated against the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Queues to bind (0..queues).
    pub queues: u32,
    /// Queues the interface has; frames on the others are dropped by the XDP program.
    pub device_queues: u32,
}

/// A worker, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    /// The core it is pinned to.
    pub core: usize,
    /// (port index, queue) pairs it owns.
    pub queues: Vec<(usize, u32)>,
    /// UMEM frames.
    pub frames: u32,
    /// Sockets it can take at run time.
    pub spare: u32,
    /// The isolated cgroup partition it joins before pinning itself (its directory).
    pub cgroup: Option<String>,
}

/// One end of a cross-connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A port (index into [`Plan::ports`]).
    Port(usize),
    /// A bond (index into [`Plan::bonds`]).
    Bond(usize),
}

/// A bond, validated.
#[derive(Debug, Clone)]
pub struct BondPlan {
    /// Propagate the bond's carrier loss to its cross-connect peer port.
    pub link_state_tracking: bool,
    /// Name.
    pub name: String,
    /// Member ports (indices into [`Plan::ports`]).
    pub members: Vec<usize>,
    /// Options (primary is a member index).
    pub opts: crate::bond::BondOptions,
    /// Per-member prio.
    pub prio: Vec<i32>,
    /// Per-member speed, Mb/s.
    pub speed: Vec<u32>,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Control socket path.
    pub control_socket: String,
    /// The netlink-format control socket.
    pub netlink: NetlinkPlan,
    /// Ring sizes.
    pub rings: RingParams,
    /// RX burst.
    pub burst: Burst,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Busy-poll budget per socket, 0 when off.
    pub busy_poll_budget: u32,
    /// Ports.
    pub ports: Vec<PortPlan>,
    /// Workers.
    pub workers: Vec<WorkerPlan>,
    /// Bonds.
    pub bonds: Vec<BondPlan>,
    /// Cross-connects.
    pub cross_connects: Vec<(Endpoint, Endpoint)>,
    /// Where the workers and housekeeping threads run, and why.
    pub placement: crate::topology::Plan,
    /// Drop frames that do not parse (`[flows] strict`).
    pub strict: bool,
    /// The per-worker flow table (`[flows]`), `None` when tracking is off.
    pub flows: Option<isopath_datapath::flow::FlowParams>,
    /// IPFIX export (`[ipfix]`), `None` when off.
    pub ipfix: Option<crate::ipfix::IpfixPlan>,
    /// Where the Prometheus endpoint listens (`[metrics] listen`), `None` when off.
    pub metrics: Option<std::net::SocketAddr>,
    /// The log filter (`daemon.log_level`), checked.
    pub log_level: String,
}

impl Config {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`].
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })
    }

    /// `[ipfix]`, validated (`None` without the section).
    ///
    /// # Errors
    /// The first problem found, naming its field.
    pub fn ipfix_plan(&self) -> Result<Option<crate::ipfix::IpfixPlan>, ConfigError> {
        self.ipfix
            .as_ref()
            .map(|i| i.plan(self.flows.active_timeout))
            .transpose()
    }

    /// The flow table's parameters: `[flows]`, with `[ipfix] active_timeout_s` as its active
    /// timeout when there is an `[ipfix]` section.
    ///
    /// # Errors
    /// The first problem found, naming its field.
    pub fn flow_params(&self) -> Result<Option<isopath_datapath::flow::FlowParams>, ConfigError> {
        let active = self.ipfix_plan()?.map(|p| u64::from(p.active_timeout_s));
        self.flows.params_with_active(active)
    }

    /// Validates the configuration against `host` (interfaces, queues, cores).
    ///
    /// # Errors
    /// The first problem found, naming its field.
    pub fn plan(&self, host: &dyn host::Host) -> Result<Plan, ConfigError> {
        let r = &self.rings;
        let size = |name: &'static str, v: Option<u32>| match v {
            Some(v) => RingSize::new(name, v),
            None => Ok(RingSize::DEFAULT),
        };
        let rings = RingParams {
            rx: size("rx_ring_size", r.rx_ring_size)?,
            tx: size("tx_ring_size", r.tx_ring_size)?,
            fill: size("fill_ring_size", r.fill_ring_size)?,
            comp: size("comp_ring_size", r.comp_ring_size)?,
            frame_size: match r.frame_size {
                Some(v) => FrameSize::new("frame_size", v)?,
                None => FrameSize::DEFAULT,
            },
        };
        let burst = match r.burst {
            Some(v) => Burst::new("burst", v)?,
            None => Burst::DEFAULT,
        };
        let zero_copy = match r.zero_copy.as_deref() {
            None | Some("auto") => ZeroCopy::Auto,
            Some("require") => ZeroCopy::Require,
            Some("off") => ZeroCopy::Off,
            Some(other) => {
                return Err(field(
                    "rings.zero_copy",
                    format!("{other:?}: expected \"auto\", \"require\" or \"off\""),
                ));
            }
        };
        let xdp_mode = match r.xdp_mode.as_deref() {
            None | Some("native") => XdpMode::Native,
            Some("generic") => XdpMode::Generic,
            Some("native-or-generic") => XdpMode::NativeOrGeneric,
            Some(other) => {
                return Err(field(
                    "rings.xdp_mode",
                    format!("{other:?}: expected \"native\", \"generic\" or \"native-or-generic\""),
                ));
            }
        };

        let busy_poll_budget = match r.busy_poll_budget {
            None => 0,
            Some(b) if b <= 1024 => b,
            Some(b) => {
                return Err(field(
                    "rings.busy_poll_budget",
                    format!("{b}: at most 1024 (0: off)"),
                ));
            }
        };

        if self.ports.is_empty() {
            return Err(field("port", "no [[port]] configured"));
        }
        let mut ports = Vec::with_capacity(self.ports.len());
        let mut by_name = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let f = |m: String| field(format!("port[{i}].name"), m);
            if p.name.is_empty() || p.name.len() > 15 || p.name.contains(['/', ' ', '\0']) {
                return Err(f(format!("{:?} is not a valid interface name", p.name)));
            }
            if by_name.insert(p.name.clone(), i).is_some() {
                return Err(f(format!("{:?} is listed twice", p.name)));
            }
            let ifindex = host
                .ifindex(&p.name)
                .ok_or_else(|| f(format!("interface {:?} not found", p.name)))?;
            let device_queues = host.rx_queues(&p.name).unwrap_or(1).max(1);
            let queues = match p.queues {
                None => device_queues,
                Some(0) => return Err(field(format!("port[{i}].queues"), "must be at least 1")),
                Some(q) if q > device_queues => {
                    return Err(field(
                        format!("port[{i}].queues"),
                        format!("{q}: {} has only {device_queues} RX queues", p.name),
                    ));
                }
                Some(q) => q,
            };
            if queues > MAX_QUEUES {
                return Err(field(
                    format!("port[{i}].queues"),
                    format!("{queues}: at most {MAX_QUEUES} queues per port"),
                ));
            }
            ports.push(PortPlan {
                name: p.name.clone(),
                ifindex,
                queues,
                device_queues,
            });
        }

        let bonds = self.plan_bonds(&by_name)?;
        let bond_by_name: BTreeMap<&str, usize> = bonds
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        let mut cross_connects = Vec::new();
        let mut used = vec![false; ports.len()];
        let mut bond_used = vec![false; bonds.len()];
        for (i, x) in self.cross_connects.iter().enumerate() {
            let look = |end: &str, name: &str| -> Result<Endpoint, ConfigError> {
                if let Some(&p) = by_name.get(name) {
                    if bonds.iter().any(|b| b.members.contains(&p)) {
                        return Err(field(
                            format!("cross_connect[{i}].{end}"),
                            format!("{name:?} is a bond member: connect the bond instead"),
                        ));
                    }
                    return Ok(Endpoint::Port(p));
                }
                bond_by_name
                    .get(name)
                    .map(|&b| Endpoint::Bond(b))
                    .ok_or_else(|| {
                        field(
                            format!("cross_connect[{i}].{end}"),
                            format!("{name:?} is not a [[port]] or a [[bond]]"),
                        )
                    })
            };
            let (a, b) = (look("a", &x.a)?, look("b", &x.b)?);
            if a == b {
                return Err(field(
                    format!("cross_connect[{i}]"),
                    "a port cannot connect to itself",
                ));
            }
            if matches!((a, b), (Endpoint::Bond(_), Endpoint::Bond(_))) {
                return Err(field(
                    format!("cross_connect[{i}]"),
                    "bond to bond is not supported",
                ));
            }
            for (end, e) in [("a", a), ("b", b)] {
                let taken = match e {
                    Endpoint::Port(p) => std::mem::replace(&mut used[p], true),
                    Endpoint::Bond(b) => std::mem::replace(&mut bond_used[b], true),
                };
                if taken {
                    let name = if end == "a" { &x.a } else { &x.b };
                    return Err(field(
                        format!("cross_connect[{i}].{end}"),
                        format!("{name:?} is already cross-connected"),
                    ));
                }
            }
            cross_connects.push((a, b));
        }

        if let Cores::List(cores) = &self.workers.cores {
            if cores.is_empty() {
                return Err(field("workers.cores", "at least one core"));
            }
            let online = host.cpus();
            let mut seen = std::collections::BTreeSet::new();
            for &c in cores {
                if c >= online {
                    return Err(field(
                        "workers.cores",
                        format!("core {c} does not exist (this host has {online})"),
                    ));
                }
                if !seen.insert(c) {
                    return Err(field("workers.cores", format!("core {c} listed twice")));
                }
            }
            let nw = cores.len() as u32;
            for (i, p) in ports.iter().enumerate() {
                if p.queues < nw {
                    return Err(field(
                        format!("port[{i}].queues"),
                        format!(
                            "{} binds {} queues but there are {nw} workers: every worker needs a queue on every port",
                            p.name, p.queues
                        ),
                    ));
                }
            }
        }
        let machine = host.machine();
        let request = crate::topology::request(
            self,
            ports
                .iter()
                .map(|p| crate::topology::place::PortRequest {
                    locality: host.locality(&machine, &p.name),
                    queues: p.queues,
                })
                .collect(),
        );
        let placement = crate::topology::place::place(&machine, &host.isolation(), &request)
            .map_err(|e| field("workers.cores", e.to_string()))?;
        let spare = self.workers.spare_queues.unwrap_or(DEFAULT_SPARE_QUEUES);
        if spare > MAX_SPARE_QUEUES {
            return Err(field(
                "workers.spare_queues",
                format!("{spare}: at most {MAX_SPARE_QUEUES}"),
            ));
        }
        let mut workers = Vec::with_capacity(placement.workers.len());
        for slot in &placement.workers {
            let queues: Vec<(usize, u32)> = slot
                .queues
                .iter()
                .filter_map(|q| Some((*by_name.get(&q.port)?, q.queue)))
                .collect();
            let core = slot.core;
            let frames = rings.frame_count(
                "workers.frame_count",
                self.workers.frame_count,
                queues.len() as u32 + spare,
            )?;
            workers.push(WorkerPlan {
                core,
                queues,
                frames,
                spare,
                cgroup: slot.cgroup.clone(),
            });
        }

        let d = &self.daemon;
        if d.socket_mode > 0o777 {
            return Err(ConfigError::Field {
                field: "daemon.socket_mode".into(),
                message: format!("{:#o} is not a file mode (at most 0o777)", d.socket_mode),
            });
        }
        if d.max_clients == 0 {
            return Err(ConfigError::Field {
                field: "daemon.max_clients".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&d.log_level) {
            return Err(field(
                "daemon.log_level",
                format!(
                    "{:?}: {e} (a level such as \"info\", or tracing directives)",
                    d.log_level
                ),
            ));
        }
        let netlink = NetlinkPlan {
            path: d
                .netlink_socket
                .clone()
                .unwrap_or_else(|| format!("{}.nl", d.control_socket)),
            mode: d.socket_mode,
            group: d.socket_group.clone(),
            admin_group: d.admin_group.clone(),
            max_clients: d.max_clients,
        };
        Ok(Plan {
            control_socket: self.daemon.control_socket.clone(),
            netlink,
            rings,
            burst,
            zero_copy,
            xdp_mode,
            busy_poll_budget,
            ports,
            workers,
            bonds,
            cross_connects,
            placement,
            strict: self.flows.strict,
            flows: self.flow_params()?,
            ipfix: self.ipfix_plan()?,
            metrics: self.metrics.as_ref().map(MetricsConfig::addr).transpose()?,
            log_level: d.log_level.clone(),
        })
    }

    fn plan_bonds(&self, by_name: &BTreeMap<String, usize>) -> Result<Vec<BondPlan>, ConfigError> {
        use crate::bond::{BondOptions, Reselect};
        use isopath_datapath::bond::MAX_MEMBERS;
        use std::time::Duration;
        let mut out = Vec::new();
        let mut member_of: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, b) in self.bonds.iter().enumerate() {
            let f = |k: &str| format!("bond[{i}].{k}");
            if b.name.is_empty() || by_name.contains_key(&b.name) {
                return Err(field(
                    f("name"),
                    format!("{:?} is empty or also a port name", b.name),
                ));
            }
            if self.bonds[..i].iter().any(|o| o.name == b.name) {
                return Err(field(f("name"), format!("{:?} is listed twice", b.name)));
            }
            if let Some(mode) = &b.mode
                && mode != "active-backup"
            {
                return Err(field(
                    f("mode"),
                    format!("{mode:?}: only \"active-backup\""),
                ));
            }
            if b.members.is_empty() || b.members.len() > MAX_MEMBERS {
                return Err(field(
                    f("members"),
                    format!("{} members: between 1 and {MAX_MEMBERS}", b.members.len()),
                ));
            }
            let mut members = Vec::new();
            for m in &b.members {
                let &p = by_name
                    .get(m)
                    .ok_or_else(|| field(f("members"), format!("{m:?} is not a [[port]]")))?;
                if let Some(other) = member_of.insert(p, i) {
                    return Err(field(
                        f("members"),
                        format!("{m:?} is already a member of {:?}", self.bonds[other].name),
                    ));
                }
                members.push(p);
            }
            let index = |name: &str, key: &str| -> Result<usize, ConfigError> {
                b.members.iter().position(|m| m == name).ok_or_else(|| {
                    field(f(key), format!("{name:?} is not a member of {:?}", b.name))
                })
            };
            let primary = b
                .primary
                .as_deref()
                .map(|p| index(p, "primary"))
                .transpose()?;
            let primary_reselect = match b.primary_reselect.as_deref() {
                None => Reselect::Always,
                Some(r) => Reselect::parse(r).ok_or_else(|| {
                    field(
                        f("primary_reselect"),
                        format!("{r:?}: expected always, better or failure"),
                    )
                })?,
            };
            let mut prio = vec![0; members.len()];
            for (name, &p) in &b.prio {
                prio[index(name, "prio")?] = p;
            }
            let mut speed = vec![10_000; members.len()];
            for (name, &s) in &b.speed {
                speed[index(name, "speed")?] = s;
            }
            let ms = |v: Option<u64>, d: u64, key: &str| -> Result<Duration, ConfigError> {
                let x = v.unwrap_or(d);
                crate::bond::option_ms(x).ok_or_else(|| {
                    field(
                        f(key),
                        format!("{x} ms: at most {}", crate::bond::MAX_OPTION_MS),
                    )
                })
            };
            let parse_addrs = |list: &[String], key: &str| {
                list.iter()
                    .map(|a| {
                        a.parse::<std::net::IpAddr>().map_err(|_| {
                            field(f(key), format!("{a:?} is not an IPv4 or IPv6 address"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let addresses = parse_addrs(&b.addresses, "addresses")?;
            if b.vlan.len() > MAX_VLANS {
                return Err(field(
                    f("vlan"),
                    format!("{} VLANs: at most {MAX_VLANS}", b.vlan.len()),
                ));
            }
            let mut vlans: Vec<(u16, Vec<std::net::IpAddr>)> = Vec::with_capacity(b.vlan.len());
            for (j, v) in b.vlan.iter().enumerate() {
                let key = format!("vlan[{j}]");
                if !(1..=4094).contains(&v.id) {
                    return Err(field(
                        f(&format!("{key}.id")),
                        format!("{}: a VLAN id is 1..=4094", v.id),
                    ));
                }
                if vlans.iter().any(|(id, _)| *id == v.id) {
                    return Err(field(
                        f(&format!("{key}.id")),
                        format!("VLAN {} listed twice", v.id),
                    ));
                }
                vlans.push((
                    v.id,
                    parse_addrs(&v.addresses, &format!("{key}.addresses"))?,
                ));
            }
            let mac = match &b.mac {
                None => None,
                Some(m) => Some(
                    crate::frames::parse_mac(m)
                        .filter(|m| m[0] & 1 == 0)
                        .ok_or_else(|| {
                            field(f("mac"), format!("{m:?} is not a unicast MAC address"))
                        })?,
                ),
            };
            let fail_over_mac = match b.fail_over_mac.as_deref() {
                None => crate::bond::FailOverMac::None,
                Some(v) => crate::bond::FailOverMac::parse(v).ok_or_else(|| {
                    field(
                        f("fail_over_mac"),
                        format!("{v:?}: expected none, active or follow"),
                    )
                })?,
            };
            let count = |v: Option<u32>, key: &str| {
                let n = v.unwrap_or(1);
                crate::bond::notify_count(n).ok_or_else(|| {
                    field(
                        f(key),
                        format!("{n}: at most {}", crate::bond::MAX_NOTIFY_COUNT),
                    )
                })
            };
            let table = match b.reannounce_table.unwrap_or(256) {
                n if (1..=65536).contains(&n) => n,
                n => {
                    return Err(field(
                        f("reannounce_table"),
                        format!("{n}: between 1 and 65536"),
                    ));
                }
            };
            let notify = crate::bond::NotifyOptions {
                num_grat_arp: count(b.num_grat_arp, "num_grat_arp")?,
                num_unsol_na: count(b.num_unsol_na, "num_unsol_na")?,
                peer_notif_delay: ms(b.peer_notif_delay, 0, "peer_notif_delay")?,
                reannounce: b.reannounce.unwrap_or(true),
                reannounce_max_age_s: b.reannounce_max_age.unwrap_or(300),
                reannounce_table: table,
                ..Default::default()
            };
            let arp = match b.arp_interval {
                None | Some(0) => {
                    if !b.arp_ip_target.is_empty() || !b.ns_ip6_target.is_empty() {
                        return Err(field(
                            f("arp_ip_target"),
                            "set arp_interval to use the ARP monitor",
                        ));
                    }
                    None
                }
                Some(ms_) => {
                    let targets = b
                        .arp_ip_target
                        .iter()
                        .map(|t| {
                            t.parse::<std::net::Ipv4Addr>().map_err(|_| {
                                field(f("arp_ip_target"), format!("{t:?} is not an IPv4 address"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let ns_targets = b
                        .ns_ip6_target
                        .iter()
                        .map(|t| {
                            t.parse::<std::net::Ipv6Addr>().map_err(|_| {
                                field(f("ns_ip6_target"), format!("{t:?} is not an IPv6 address"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if targets.len() > 16
                        || ns_targets.len() > 16
                        || targets.len() + ns_targets.len() == 0
                    {
                        return Err(field(
                            f("arp_ip_target"),
                            "between 1 and 16 targets (arp_ip_target and/or ns_ip6_target)",
                        ));
                    }
                    if !ns_targets.is_empty() && !addresses.iter().any(std::net::IpAddr::is_ipv6) {
                        return Err(field(
                            f("addresses"),
                            "ns_ip6_target needs an IPv6 address on the bond (the probes' sender)",
                        ));
                    }
                    if !targets.is_empty() && !addresses.iter().any(std::net::IpAddr::is_ipv4) {
                        return Err(field(
                            f("addresses"),
                            "the ARP monitor needs an IPv4 address on the bond (the probes' sender)",
                        ));
                    }
                    let validate = match b.arp_validate.as_deref() {
                        None => crate::bond::ArpValidate::None,
                        Some(v) => crate::bond::ArpValidate::parse(v).ok_or_else(|| {
                            field(
                                f("arp_validate"),
                                format!("{v:?}: expected none, active, backup or all"),
                            )
                        })?,
                    };
                    let all_targets = match b.arp_all_targets.as_deref() {
                        None | Some("any") => false,
                        Some("all") => true,
                        Some(v) => {
                            return Err(field(
                                f("arp_all_targets"),
                                format!("{v:?}: expected any or all"),
                            ));
                        }
                    };
                    let missed_max = match b.arp_missed_max.unwrap_or(2) {
                        n @ 1..=255 => n,
                        n => {
                            return Err(field(
                                f("arp_missed_max"),
                                format!("{n}: between 1 and 255"),
                            ));
                        }
                    };
                    Some(crate::bond::ArpOptions {
                        interval: ms(Some(ms_), 0, "arp_interval")?,
                        targets,
                        ns_targets,
                        validate,
                        all_targets,
                        missed_max,
                    })
                }
            };
            let opts = BondOptions {
                arp,
                fail_over_mac,
                mac,
                addresses,
                vlans,
                notify,
                miimon: ms(b.miimon, 10, "miimon")?,
                updelay: ms(b.updelay, 0, "updelay")?,
                downdelay: ms(b.downdelay, 0, "downdelay")?,
                primary,
                primary_reselect,
                all_members_active: b.all_members_active.unwrap_or(false),
                drain: ms(b.drain_ms, 500, "drain_ms")?,
            };
            out.push(BondPlan {
                link_state_tracking: b.link_state_tracking.unwrap_or(false),
                name: b.name.clone(),
                members,
                opts,
                prio,
                speed,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn host() -> FakeHost {
        FakeHost::new(2, &[("up0", 2), ("m0", 2), ("m1", 2)])
    }

    const BASE: &str = r#"
        [workers]
        cores = [1]
        [[port]]
        name = "up0"
        [[port]]
        name = "m0"
        [[cross_connect]]
        a = "up0"
        b = "m0"
    "#;

    /// The error planning `text` gives (which must parse).
    fn refused(text: &str) -> String {
        let cfg = Config::parse(text).expect("parses");
        cfg.plan(&host()).expect_err("must be refused").to_string()
    }

    fn plan_err(extra: &str) -> String {
        refused(&format!("{extra}\n{BASE}"))
    }

    #[test]
    fn the_sample_config_is_valid() {
        let text = include_str!("../../deploy/isopath.toml");
        let plan = Config::parse(text)
            .expect("sample parses")
            .plan(&host())
            .expect("valid");
        assert_eq!(plan.ports.len(), 2);
        assert_eq!(
            plan.cross_connects,
            vec![(Endpoint::Port(0), Endpoint::Port(1))]
        );
    }

    #[test]
    fn good_config_plans_every_queue_once() {
        let plan = Config::parse(BASE).unwrap().plan(&host()).unwrap();
        assert_eq!(plan.workers.len(), 1);
        assert_eq!(plan.workers[0].queues, vec![(0, 0), (0, 1), (1, 0), (1, 1)]);
        // Four sockets plus the two spare ones a port joining at run time may take.
        assert_eq!(plan.workers[0].frames, (4 + 2) * (2048 + 2048));
        assert_eq!(plan.workers[0].spare, DEFAULT_SPARE_QUEUES);
    }

    #[test]
    fn spare_queues_size_the_umem_and_are_bounded() {
        let text = BASE.replace("[workers]", "[workers]\nspare_queues = 0");
        let plan = Config::parse(&text).unwrap().plan(&host()).unwrap();
        assert_eq!(plan.workers[0].spare, 0);
        assert_eq!(plan.workers[0].frames, 4 * (2048 + 2048));
        let e = refused(&BASE.replace("[workers]", "[workers]\nspare_queues = 65"));
        assert!(e.contains("workers.spare_queues"), "{e}");
    }

    #[test]
    fn ring_size_not_power_of_two_names_the_field() {
        let e = plan_err("[rings]\nrx_ring_size = 1000");
        assert!(
            e.contains("rx_ring_size = 1000") && e.contains("power of two"),
            "{e}"
        );
    }

    #[test]
    fn frame_size_too_small_names_the_field() {
        let e = plan_err("[rings]\nframe_size = 1024");
        assert!(e.contains("frame_size = 1024"), "{e}");
    }

    #[test]
    fn missing_interface_names_the_field() {
        let cfg = Config::parse("[[port]]\nname = \"nosuch0\"").unwrap();
        let e = cfg.plan(&host()).unwrap_err().to_string();
        assert!(
            e.contains("port[0].name") && e.contains("nosuch0") && e.contains("not found"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::parse("[rings]\nrx_ring = 64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field") && e.contains("rx_ring"), "{e}");
    }

    #[test]
    fn bad_enums_cores_and_connects_are_refused() {
        assert!(plan_err("[rings]\nzero_copy = \"maybe\"").contains("rings.zero_copy"));
        assert!(plan_err("[rings]\nxdp_mode = \"hw\"").contains("rings.xdp_mode"));
        assert!(
            refused(&BASE.replace("cores = [1]", "cores = [7]")).contains("core 7 does not exist")
        );
        assert!(refused(&BASE.replace("b = \"m0\"", "b = \"up0\"")).contains("itself"));
        assert!(refused(&BASE.replace("b = \"m0\"", "b = \"zz\"")).contains("cross_connect[0].b"));
    }

    const BONDED: &str = r#"
        [workers]
        cores = [1]
        [[port]]
        name = "up0"
        [[port]]
        name = "m0"
        [[port]]
        name = "m1"
        [[bond]]
        name = "bond0"
        members = ["m0", "m1"]
        primary = "m0"
        prio = { m1 = 5 }
        [[cross_connect]]
        a = "up0"
        b = "bond0"
    "#;

    #[test]
    fn bonds_plan_and_are_validated() {
        let plan = Config::parse(BONDED).unwrap().plan(&host()).unwrap();
        assert_eq!(plan.bonds.len(), 1);
        assert_eq!(plan.bonds[0].members, vec![1, 2]);
        assert_eq!(plan.bonds[0].opts.primary, Some(0));
        assert_eq!(plan.bonds[0].prio, vec![0, 5]);
        assert_eq!(
            plan.cross_connects,
            vec![(Endpoint::Port(0), Endpoint::Bond(0))]
        );
        let bad = |from: &str, to: &str| refused(&BONDED.replace(from, to));
        assert!(bad("primary = \"m0\"", "primary = \"up0\"").contains("bond[0].primary"));
        assert!(bad("members = [\"m0\", \"m1\"]", "members = []").contains("bond[0].members"));
        assert!(bad("members = [\"m0\", \"m1\"]", "members = [\"m0\", \"zz\"]").contains("\"zz\""));
        assert!(bad("b = \"bond0\"", "b = \"m0\"").contains("bond member"));
        assert!(bad("name = \"bond0\"", "name = \"up0\"").contains("bond[0].name"));
        assert!(
            bad("prio = { m1 = 5 }", "primary_reselect = \"sometimes\"")
                .contains("primary_reselect")
        );
    }

    #[test]
    fn bond_vlans_plan_and_are_validated() {
        let with = |vlans: &str| {
            BONDED.replace(
                "prio = { m1 = 5 }",
                &format!("prio = {{ m1 = 5 }}\n{vlans}"),
            )
        };
        let text = with(
            "[[bond.vlan]]\nid = 100\naddresses = [\"198.18.1.10\", \"2001:2:0:100::10\"]\n[[bond.vlan]]\nid = 200",
        );
        let plan = Config::parse(&text).unwrap().plan(&host()).unwrap();
        let v = &plan.bonds[0].opts.vlans;
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, 100);
        assert_eq!(
            v[0].1,
            vec![
                "198.18.1.10".parse::<std::net::IpAddr>().unwrap(),
                "2001:2:0:100::10".parse().unwrap()
            ]
        );
        assert_eq!((v[1].0, v[1].1.len()), (200, 0));
        for (vlans, field) in [
            ("[[bond.vlan]]\nid = 0", "bond[0].vlan[0].id"),
            ("[[bond.vlan]]\nid = 4095", "bond[0].vlan[0].id"),
            (
                "[[bond.vlan]]\nid = 7\n[[bond.vlan]]\nid = 7",
                "bond[0].vlan[1].id",
            ),
            (
                "[[bond.vlan]]\nid = 7\naddresses = [\"198.18.1\"]",
                "bond[0].vlan[0].addresses",
            ),
        ] {
            let e = refused(&with(vlans));
            assert!(e.contains(field), "{vlans}: {e}");
        }
        let many: String = (1..=65)
            .map(|i| format!("[[bond.vlan]]\nid = {i}\n"))
            .collect();
        assert!(refused(&with(&many)).contains("at most 64"));
    }

    #[test]
    fn too_few_frames_and_too_many_queues_are_refused() {
        assert!(plan_err("[rings]\nburst = 0").contains("burst = 0"));
        let cfg =
            Config::parse(&BASE.replace("cores = [1]", "cores = [1]\nframe_count = 10")).unwrap();
        assert!(
            cfg.plan(&host())
                .unwrap_err()
                .to_string()
                .contains("workers.frame_count = 10")
        );
        let cfg =
            Config::parse(&BASE.replace("name = \"m0\"", "name = \"m0\"\nqueues = 3")).unwrap();
        assert!(
            cfg.plan(&host())
                .unwrap_err()
                .to_string()
                .contains("port[1].queues")
        );
    }
}
