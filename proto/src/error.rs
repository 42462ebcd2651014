//! Decoding and encoding errors: small `Copy` values, no strings, no allocation. Each knows the
//! errno and the extended-ack details (text, offending attribute's offset, missing attribute)
//! the server puts in its `NLMSG_ERROR` reply.

use std::fmt;

/// The encoder's buffer (or a nest's 16-bit length) has no room for what was being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no room in the buffer")]
pub struct Full;

/// An attribute named in an error: its nest (policy name), its name there (empty when the
/// policy does not know the type), its type number and its offset from the start of the
/// message's `nlmsghdr` (what `NLMSGERR_ATTR_OFFS` carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrRef {
    /// The nest's policy name, e.g. `link`.
    pub nest: &'static str,
    /// The attribute's name, e.g. `MTU`; empty if unknown.
    pub name: &'static str,
    /// `nla_type & NLA_TYPE_MASK`.
    pub kind: u16,
    /// Byte offset of the attribute's header from the start of the message.
    pub offset: u32,
}

impl fmt::Display for AttrRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{} attribute type {}", self.nest, self.kind)
        } else {
            write!(f, "{}.{}", self.nest, self.name)
        }
    }
}

/// Why a message could not be decoded. Every variant maps to an errno ([`DecodeError::errno`])
/// and, where one attribute is at fault, its offset ([`DecodeError::offset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes left in the datagram than a `nlmsghdr`.
    #[error("{have} bytes left in the datagram, shorter than a netlink header")]
    ShortHeader {
        /// Bytes there were.
        have: u32,
    },
    /// `nlmsg_len` shorter than the header itself.
    #[error("nlmsg_len {len} is shorter than the netlink header")]
    BadLength {
        /// The length field.
        len: u32,
    },
    /// `nlmsg_len` past the end of the datagram.
    #[error("nlmsg_len {len} runs past the end of the datagram ({have} bytes left)")]
    PastDatagram {
        /// The length field.
        len: u32,
        /// Bytes left in the datagram.
        have: u32,
    },
    /// A message type the protocol does not have.
    #[error("unknown message type {kind}")]
    UnknownType {
        /// `nlmsg_type`.
        kind: u16,
    },
    /// A type that exists but is not something a client may send (a reply or an event).
    #[error("message type {name} is not a request")]
    NotRequest {
        /// The type's name.
        name: &'static str,
    },
    /// A request that only the daemon may send was received by a client, or the other way.
    #[error("message type {name} is not sent by the daemon")]
    NotReply {
        /// The type's name.
        name: &'static str,
    },
    /// `NLM_F_DUMP` on a request that has no dump.
    #[error("{name} cannot be dumped")]
    NoDump {
        /// The type's name.
        name: &'static str,
    },
    /// The payload is shorter than the fixed part the type has (`isomsg`, `nlmsgerr`, ...).
    #[error("payload of {have} bytes is shorter than the {need}-byte fixed header")]
    ShortPayload {
        /// Bytes there were.
        have: u32,
        /// Bytes needed.
        need: u32,
    },
    /// `isomsg.version` is not one this decoder speaks.
    #[error("protocol version {version} is not supported (this side speaks 1)")]
    Version {
        /// The version byte.
        version: u8,
    },
    /// Strict checking: a reserved field of the fixed header is not zero.
    #[error("reserved header field at offset {offset} is not zero")]
    Reserved {
        /// Its offset.
        offset: u32,
    },
    /// An attribute's `nla_len` is shorter than its header or runs past its message or nest.
    #[error("{at} overruns its enclosing message or nest")]
    Overrun {
        /// The attribute.
        at: AttrRef,
    },
    /// Strict checking: bytes left over after the last attribute.
    #[error("{len} bytes left over after the last attribute")]
    Trailing {
        /// Offset of the leftover bytes.
        offset: u32,
        /// How many.
        len: u32,
    },
    /// Nests deeper than [`super::attr::MAX_DEPTH`].
    #[error("{at} nests deeper than {max} levels", max = super::attr::MAX_DEPTH)]
    TooDeep {
        /// The attribute that went one level too deep.
        at: AttrRef,
    },
    /// Strict checking: an attribute type its nest does not define.
    #[error("unknown {at}")]
    UnknownAttr {
        /// The attribute.
        at: AttrRef,
    },
    /// Strict checking: an attribute its nest defines but this request does not use.
    #[error("{at} is not valid in this request")]
    NotAllowed {
        /// The attribute.
        at: AttrRef,
    },
    /// Strict checking: a nest sent without `NLA_F_NESTED`.
    #[error("{at} is a nest but lacks NLA_F_NESTED")]
    NotNested {
        /// The attribute.
        at: AttrRef,
    },
    /// An attribute of the wrong size for its type.
    #[error("{at}: {len} bytes, its type needs {need}")]
    Size {
        /// The attribute.
        at: AttrRef,
        /// Its value's length.
        len: u16,
        /// What its type needs (for strings: the maximum).
        need: &'static str,
    },
    /// A string attribute that is not UTF-8, has a NUL inside, or is too long.
    #[error("{at}: {why}")]
    BadString {
        /// The attribute.
        at: AttrRef,
        /// What is wrong.
        why: &'static str,
    },
    /// An attribute whose value is out of range for its meaning.
    #[error("{at}: {why}")]
    BadValue {
        /// The attribute.
        at: AttrRef,
        /// What is wrong.
        why: &'static str,
    },
    /// A required attribute is missing (`NLMSGERR_ATTR_MISS_TYPE`, and `MISS_NEST` when it was
    /// missing inside a nest).
    #[error("missing attribute {nest}.{name}")]
    Missing {
        /// The nest's policy name.
        nest: &'static str,
        /// The attribute's name.
        name: &'static str,
        /// Its type number.
        kind: u16,
        /// Offset of the enclosing nest's header, `None` at the top level.
        nest_offset: Option<u32>,
    },
    /// The request is well formed but its combination of attributes or flags is not.
    #[error("{why}")]
    Invalid {
        /// What is wrong.
        why: &'static str,
    },
}

