//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: the shared 8-byte header, echo fields and
//! the neighbour-discovery target (RFC 4861).

use std::net::Ipv6Addr;

use super::{ParseError, array, be16, put16};

/// Length of the common header: type, code, checksum, 4 bytes that depend on the type.
pub const HEADER_LEN: usize = 8;

/// ICMP echo reply.
pub const ECHO_REPLY: u8 = 0;
/// ICMP echo request.
pub const ECHO_REQUEST: u8 = 8;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;
/// ICMPv6 neighbour solicitation.
pub const V6_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub const V6_NEIGHBOR_ADVERT: u8 = 136;

/// A view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` (the IP payload) once it holds the 8-byte header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] otherwise.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The whole message.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Echo identifier (bytes 4..6 of any message).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The 32-bit field after the checksum (ND flags: Router, Solicited, Override).
    #[inline]
    pub fn rest(&self) -> [u8; 4] {
        array(self.buffer.as_ref(), 4)
    }

    /// The target address of a neighbour solicitation or advertisement; `None` when the
    /// message is too short to carry one.
    #[inline]
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        let b = self.buffer.as_ref().get(8..24)?;
        Some(array::<16>(b, 0).into())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the type and code.
    pub fn set_type(&mut self, msg_type: u8, code: u8) {
        let b = self.buffer.as_mut();
        b[0] = msg_type;
        b[1] = code;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), 2, c);
    }

    /// Sets the 32-bit field after the checksum.
    pub fn set_rest(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[4..8].copy_from_slice(&rest);
    }

    /// The whole message, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_echo_and_nd_target() {
        // Echo request, id 0x1234, seq 1, checksum 0xe5ca.
        let echo = [8, 0, 0xe5, 0xca, 0x12, 0x34, 0x00, 0x01];
        let p = IcmpPacket::new_checked(&echo[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.checksum()),
            (ECHO_REQUEST, 0, 0xe5ca)
        );
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert_eq!(p.nd_target(), None, "no room for a target");
        let mut buf = [0u8; 8];
        let mut w = IcmpPacket::new_unchecked(&mut buf[..]);
        w.set_type(ECHO_REQUEST, 0);
        w.set_checksum(0xe5ca);
        w.set_rest([0x12, 0x34, 0, 1]);
        assert_eq!(buf, echo);
        assert_eq!(
            IcmpPacket::new_checked(&echo[..7]).map(|_| ()),
            Err(ParseError::Truncated)
        );
        let mut ns = [0u8; 24];
        ns[0] = V6_NEIGHBOR_SOLICIT;
        ns[8..12].copy_from_slice(&[0x20, 0x01, 0, 2]);
        ns[23] = 0x10;
        let t = IcmpPacket::new_checked(&ns[..]).unwrap().nd_target();
        assert_eq!(t, Some("2001:2::10".parse().unwrap()));
    }
}
