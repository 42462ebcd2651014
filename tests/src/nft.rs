//! nftables counters for one flow, in the lab's traffic and far namespaces: what the two end
//! hosts' kernels sent and received of one 5-tuple, per direction, in packets and L3 bytes
//! (the IP total length, as conntrack and IPFIX count and as isopath's flow table counts).
//!
//! [`FlowCounters::install`] adds a table `isoflow` to both end namespaces with four named
//! counters each side: in the initiator's namespace `orig` counts the 5-tuple in the `output`
//! hook and `reply` its mirror in `input`; in the responder's namespace `orig` counts the
//! 5-tuple in `input` and `reply` its mirror in `output`. At the IP hooks an skb's length is
//! its IP datagram (the Ethernet header is not part of it; padding is trimmed on receive), so
//! the byte counters are L3 bytes.
//!
//! The IP hooks see what the stack sends before segmentation and what it receives after GRO:
//! call [`wire_sized_packets`] first so each counted packet is one frame on the wire (TSO,
//! GSO and GRO off, `gso_max_segs 1`, on t0, br0, s0 and s1).

use std::net::IpAddr;

use crate::Lab;

/// The table both end namespaces get.
const TABLE: &str = "isoflow";

/// An L4 protocol with what identifies a flow of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP, `(initiator port, responder port)`.
    Tcp(u16, u16),
    /// UDP, `(initiator port, responder port)`.
    Udp(u16, u16),
    /// ICMP (IPv4) or ICMPv6 echo with this identifier, or any echo when `None` (a kernel
    /// `ping` picks its own).
    Echo(Option<u16>),
}

/// Which end of the lab opened the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The traffic namespace (t0).
    Traffic,
    /// The far namespace (br0).
    Far,
}

/// One flow: the initiator's address, the responder's, the protocol and its identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiveTuple {
    /// Where the initiator runs.
    pub initiator: Side,
    /// The initiator's address.
    pub src: IpAddr,
    /// The responder's address.
    pub dst: IpAddr,
    /// Protocol and ports (or echo identifier).
    pub l4: L4,
}

/// Packets and bytes one counter saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// L3 bytes (IP total length).
    pub bytes: u64,
}

/// Both directions of a flow as one namespace saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirCounts {
    /// Initiator → responder.
    pub orig: Count,
    /// Responder → initiator.
    pub reply: Count,
}

/// Counters installed in both end namespaces of a lab for one flow; removed on drop.
#[derive(Debug)]
pub struct FlowCounters<'l> {
    lab: &'l Lab,
    tuple: FiveTuple,
}

impl FiveTuple {
    /// The nft match for the direction `from` → `to` of this flow (`from` the initiator when
    /// `orig`).
    pub fn nft_match(&self, orig: bool) -> String {
        let (from, to) = if orig {
            (self.src, self.dst)
        } else {
            (self.dst, self.src)
        };
        let fam = if from.is_ipv6() { "ip6" } else { "ip" };
        let mut m = format!("{fam} saddr {from} {fam} daddr {to}");
        let ports = |proto: &str, a: u16, b: u16| {
            let (s, d) = if orig { (a, b) } else { (b, a) };
            format!(" {proto} sport {s} {proto} dport {d}")
        };
        match self.l4 {
            L4::Tcp(a, b) => m += &ports("tcp", a, b),
            L4::Udp(a, b) => m += &ports("udp", a, b),
            L4::Echo(id) => {
                let icmp = if from.is_ipv6() { "icmpv6" } else { "icmp" };
                let ty = if orig { "echo-request" } else { "echo-reply" };
                m += &format!(" {icmp} type {ty}");
                if let Some(id) = id {
                    m += &format!(" {icmp} id {id}");
                }
            }
        }
        m
    }
}

