//! IPv6 headers (RFC 8200) and the extension headers [`super::parse`] walks: hop-by-hop,
//! routing, fragment and destination options.

use std::net::Ipv6Addr;

use super::{IpProtocol, ParseError, array, be16, be32, put16, put32};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Length of a fragment header.
pub const FRAG_HEADER_LEN: usize = 8;

mod field {
    pub(super) const VER_TC_FLOW: usize = 0;
    pub(super) const PAYLOAD_LEN: usize = 4;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: usize = 8;
    pub(super) const DST: usize = 24;
}

/// A view of an IPv6 packet. Once checked, the fixed header and the `payload length` bytes it
/// announces are inside the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than 40 bytes plus `payload length`.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking the version and the payload length against it.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] (shorter than 40 bytes), `BadIpVersion`, `BadTotalLength`
    /// (payload beyond the buffer).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(ParseError::BadIpVersion);
        }
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(ParseError::BadTotalLength);
        }
        Ok(Self { buffer })
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// Flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// The first next-header number.
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The first next header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        self.next_header_raw().into()
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        array::<16>(self.buffer.as_ref(), field::SRC).into()
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        array::<16>(self.buffer.as_ref(), field::DST).into()
    }

    /// The payload: extension headers and upper-layer message, `payload length` bytes.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes the fixed header: traffic class and flow label 0.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn fill(
        &mut self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next_header: IpProtocol,
        payload_len: usize,
        hop_limit: u8,
    ) {
        let b = self.buffer.as_mut();
        put32(b, field::VER_TC_FLOW, 6 << 28);
        put16(b, field::PAYLOAD_LEN, payload_len as u16);
        b[field::NEXT_HEADER] = next_header.into();
        b[field::HOP_LIMIT] = hop_limit;
        b[field::SRC..field::SRC + 16].copy_from_slice(&src.octets());
        b[field::DST..field::DST + 16].copy_from_slice(&dst.octets());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A view of a hop-by-hop, routing or destination-options header: next header, length in
/// 8-byte units after the first, data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Wraps `buffer` once it holds the whole header its length field announces.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] otherwise.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < 8 || b.len() < (usize::from(b[1]) + 1) * 8 {
            return Err(ParseError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The header after this one.
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// This header's length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[1]) + 1) * 8
    }
}

/// A view of a fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6FragHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragHeader<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than [`FRAG_HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` once it holds the 8-byte header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] otherwise.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < FRAG_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The header after this one.
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), 2) & !7
    }

    /// More fragments follow.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), 2) & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragHeader<T> {
    /// Writes the header.
    pub fn fill(&mut self, next_header: IpProtocol, offset: u16, more: bool, ident: u32) {
        let b = self.buffer.as_mut();
        b[0] = next_header.into();
        b[1] = 0;
        put16(b, 2, (offset & !7) | u16::from(more));
        put32(b, 4, ident);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header_reads_and_writes_back() {
        // 2001:2::1 -> 2001:2::2, TCP, 20 bytes of payload, hop limit 64, flow label 0x12345.
        let mut golden = [0u8; 60];
        golden[..8].copy_from_slice(&[0x60, 0x01, 0x23, 0x45, 0x00, 20, 6, 64]);
        golden[8..12].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        golden[23] = 1;
        golden[24..28].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        golden[39] = 2;
        let p = Ipv6Packet::new_checked(&golden[..]).unwrap();
        assert_eq!((p.traffic_class(), p.flow_label()), (0, 0x12345));
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (20, IpProtocol::Tcp, 64)
        );
        assert_eq!(p.src(), "2001:2::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst(), "2001:2::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 20);
        let mut buf = [0u8; 60];
        Ipv6Packet::new_unchecked(&mut buf[..]).fill(
            "2001:2::1".parse().unwrap(),
            "2001:2::2".parse().unwrap(),
            IpProtocol::Tcp,
            20,
            64,
        );
        golden[1..4].fill(0); // fill writes flow label 0
        assert_eq!(buf, golden);
    }

    #[test]
    fn malformed_headers_name_their_fault() {
        let mut b = [0u8; 48];
        b[0] = 0x60;
        b[5] = 8;
        assert!(Ipv6Packet::new_checked(&b[..]).is_ok());
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).map(|_| ()),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..47]).map(|_| ()),
            Err(ParseError::BadTotalLength)
        );
        b[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).map(|_| ()),
            Err(ParseError::BadIpVersion)
        );
    }

    #[test]
    fn extension_and_fragment_headers() {
        // Hop-by-hop, 16 bytes (length field 1), next: fragment.
        let mut hbh = [0u8; 16];
        hbh[0] = 44;
        hbh[1] = 1;
        let e = Ipv6ExtHeader::new_checked(&hbh[..]).unwrap();
        assert_eq!((e.next_header_raw(), e.header_len()), (44, 16));
        assert_eq!(
            Ipv6ExtHeader::new_checked(&hbh[..15]).map(|_| ()),
            Err(ParseError::Truncated)
        );
        let mut f = [0u8; 8];
        Ipv6FragHeader::new_unchecked(&mut f[..]).fill(IpProtocol::Udp, 1448, true, 0xdead_beef);
        assert_eq!(f, [17, 0, 0x05, 0xa9, 0xde, 0xad, 0xbe, 0xef]);
        let h = Ipv6FragHeader::new_checked(&f[..]).unwrap();
        assert_eq!(
            (h.next_header_raw(), h.frag_offset(), h.more_frags()),
            (17, 1448, true)
        );
        assert_eq!(h.ident(), 0xdead_beef);
        assert_eq!(
            Ipv6FragHeader::new_checked(&f[..7]).map(|_| ()),
            Err(ParseError::Truncated)
        );
    }
}
