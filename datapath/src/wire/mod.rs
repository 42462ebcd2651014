//! Zero-copy packet views: Ethernet, 802.1Q/802.1ad tags, ARP, IPv4, IPv6 and its extension
//! headers, TCP, UDP, ICMP and ICMPv6; and [`parse`], the one walk of a whole frame that the
//! worker's classify pass, control's answers and the bench's generator all share.
//!
//! # Design
//! smoltcp's `wire/` is the model. A view wraps any `T: AsRef<[u8]>` (and `AsMut<[u8]>` for
//! writing); field offsets are constants. `new_checked` validates the length once, so that no
//! accessor can panic afterwards; `new_unchecked` is for emitting into a buffer the caller sized
//! (its accessors may panic on a short buffer: the caller has checked). Protocol numbers are
//! enums with an `Unknown(raw)` variant. Errors are [`ParseError`], a one-byte `Copy` enum.
//!
//! Headers are read with safe slice reads, never cast to `repr(C)` structs. Only the IPv4 header
//! checksum is verified on the fast path ([`parse`]); L4 checksums are the end hosts' business
//! while the appliance rewrites nothing. Builders ([`checksum`]) compute them for the frames
//! isopath itself makes.
//!
//! # Limitations
//! IPv4 options are skipped, not interpreted; IPv6 extension headers other than hop-by-hop,
//! routing, fragment and destination options (AH, ESP, mobility, ...) end the walk and are
//! reported as the L4 protocol; jumbograms (RFC 2675) are not supported (not on Ethernet).

/// Implements an enum over a raw protocol number with an `Unknown(raw)` variant.
macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// Any other value.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline]
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => Self::$variant, )+
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline]
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
mod fast;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
mod parse;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use arp::ArpPacket;
pub use ethernet::{EtherType, EthernetFrame, Mac};
pub(crate) use fast::parse as parse_common;
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtHeader, Ipv6FragHeader, Ipv6Packet};
pub use parse::{
    Fragment, FrameClass, Headers, MAX_EXT_HEADERS, MAX_VLAN_TAGS, parse, parse_into,
    parse_layered, parse_layered_into,
};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vlan::VlanHeader;

enum_with_unknown! {
    /// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`) the views know.
    pub enum IpProtocol(u8) {
        /// IPv6 hop-by-hop options.
        HopByHop = 0,
        /// ICMP.
        Icmp = 1,
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
        /// IPv6 routing header.
        Ipv6Route = 43,
        /// IPv6 fragment header.
        Ipv6Frag = 44,
        /// ICMPv6.
        Icmpv6 = 58,
        /// IPv6 "no next header".
        Ipv6NoNext = 59,
        /// IPv6 destination options.
        Ipv6Opts = 60,
    }
}

/// Why a frame did not parse. Each is a counter (`parse_errors` per port); the frame is still
/// forwarded unless `[flows] strict` asks to drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ParseError {
    /// Shorter than a header it announces (a VLAN tag, ARP, the IP header, the L4 header).
    Truncated,
    /// The IP version field does not match the EtherType.
    BadIpVersion,
    /// IPv4 header length below 5 words.
    BadIhl,
    /// IPv4 total length below the header or beyond the frame; IPv6 payload length beyond it.
    BadTotalLength,
    /// More than [`MAX_VLAN_TAGS`] VLAN tags.
    TooManyVlanTags,
    /// More than [`MAX_EXT_HEADERS`] IPv6 extension headers.
    TooManyExtHeaders,
    /// The IPv4 header checksum is wrong.
    BadIpv4Checksum,
    /// TCP data offset below 5 or beyond the segment; UDP length below 8 or beyond the datagram.
    BadL4Header,
}

impl ParseError {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// Every reason, in counter order.
    pub const ALL: [ParseError; Self::COUNT] = [
        Self::Truncated,
        Self::BadIpVersion,
        Self::BadIhl,
        Self::BadTotalLength,
        Self::TooManyVlanTags,
        Self::TooManyExtHeaders,
        Self::BadIpv4Checksum,
        Self::BadL4Header,
    ];

    /// The counter's name, as shown by status (`parse_errors`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Truncated => "parse_truncated",
            Self::BadIpVersion => "parse_bad_ip_version",
            Self::BadIhl => "parse_bad_ihl",
            Self::BadTotalLength => "parse_bad_total_length",
            Self::TooManyVlanTags => "parse_too_many_vlan_tags",
            Self::TooManyExtHeaders => "parse_too_many_ext_headers",
            Self::BadIpv4Checksum => "parse_bad_ipv4_checksum",
            Self::BadL4Header => "parse_bad_l4_header",
        }
    }

    /// The drop counter's name when `[flows] strict` drops such frames.
    pub fn drop_name(self) -> &'static str {
        match self {
            Self::Truncated => "rx_drop_parse_truncated",
            Self::BadIpVersion => "rx_drop_parse_bad_ip_version",
            Self::BadIhl => "rx_drop_parse_bad_ihl",
            Self::BadTotalLength => "rx_drop_parse_bad_total_length",
            Self::TooManyVlanTags => "rx_drop_parse_too_many_vlan_tags",
            Self::TooManyExtHeaders => "rx_drop_parse_too_many_ext_headers",
            Self::BadIpv4Checksum => "rx_drop_parse_bad_ipv4_checksum",
            Self::BadL4Header => "rx_drop_parse_bad_l4_header",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for ParseError {}

// Counters are indexed by `reason as usize`: ALL must list every reason at its own index.
const _: () = {
    let mut i = 0;
    while i < ParseError::COUNT {
        assert!(
            ParseError::ALL[i] as usize == i,
            "ParseError::ALL out of order"
        );
        i += 1;
    }
};

/// A big-endian u16 at `at` (the caller has checked the length).
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A big-endian u32 at `at` (the caller has checked the length).
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `N` bytes at `at` as an array (the caller has checked the length).
#[inline]
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
