//! The netlink wire layer: `struct nlmsghdr`, attribute headers, splitting a datagram into
//! messages, and an encoder that appends into a caller's fixed-capacity buffer.
//!
//! Numbers and layouts are the kernel's (include/uapi/linux/netlink.h): a 16-byte header in host
//! byte order, messages and attributes aligned to 4 bytes (`NLMSG_ALIGN`, `NLA_ALIGN`), the
//! standard types below `NLMSG_MIN_TYPE`.
//!
//! The encoder never allocates: every write checks the remaining capacity first and reports
//! [`Full`] instead of growing, and [`Encoder::message`] rolls a half-written message back, so a
//! dump can fill a part until the next record does not fit, send it, and resume there.

pub use super::enc::{Encoder, MsgStart, Nest};
use super::error::DecodeError;

/// `NLMSG_NOOP`: nothing; skipped.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: an `nlmsgerr` (negative errno, the offending header); errno 0 is an ack.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a multi-part dump; carries the dump's final status (`int`).
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`: defined by the kernel, never sent (overruns are `ENOBUFS` errors).
pub const NLMSG_OVERRUN: u16 = 4;
/// `NLMSG_MIN_TYPE`: the first type a protocol may use.
pub const NLMSG_MIN_TYPE: u16 = 0x10;

/// `NLM_F_REQUEST`: a request (every message a client sends).
pub const NLM_F_REQUEST: u16 = 0x01;
/// `NLM_F_MULTI`: one part of a multi-part reply ending in `NLMSG_DONE`.
pub const NLM_F_MULTI: u16 = 0x02;
/// `NLM_F_ACK`: answer with an ack (or an error) when done.
pub const NLM_F_ACK: u16 = 0x04;
/// `NLM_F_ECHO`: echo the request (accepted, unused).
pub const NLM_F_ECHO: u16 = 0x08;
/// `NLM_F_DUMP_INTR`: the dump's object set changed while it ran; it may be inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_DUMP_FILTERED`: the dump was filtered by the server as requested.
pub const NLM_F_DUMP_FILTERED: u16 = 0x20;
/// isopath's own request flag (a bit the kernel leaves unused): check this request strictly,
/// as a socket with `NETLINK_GET_STRICT_CHK` would (see [`super::attr::Ctx`]).
pub const ISO_F_STRICT: u16 = 0x40;
/// GET modifier `NLM_F_ROOT`.
pub const NLM_F_ROOT: u16 = 0x100;
/// GET modifier `NLM_F_MATCH`.
pub const NLM_F_MATCH: u16 = 0x200;
/// GET modifier `NLM_F_ATOMIC` (accepted, ignored).
pub const NLM_F_ATOMIC: u16 = 0x400;
/// `NLM_F_DUMP` = `NLM_F_ROOT | NLM_F_MATCH`: every object, as a multi-part reply.
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
/// NEW modifier `NLM_F_REPLACE`: replace an existing object.
pub const NLM_F_REPLACE: u16 = 0x100;
/// NEW modifier `NLM_F_EXCL`: fail with `EEXIST` if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// NEW modifier `NLM_F_CREATE`: create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// ACK flag `NLM_F_CAPPED`: the error carries only the request's header, not its payload.
pub const NLM_F_CAPPED: u16 = 0x100;
/// ACK flag `NLM_F_ACK_TLVS`: extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// `NLA_F_NESTED`: the attribute's value is a list of attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_F_NET_BYTEORDER`: the value is in network byte order (never set by isopath).
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// `NLA_TYPE_MASK`: the type bits of `nla_type`.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// `NLMSG_HDRLEN`: `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLA_HDRLEN`: `sizeof(struct nlattr)`.
pub const NLA_HDRLEN: usize = 4;
/// `sizeof(struct nlmsgerr)`: errno and the offending header.
pub const NLMSGERR_LEN: usize = 4 + NLMSG_HDRLEN;
/// `sizeof(struct isomsg)`: the family header every isopath message carries after its
/// `nlmsghdr` (as `ifinfomsg` follows it in rtnetlink): version, two reserved fields.
pub const ISOMSG_LEN: usize = 4;
/// The protocol version in `isomsg.version`.
pub const ISO_VERSION: u8 = 1;
/// Offset of a message's first attribute from the start of its `nlmsghdr`.
pub const ATTRS_OFFSET: usize = NLMSG_HDRLEN + ISOMSG_LEN;

