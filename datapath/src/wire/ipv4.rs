//! IPv4 headers (RFC 791), options skipped.

use std::net::Ipv4Addr;

use super::{IpProtocol, ParseError, array, be16, checksum, put16};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: usize = 2;
    pub(super) const IDENT: usize = 4;
    pub(super) const FLAGS_FRAG: usize = 6;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: usize = 12;
    pub(super) const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// A view of an IPv4 packet. Once checked, the header (options included) and the `total
/// length` bytes it announces are inside the buffer; what follows them (Ethernet padding) is
/// outside [`Self::payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than the header or than `total length`.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking the version, the header length and the total length
    /// against it (the checksum is [`Self::verify_checksum`]'s business).
    ///
    /// # Errors
    /// [`ParseError::Truncated`] (shorter than 20 bytes or than the header), `BadIpVersion`,
    /// `BadIhl` (below 5 words), `BadTotalLength` (below the header or beyond the buffer).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(ParseError::BadIpVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < HEADER_LEN {
            return Err(ParseError::BadIhl);
        }
        if b.len() < hl {
            return Err(ParseError::Truncated);
        }
        let total = usize::from(be16(b, field::LENGTH));
        if total < hl || total > b.len() {
            return Err(ParseError::BadTotalLength);
        }
        Ok(Self { buffer })
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN.
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length: header and payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More fragments follow.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET) << 3
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol number.
    #[inline]
    pub fn protocol_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The protocol.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        self.protocol_raw().into()
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        array::<4>(self.buffer.as_ref(), field::SRC).into()
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        array::<4>(self.buffer.as_ref(), field::DST).into()
    }

    /// Options (empty for a 20-byte header).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        match b.first_chunk::<HEADER_LEN>() {
            Some(h) if self.header_len() == HEADER_LEN => checksum::verify20(h),
            _ => checksum::verify(&b[..self.header_len()]),
        }
    }

    /// The payload: from the end of the header to `total length`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes a 20-byte header (no options) with its checksum: `payload_len` bytes follow,
    /// `df` sets Don't Fragment; identification and fragment offset are 0.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn fill(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        ttl: u8,
        df: bool,
    ) {
        let b = self.buffer.as_mut();
        b[field::VER_IHL] = 0x45;
        b[field::DSCP_ECN] = 0;
        put16(b, field::LENGTH, (HEADER_LEN + payload_len) as u16);
        put16(b, field::IDENT, 0);
        put16(b, field::FLAGS_FRAG, if df { FLAG_DF } else { 0 });
        b[field::TTL] = ttl;
        b[field::PROTOCOL] = protocol.into();
        b[field::SRC..field::SRC + 4].copy_from_slice(&src.octets());
        b[field::DST..field::DST + 4].copy_from_slice(&dst.octets());
        self.fill_checksum();
    }

    /// Sets identification, flags and fragment offset (in bytes, a multiple of 8).
    pub fn set_frag(&mut self, ident: u16, more: bool, offset: u16) {
        let b = self.buffer.as_mut();
        put16(b, field::IDENT, ident);
        let flags = if more { FLAG_MF } else { 0 };
        put16(b, field::FLAGS_FRAG, flags | ((offset >> 3) & FRAG_OFFSET));
    }

    /// Sets the source address.
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Recomputes the header checksum (after any header change).
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        put16(b, field::CHECKSUM, 0);
        let c = checksum::checksum(&b[..hl]);
        put16(b, field::CHECKSUM, c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 198.18.0.1 -> 198.18.0.2, UDP, 8 bytes of payload, DF, TTL 64.
    pub(crate) const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xae, 0xa9, 198, 18, 0, 1, 198,
        18, 0, 2, 0x30, 0x39, 0x00, 0x09, 0x00, 0x08, 0x00, 0x00,
    ];

    #[test]
    fn golden_header_reads_and_writes_back() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!((p.frag_offset(), p.ttl()), (0, 64));
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(198, 18, 0, 2));
        assert!(p.verify_checksum(), "checksum {:#06x}", p.checksum());
        assert_eq!(p.payload().len(), 8);
        assert!(p.options().is_empty());
        let mut buf = PACKET;
        buf[..20].fill(0);
        Ipv4Packet::new_unchecked(&mut buf[..]).fill(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            IpProtocol::Udp,
            8,
            64,
            true,
        );
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn malformed_headers_name_their_fault() {
        let with = |i: usize, v: u8| {
            let mut p = PACKET;
            p[i] = v;
            p
        };
        let check = |b: &[u8]| Ipv4Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&PACKET[..19]), Err(ParseError::Truncated));
        assert_eq!(check(&with(0, 0x65)), Err(ParseError::BadIpVersion));
        assert_eq!(check(&with(0, 0x44)), Err(ParseError::BadIhl));
        assert_eq!(
            check(&with(0, 0x48)),
            Err(ParseError::Truncated),
            "32-byte header in 28"
        );
        assert_eq!(
            check(&with(3, 0x13)),
            Err(ParseError::BadTotalLength),
            "19 < 20"
        );
        assert_eq!(
            check(&with(3, 0x1d)),
            Err(ParseError::BadTotalLength),
            "29 > 28"
        );
        // Padding after the packet is fine and stays out of the payload.
        let mut padded = PACKET.to_vec();
        padded.resize(46, 0);
        assert_eq!(
            Ipv4Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            8
        );
        assert!(
            !Ipv4Packet::new_checked(&with(8, 63)[..])
                .unwrap()
                .verify_checksum()
        );
    }

    #[test]
    fn options_and_fragments() {
        // A 24-byte header (one 4-byte option: NOPs) and a non-first fragment.
        let mut b = [0u8; 32];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.fill(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            IpProtocol::Udp,
            12,
            64,
            false,
        );
        b[0] = 0x46;
        b[3] = 32;
        b[20..24].fill(1);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_frag(7, true, 1480);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.header_len(), p.options(), p.payload().len()),
            (24, &[1u8; 4][..], 8)
        );
        assert_eq!(
            (p.ident(), p.more_frags(), p.frag_offset()),
            (7, true, 1480)
        );
        assert!(p.verify_checksum());
    }
}
