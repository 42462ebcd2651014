//! The flow key: built from a frame and its classify verdict, normalised so that both
//! directions of a connection give the same key, and hashed with a keyed hash.
//!
//! # Hash
//! A keyed folded multiply (the construction of wyhash, rapidhash and foldhash): the key's
//! eleven words are XORed with secret 64-bit words drawn at start from the OS's random source
//! (through std's `RandomState`), multiplied pairwise to 128 bits and folded, three products in
//! parallel, then mixed once more with a secret. Three multiplies for a 44-byte key: about
//! 2 ns. Why: the key has a fixed length (no length games), an attacker who chooses 5-tuples
//! but does not know the 448 secret bits cannot predict buckets or tags, and it is several
//! times faster than SipHash-1-3 (std's DoS-resistant default, about 20 ns for this key),
//! which would be a third of the per-packet budget. It is not a cryptographic MAC; the table
//! also bounds what collisions can cost (fixed buckets, a bounded cuckoo walk, a counted
//! failure), so a flood of colliding keys degrades to `flow_table_full`, never to a stall.

use std::hash::{BuildHasher, Hasher, RandomState};

use crate::{
    wire::{Fragment, FrameClass, Headers},
    worker::classify::Verdict,
};

/// Words in a key: 8 of addresses, ports, VLANs and protocol, zone and family.
pub(crate) const KEY_WORDS: usize = 11;

/// Which way a packet goes, relative to the normalised key (endpoint `a` is the lesser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Dir {
    /// From endpoint `a` to endpoint `b`.
    #[default]
    AtoB = 0,
    /// From `b` to `a`.
    BtoA = 1,
}

/// Why a frame is not tracked (it is forwarded all the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Skip {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// A non-first IP fragment: it carries no ports.
    Fragment,
    /// The frame did not parse to its L4 header.
    ParseError,
    /// A TCP segment that cannot open a flow (a RST, or neither SYN nor ACK) and matches none.
    TcpInvalid,
}

impl Skip {
    /// Number of reasons.
    pub const COUNT: usize = 4;
    /// Every reason, in counter order.
    pub const ALL: [Skip; Self::COUNT] = [
        Self::NotIp,
        Self::Fragment,
        Self::ParseError,
        Self::TcpInvalid,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotIp => "flow_skip_not_ip",
            Self::Fragment => "flow_skip_fragment",
            Self::ParseError => "flow_skip_parse_error",
            Self::TcpInvalid => "flow_skip_tcp_invalid",
        }
    }
}

/// A bidirectional flow key: zone, VLAN ids, both addresses, protocol, both ports (or the
/// ICMP echo identifier on both sides). IPv4 addresses sit in the first 4 bytes of each
/// 16-byte address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Words: `0..4` address a, `4..8` address b (each in network byte order, read as native
    /// words), `8` port a << 16 | port b, `9` outer VLAN << 20 | inner VLAN << 8 | protocol,
    /// `10` zone << 16 | IPv6 flag.
    pub(crate) w: [u32; KEY_WORDS],
}

