//! Test frames: Ethernet (optional 802.1Q tag), IPv4 or IPv6, UDP, and a 12-byte probe that
//! carries flow, per-flow sequence number and TX timestamp.
//!
//! Probe layout (big-endian), first bytes of the UDP payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic [`PROBE_MAGIC`] |
//! | 2 | 2 | flow (its ports: [`FrameSpec::ports`]) |
//! | 4 | 4 | sequence number within the flow |
//! | 8 | 4 | TX time: low 32 bits of CLOCK_MONOTONIC in ns (latencies up to 4.29 s) |
//!
//! The rest of the payload is byte `i` = `i as u8`. Frame sizes are given as on the wire with
//! the 4-byte FCS (64..=1518, RFC 2544 style); the frame built is 4 bytes shorter (no FCS). The
//! smallest frame that holds the probe is 64 bytes for IPv4 (68 with a VLAN tag) and 78 for IPv6.

use std::net::{Ipv4Addr, Ipv6Addr};

use isopath_datapath::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket, VlanHeader, checksum,
    ethernet, ipv4, ipv6, udp, vlan,
};
use serde::{Deserialize, Serialize};

/// First two bytes of every probe.
pub(crate) const PROBE_MAGIC: u16 = 0x1505;
/// Probe length in bytes.
pub(crate) const PROBE_LEN: usize = 12;
/// Ethernet FCS, counted in frame sizes but not present in the frames we build.
pub(crate) const FCS_LEN: usize = 4;
/// IMIX: the classic 7:4:1 mix of 64-, 570- and 1518-byte frames (sizes with FCS).
pub(crate) const IMIX: [(usize, u32); 3] = [(64, 7), (570, 4), (1518, 1)];

/// Flows per destination port: flow `f` has source port `sport_base + f % PORT_SPAN` and
/// destination port `dport_base + f / PORT_SPAN`, so up to 65535 flows are distinct 5-tuples
/// with both port bases in the usual ranges (10000 + 4095, 9 + 15).
pub(crate) const PORT_SPAN: u16 = 4096;

/// What the frames of a stream look like (all but the probe's fields and the ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FrameSpec {
    pub(crate) src_mac: [u8; 6],
    pub(crate) dst_mac: [u8; 6],
    /// 802.1Q VLAN id, if tagged.
    pub(crate) vlan: Option<u16>,
    pub(crate) ipv6: bool,
    pub(crate) src4: Ipv4Addr,
    pub(crate) dst4: Ipv4Addr,
    pub(crate) src6: Ipv6Addr,
    pub(crate) dst6: Ipv6Addr,
    /// UDP source port of flow 0 (see [`PORT_SPAN`]).
    pub(crate) sport_base: u16,
    /// UDP destination port of flow 0.
    pub(crate) dport_base: u16,
    /// The way back of the same flows: flow `f`'s ports swapped (a reverse source with the
    /// addresses swapped sends the replies of the forward source's 5-tuples).
    pub(crate) mirror: bool,
}

/// Where the fields the generator rewrites sit in a frame of a given spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offsets {
    pub(crate) l3: usize,
    pub(crate) sport: usize,
    pub(crate) csum: usize,
    pub(crate) probe: usize,
}

/// A probe read back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) flow: u16,
    pub(crate) seq: u32,
    pub(crate) ts: u32,
}

impl FrameSpec {
    /// UDP `(source, destination)` ports of `flow`.
    #[inline]
    pub(crate) fn ports(&self, flow: u16) -> (u16, u16) {
        let a = self.sport_base.wrapping_add(flow % PORT_SPAN);
        let b = self.dport_base.wrapping_add(flow / PORT_SPAN);
        if self.mirror { (b, a) } else { (a, b) }
    }

    /// Field offsets for this spec.
    pub(crate) fn offsets(&self) -> Offsets {
        let tag = if self.vlan.is_some() {
            vlan::HEADER_LEN
        } else {
            0
        };
        let l3 = ethernet::HEADER_LEN + tag;
        let l4 = l3
            + if self.ipv6 {
                ipv6::HEADER_LEN
            } else {
                ipv4::HEADER_LEN
            };
        Offsets {
            l3,
            sport: l4,
            csum: l4 + 6,
            probe: l4 + udp::HEADER_LEN,
        }
    }

    /// Smallest frame size (with FCS) that holds the probe.
    pub(crate) fn min_size(&self) -> usize {
        (self.offsets().probe + PROBE_LEN + FCS_LEN).max(64)
    }

