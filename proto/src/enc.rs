//! The encoder: appends messages and attributes into a caller's buffer of fixed capacity and
//! reports [`Full`] instead of growing, so a dump part or a datagram is filled in place.

use std::{fmt, net::IpAddr};

use super::{
    error::Full,
    nl::{Header, ISO_VERSION, ISOMSG_LEN, NLA_F_NESTED, NLA_HDRLEN, NLMSG_HDRLEN, align},
};

/// Where a message started in an [`Encoder`]: passed back to [`Encoder::end`].
#[derive(Debug)]
#[must_use = "a message must be ended"]
pub struct MsgStart(usize);

/// Where a nested attribute started: passed back to [`Encoder::nest_end`].
#[derive(Debug)]
#[must_use = "a nest must be ended"]
pub struct Nest(usize);

/// Appends messages and attributes into a caller's buffer of fixed capacity; never allocates.
///
/// Every write reports [`Full`] when it does not fit and leaves what was written before intact;
/// [`Encoder::message`] and [`Encoder::rollback`] undo a partly written message.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Encoder<'b> {
    /// An encoder writing from the start of `buf`; its capacity is `buf.len()`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// An encoder appending to `buf` after its first `len` bytes (already written).
    ///
    /// # Panics
    /// If `len > buf.len()`.
    pub fn resume(buf: &'b mut [u8], len: usize) -> Self {
        assert!(len <= buf.len(), "resume past the end of the buffer");
        Self { buf, len }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// What was written.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Forgets everything written.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Truncates back to length `len` (a value of [`Encoder::len`] taken earlier).
    pub fn rollback(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Reserves `n` bytes (zeroed) and returns them.
    fn take(&mut self, n: usize) -> Result<&mut [u8], Full> {
        if n > self.remaining() {
            return Err(Full);
        }
        let at = self.len;
        self.len += n;
        let out = &mut self.buf[at..at + n];
        out.fill(0);
        Ok(out)
    }

    /// Starts a message: writes its header (length patched by [`Encoder::end`]).
    pub fn begin(&mut self, kind: u16, flags: u16, seq: u32, pid: u32) -> Result<MsgStart, Full> {
        let at = self.len;
        let h = Header {
            len: 0,
            kind,
            flags,
            seq,
            pid,
        };
        self.take(NLMSG_HDRLEN)?.copy_from_slice(&h.bytes());
        Ok(MsgStart(at))
    }

    /// Starts an isopath message: `nlmsghdr` and `isomsg` (version 1, reserved fields zero).
    pub fn begin_iso(
        &mut self,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
    ) -> Result<MsgStart, Full> {
        let m = self.begin(kind, flags, seq, pid)?;
        match self.take(ISOMSG_LEN) {
            Ok(fam) => fam[0] = ISO_VERSION,
            Err(Full) => {
                self.len = m.0;
                return Err(Full);
            }
        }
        Ok(m)
    }

    /// Ends a message: patches `nlmsg_len`. Attributes keep the length 4-aligned, so the next
    /// message starts aligned.
    pub fn end(&mut self, m: MsgStart) {
        let len = (self.len - m.0) as u32;
        self.buf[m.0..m.0 + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Sets flags on a message already written (e.g. `NLM_F_DUMP_INTR` once a dump notices).
    pub fn or_flags(&mut self, m: &MsgStart, flags: u16) {
        let at = m.0 + 6;
        let old = u16::from_ne_bytes([self.buf[at], self.buf[at + 1]]);
        self.buf[at..at + 2].copy_from_slice(&(old | flags).to_ne_bytes());
    }

    /// Writes one whole isopath message whose attributes `body` writes; on [`Full`] nothing of
    /// it remains.
    pub fn message(
        &mut self,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        body: impl FnOnce(&mut Self) -> Result<(), Full>,
    ) -> Result<(), Full> {
        let at = self.len;
        let r = self.begin_iso(kind, flags, seq, pid).and_then(|m| {
            body(self)?;
            self.end(m);
            Ok(())
        });
        if r.is_err() {
            self.len = at;
        }
        r
    }

    /// Writes raw bytes (a payload already encoded).
    pub fn raw(&mut self, b: &[u8]) -> Result<(), Full> {
        self.take(b.len())?.copy_from_slice(b);
        Ok(())
    }

    /// An attribute with value `v`, padded to 4 bytes.
    pub fn attr(&mut self, kind: u16, v: &[u8]) -> Result<(), Full> {
        let len = NLA_HDRLEN + v.len();
        if len > usize::from(u16::MAX) {
            return Err(Full);
        }
        let out = self.take(align(len))?;
        out[0..2].copy_from_slice(&(len as u16).to_ne_bytes());
        out[2..4].copy_from_slice(&kind.to_ne_bytes());
        out[4..len].copy_from_slice(v);
        Ok(())
    }

    /// A `u8` attribute.
    pub fn u8(&mut self, kind: u16, v: u8) -> Result<(), Full> {
        self.attr(kind, &[v])
    }

    /// A `u16` attribute (host order).
    pub fn u16(&mut self, kind: u16, v: u16) -> Result<(), Full> {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// A `u32` attribute (host order).
    pub fn u32(&mut self, kind: u16, v: u32) -> Result<(), Full> {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// A `u64` attribute (host order; 4-byte aligned like every attribute, no pad attribute).
    pub fn u64(&mut self, kind: u16, v: u64) -> Result<(), Full> {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// An `i32` attribute (host order).
    pub fn i32(&mut self, kind: u16, v: i32) -> Result<(), Full> {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// A flag: an attribute with no value, present or absent.
    pub fn flag(&mut self, kind: u16) -> Result<(), Full> {
        self.attr(kind, &[])
    }

    /// A string attribute, NUL-terminated as the kernel's `NLA_NUL_STRING`.
    pub fn str(&mut self, kind: u16, s: &str) -> Result<(), Full> {
        let len = NLA_HDRLEN + s.len() + 1;
        if len > usize::from(u16::MAX) {
            return Err(Full);
        }
        let out = self.take(align(len))?;
        out[0..2].copy_from_slice(&(len as u16).to_ne_bytes());
        out[2..4].copy_from_slice(&kind.to_ne_bytes());
        out[4..4 + s.len()].copy_from_slice(s.as_bytes());
        Ok(())
    }

    /// A string attribute written by `Display`, cut at `max` bytes (on a character boundary),
    /// NUL-terminated: error texts are formatted straight into the buffer.
    pub fn display(&mut self, kind: u16, v: &dyn fmt::Display, max: usize) -> Result<(), Full> {
        let start = self.len;
        let n = self.nest_raw(kind)?;
        let room = self.remaining().min(max);
        let mut w = Bounded {
            out: &mut self.buf[self.len..self.len + room],
            len: 0,
        };
        // A write past `max` stops the formatting; what fits is kept.
        let _ = fmt::write(&mut w, format_args!("{v}"));
        let written = w.len;
        self.len += written;
        if self.take(1).is_err() {
            self.len = start;
            return Err(Full);
        }
        self.nest_end_raw(n, false)
            .inspect_err(|_| self.len = start)
    }

    /// An address: 4 bytes for IPv4, 16 for IPv6 (network order, as the kernel's addresses).
    pub fn ip(&mut self, kind: u16, a: IpAddr) -> Result<(), Full> {
        match a {
            IpAddr::V4(a) => self.attr(kind, &a.octets()),
            IpAddr::V6(a) => self.attr(kind, &a.octets()),
        }
    }

    /// Starts a nested attribute (`NLA_F_NESTED` set), as `nla_nest_start`.
    pub fn nest(&mut self, kind: u16) -> Result<Nest, Full> {
        self.nest_raw(kind)
    }

    fn nest_raw(&mut self, kind: u16) -> Result<Nest, Full> {
        let at = self.len;
        let out = self.take(NLA_HDRLEN)?;
        out[2..4].copy_from_slice(&kind.to_ne_bytes());
        Ok(Nest(at))
    }

    /// Ends a nested attribute: patches its length. A nest longer than an attribute can be
    /// (64 KiB) is [`Full`]: it cannot be written in any buffer.
    pub fn nest_end(&mut self, n: Nest) -> Result<(), Full> {
        self.nest_end_raw(n, true)
    }

    fn nest_end_raw(&mut self, n: Nest, nested: bool) -> Result<(), Full> {
        let len = self.len - n.0;
        let Ok(l16) = u16::try_from(len) else {
            self.len = n.0;
            return Err(Full);
        };
        let kind = u16::from_ne_bytes([self.buf[n.0 + 2], self.buf[n.0 + 3]]);
        let kind = if nested { kind | NLA_F_NESTED } else { kind };
        self.buf[n.0..n.0 + 2].copy_from_slice(&l16.to_ne_bytes());
        self.buf[n.0 + 2..n.0 + 4].copy_from_slice(&kind.to_ne_bytes());
        // Pad the last attribute of the nest (strings written by `display` end unaligned).
        let pad = align(self.len) - self.len;
        if pad > 0 && self.take(pad).is_err() {
            self.len = n.0;
            return Err(Full);
        }
        Ok(())
    }

    /// A nested attribute whose content `f` writes; rolled back on [`Full`].
    pub fn nested(
        &mut self,
        kind: u16,
        f: impl FnOnce(&mut Self) -> Result<(), Full>,
    ) -> Result<(), Full> {
        let at = self.len;
        let r = self.nest(kind).and_then(|n| {
            f(self)?;
            self.nest_end(n)
        });
        if r.is_err() {
            self.len = at;
        }
        r
    }
}

/// A `fmt::Write` into a byte slice that stops when it is full.
struct Bounded<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.out.len() - self.len;
        if s.len() <= room {
            self.out[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.out[self.len..self.len + cut].copy_from_slice(&s.as_bytes()[..cut]);
        self.len += cut;
        Err(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::{ATTRS_OFFSET, NLM_F_REQUEST};
    #[test]
    fn golden_message_with_nested_attributes_and_padding() {
        let mut buf = [0u8; 128];
        let mut e = Encoder::new(&mut buf);
        e.message(16, NLM_F_REQUEST, 0x0102_0304, 9, |e| {
            e.str(2, "m0")?; // 4 + 3 = 7 bytes, padded to 8
            e.nested(14, |e| {
                e.u64(1, 0x0a0b_0c0d_0e0f_1011)?;
                e.u8(3, 0xff) // 5 bytes, padded to 8
            })?;
            e.flag(5)
        })
        .unwrap();
        let n = |v: u32| v.to_ne_bytes();
        let s = |v: u16| v.to_ne_bytes();
        let mut want = Vec::new();
        want.extend(n(16 + 4 + 8 + 4 + 12 + 8 + 4)); // nlmsg_len = 56
        want.extend(s(16)); // type
        want.extend(s(NLM_F_REQUEST));
        want.extend(n(0x0102_0304)); // seq
        want.extend(n(9)); // pid
        want.extend([ISO_VERSION, 0, 0, 0]); // isomsg
        want.extend(s(7)); // nla_len: header + "m0\0", without padding
        want.extend(s(2));
        want.extend(*b"m0\0\0"); // value, NUL, one pad byte
        want.extend(s(4 + 12 + 8)); // nest length covers its padded children
        want.extend(s(14 | NLA_F_NESTED));
        want.extend(s(12));
        want.extend(s(1));
        want.extend(0x0a0b_0c0d_0e0f_1011u64.to_ne_bytes());
        want.extend(s(5));
        want.extend(s(3));
        want.extend([0xff, 0, 0, 0]);
        want.extend(s(4)); // a flag: header only
        want.extend(s(5));
        assert_eq!(e.bytes(), &want[..]);
        // netlink-packet-core's iterator walks the same attributes.
        let attrs: Vec<_> =
            netlink_packet_core::NlasIterator::new(&e.bytes()[ATTRS_OFFSET..]).collect();
        let kinds: Vec<u16> = attrs.iter().map(|a| a.as_ref().unwrap().kind()).collect();
        assert_eq!(kinds, [2, 14, 5]);
        assert!(attrs[1].as_ref().unwrap().nested_flag());
    }

    #[test]
    fn full_leaves_earlier_messages_intact() {
        let mut buf = [0u8; 40];
        let mut e = Encoder::new(&mut buf);
        e.message(16, 0, 1, 0, |e| e.u32(1, 5)).unwrap(); // 28 bytes
        let before = e.bytes().to_vec();
        assert_eq!(e.message(16, 0, 2, 0, |e| e.u32(1, 6)), Err(Full));
        assert_eq!(e.bytes(), &before[..]);
        assert_eq!(e.nested(3, |e| e.u64(1, 1)), Err(Full));
        assert_eq!(e.bytes(), &before[..]);
    }

    #[test]
    fn display_is_bounded_and_nul_terminated() {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf);
        e.display(1, &"é".repeat(10), 5).unwrap();
        // Five bytes allowed: two 2-byte characters, then the NUL; nla_len 4 + 4 + 1 = 9.
        let b = e.bytes();
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 9);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 1);
        assert_eq!(&b[4..9], "éé\0".as_bytes());
        assert_eq!(b.len(), 12);
    }
}