/// `struct nlmsghdr` (host byte order), as a plain struct: read and written field by field
/// with safe slice operations, never by casting bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Header {
    /// `nlmsg_len`: the whole message, header included, without trailing padding.
    pub len: u32,
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`: echoed in every reply to the request; 0 in events.
    pub seq: u32,
    /// `nlmsg_pid`: the port id (isopath: the client's pid as it chose it; 0 from the daemon).
    pub pid: u32,
}

// The struct mirrors the kernel's layout exactly: 16 bytes, no padding.
const _: () = assert!(std::mem::size_of::<Header>() == NLMSG_HDRLEN);
const _: () = assert!(std::mem::align_of::<Header>() == 4);
const _: () = assert!(NLMSGERR_LEN == 20);
const _: () = assert!(ATTRS_OFFSET.is_multiple_of(4));
// The standard types all sit below the first protocol type.
const _: () = assert!(NLMSG_OVERRUN < NLMSG_MIN_TYPE);

impl Header {
    /// Reads a header from the first 16 bytes of `b`.
    pub fn read(b: &[u8]) -> Option<Self> {
        let b: &[u8; NLMSG_HDRLEN] = b.get(..NLMSG_HDRLEN)?.try_into().ok()?;
        Some(Self {
            len: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            pid: u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Reads as much of a header as `b` holds, the rest zero (for the error reply to a
    /// message too short to have one).
    pub fn read_partial(b: &[u8]) -> Self {
        let mut full = [0u8; NLMSG_HDRLEN];
        let n = b.len().min(NLMSG_HDRLEN);
        full[..n].copy_from_slice(&b[..n]);
        Self::read(&full).unwrap_or_default()
    }

    /// The 16 bytes of this header.
    pub fn bytes(&self) -> [u8; NLMSG_HDRLEN] {
        let mut b = [0u8; NLMSG_HDRLEN];
        b[0..4].copy_from_slice(&self.len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        b[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        b[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        b[12..16].copy_from_slice(&self.pid.to_ne_bytes());
        b
    }

    /// A dump request (`NLM_F_DUMP` set).
    pub fn is_dump(&self) -> bool {
        self.flags & NLM_F_DUMP == NLM_F_DUMP
    }
}

/// `NLMSG_ALIGN` / `NLA_ALIGN`: rounds up to a multiple of 4.
pub const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One message of a datagram: its header, its payload (after the header, `len - 16` bytes),
/// and where it starts in the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    /// The header.
    pub header: Header,
    /// Everything after the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
    /// The whole message, header included (for echoing and offsets).
    pub bytes: &'a [u8],
}

/// The messages of one datagram, in order. A framing error (a short header, a length shorter
/// than the header or past the datagram) is yielded once and ends the iteration: nothing after
/// it can be trusted to start on a message boundary.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Splits a datagram into its messages.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages {
        rest: datagram,
        failed: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let fail = |s: &mut Self, e| {
            s.failed = true;
            Some(Err(e))
        };
        let Some(header) = Header::read(self.rest) else {
            let have = self.rest.len() as u32;
            return fail(self, DecodeError::ShortHeader { have });
        };
        let len = header.len as usize;
        if len < NLMSG_HDRLEN {
            return fail(self, DecodeError::BadLength { len: header.len });
        }
        if len > self.rest.len() {
            let have = self.rest.len() as u32;
            return fail(
                self,
                DecodeError::PastDatagram {
                    len: header.len,
                    have,
                },
            );
        }
        let bytes = &self.rest[..len];
        // The last message of a datagram may lack its padding (the kernel accepts that too).
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok(Msg {
            header,
            payload: &bytes[NLMSG_HDRLEN..],
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_the_kernels() {
        let h = Header {
            len: 0x1122_3344,
            kind: 0x5566,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            seq: 7,
            pid: 0xdead_beef,
        };
        let b = h.bytes();
        assert_eq!(&b[0..4], &0x1122_3344u32.to_ne_bytes());
        assert_eq!(&b[4..6], &0x5566u16.to_ne_bytes());
        assert_eq!(&b[6..8], &5u16.to_ne_bytes());
        assert_eq!(&b[8..12], &7u32.to_ne_bytes());
        assert_eq!(&b[12..16], &0xdead_beefu32.to_ne_bytes());
        assert_eq!(Header::read(&b), Some(h));
        // netlink-packet-core reads the same fields from the same bytes.
        let nb = netlink_packet_core::NetlinkBuffer::new(&b[..]);
        assert_eq!(
            (nb.length(), nb.message_type(), nb.flags()),
            (h.len, h.kind, h.flags)
        );
        assert_eq!((nb.sequence_number(), nb.port_number()), (h.seq, h.pid));
    }

    #[test]
    fn flag_and_type_numbers_match_netlink_packet_core() {
        use netlink_packet_core as c;
        assert_eq!(
            [NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO],
            [
                c::NLM_F_REQUEST,
                c::NLM_F_MULTIPART,
                c::NLM_F_ACK,
                c::NLM_F_ECHO
            ]
        );
        assert_eq!(
            [NLM_F_DUMP_INTR, NLM_F_DUMP_FILTERED, NLM_F_DUMP],
            [c::NLM_F_DUMP_INTR, c::NLM_F_DUMP_FILTERED, c::NLM_F_DUMP]
        );
        assert_eq!(
            [NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE],
            [c::NLM_F_REPLACE, c::NLM_F_EXCL, c::NLM_F_CREATE]
        );
        assert_eq!(
            [NLM_F_CAPPED, NLM_F_ACK_TLVS],
            [c::NLM_F_CAPPED, c::NLM_F_ACK_TLVS]
        );
        assert_eq!(
            [NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN],
            [
                c::NLMSG_NOOP,
                c::NLMSG_ERROR,
                c::NLMSG_DONE,
                c::NLMSG_OVERRUN
            ]
        );
        assert_eq!(
            [NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLA_TYPE_MASK],
            [c::NLA_F_NESTED, c::NLA_F_NET_BYTEORDER, c::NLA_TYPE_MASK]
        );
        // Our own flag must not collide with any flag a request can carry.
        for f in [
            NLM_F_REQUEST,
            NLM_F_MULTI,
            NLM_F_ACK,
            NLM_F_ECHO,
            NLM_F_DUMP_INTR,
            NLM_F_DUMP_FILTERED,
            NLM_F_DUMP,
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_REPLACE,
        ] {
            assert_eq!(f & ISO_F_STRICT, 0);
        }
    }

    #[test]
    fn framing_errors_end_the_datagram() {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf);
        e.message(16, 0, 1, 0, |e| e.u32(1, 5)).unwrap();
        let mut d = e.bytes().to_vec();
        d.extend([1, 2, 3]);
        let got: Vec<_> = messages(&d).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(DecodeError::ShortHeader { have: 3 }));
        let mut long = e.bytes().to_vec();
        long[0] = 200;
        assert_eq!(
            messages(&long).collect::<Vec<_>>(),
            [Err(DecodeError::PastDatagram { len: 200, have: 28 })]
        );
        long[0] = 15;
        assert_eq!(
            messages(&long).collect::<Vec<_>>(),
            [Err(DecodeError::BadLength { len: 15 })]
        );
    }
}
