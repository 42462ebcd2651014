//! Acks, errors with extended acks, the end of a dump, and the overrun notice: the standard
//! messages (`NLMSG_ERROR`, `NLMSG_DONE`) as the kernel writes them (net/netlink/af_netlink.c,
//! `netlink_ack` and `netlink_dump_done`).
//!
//! An error echoes only the request's header (`NLM_F_CAPPED`, as with `NETLINK_CAP_ACK`), never
//! its payload: a request can be as large as a datagram, the error must always fit. Offsets in
//! `NLMSGERR_ATTR_OFFS` still count from the start of the request's `nlmsghdr`.

use std::fmt;

use crate::{
    attr::{Body, Ctx, record},
    attrs::nlmsgerr,
    error::{DecodeError, Full},
    nl::{
        Encoder, Header, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP_INTR, NLM_F_MULTI, NLMSG_DONE,
        NLMSG_ERROR, NLMSG_HDRLEN, NLMSGERR_LEN, align,
    },
};

/// The longest error text written (bytes; longer texts are cut).
pub const MAX_EXT_ACK_MSG: usize = 256;

/// Extended-ack details of an error or of a dump's final status.
#[derive(Clone, Copy, Default)]
pub struct ExtAck<'a> {
    /// `NLMSGERR_ATTR_MSG`, formatted straight into the reply.
    pub msg: Option<&'a dyn fmt::Display>,
    /// `NLMSGERR_ATTR_OFFS`.
    pub offset: Option<u32>,
    /// `NLMSGERR_ATTR_MISS_TYPE`.
    pub miss_type: Option<u16>,
    /// `NLMSGERR_ATTR_MISS_NEST`.
    pub miss_nest: Option<u32>,
}

impl fmt::Debug for ExtAck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtAck")
            .field("msg", &self.msg.map(|m| m.to_string()))
            .field("offset", &self.offset)
            .field("miss_type", &self.miss_type)
            .field("miss_nest", &self.miss_nest)
            .finish()
    }
}

impl<'a> ExtAck<'a> {
    /// Just a text.
    pub fn text(msg: &'a dyn fmt::Display) -> Self {
        Self {
            msg: Some(msg),
            ..Self::default()
        }
    }

    /// Everything a decoding error knows: its text, the offending attribute's offset, the
    /// missing attribute.
    pub fn of(e: &'a DecodeError) -> Self {
        let missing = e.missing();
        Self {
            msg: Some(e),
            offset: e.offset(),
            miss_type: missing.map(|m| m.0),
            miss_nest: missing.and_then(|m| m.1),
        }
    }

    fn is_empty(&self) -> bool {
        self.msg.is_none()
            && self.offset.is_none()
            && self.miss_type.is_none()
            && self.miss_nest.is_none()
    }

    fn emit(&self, e: &mut Encoder<'_>) -> Result<(), Full> {
        if let Some(m) = self.msg {
            e.display(nlmsgerr::MSG, m, MAX_EXT_ACK_MSG)?;
        }
        if let Some(o) = self.offset {
            e.u32(nlmsgerr::OFFS, o)?;
        }
        if let Some(t) = self.miss_type {
            e.u32(nlmsgerr::MISS_TYPE, u32::from(t))?;
        }
        if let Some(n) = self.miss_nest {
            e.u32(nlmsgerr::MISS_NEST, n)?;
        }
        Ok(())
    }
}

/// Writes the ack of `request` (an `NLMSG_ERROR` with errno 0).
///
/// # Errors
/// [`Full`]; nothing is left written.
pub fn put_ack(e: &mut Encoder<'_>, request: &Header) -> Result<(), Full> {
    put_error(e, request, 0, &ExtAck::default())
}

/// Writes the error reply to `request`: `-errno`, the request's header, the extended ack.
///
/// # Errors
/// [`Full`]; nothing is left written.
pub fn put_error(
    e: &mut Encoder<'_>,
    request: &Header,
    errno: i32,
    ext: &ExtAck<'_>,
) -> Result<(), Full> {
    let at = e.len();
    let mut flags = NLM_F_CAPPED;
    if !ext.is_empty() {
        flags |= NLM_F_ACK_TLVS;
    }
    let r = e
        .begin(NLMSG_ERROR, flags, request.seq, request.pid)
        .and_then(|m| {
            e.raw(&(-errno.abs()).to_ne_bytes())?;
            e.raw(&request.bytes())?;
            ext.emit(e)?;
            e.end(m);
            Ok(())
        });
    if r.is_err() {
        e.rollback(at);
    }
    r
}

/// Writes the `ENOBUFS` notice a subscriber gets after losing `lost` events (the kernel reports
/// the same errno from `recvmsg`); sequence 0, as events.
///
/// # Errors
/// [`Full`]; nothing is left written.
pub fn put_overrun(e: &mut Encoder<'_>, lost: u64) -> Result<(), Full> {
    struct Lost(u64);
    impl fmt::Display for Lost {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} events lost: the subscriber did not keep up", self.0)
        }
    }
    put_error(
        e,
        &Header::default(),
        libc::ENOBUFS,
        &ExtAck::text(&Lost(lost)),
    )
}

