//! Frames control sends on a bond's members: peer notifications after a change of active member.
//!
//! - Gratuitous ARP (a request for the appliance's own IPv4 address, sender = target), as Linux's
//!   bonding sends `num_grat_arp` of.
//! - Unsolicited neighbour advertisement (RFC 4861 §7.2.6, Override flag, to all-nodes), as
//!   Linux sends `num_unsol_na` of.
//! - Re-announcement of a MAC address seen behind the appliance: one broadcast RARP frame
//!   sourced from it (what QEMU and hypervisors send after a live migration), so that switches
//!   relearn where that host now is.
//!
//! All are padded to the 60-byte Ethernet minimum.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A MAC address.
pub type Mac = [u8; 6];

const BROADCAST: Mac = [0xff; 6];
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_RARP: u16 = 0x8035;
const ETH_P_IPV6: u16 = 0x86dd;
const MIN_FRAME: usize = 60;

fn eth(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

fn arp_body(f: &mut Vec<u8>, op: u16, sha: Mac, spa: [u8; 4], tha: Mac, tpa: [u8; 4]) {
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
}

/// A gratuitous ARP request announcing that `ip` is at `mac`.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(BROADCAST, mac, ETH_P_ARP);
    arp_body(&mut f, 1, mac, ip.octets(), [0; 6], ip.octets());
    pad(f)
}

/// A broadcast RARP frame sourced from `mac`: makes every learning switch on the path move
/// `mac` to the port it arrives on.
pub fn announce(mac: Mac) -> Vec<u8> {
    let mut f = eth(BROADCAST, mac, ETH_P_RARP);
    arp_body(&mut f, 3, mac, [0; 4], mac, [0; 4]);
    pad(f)
}

/// An unsolicited neighbour advertisement for `ip` at `mac`, to all nodes (ff02::1).
pub fn unsolicited_na(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    let dst_ip = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = eth([0x33, 0x33, 0, 0, 0, 1], mac, ETH_P_IPV6);
    // ICMPv6: type 136, code 0, checksum, flags (Override), target, option 2 (target LL addr).
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]);
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes());
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, dst_ip, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    // IPv6 header: version 6, payload length, next header 58, hop limit 255 (RFC 4861).
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&dst_ip.octets());
    f.extend_from_slice(&icmp);
    pad(f)
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `msg` (whose checksum field is zero).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address.
pub fn fmt_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 1, 1];

    #[test]
    fn gratuitous_arp_layout() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &MAC, "sender MAC");
        assert_eq!(&f[28..32], &[198, 18, 0, 10], "sender IP");
        assert_eq!(&f[38..42], &[198, 18, 0, 10], "target IP = sender IP");
    }

    #[test]
    fn announce_is_broadcast_rarp_from_the_host() {
        let host = [2, 0, 0, 0, 0, 1];
        let f = announce(host);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &host);
        assert_eq!(&f[12..14], &[0x80, 0x35]);
        assert_eq!(&f[20..22], &[0, 3]);
    }

    #[test]
    fn unsolicited_na_checksum_verifies() {
        let ip: Ipv6Addr = "2001:2::10".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 6], 58);
        assert_eq!(f[14 + 7], 255);
        let icmp = &f[54..54 + 32];
        assert_eq!(icmp[0], 136);
        assert_eq!(&icmp[8..24], &ip.octets());
        // Summing over the message including its checksum gives 0 (one's complement).
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(ip, dst, icmp), 0);
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(parse_mac("02:00:00:00:01:01"), Some(MAC));
        assert_eq!(fmt_mac(&MAC), "02:00:00:00:01:01");
        for bad in ["", "02:00", "02:00:00:00:01:01:07", "zz:00:00:00:01:01"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
