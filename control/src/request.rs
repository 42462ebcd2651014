//! The control socket's messages, typed: a [`Request`] is one line of words, a reply one line of
//! JSON (one of the reply structs here, or [`ErrorReply`]). The daemon parses requests with
//! [`Request::parse`] and answers with [`Reply`]; clients write requests with `Display` and read
//! replies into these structs ([`crate::client`]). This is today's wire format, kept as it was;
//! the netlink-format protocol (`isopath-proto`) replaces it later.

use serde::{Deserialize, Serialize};

use crate::status::{CaptureStatus, Status};

/// The longest request line the daemon reads (longer ones are refused, not buffered).
pub const MAX_LINE: usize = 4096;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `status`: the whole [`Status`].
    Status,
    /// `port add IFNAME`: register an interface as a port.
    PortAdd(String),
    /// `port del IFNAME..`: unregister ports, all or none.
    PortDel(Vec<String>),
    /// `bond switch BOND MEMBER`: planned switch.
    BondSwitch {
        /// Bond.
        bond: String,
        /// New active member.
        member: String,
    },
    /// `bond set BOND OPTION VALUE`.
    BondSet {
        /// Bond.
        bond: String,
        /// Option name.
        option: String,
        /// Its new value.
        value: String,
    },
    /// `bond add BOND PORT`: enslave (registering the interface first if needed).
    BondAdd {
        /// Bond.
        bond: String,
        /// Port.
        port: String,
    },
    /// `bond release BOND PORT`.
    BondRelease {
        /// Bond.
        bond: String,
        /// Member.
        port: String,
    },
    /// `capture start TARGET FILE DIR`.
    CaptureStart {
        /// Port or bond.
        target: String,
        /// Absolute path of the pcap file.
        file: String,
        /// `in`, `out` or `both`.
        dir: String,
    },
    /// `capture stop TARGET`.
    CaptureStop(String),
    /// `flow count`, `flow show [limit N]`: the words after `flow` ([`crate::flows`]).
    Flow(Vec<String>),
    /// `reload`: read the configuration file again and apply what may change live (all of it
    /// or, when something may not change, none of it), as `SIGHUP` does.
    Reload,
    /// `link set DEV promisc on|off`: the operator's promiscuity (counted once).
    LinkPromisc {
        /// The link.
        dev: String,
        /// On or off.
        on: bool,
    },
}

/// The list of requests, for the error that answers an unknown one.
pub const KNOWN: &str = "status, port add IFNAME, port del IFNAME.., bond switch BOND MEMBER, bond set BOND OPTION VALUE, bond add|release BOND PORT, capture start TARGET FILE in|out|both, capture stop TARGET, flow count, flow show [limit N], link set DEV promisc on|off, reload";