impl FlowKey {
    /// A key from one direction's 5-tuple; returns it with the direction the packet goes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src: &[u8; 16],
        dst: &[u8; 16],
        sport: u16,
        dport: u16,
        proto: u8,
        v6: bool,
        vlan: [u16; 2],
        zone: u16,
    ) -> (Self, Dir) {
        let s = addr_words(src);
        let d = addr_words(dst);
        let (a, b, pa, pb, dir) = if (s, sport) <= (d, dport) {
            (s, d, sport, dport, Dir::AtoB)
        } else {
            (d, s, dport, sport, Dir::BtoA)
        };
        let mut w = [0u32; KEY_WORDS];
        w[..4].copy_from_slice(&a);
        w[4..8].copy_from_slice(&b);
        w[8] = u32::from(pa) << 16 | u32::from(pb);
        w[9] =
            u32::from(vlan[0] & 0xfff) << 20 | u32::from(vlan[1] & 0xfff) << 8 | u32::from(proto);
        w[10] = u32::from(zone) << 16 | u32::from(v6);
        (Self { w }, dir)
    }

    /// The key of a frame the classify pass judged, and the direction it goes.
    ///
    /// # Errors
    /// Why the frame is not tracked.
    #[inline(always)]
    pub fn from_frame(frame: &[u8], v: &Verdict, zone: u16) -> Result<(Self, Dir), Skip> {
        Self::from_headers(frame, &v.hdr, zone)
    }

    /// [`FlowKey::from_frame`] from the headers alone: the addresses read once from their
    /// offsets as fixed-size words, the tuple normalised by one compare and conditional
    /// moves, the key's words written once (the same key as [`FlowKey::new`] of the same
    /// 5-tuple).
    ///
    /// # Errors
    /// Why the frame is not tracked.
    #[inline(always)]
    pub fn from_headers(frame: &[u8], h: &Headers, zone: u16) -> Result<(Self, Dir), Skip> {
        let mut k = Self::default();
        let d = k.build(frame, h, zone)?;
        Ok((k, d))
    }

    /// [`FlowKey::from_headers`] into `self` (a burst's slot: the key is written once, in
    /// place); returns the direction. On an error `self` holds no particular key.
    ///
    /// # Errors
    /// Why the frame is not tracked.
    #[inline(always)]
    pub(crate) fn build(&mut self, frame: &[u8], h: &Headers, zone: u16) -> Result<Dir, Skip> {
        let v6 = match h.class {
            FrameClass::Ipv4 => false,
            FrameClass::Ipv6 => true,
            _ => return Err(Skip::NotIp),
        };
        if h.error.is_some() {
            return Err(Skip::ParseError);
        }
        if h.frag == Fragment::Later {
            return Err(Skip::Fragment);
        }
        let (sport, dport) = if matches!(h.proto, 6 | 17) {
            (h.sport, h.dport)
        } else {
            other_ports(h)
        };
        // The parse leaves the ids of tags it did not read at 0.
        let w9 = u32::from(h.vlan[0] & 0xfff) << 20
            | u32::from(h.vlan[1] & 0xfff) << 8
            | u32::from(h.proto);
        let w10 = u32::from(zone) << 16 | u32::from(v6);
        let l3 = usize::from(h.l3);
        let w = &mut self.w;
        let dir = if v6 {
            let Some(a) = frame.get(l3 + 8..).and_then(|a| a.first_chunk::<32>()) else {
                return Err(Skip::ParseError);
            };
            let (s, d) = a.split_at(16);
            let s = u128::from_be_bytes(s.try_into().unwrap_or_default());
            let d = u128::from_be_bytes(d.try_into().unwrap_or_default());
            let fwd = (s, sport) <= (d, dport);
            let (a, b) = if fwd { (s, d) } else { (d, s) };
            for i in 0..4 {
                w[i] = (a >> (96 - 32 * i)) as u32;
                w[4 + i] = (b >> (96 - 32 * i)) as u32;
            }
            let p = u32::from(sport) << 16 | u32::from(dport);
            w[8] = if fwd { p } else { p.rotate_left(16) };
            fwd
        } else {
            let Some(a) = frame.get(l3 + 12..).and_then(|a| a.first_chunk::<8>()) else {
                return Err(Skip::ParseError);
            };
            // Address and port as one number each: the lesser is endpoint a.
            let s =
                u64::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])) << 16 | u64::from(sport);
            let d =
                u64::from(u32::from_be_bytes([a[4], a[5], a[6], a[7]])) << 16 | u64::from(dport);
            let (a, b) = (s.min(d), s.max(d));
            *w = [0; KEY_WORDS];
            w[0] = (a >> 16) as u32;
            w[4] = (b >> 16) as u32;
            w[8] = (a as u32) << 16 | (b as u32 & 0xffff);
            s <= d
        };
        w[9] = w9;
        w[10] = w10;
        Ok(if dir { Dir::AtoB } else { Dir::BtoA })
    }

    /// Address of endpoint `a` (16 bytes; IPv4 in the first 4).
    pub fn addr_a(&self) -> [u8; 16] {
        addr_bytes(&self.w[..4])
    }

    /// Address of endpoint `b`.
    pub fn addr_b(&self) -> [u8; 16] {
        addr_bytes(&self.w[4..8])
    }

    /// Port of endpoint `a` (ICMP echo: the identifier).
    pub fn port_a(&self) -> u16 {
        (self.w[8] >> 16) as u16
    }

    /// Port of endpoint `b`.
    pub fn port_b(&self) -> u16 {
        self.w[8] as u16
    }

    /// IP protocol.
    pub fn proto(&self) -> u8 {
        self.w[9] as u8
    }

    /// VLAN ids, outer first (0: none).
    pub fn vlan(&self) -> [u16; 2] {
        [(self.w[9] >> 20) as u16, ((self.w[9] >> 8) & 0xfff) as u16]
    }

    /// Zone (namespace) id.
    pub fn zone(&self) -> u16 {
        (self.w[10] >> 16) as u16
    }

    /// Whether the addresses are IPv6.
    pub fn is_v6(&self) -> bool {
        self.w[10] & 1 != 0
    }

    /// Whether `other` names the same connection: addresses, ports, protocol, zone and family,
    /// whatever the VLAN tags (`flow del` by 5-tuple, as `conntrack -D`).
    pub fn same_tuple(&self, other: &Self) -> bool {
        self.w[..9] == other.w[..9]
            && self.proto() == other.proto()
            && self.zone() == other.zone()
            && self.is_v6() == other.is_v6()
    }

    /// Endpoint `a` as an address.
    pub fn ip_a(&self) -> std::net::IpAddr {
        ip(self.addr_a(), self.is_v6())
    }

    /// Endpoint `b` as an address.
    pub fn ip_b(&self) -> std::net::IpAddr {
        ip(self.addr_b(), self.is_v6())
    }
}