impl DecodeError {
    /// The positive errno the error reply carries (negated on the wire): `EOPNOTSUPP` for
    /// message types that do not exist or cannot be sent, `EPROTONOSUPPORT` for a version this
    /// side does not speak, `EINVAL` for everything malformed, as the kernel answers.
    pub fn errno(&self) -> i32 {
        match self {
            Self::UnknownType { .. }
            | Self::NotRequest { .. }
            | Self::NotReply { .. }
            | Self::NoDump { .. } => libc::EOPNOTSUPP,
            Self::Version { .. } => libc::EPROTONOSUPPORT,
            _ => libc::EINVAL,
        }
    }

    /// The offending attribute's offset from the start of the message, for
    /// `NLMSGERR_ATTR_OFFS`.
    pub fn offset(&self) -> Option<u32> {
        match self {
            Self::Overrun { at }
            | Self::TooDeep { at }
            | Self::UnknownAttr { at }
            | Self::NotAllowed { at }
            | Self::NotNested { at }
            | Self::Size { at, .. }
            | Self::BadString { at, .. }
            | Self::BadValue { at, .. } => Some(at.offset),
            Self::Reserved { offset } | Self::Trailing { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// The missing attribute's type and the offset of the nest it was missing from
    /// (`NLMSGERR_ATTR_MISS_TYPE`, `NLMSGERR_ATTR_MISS_NEST`).
    pub fn missing(&self) -> Option<(u16, Option<u32>)> {
        match self {
            Self::Missing {
                kind, nest_offset, ..
            } => Some((*kind, *nest_offset)),
            _ => None,
        }
    }

    /// A framing error: the datagram cannot be split past this point.
    pub fn is_framing(&self) -> bool {
        matches!(
            self,
            Self::ShortHeader { .. } | Self::BadLength { .. } | Self::PastDatagram { .. }
        )
    }
}
