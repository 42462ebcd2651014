//! ARP packets (and RARP, which shares the layout), for Ethernet/IPv4 addresses.

use std::net::Ipv4Addr;

use super::{ParseError, array, be16, ethernet::Mac, put16};

/// Length of an ARP packet for Ethernet and IPv4 addresses.
pub const PACKET_LEN: usize = 28;

enum_with_unknown! {
    /// ARP operations.
    pub enum ArpOp(u16) {
        /// Who has `tpa`?
        Request = 1,
        /// `spa` is at `sha`.
        Reply = 2,
        /// RARP request (what announcements of a moved host send).
        RarpRequest = 3,
        /// RARP reply.
        RarpReply = 4,
    }
}

mod field {
    pub(super) const HTYPE: usize = 0;
    pub(super) const PTYPE: usize = 2;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OP: usize = 6;
    pub(super) const SHA: usize = 8;
    pub(super) const SPA: usize = 14;
    pub(super) const THA: usize = 18;
    pub(super) const TPA: usize = 24;
}

/// A view of an ARP packet. The address accessors read the Ethernet/IPv4 layout; check
/// [`Self::is_ethernet_ipv4`] before trusting them on a packet of another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than [`PACKET_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` once it holds an Ethernet/IPv4-sized packet and the addresses its own
    /// length fields announce.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] otherwise.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN
            || b.len() < 8 + 2 * (usize::from(b[field::HLEN]) + usize::from(b[field::PLEN]))
        {
            return Err(ParseError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// Hardware type (1: Ethernet).
    #[inline]
    pub fn htype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800: IPv4).
    #[inline]
    pub fn ptype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Whether this is ARP for IPv4 over Ethernet (the layout the address accessors read).
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        let b = self.buffer.as_ref();
        self.htype() == 1 && self.ptype() == 0x0800 && b[field::HLEN] == 6 && b[field::PLEN] == 4
    }

    /// The operation.
    #[inline]
    pub fn op(&self) -> ArpOp {
        be16(self.buffer.as_ref(), field::OP).into()
    }

    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> Mac {
        array(self.buffer.as_ref(), field::SHA)
    }

    /// Sender protocol address.
    #[inline]
    pub fn spa(&self) -> Ipv4Addr {
        array::<4>(self.buffer.as_ref(), field::SPA).into()
    }

    /// Target hardware address.
    #[inline]
    pub fn tha(&self) -> Mac {
        array(self.buffer.as_ref(), field::THA)
    }

    /// Target protocol address.
    #[inline]
    pub fn tpa(&self) -> Ipv4Addr {
        array::<4>(self.buffer.as_ref(), field::TPA).into()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes a whole Ethernet/IPv4 ARP packet.
    ///
    /// # Panics
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn fill(&mut self, op: ArpOp, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) {
        let b = self.buffer.as_mut();
        put16(b, field::HTYPE, 1);
        put16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        put16(b, field::OP, op.into());
        b[field::SHA..field::SHA + 6].copy_from_slice(&sha);
        b[field::SPA..field::SPA + 4].copy_from_slice(&spa.octets());
        b[field::THA..field::THA + 6].copy_from_slice(&tha);
        b[field::TPA..field::TPA + 4].copy_from_slice(&tpa.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who has 198.18.0.10? Tell 198.18.0.2 (02:00:00:00:00:02).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 198,
        18, 0, 2, 0, 0, 0, 0, 0, 0, 198, 18, 0, 10,
    ];

    #[test]
    fn golden_request_reads_and_writes_back() {
        let a = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert!(a.is_ethernet_ipv4());
        assert_eq!(a.op(), ArpOp::Request);
        assert_eq!(a.sha(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(a.spa(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(a.tha(), [0; 6]);
        assert_eq!(a.tpa(), Ipv4Addr::new(198, 18, 0, 10));
        let mut buf = [0u8; 28];
        ArpPacket::new_unchecked(&mut buf[..]).fill(
            ArpOp::Request,
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 0, 2),
            [0; 6],
            Ipv4Addr::new(198, 18, 0, 10),
        );
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn short_or_overlong_address_lengths_are_truncated() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]),
            Err(ParseError::Truncated)
        );
        let mut long = REQUEST;
        long[4] = 16; // hardware addresses of 16 bytes do not fit in 28
        assert_eq!(
            ArpPacket::new_checked(&long[..]),
            Err(ParseError::Truncated)
        );
        let mut other = REQUEST;
        other[1] = 6; // IEEE 802 hardware type: valid, but not the layout we read
        assert!(
            !ArpPacket::new_checked(&other[..])
                .unwrap()
                .is_ethernet_ipv4()
        );
    }
}
