//! VLAN tags (802.1Q, and 802.1ad service tags for QinQ): the 4 bytes after a tag's TPID.

use super::{ParseError, be16, put16};

/// Length of what a tag adds after its TPID: TCI and the next EtherType.
pub const HEADER_LEN: usize = 4;

/// A view of a VLAN tag's TCI and the EtherType after it (the TPID is the EtherType before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanHeader<T> {
    /// Wraps `buffer` without checking it.
    ///
    /// # Panics
    /// Accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` once it holds the TCI and the next EtherType.
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

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[0] >> 5
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.buffer.as_ref()[0] & 0x10 != 0
    }

    /// VLAN id (0: a priority tag, no VLAN).
    #[inline]
    pub fn vid(&self) -> u16 {
        be16(self.buffer.as_ref(), 0) & 0x0fff
    }

    /// The EtherType after the tag (another TPID for QinQ).
    #[inline]
    pub fn ethertype_raw(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// What follows the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanHeader<T> {
    /// Sets the TCI: priority `pcp` (0..=7) and VLAN id `vid` (12 bits).
    #[inline]
    pub fn set_tci(&mut self, pcp: u8, vid: u16) {
        put16(
            self.buffer.as_mut(),
            0,
            (u16::from(pcp & 7) << 13) | (vid & 0x0fff),
        );
    }

    /// Sets the EtherType after the tag.
    #[inline]
    pub fn set_ethertype_raw(&mut self, t: u16) {
        put16(self.buffer.as_mut(), 2, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_tag() {
        // PCP 5, DEI 1, VID 100, then IPv6.
        let tag = [0xb0, 0x64, 0x86, 0xdd];
        let v = VlanHeader::new_checked(&tag[..]).unwrap();
        assert_eq!(
            (v.pcp(), v.dei(), v.vid(), v.ethertype_raw()),
            (5, true, 100, 0x86dd)
        );
        let mut buf = [0u8; 4];
        let mut w = VlanHeader::new_unchecked(&mut buf[..]);
        w.set_tci(5, 100);
        w.set_ethertype_raw(0x86dd);
        assert_eq!(buf, [0xa0, 0x64, 0x86, 0xdd]);
        assert_eq!(
            VlanHeader::new_checked(&tag[..3]),
            Err(ParseError::Truncated)
        );
    }
}