impl Request {
    /// Parses one request line (without its newline).
    ///
    /// # Errors
    /// The line is no known request: the message names it (its first 64 characters) and lists
    /// the known ones.
    pub fn parse(line: &str) -> Result<Self, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let s = |i: usize| w[i].to_owned();
        Ok(match (w.len(), w.first().copied(), w.get(1).copied()) {
            (1, Some("status"), _) if line.trim() == "status" => Self::Status,
            (1, Some("reload"), _) => Self::Reload,
            (_, Some("flow"), _) => Self::Flow(w[1..].iter().map(|&w| w.to_owned()).collect()),
            (4, Some("bond"), Some("switch")) => Self::BondSwitch {
                bond: s(2),
                member: s(3),
            },
            (4, Some("bond"), Some("release")) => Self::BondRelease {
                bond: s(2),
                port: s(3),
            },
            (4, Some("bond"), Some("add")) => Self::BondAdd {
                bond: s(2),
                port: s(3),
            },
            (n, Some("port"), Some("del")) if n >= 3 => {
                Self::PortDel(w[2..].iter().map(|&n| n.to_owned()).collect())
            }
            (3, Some("port"), Some("add")) => Self::PortAdd(s(2)),
            (5, Some("bond"), Some("set")) => Self::BondSet {
                bond: s(2),
                option: s(3),
                value: s(4),
            },
            (5, Some("capture"), Some("start")) => Self::CaptureStart {
                target: s(2),
                file: s(3),
                dir: s(4),
            },
            (3, Some("capture"), Some("stop")) => Self::CaptureStop(s(2)),
            (5, Some("link"), Some("set")) if w[3] == "promisc" && matches!(w[4], "on" | "off") => {
                Self::LinkPromisc {
                    dev: s(2),
                    on: w[4] == "on",
                }
            }
            _ => {
                let shown: String = line.trim().chars().take(64).collect();
                return Err(format!("unknown request {shown:?}; known: {KNOWN}"));
            }
        })
    }

    /// The words of the request; `None` if one is empty or holds white space (it could not
    /// travel as one word).
    fn words(&self) -> Vec<&str> {
        match self {
            Self::Status => vec!["status"],
            Self::Reload => vec!["reload"],
            Self::PortAdd(n) => vec!["port", "add", n],
            Self::PortDel(ns) => ["port", "del"]
                .into_iter()
                .chain(ns.iter().map(String::as_str))
                .collect(),
            Self::BondSwitch { bond, member } => vec!["bond", "switch", bond, member],
            Self::BondSet {
                bond,
                option,
                value,
            } => vec!["bond", "set", bond, option, value],
            Self::BondAdd { bond, port } => vec!["bond", "add", bond, port],
            Self::BondRelease { bond, port } => vec!["bond", "release", bond, port],
            Self::CaptureStart { target, file, dir } => {
                vec!["capture", "start", target, file, dir]
            }
            Self::CaptureStop(t) => vec!["capture", "stop", t],
            Self::LinkPromisc { dev, on } => {
                vec![
                    "link",
                    "set",
                    dev,
                    "promisc",
                    if *on { "on" } else { "off" },
                ]
            }
            Self::Flow(words) => std::iter::once("flow")
                .chain(words.iter().map(String::as_str))
                .collect(),
        }
    }

    /// Whether every argument travels as one word (none empty, none with white space).
    pub fn is_sendable(&self) -> bool {
        self.words()
            .iter()
            .all(|w| !w.is_empty() && !w.contains(char::is_whitespace))
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words().join(" "))
    }
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: String,
}

/// `port add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAdded {
    /// Always true.
    pub ok: bool,
    /// The new port.
    pub port: String,
    /// Its interface index.
    pub ifindex: u32,
    /// Sockets bound (one per RX queue).
    pub queues: u32,
    /// Their bind mode.
    pub bind: String,
    /// The XDP attach mode.
    pub xdp_mode: String,
}

/// `port del`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsRemoved {
    /// Always true.
    pub ok: bool,
    /// The ports unregistered.
    pub removed: Vec<String>,
    /// Their sockets the workers give back.
    pub sockets: usize,
}

/// `bond add` and `bond release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChanged {
    /// Always true.
    pub ok: bool,
    /// Bond.
    pub bond: String,
    /// Member.
    pub member: String,
    /// Its member index (the datapath's).
    pub index: usize,
    /// Added (true) or released.
    pub added: bool,
}

/// `bond set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionSet {
    /// Always true.
    pub ok: bool,
    /// The option.
    pub option: String,
    /// Its value.
    pub value: String,
}

/// `bond switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// Always true.
    pub ok: bool,
    /// False when the member was already active.
    pub changed: bool,
    /// The active member.
    pub active: String,
}

/// `capture start` and `capture stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureReply {
    /// Always true.
    pub ok: bool,
    /// The capture's state (at its end, for `stop`).
    pub capture: CaptureStatus,
}

