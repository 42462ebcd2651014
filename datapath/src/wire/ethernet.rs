//! Ethernet II frames (without FCS).

use super::{ParseError, array, be16, put16};

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// Length of the header: destination, source, EtherType.
pub const HEADER_LEN: usize = 14;
/// The shortest frame on the wire without FCS (shorter ones are padded by the sender).
pub const MIN_FRAME: usize = 60;

mod field {
    pub(super) const DST: usize = 0;
    pub(super) const SRC: usize = 6;
    pub(super) const ETHERTYPE: usize = 12;
}

enum_with_unknown! {
    /// EtherTypes the views know.
    pub enum EtherType(u16) {
        /// IPv4.
        Ipv4 = 0x0800,
        /// ARP.
        Arp = 0x0806,
        /// Reverse ARP (announcements after a move).
        Rarp = 0x8035,
        /// An 802.1Q VLAN tag follows.
        Vlan = 0x8100,
        /// IPv6.
        Ipv6 = 0x86dd,
        /// An 802.1ad service tag (QinQ outer tag) follows.
        QinQ = 0x88a8,
        /// LLDP.
        Lldp = 0x88cc,
        /// The pre-standard QinQ tag some switches still send.
        QinQLegacy = 0x9100,
    }
}

impl EtherType {
    /// Whether a VLAN tag follows this EtherType (802.1Q, 802.1ad, or the legacy 0x9100).
    #[inline]
    pub fn is_tag(raw: u16) -> bool {
        matches!(raw, 0x8100 | 0x88a8 | 0x9100)
    }
}

/// Whether `mac` is a group (multicast or broadcast) address.
#[inline]
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// A MAC address as a 48-bit number (what the punt path compares with one load).
#[inline]
pub fn mac_u64(mac: &Mac) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` once it holds a whole header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] when shorter than [`HEADER_LEN`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Mac {
        array(self.buffer.as_ref(), field::DST)
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Mac {
        array(self.buffer.as_ref(), field::SRC)
    }

    /// The EtherType as a number (a VLAN TPID when tagged).
    #[inline]
    pub fn ethertype_raw(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// The EtherType.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        self.ethertype_raw().into()
    }

    /// What follows the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DST..field::DST + 6].copy_from_slice(&mac);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SRC..field::SRC + 6].copy_from_slice(&mac);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t.into());
    }

    /// What follows the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ARP broadcast's Ethernet header and the first payload bytes.
    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    #[test]
    fn golden_header_reads_and_writes_back() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst(), BROADCAST);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.payload(), &[0, 1]);
        let mut buf = [0u8; 16];
        let mut w = EthernetFrame::new_unchecked(&mut buf[..]);
        w.set_dst(BROADCAST);
        w.set_src([2, 0, 0, 0, 0, 1]);
        w.set_ethertype(EtherType::Arp);
        w.payload_mut().copy_from_slice(&[0, 1]);
        assert_eq!(buf, FRAME);
        assert_eq!(EtherType::from(0x1234), EtherType::Unknown(0x1234));
        assert_eq!(u16::from(EtherType::Lldp), 0x88cc);
    }

    #[test]
    fn short_frames_are_refused() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]),
            Err(ParseError::Truncated)
        );
        assert!(EthernetFrame::new_checked(&FRAME[..14]).is_ok());
        assert!(is_multicast(&BROADCAST) && !is_multicast(&[2, 0, 0, 0, 0, 1]));
        assert_eq!(mac_u64(&[2, 0, 0, 0, 0xb, 1]), 0x0200_0000_0b01);
    }
}