    /// Builds a frame of `size` bytes on the wire (with FCS; the result is `size - 4` long) for
    /// `flow`, `seq`, `ts`, with correct IPv4 header and UDP checksums.
    ///
    /// # Panics
    /// If `size` is below [`Self::min_size`] or above 1518 + 4 (a tagged maximum frame).
    pub(crate) fn build(&self, size: usize, probe: Probe) -> Vec<u8> {
        let mut f = vec![0u8; size - FCS_LEN];
        let len = self.write(&mut f, size, probe);
        f.truncate(len);
        f
    }

    /// Writes the frame [`Self::build`] makes into `buf` and returns its length.
    ///
    /// # Panics
    /// As [`Self::build`], or if `buf` is too short.
    pub(crate) fn write(&self, buf: &mut [u8], size: usize, probe: Probe) -> usize {
        assert!(
            (self.min_size()..=1522).contains(&size),
            "frame size {size} outside {}..=1522",
            self.min_size()
        );
        let len = size - FCS_LEN;
        let f = &mut buf[..len];
        let o = self.offsets();
        let l3_type = if self.ipv6 {
            EtherType::Ipv6
        } else {
            EtherType::Ipv4
        };
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_dst(self.dst_mac);
        e.set_src(self.src_mac);
        if let Some(vid) = self.vlan {
            e.set_ethertype(EtherType::Vlan);
            let mut tag = VlanHeader::new_unchecked(&mut f[ethernet::HEADER_LEN..]);
            tag.set_tci(0, vid);
            tag.set_ethertype_raw(l3_type.into());
        } else {
            e.set_ethertype(l3_type);
        }
        let l4 = o.sport;
        let udp_len = len - l4;
        if self.ipv6 {
            Ipv6Packet::new_unchecked(&mut f[o.l3..]).fill(
                self.src6,
                self.dst6,
                IpProtocol::Udp,
                udp_len,
                64,
            );
        } else {
            Ipv4Packet::new_unchecked(&mut f[o.l3..]).fill(
                self.src4,
                self.dst4,
                IpProtocol::Udp,
                udp_len,
                64,
                true,
            );
        }
        let (sport, dport) = self.ports(probe.flow);
        UdpPacket::new_unchecked(&mut f[l4..]).fill(sport, dport, udp_len - udp::HEADER_LEN);
        let p = o.probe;
        put16(f, p, PROBE_MAGIC);
        put16(f, p + 2, probe.flow);
        f[p + 4..p + 8].copy_from_slice(&probe.seq.to_be_bytes());
        f[p + 8..p + 12].copy_from_slice(&probe.ts.to_be_bytes());
        for (i, b) in f[p + PROBE_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = self.udp_checksum(f);
        UdpPacket::new_unchecked(&mut f[l4..]).set_checksum(c);
        len
    }

    /// Stamps `probe` into a frame of this spec (a template, or a frame stamped before), as
    /// bench.bpf.c does: both ports and the probe fields rewritten, the UDP checksum updated
    /// incrementally from each rewritten word's old value (RFC 1624), on raw big-endian words.
    #[inline]
    pub(crate) fn stamp(&self, f: &mut [u8], probe: Probe) {
        let o = self.offsets();
        let word = |f: &[u8], at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let mut new = [0u8; PROBE_LEN];
        new[2..4].copy_from_slice(&probe.flow.to_be_bytes());
        new[4..8].copy_from_slice(&probe.seq.to_be_bytes());
        new[8..12].copy_from_slice(&probe.ts.to_be_bytes());
        let mut sum = u32::from(!word(f, o.csum));
        let (sport, dport) = self.ports(probe.flow);
        for (at, port) in [(o.sport, sport), (o.sport + 2, dport)] {
            sum += u32::from(!word(f, at)) + u32::from(port);
            put16(f, at, port);
        }
        for k in 1..6 {
            let at = o.probe + 2 * k;
            let w = u16::from_be_bytes([new[2 * k], new[2 * k + 1]]);
            sum += u32::from(!word(f, at)) + u32::from(w);
            put16(f, at, w);
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let c = !(sum as u16);
        put16(f, o.csum, if c == 0 { 0xffff } else { c });
    }

    /// The UDP checksum of a frame of this spec (its checksum field taken as zero). Never 0.
    fn udp_checksum(&self, f: &[u8]) -> u16 {
        let o = self.offsets();
        let udp = &f[o.sport..];
        let proto = IpProtocol::Udp.into();
        let pseudo = if self.ipv6 {
            checksum::pseudo_v6(self.src6, self.dst6, proto, udp.len())
        } else {
            checksum::pseudo_v4(self.src4, self.dst4, proto, udp.len())
        };
        // The checksum field (bytes 6..8) counts as zero.
        let acc = checksum::sum(&udp[..6], pseudo);
        match !checksum::fold(checksum::sum(&udp[8..], acc)) {
            0 => 0xffff,
            c => c,
        }
    }

    /// Whether `f` (a frame of this spec) carries correct IPv4 header and UDP checksums.
    #[cfg(test)]
    pub(crate) fn checksums_ok(&self, f: &[u8]) -> bool {
        let o = self.offsets();
        let ip_ok = self.ipv6 || checksum::verify(&f[o.l3..o.l3 + ipv4::HEADER_LEN]);
        let c = u16::from_be_bytes([f[o.csum], f[o.csum + 1]]);
        ip_ok && c == self.udp_checksum(f)
    }
}

/// Frame size (with FCS) of frame number `i` of a stream: fixed, or IMIX in a fixed
/// interleaved order (7:4:1 over every 12 frames).
pub(crate) fn size_of_frame(size: FrameSize, i: u64) -> usize {
    match size {
        FrameSize::Fixed(s) => s,
        FrameSize::Imix => {
            // 64 570 64 1518 64 570 64 570 64 64 570 64
            const ORDER: [usize; 12] = [0, 1, 0, 2, 0, 1, 0, 1, 0, 0, 1, 0];
            IMIX[ORDER[(i % 12) as usize]].0
        }
    }
}

/// A frame size, or IMIX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FrameSize {
    Fixed(usize),
    Imix,
}

impl FrameSize {
    /// Mean frame size on the wire (with FCS).
    pub(crate) fn mean(self) -> f64 {
        match self {
            FrameSize::Fixed(s) => s as f64,
            FrameSize::Imix => {
                let (n, w) = IMIX.iter().fold((0.0, 0.0), |(n, w), &(s, k)| {
                    (n + (s as f64) * f64::from(k), w + f64::from(k))
                });
                n / w
            }
        }
    }
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSize::Fixed(s) => write!(f, "{s}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

impl std::str::FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        let n: usize = s.parse().map_err(|e| format!("frame size {s:?}: {e}"))?;
        if !(64..=1518).contains(&n) {
            return Err(format!("frame size {n} outside 64..=1518"));
        }
        Ok(FrameSize::Fixed(n))
    }
}

/// Reads the probe of a frame: Ethernet, optional 802.1Q, IPv4 or IPv6, UDP, magic. `None` for
/// anything else (ARP, other protocols, short frames, foreign UDP). The views' length checks
/// only: a receiver counting probes does not verify checksums.
#[inline]
pub(crate) fn parse(f: &[u8]) -> Option<Probe> {
    let e = EthernetFrame::new_checked(f).ok()?;
    let (et, l3) = match e.ethertype() {
        EtherType::Vlan => {
            let tag = VlanHeader::new_checked(&f[ethernet::HEADER_LEN..]).ok()?;
            (tag.ethertype_raw(), ethernet::HEADER_LEN + vlan::HEADER_LEN)
        }
        t => (t.into(), ethernet::HEADER_LEN),
    };
    let l3 = &f[l3..];
    let udp = match EtherType::from(et) {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            if ip.protocol() != IpProtocol::Udp {
                return None;
            }
            &l3[ip.header_len()..usize::from(ip.total_len())]
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            if ip.next_header() != IpProtocol::Udp {
                return None;
            }
            &l3[ipv6::HEADER_LEN..ipv6::HEADER_LEN + usize::from(ip.payload_len())]
        }
        _ => return None,
    };
    let u = UdpPacket::new_checked(udp).ok()?;
    let p = u.payload().get(..PROBE_LEN)?;
    if u16::from_be_bytes([p[0], p[1]]) != PROBE_MAGIC {
        return None;
    }
    Some(Probe {
        flow: u16::from_be_bytes([p[2], p[3]]),
        seq: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ts: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    })
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("MAC address {s:?}: want six hex bytes"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|e| format!("MAC address {s:?}: {e}"))?;
    }
    Ok(mac)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(ipv6: bool, vlan: Option<u16>) -> FrameSpec {
        FrameSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlan,
            ipv6,
            src4: Ipv4Addr::new(198, 18, 0, 1),
            dst4: Ipv4Addr::new(198, 18, 0, 2),
            src6: "2001:2::1".parse().unwrap(),
            dst6: "2001:2::2".parse().unwrap(),
            sport_base: 10000,
            dport_base: 9,
            mirror: false,
        }
    }

    #[test]
    fn flows_are_distinct_5_tuples_and_mirror_back() {
        let fwd = spec(false, None);
        let rev = FrameSpec {
            mirror: true,
            ..fwd.clone()
        };
        let mut seen = std::collections::HashSet::new();
        for flow in 0..u16::MAX {
            let (s, d) = fwd.ports(flow);
            assert!(seen.insert((s, d)), "flow {flow} repeats {s}->{d}");
            assert_eq!(rev.ports(flow), (d, s));
        }
        assert_eq!(fwd.ports(0), (10000, 9));
        assert_eq!(fwd.ports(4097), (10001, 10));
        let f = rev.build(
            64,
            Probe {
                flow: 4097,
                seq: 1,
                ts: 2,
            },
        );
        let l4 = rev.offsets().sport;
        assert_eq!(&f[l4..l4 + 4], &[0, 10, 0x27, 0x11]);
        assert!(rev.checksums_ok(&f));
    }

    #[test]
    fn frames_have_valid_checksums_and_parse_back() {
        for (ipv6, vlan) in [
            (false, None),
            (false, Some(7)),
            (true, None),
            (true, Some(4094)),
        ] {
            let s = spec(ipv6, vlan);
            for size in [s.min_size(), 128, 571, 1518] {
                let p = Probe {
                    flow: 3,
                    seq: 0xdead_beef,
                    ts: 77,
                };
                let f = s.build(size, p);
                assert_eq!(f.len(), size - FCS_LEN);
                assert!(s.checksums_ok(&f), "{ipv6} {vlan:?} {size}");
                assert_eq!(parse(&f), Some(p));
            }
        }
    }

    #[test]
    fn incremental_update_matches_a_full_build() {
        for (ipv6, mirror) in [(false, false), (true, false), (false, true)] {
            let s = FrameSpec {
                mirror,
                ..spec(ipv6, None)
            };
            let zero = Probe {
                flow: 0,
                seq: 0,
                ts: 0,
            };
            for (flow, seq, ts) in [
                (0, 0, 0),
                (1, 1, 1),
                (65535, u32::MAX, u32::MAX),
                (4096 * 7 + 3, 5, 6),
                (17, 123_456, 0x8000_0001),
            ] {
                let mut f = s.build(100, zero);
                // Over a template, and over a frame stamped before (a recycled page).
                s.stamp(
                    &mut f,
                    Probe {
                        flow: 9,
                        seq: 0x1234_5678,
                        ts: 0xffff_0000,
                    },
                );
                s.stamp(&mut f, Probe { flow, seq, ts });
                assert_eq!(
                    f,
                    s.build(100, Probe { flow, seq, ts }),
                    "{flow} {seq} {ts}"
                );
            }
        }
    }

    #[test]
    fn minimum_sizes() {
        assert_eq!(spec(false, None).min_size(), 64);
        assert_eq!(spec(false, Some(1)).min_size(), 64);
        assert_eq!(spec(true, None).min_size(), 78);
        assert_eq!(spec(true, Some(1)).min_size(), 82);
    }

    #[test]
    fn imix_mix_and_mean() {
        let mut counts = [0u32; 3];
        for i in 0..1200 {
            let s = size_of_frame(FrameSize::Imix, i);
            counts[IMIX.iter().position(|&(x, _)| x == s).unwrap()] += 1;
        }
        assert_eq!(counts, [700, 400, 100]);
        assert!((FrameSize::Imix.mean() - (7.0 * 64.0 + 4.0 * 570.0 + 1518.0) / 12.0).abs() < 1e-9);
        assert_eq!("imix".parse::<FrameSize>(), Ok(FrameSize::Imix));
        assert!("63".parse::<FrameSize>().is_err());
    }

    #[test]
    fn foreign_frames_do_not_parse() {
        let s = spec(false, None);
        let mut f = s.build(
            64,
            Probe {
                flow: 0,
                seq: 0,
                ts: 0,
            },
        );
        assert!(parse(&f[..40]).is_none());
        f[s.offsets().probe] ^= 1;
        assert!(parse(&f).is_none());
        assert!(parse(&[0u8; 60]).is_none());
    }
}