impl<'l> FlowCounters<'l> {
    /// Installs the counters for `tuple` in the lab's traffic and far namespaces.
    ///
    /// # Panics
    /// If `nft` fails in either namespace (the message has its output).
    pub fn install(lab: &'l Lab, tuple: FiveTuple) -> FlowCounters<'l> {
        let fc = FlowCounters { lab, tuple };
        for (ns, initiator) in fc.namespaces() {
            // The initiator sends orig in output and receives reply in input; the responder
            // the other way round.
            let (orig_hook, reply_hook) = if initiator {
                ("output", "input")
            } else {
                ("input", "output")
            };
            let script = format!(
                "table inet {TABLE} {{\n\
                 counter orig {{ }}\n\
                 counter reply {{ }}\n\
                 chain c_{orig_hook} {{ type filter hook {orig_hook} priority -300; policy accept; {} counter name orig; }}\n\
                 chain c_{reply_hook} {{ type filter hook {reply_hook} priority -300; policy accept; {} counter name reply; }}\n\
                 }}\n",
                tuple.nft_match(true),
                tuple.nft_match(false),
            );
            nft_script(lab, ns, &script);
        }
        fc
    }

    /// `(namespace, is the initiator's)` for both ends.
    fn namespaces(&self) -> [(&'l str, bool); 2] {
        let t = self.tuple.initiator == Side::Traffic;
        [(self.lab.ns_traffic(), t), (self.lab.ns_far(), !t)]
    }

    /// What the initiator's namespace counted (orig sent, reply received).
    pub fn initiator(&self) -> DirCounts {
        let [(a, ai), (b, _)] = self.namespaces();
        read(self.lab, if ai { a } else { b })
    }

    /// What the responder's namespace counted (orig received, reply sent).
    pub fn responder(&self) -> DirCounts {
        let [(a, ai), (b, _)] = self.namespaces();
        read(self.lab, if ai { b } else { a })
    }
}

impl Drop for FlowCounters<'_> {
    fn drop(&mut self) {
        for (ns, _) in self.namespaces() {
            let _ = self.lab.exec(ns, ["nft", "delete", "table", "inet", TABLE]);
        }
    }
}

/// Reads `orig` and `reply` of the table in `ns`.
fn read(lab: &Lab, ns: &str) -> DirCounts {
    let one = |name: &str| {
        let out = lab.exec(ns, ["nft", "-j", "list", "counter", "inet", TABLE, name]);
        assert!(
            out.status.success(),
            "nft list counter {name} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("nft -j list counter in {ns}: {e}"));
        parse_counter(&v, name).unwrap_or_else(|| panic!("no counter {name} in {ns}: {v}"))
    };
    DirCounts {
        orig: one("orig"),
        reply: one("reply"),
    }
}

/// The named counter in an `nft -j list counter` document.
pub fn parse_counter(v: &serde_json::Value, name: &str) -> Option<Count> {
    v["nftables"].as_array()?.iter().find_map(|item| {
        let c = &item["counter"];
        (c["name"] == name).then(|| Count {
            packets: c["packets"].as_u64().unwrap_or(0),
            bytes: c["bytes"].as_u64().unwrap_or(0),
        })
    })
}

/// Runs an nft script in `ns` (`nft -f` on a file: `ip netns exec` passes no stdin).
fn nft_script(lab: &Lab, ns: &str, script: &str) {
    let path = std::env::temp_dir().join(format!("isopath-nft-{}-{ns}.nft", std::process::id()));
    std::fs::write(&path, script).expect("writing an nft script");
    let out = lab.exec(ns, ["nft", "-f", path.to_str().expect("a UTF-8 temp path")]);
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nft -f in {ns}:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Turns segmentation and receive offloads off on the end hosts' links (t0; br0, s0, s1) and
/// caps their GSO packets at one segment, so
/// every packet the IP hooks count is one frame on the wire and the datapath's per-packet
/// counts can equal them.
///
/// # Panics
/// If `ethtool` fails.
pub fn wire_sized_packets(lab: &Lab) {
    for (ns, dev) in [
        (lab.ns_traffic(), "t0"),
        (lab.ns_far(), "br0"),
        (lab.ns_far(), "s0"),
        (lab.ns_far(), "s1"),
    ] {
        let out = lab.exec(
            ns,
            [
                "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
            ],
        );
        assert!(
            out.status.success(),
            "ethtool -K {dev} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TCP builds GSO packets whatever the device's features (tcp: always GSO, 4.19);
        // one segment per GSO packet makes the output hook see each segment.
        let out = lab.exec(ns, ["ip", "link", "set", "dev", dev, "gso_max_segs", "1"]);
        assert!(
            out.status.success(),
            "ip link set {dev} gso_max_segs 1 in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_name_both_directions() {
        let t = FiveTuple {
            initiator: Side::Traffic,
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            l4: L4::Tcp(40000, 5201),
        };
        assert_eq!(
            t.nft_match(true),
            "ip saddr 198.18.0.1 ip daddr 198.18.0.2 tcp sport 40000 tcp dport 5201"
        );
        assert_eq!(
            t.nft_match(false),
            "ip saddr 198.18.0.2 ip daddr 198.18.0.1 tcp sport 5201 tcp dport 40000"
        );
        let p = FiveTuple {
            initiator: Side::Traffic,
            src: "2001:2::1".parse().unwrap(),
            dst: "2001:2::2".parse().unwrap(),
            l4: L4::Echo(Some(7)),
        };
        assert_eq!(
            p.nft_match(false),
            "ip6 saddr 2001:2::2 ip6 daddr 2001:2::1 icmpv6 type echo-reply icmpv6 id 7"
        );
    }

    #[test]
    fn reads_a_named_counter() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet",
                "name": "orig", "table": "isoflow", "handle": 1, "packets": 5, "bytes": 420}}]}"#,
        )
        .unwrap();
        assert_eq!(
            parse_counter(&v, "orig"),
            Some(Count {
                packets: 5,
                bytes: 420
            })
        );
        assert_eq!(parse_counter(&v, "reply"), None);
    }
}