/// The ports of a frame that is neither TCP nor UDP: SCTP and UDP-Lite have ports; ICMP echo
/// request and reply (ICMP 8/0, ICMPv6 128/129) share the identifier; other ICMP messages and
/// protocols make one flow per address pair.
#[cold]
#[inline(never)]
fn other_ports(h: &Headers) -> (u16, u16) {
    match h.proto {
        132 | 136 => (h.sport, h.dport),
        1 | 58 => match (h.dport >> 8) as u8 {
            0 | 8 | 128 | 129 => (h.sport, h.sport),
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

fn ip(a: [u8; 16], v6: bool) -> std::net::IpAddr {
    if v6 {
        std::net::Ipv6Addr::from(a).into()
    } else {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
    }
}

#[inline]
fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, w) in w.iter_mut().enumerate() {
        *w = u32::from_be_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
    }
    w
}

fn addr_bytes(w: &[u32]) -> [u8; 16] {
    let mut a = [0u8; 16];
    for (i, w) in w.iter().enumerate() {
        a[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    a
}

/// The table's keyed hash (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    k: [u64; 8],
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl KeyHasher {
    /// Secrets from the OS's random source.
    pub(crate) fn random() -> Self {
        let s = RandomState::new();
        let mut k = [0u64; 8];
        for (i, k) in k.iter_mut().enumerate() {
            let mut h = s.build_hasher();
            h.write_u64(i as u64);
            // An odd multiplier never maps a lane to zero by itself.
            *k = h.finish() | 1;
        }
        Self { k }
    }

    /// Fixed secrets (tests and benches that must repeat).
    pub(crate) fn with_seed(seed: u64) -> Self {
        let mut k = [0u64; 8];
        let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
        for k in &mut k {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *k = (z ^ (z >> 31)) | 1;
        }
        Self { k }
    }

    /// The key's 64-bit hash.
    #[inline(always)]
    pub(crate) fn hash(&self, key: &FlowKey) -> u64 {
        let w = &key.w;
        let x = |i: usize| u64::from(w[i]) | u64::from(w[i + 1]) << 32;
        let k = &self.k;
        let h = fold(x(0) ^ k[0], x(2) ^ k[1])
            ^ fold(x(4) ^ k[2], x(6) ^ k[3])
            ^ fold(x(8) ^ k[4], u64::from(w[10]) ^ k[5]);
        fold(h ^ k[6], k[7])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    #[test]
    fn both_directions_give_one_key() {
        let (s, d) = (v4([198, 18, 0, 1]), v4([198, 18, 0, 2]));
        let (k1, d1) = FlowKey::new(&s, &d, 40000, 80, 6, false, [10, 20], 3);
        let (k2, d2) = FlowKey::new(&d, &s, 80, 40000, 6, false, [10, 20], 3);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert_eq!((k1.port_a(), k1.port_b(), k1.proto()), (40000, 80, 6));
        assert_eq!((k1.vlan(), k1.zone(), k1.is_v6()), ([10, 20], 3, false));
        assert_eq!(k1.ip_a().to_string(), "198.18.0.1");
        assert_eq!(k1.ip_b().to_string(), "198.18.0.2");
        let h = KeyHasher::with_seed(1);
        assert_eq!(h.hash(&k1), h.hash(&k2));
        let (k3, _) = FlowKey::new(&s, &d, 40001, 80, 6, false, [10, 20], 3);
        assert_ne!(h.hash(&k1), h.hash(&k3));
        let (k4, _) = FlowKey::new(&s, &d, 40000, 80, 6, false, [10, 20], 4);
        assert_ne!(k1, k4, "zones differ");
    }

    /// The key built in place from a frame's headers equals the reference built from the
    /// 5-tuple ([`FlowKey::new`]), for both families, either order of the endpoints, equal
    /// addresses (the ports decide), equal endpoints, VLANs and ICMP.
    #[test]
    fn from_headers_matches_the_reference() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..4000u32 {
            let v6 = i % 2 == 1;
            let len = if v6 { 16 } else { 4 };
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            for b in &mut src[..len] {
                *b = (rnd() % 3) as u8;
            }
            for b in &mut dst[..len] {
                *b = (rnd() % 3) as u8;
            }
            let proto = [6u8, 17, 1, 58, 132, 47][(i / 2 % 6) as usize];
            let (sport, dport) = (
                (rnd() % 3) as u16,
                (rnd() % 3) as u16 | ((8 << 8) * (i as u16 & 4)),
            );
            let vlan = [(rnd() % 5000) as u16 & 0xfff, (rnd() % 5000) as u16 & 0xfff];
            let l3 = 14 + 4 * (i as usize % 3);
            let mut frame = vec![0u8; l3 + 40];
            if v6 {
                frame[l3 + 8..l3 + 24].copy_from_slice(&src);
                frame[l3 + 24..l3 + 40].copy_from_slice(&dst);
            } else {
                frame[l3 + 12..l3 + 16].copy_from_slice(&src[..4]);
                frame[l3 + 16..l3 + 20].copy_from_slice(&dst[..4]);
            }
            let h = Headers {
                class: if v6 {
                    FrameClass::Ipv6
                } else {
                    FrameClass::Ipv4
                },
                l3: l3 as u16,
                proto,
                sport,
                dport,
                vlan,
                tags: 2,
                ..Headers::default()
            };
            let (sp, dp) = match proto {
                6 | 17 | 132 => (sport, dport),
                1 | 58 if matches!((dport >> 8) as u8, 0 | 8 | 128 | 129) => (sport, sport),
                _ => (0, 0),
            };
            let want = FlowKey::new(&src, &dst, sp, dp, proto, v6, vlan, 9);
            assert_eq!(FlowKey::from_headers(&frame, &h, 9), Ok(want), "case {i}");
            assert_eq!(
                FlowKey::from_headers(&frame[..l3 + if v6 { 39 } else { 19 }], &h, 9),
                Err(Skip::ParseError),
                "truncated addresses, case {i}"
            );
        }
    }
}