/// Writes the `NLMSG_DONE` that ends a dump: `NLM_F_MULTI`, `NLM_F_DUMP_INTR` if the dump saw a
/// change, the final status (0, or a negative errno the dump stopped with) and its extended
/// ack.
///
/// # Errors
/// [`Full`]; nothing is left written.
pub fn put_done(
    e: &mut Encoder<'_>,
    seq: u32,
    pid: u32,
    status: i32,
    intr: bool,
    ext: &ExtAck<'_>,
) -> Result<(), Full> {
    let at = e.len();
    let mut flags = NLM_F_MULTI;
    if intr {
        flags |= NLM_F_DUMP_INTR;
    }
    if !ext.is_empty() {
        flags |= NLM_F_ACK_TLVS;
    }
    let r = e.begin(NLMSG_DONE, flags, seq, pid).and_then(|m| {
        e.raw(&status.to_ne_bytes())?;
        ext.emit(e)?;
        e.end(m);
        Ok(())
    });
    if r.is_err() {
        e.rollback(at);
    }
    r
}

record! {
    /// The extended-ack attributes isopath reads.
    pub struct ExtAckAttrs: nlmsgerr {
        /// Text.
        opt msg: String = MSG,
        /// Offending attribute's offset.
        opt offset: u32 = OFFS,
        /// Missing attribute's type.
        opt miss_type: u32 = MISS_TYPE,
        /// Offset of the nest it was missing from.
        opt miss_nest: u32 = MISS_NEST,
    }
}

impl ExtAckAttrs {
    fn none() -> Self {
        Self {
            msg: None,
            offset: None,
            miss_type: None,
            miss_nest: None,
        }
    }

    fn decode_tlvs(flags: u16, tlvs: &[u8], base: usize, ctx: Ctx) -> Result<Self, DecodeError> {
        if flags & NLM_F_ACK_TLVS == 0 || tlvs.is_empty() {
            return Ok(Self::none());
        }
        // Extended acks are read leniently whatever the caller's options: the kernel adds
        // attributes to them over time.
        let _ = ctx;
        Self::decode(tlvs, base as u32, Ctx { strict: false })
    }
}

/// A decoded `NLMSG_ERROR`: an ack (`error == 0`) or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    /// 0, or a negative errno.
    pub error: i32,
    /// The header of the request it answers.
    pub request: Header,
    /// Extended ack.
    pub ext: ExtAckAttrs,
}

impl ErrorMsg {
    /// An ack.
    pub fn is_ack(&self) -> bool {
        self.error == 0
    }

    /// The positive errno (0 for an ack).
    pub fn errno(&self) -> i32 {
        -self.error
    }

    /// Decodes the payload of an `NLMSG_ERROR` with header flags `flags`.
    ///
    /// # Errors
    /// The payload is too short, or its extended ack is malformed.
    pub fn decode(flags: u16, payload: &[u8], ctx: Ctx) -> Result<Self, DecodeError> {
        let (Some(code), Some(request)) = (payload.get(..4), payload.get(4..NLMSGERR_LEN)) else {
            return Err(DecodeError::ShortPayload {
                have: payload.len() as u32,
                need: NLMSGERR_LEN as u32,
            });
        };
        let error = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        let request = Header::read(request).unwrap_or_default();
        // Without NLM_F_CAPPED the whole request is echoed before the TLVs.
        let tlv_at = if flags & NLM_F_CAPPED != 0 {
            NLMSGERR_LEN
        } else {
            4 + align((request.len as usize).max(NLMSG_HDRLEN))
        };
        let tlvs = payload.get(tlv_at..).unwrap_or(&[]);
        let ext = ExtAckAttrs::decode_tlvs(flags, tlvs, NLMSG_HDRLEN + tlv_at, ctx)?;
        Ok(Self {
            error,
            request,
            ext,
        })
    }
}

/// A decoded `NLMSG_DONE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneMsg {
    /// The dump's final status: 0 or a negative errno.
    pub status: i32,
    /// `NLM_F_DUMP_INTR`: the dump saw a change and may be inconsistent.
    pub intr: bool,
    /// Extended ack of a failed dump.
    pub ext: ExtAckAttrs,
}

impl DoneMsg {
    /// Decodes the payload of an `NLMSG_DONE` with header flags `flags` (an empty payload is
    /// status 0, as the kernel allows).
    ///
    /// # Errors
    /// A payload of 1 to 3 bytes, or a malformed extended ack.
    pub fn decode(flags: u16, payload: &[u8], ctx: Ctx) -> Result<Self, DecodeError> {
        let status = match payload.get(..4) {
            Some(c) => i32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
            None if payload.is_empty() => 0,
            None => {
                return Err(DecodeError::ShortPayload {
                    have: payload.len() as u32,
                    need: 4,
                });
            }
        };
        let tlvs = payload.get(4..).unwrap_or(&[]);
        Ok(Self {
            status,
            intr: flags & NLM_F_DUMP_INTR != 0,
            ext: ExtAckAttrs::decode_tlvs(flags, tlvs, NLMSG_HDRLEN + 4, ctx)?,
        })
    }
}
