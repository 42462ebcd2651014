//! TCP headers (RFC 9293); options skipped.

use super::{ParseError, be16, be32, put16, put32};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// FIN flag.
pub const FIN: u8 = 0x01;
/// SYN flag.
pub const SYN: u8 = 0x02;
/// RST flag.
pub const RST: u8 = 0x04;
/// PSH flag.
pub const PSH: u8 = 0x08;
/// ACK flag.
pub const ACK: u8 = 0x10;
/// URG flag.
pub const URG: u8 = 0x20;

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const ACK: usize = 8;
    pub(super) const OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const URGENT: usize = 18;
}

/// A view of a TCP segment. Once checked, the header (options included) is inside the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than the header.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` (the IP payload) after checking the data offset against it.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] (shorter than 20 bytes), [`ParseError::BadL4Header`] (data
    /// offset below 5 words or beyond the segment).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let hl = usize::from(b[field::OFFSET] >> 4) * 4;
        if hl < HEADER_LEN || hl > b.len() {
            return Err(ParseError::BadL4Header);
        }
        Ok(Self { buffer })
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgement number.
    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFFSET] >> 4) * 4
    }

    /// The flags byte ([`FIN`], [`SYN`], [`RST`], [`PSH`], [`ACK`], [`URG`], ECE, CWR).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window.
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Writes a 20-byte header (no options), urgent pointer 0, checksum 0 (see
    /// [`super::checksum::l4`] and [`Self::set_checksum`]).
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn fill(&mut self, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, window: u16) {
        let b = self.buffer.as_mut();
        put16(b, field::SRC_PORT, sport);
        put16(b, field::DST_PORT, dport);
        put32(b, field::SEQ, seq);
        put32(b, field::ACK, ack);
        b[field::OFFSET] = 5 << 4;
        b[field::FLAGS] = flags;
        put16(b, field::WINDOW, window);
        put16(b, field::CHECKSUM, 0);
        put16(b, field::URGENT, 0);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40000 -> 80, SYN, seq 1, window 64240, checksum 0x1234.
    const SYN_SEGMENT: [u8; 20] = [
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xfa,
        0xf0, 0x12, 0x34, 0x00, 0x00,
    ];

    #[test]
    fn golden_header_reads_and_writes_back() {
        let t = TcpPacket::new_checked(&SYN_SEGMENT[..]).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq(), t.ack()),
            (40000, 80, 1, 0)
        );
        assert_eq!((t.header_len(), t.flags(), t.window()), (20, SYN, 64240));
        assert_eq!((t.checksum(), t.payload().len()), (0x1234, 0));
        let mut buf = [0u8; 20];
        let mut w = TcpPacket::new_unchecked(&mut buf[..]);
        w.fill(40000, 80, 1, 0, SYN, 64240);
        w.set_checksum(0x1234);
        assert_eq!(buf, SYN_SEGMENT);
    }

    #[test]
    fn malformed_headers_name_their_fault() {
        assert_eq!(
            TcpPacket::new_checked(&SYN_SEGMENT[..19]).map(|_| ()),
            Err(ParseError::Truncated)
        );
        let mut b = SYN_SEGMENT;
        b[12] = 0x40; // 16-byte header
        assert_eq!(
            TcpPacket::new_checked(&b[..]).map(|_| ()),
            Err(ParseError::BadL4Header)
        );
        b[12] = 0x60; // 24 bytes of header in a 20-byte segment
        assert_eq!(
            TcpPacket::new_checked(&b[..]).map(|_| ()),
            Err(ParseError::BadL4Header)
        );
    }
}
