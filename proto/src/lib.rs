//! isopath's control protocol: netlink's wire format over a `SOCK_SEQPACKET` Unix socket.
//!
//! Anyone who knows `ip`, `ss` or `conntrack` knows the shape: every message is a
//! `struct nlmsghdr` (host byte order) followed by a 4-byte family header (`isomsg`: the
//! protocol version) and typed, length-prefixed, 4-byte-aligned attributes, nested where
//! needed. Requests carry `NLM_F_REQUEST`; `NLM_F_ACK` asks for an ack or an error
//! (`NLMSG_ERROR` with a negative errno, the request's header and extended-ack attributes:
//! text, offending attribute's offset, missing attribute); `NLM_F_DUMP` asks for every object
//! as `NLM_F_MULTI` parts ending in `NLMSG_DONE`, which carries the dump's status. Events go
//! to clients that joined a group. `docs/protocol.md` is the reference of every type and
//! attribute.
//!
//! # Layers
//! - [`nl`]: the header, flags and standard types; splitting a datagram into messages; the
//!   [`nl::Encoder`] that appends into a caller's fixed buffer and reports [`error::Full`].
//! - [`attr`]: attribute policies and the validating parser (the kernel's `nla_parse` with a
//!   policy), strict and lax checking, the `record!` declarations typed messages are made of.
//! - [`attrs`]: every nest's attribute numbers and types, the protocol's single table.
//! - [`msg`]: message types, typed requests ([`msg::Request`], decoded by a server as
//!   [`msg::Incoming`]) and typed daemon messages ([`msg::Message`]), acks and errors.
//! - [`frame`]: packing whole messages into bounded datagrams.
//! - [`dump`]: the `netlink_dump` model: parts, cursors, `NLM_F_DUMP_INTR`, `done`.
//! - [`ipfix`]: an IPFIX (RFC 7011) message encoder for flow export (not netlink; here because
//!   it is wire format with golden tests, like the rest).
//!
//! # Design
//! - Decoding never panics and never trusts a length: a malformed message yields a typed
//!   [`error::DecodeError`] that knows its errno and extended-ack details, so the server can
//!   answer it and go on with the connection.
//! - Encoding never allocates: records are written straight into a part buffer sized once,
//!   so a dump of a million flows costs no allocation per record. The rust-netlink crates
//!   (`netlink-packet-core`) cross-check the layout in the tests; README "Chosen crates" says
//!   why the codec is not built on them.
//! - The library is independent of the daemon: it knows messages, not devices.
//!
//! # Limitations
//! - `u64` attributes are 4-byte aligned, without the kernel's pad attributes (readers copy
//!   values out of the buffer; nothing casts).
//! - An error echoes only the request's header (`NLM_F_CAPPED`), never its payload.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attr;
pub mod attrs;
#[cfg(test)]
mod doc;
pub mod dump;
mod enc;
pub mod error;
pub mod frame;
pub mod ipfix;
mod macros;
pub mod msg;
pub mod nl;