/// `link set DEV promisc on|off`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkChanged {
    /// Always true.
    pub ok: bool,
    /// The link.
    pub link: String,
    /// Whether PROMISC is set now (its count is above zero).
    pub promisc: bool,
    /// The promiscuity count (the operator once, each capture one).
    pub promiscuity: u32,
    /// Whether the daemon holds the kernel's promiscuity reference on the interface.
    pub kernel_membership: bool,
}

/// Any reply the daemon sends: serialised as the struct it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// Refused or failed.
    Error(ErrorReply),
    /// `status`.
    Status(Box<Status>),
    /// `port add`.
    PortAdded(PortAdded),
    /// `port del`.
    PortsRemoved(PortsRemoved),
    /// `bond add|release`.
    Member(MemberChanged),
    /// `bond set`.
    OptionSet(OptionSet),
    /// `bond switch`.
    Switched(Switched),
    /// `capture start|stop`.
    Capture(CaptureReply),
    /// `flow count|show`.
    Flow(crate::flows::FlowReply),
    /// `link set`.
    Link(LinkChanged),
    /// `reload`.
    Reloaded(Reloaded),
}

/// `reload`: what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Always true.
    pub ok: bool,
    /// The file read.
    pub config: String,
    /// What was applied, one line each (`bond0.miimon: 10 -> 50`); empty when the file
    /// changed nothing.
    pub applied: Vec<String>,
}

impl Reply {
    /// An error reply.
    pub fn error(e: impl Into<String>) -> Self {
        Self::Error(ErrorReply { error: e.into() })
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Error(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_their_line() {
        let all = [
            Request::Status,
            Request::Reload,
            Request::PortAdd("m2".into()),
            Request::PortDel(vec!["m2".into(), "m3".into()]),
            Request::BondSwitch {
                bond: "bond0".into(),
                member: "m1".into(),
            },
            Request::BondSet {
                bond: "bond0".into(),
                option: "miimon".into(),
                value: "20".into(),
            },
            Request::BondAdd {
                bond: "bond0".into(),
                port: "m2".into(),
            },
            Request::BondRelease {
                bond: "bond0".into(),
                port: "m2".into(),
            },
            Request::CaptureStart {
                target: "bond0".into(),
                file: "/tmp/x.pcap".into(),
                dir: "both".into(),
            },
            Request::CaptureStop("bond0".into()),
            Request::Flow(vec!["show".into(), "limit".into(), "5".into()]),
            Request::LinkPromisc {
                dev: "m0".into(),
                on: true,
            },
            Request::LinkPromisc {
                dev: "m0".into(),
                on: false,
            },
        ];
        for r in all {
            assert!(r.is_sendable());
            assert_eq!(Request::parse(&r.to_string()), Ok(r.clone()), "{r}");
        }
        assert_eq!(Request::parse(" status \n"), Ok(Request::Status));
        assert!(!Request::PortAdd("a b".into()).is_sendable());
        assert!(!Request::PortAdd(String::new()).is_sendable());
    }

    #[test]
    fn unknown_requests_are_named_and_the_known_ones_listed() {
        for bad in [
            "",
            "bogus",
            "status now",
            "port add",
            "bond switch bond0",
            "port",
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert!(e.starts_with("unknown request"), "{bad:?}: {e}");
            assert!(e.contains(KNOWN), "{e}");
        }
        let long = "x".repeat(100);
        let e = Request::parse(&long).unwrap_err();
        assert!(e.contains(&"x".repeat(64)) && !e.contains(&"x".repeat(65)));
    }

    #[test]
    fn replies_keep_the_wire_format() {
        let v = serde_json::to_value(Reply::error("no bond named \"x\"")).unwrap();
        assert_eq!(v, serde_json::json!({ "error": "no bond named \"x\"" }));
        let v = serde_json::to_value(Reply::Switched(Switched {
            ok: true,
            changed: false,
            active: "m1".into(),
        }))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "ok": true, "changed": false, "active": "m1" })
        );
    }
}
