//! UDP headers (RFC 768).

use super::{ParseError, be16, put16};

/// Length of the header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram. Once checked, the `length` it announces is inside the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than the header or than `length`.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` (the IP payload) after checking the length field against it.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] (shorter than 8 bytes), [`ParseError::BadL4Header`] (length
    /// below 8 or beyond the buffer).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let len = usize::from(be16(b, 4));
        if len < HEADER_LEN || len > b.len() {
            return Err(ParseError::BadL4Header);
        }
        Ok(Self { buffer })
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length: header and payload.
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Whether the datagram carries no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (0: none, IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The payload, `length - 8` bytes.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Writes the header for `payload_len` bytes of payload, checksum 0.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn fill(&mut self, sport: u16, dport: u16, payload_len: usize) {
        let b = self.buffer.as_mut();
        put16(b, 0, sport);
        put16(b, 2, dport);
        put16(b, 4, (HEADER_LEN + payload_len) as u16);
        put16(b, 6, 0);
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), 0, p);
    }

    /// Sets the checksum field (a computed 0 is sent as 0xffff: 0 means "none").
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), 6, if c == 0 { 0xffff } else { c });
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 12345 -> 9, 4 bytes of payload, checksum 0xbeef.
    const DATAGRAM: [u8; 12] = [0x30, 0x39, 0x00, 0x09, 0x00, 0x0c, 0xbe, 0xef, 1, 2, 3, 4];

    #[test]
    fn golden_header_reads_and_writes_back() {
        let u = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.checksum()),
            (12345, 9, 12, 0xbeef)
        );
        assert_eq!(u.payload(), &[1, 2, 3, 4]);
        let mut buf = [0u8; 12];
        let mut w = UdpPacket::new_unchecked(&mut buf[..]);
        w.fill(12345, 9, 4);
        w.set_checksum(0xbeef);
        w.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn malformed_headers_name_their_fault() {
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..7]).map(|_| ()),
            Err(ParseError::Truncated)
        );
        let mut b = DATAGRAM;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).map(|_| ()),
            Err(ParseError::BadL4Header)
        );
        b[5] = 13;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).map(|_| ()),
            Err(ParseError::BadL4Header)
        );
    }
}
