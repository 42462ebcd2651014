//! The protocol's messages: type numbers, the typed requests a client sends ([`Request`],
//! decoded by the server as an [`Incoming`]) and the typed messages the daemon sends
//! ([`Message`]: replies, dump records, events, acks, errors, `NLMSG_DONE`).
//!
//! Types come in fours per object, as in rtnetlink: `NEW`, `DEL`, `GET`, `SET` at offsets 0 to
//! 3 (so `kind & 3 == 2` is a `GET`, the only kind `NLM_F_DUMP` applies to; on a `NEW` the same
//! bits are `NLM_F_REPLACE | NLM_F_EXCL`). A type can be a request, a reply or both, each with
//! its own body.

mod ack;
mod bond;
mod daemon;
mod flow;
mod link;

pub use ack::{
    DoneMsg, ErrorMsg, ExtAck, ExtAckAttrs, MAX_EXT_ACK_MSG, put_ack, put_done, put_error,
    put_overrun,
};
pub use bond::{
    ArpAllTargets, ArpValidate, BondEvent, BondEventKind, BondMode, BondMsg, BondNotify,
    BondOptions, BondQuery, BondSet, BondVlan, FailOverMac, MemberLink, MemberMsg, MemberRef,
    MemberState, Reselect,
};
pub use daemon::{
    CaptureDir, CaptureMsg, CaptureRef, CaptureStart, ConnMsg, ConnQuery, ConnSet, DaemonState,
    ErrorEvent, ErrorKind, Frames, Group, StatsMsg, StatsQuery, StatusMsg, StatusQuery, WorkerMsg,
    WorkerQuery, WorkerQueue,
};
pub use flow::{
    EndReason, FlowFilter, FlowMsg, FlowQuery, FlowTableMsg, FlowTableQuery, FlowTuple, TcpState,
};
pub use link::{BindMode, LinkAdd, LinkDel, LinkKind, LinkMsg, LinkQuery, LinkSet, LinkStats};
pub use link::{OperState, XdpMode, XskStats};

use super::{
    attr::{Body, Ctx, Policy},
    error::{DecodeError, Full},
    nl::{
        ATTRS_OFFSET, Encoder, Header, ISO_F_STRICT, ISO_VERSION, ISOMSG_LEN, Msg, NLM_F_REQUEST,
        NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_MIN_TYPE, NLMSG_NOOP,
    },
};

macro_rules! types {
    ($( $(#[$m:meta])* $name:ident = $v:literal ),* $(,)?) => {
        /// Message type numbers (`nlmsg_type`).
        pub mod kind {
            $( $(#[$m])* pub const $name: u16 = $v; )*
        }
        /// Every protocol message type with its name.
        pub const TYPE_NAMES: &[(u16, &str)] = &[$(($v, stringify!($name))),*];
    };
}

types! {
    /// A link: reply, event; request: register a port (`NLM_F_CREATE`).
    NEWLINK = 16,
    /// A link went: event; request: unregister ports.
    DELLINK = 17,
    /// Get or dump links.
    GETLINK = 18,
    /// Change a link's flags or MTU.
    SETLINK = 19,
    /// A bond: reply.
    NEWBOND = 20,
    /// Get or dump bonds.
    GETBOND = 22,
    /// Change a bond's options or its active member.
    SETBOND = 23,
    /// Add a member to a bond.
    NEWMEMBER = 24,
    /// Release a member from a bond.
    DELMEMBER = 25,
    /// A worker: reply.
    NEWWORKER = 28,
    /// Get or dump workers.
    GETWORKER = 30,
    /// Traffic totals: reply.
    NEWSTATS = 32,
    /// Clear counters.
    DELSTATS = 33,
    /// Get traffic totals.
    GETSTATS = 34,
    /// The daemon's status: reply.
    NEWSTATUS = 36,
    /// Get the daemon's status.
    GETSTATUS = 38,
    /// A capture: reply; request: start one (`NLM_F_CREATE`).
    NEWCAPTURE = 40,
    /// Stop a capture.
    DELCAPTURE = 41,
    /// Get or dump captures.
    GETCAPTURE = 42,
    /// A bond event (group `bonds`).
    NEWBONDEV = 44,
    /// An error event (group `errors`).
    NEWERROREV = 48,
    /// A flow: dump record, event (group `flows`).
    NEWFLOW = 52,
    /// A flow ended: event; request: delete or flush flows.
    DELFLOW = 53,
    /// Get a flow or dump flows.
    GETFLOW = 54,
    /// Flow table counters: reply.
    NEWFLOWTAB = 56,
    /// Get flow table counters.
    GETFLOWTAB = 58,
    /// The connection: reply.
    NEWCONN = 60,
    /// Get the connection's state.
    GETCONN = 62,
    /// Set connection options, join or leave event groups.
    SETCONN = 63,
}

/// The name of message type `kind` (standard types included).
pub fn type_name(kind: u16) -> Option<&'static str> {
    match kind {
        NLMSG_NOOP => Some("NLMSG_NOOP"),
        NLMSG_ERROR => Some("NLMSG_ERROR"),
        NLMSG_DONE => Some("NLMSG_DONE"),
        _ => TYPE_NAMES.iter().find(|t| t.0 == kind).map(|t| t.1),
    }
}

/// A `GET` type: `NLM_F_DUMP` applies.
fn is_get(kind: u16) -> bool {
    kind & 3 == 2
}

/// Checks the `isomsg` after the header and returns the attribute bytes.
fn family(payload: &[u8], ctx: Ctx) -> Result<&[u8], DecodeError> {
    let Some(fam) = payload.get(..ISOMSG_LEN) else {
        return Err(DecodeError::ShortPayload {
            have: payload.len() as u32,
            need: ISOMSG_LEN as u32,
        });
    };
    if fam[0] != ISO_VERSION {
        return Err(DecodeError::Version { version: fam[0] });
    }
    if ctx.strict
        && let Some(i) = fam[1..].iter().position(|&b| b != 0)
    {
        return Err(DecodeError::Reserved {
            offset: (NLMSG_HDRLEN + 1 + i) as u32,
        });
    }
    Ok(&payload[ISOMSG_LEN..])
}

macro_rules! requests {
    ($( $(#[$m:meta])* $var:ident($body:ty) = $kind:ident $(, $dump:ident)? ; )*) => {
        /// A request a client sends.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $( $(#[$m])* $var($body), )*
        }

        /// Every request type: number, body policy, whether it dumps.
        pub const REQUEST_TYPES: &[(u16, &Policy, bool)] = &[
            $( (kind::$kind, <$body as Body>::POLICY, requests!(@dump $($dump)?)), )*
        ];

        impl Request {
            /// Its message type.
            pub fn kind(&self) -> u16 {
                match self { $( Self::$var(_) => kind::$kind, )* }
            }

            fn emit_body(&self, e: &mut Encoder<'_>) -> Result<(), Full> {
                match self { $( Self::$var(b) => b.emit(e), )* }
            }

            fn decode_body(k: u16, attrs: &[u8], ctx: Ctx) -> Option<Result<Self, DecodeError>> {
                match k {
                    $( kind::$kind => Some(
                        <$body>::decode(attrs, ATTRS_OFFSET as u32, ctx).map(Self::$var)
                    ), )*
                    _ => None,
                }
            }

            fn dumps(k: u16) -> bool {
                match k { $( kind::$kind => requests!(@dump $($dump)?), )* _ => false }
            }
        }
    };
    (@dump dump) => { true };
    (@dump) => { false };
}

requests! {
    /// `link show`: one link, or a dump.
    GetLink(LinkQuery) = GETLINK, dump;
    /// `port add`.
    AddLink(LinkAdd) = NEWLINK;
    /// `port del`.
    DelLink(LinkDel) = DELLINK;
    /// `link set`.
    SetLink(LinkSet) = SETLINK;
    /// `bond show`.
    GetBond(BondQuery) = GETBOND, dump;
    /// `bond set`, `bond switch`.
    SetBond(BondSet) = SETBOND;
    /// `bond add`.
    AddMember(MemberRef) = NEWMEMBER;
    /// `bond release`.
    DelMember(MemberRef) = DELMEMBER;
    /// `worker show`.
    GetWorker(WorkerQuery) = GETWORKER, dump;
    /// `stats`.
    GetStats(StatsQuery) = GETSTATS;
    /// `stats clear`.
    ClearStats(StatsQuery) = DELSTATS;
    /// `status`.
    GetStatus(StatusQuery) = GETSTATUS;
    /// `capture start`.
    StartCapture(CaptureStart) = NEWCAPTURE;
    /// `capture stop`.
    StopCapture(CaptureRef) = DELCAPTURE;
    /// `capture list`.
    GetCapture(CaptureRef) = GETCAPTURE, dump;
    /// `flow show`: one flow, or a dump.
    GetFlow(FlowQuery) = GETFLOW, dump;
    /// `flow del`, `flow flush`.
    DelFlow(FlowQuery) = DELFLOW;
    /// `flow count`.
    GetFlowTable(FlowTableQuery) = GETFLOWTAB;
    /// The connection's state.
    GetConn(ConnQuery) = GETCONN;
    /// Connection options, event groups.
    SetConn(ConnSet) = SETCONN;
}

impl Request {
    /// Writes the request as one message: `NLM_F_REQUEST` and `flags` (e.g. `NLM_F_ACK`,
    /// `NLM_F_DUMP`, `NLM_F_CREATE`, `ISO_F_STRICT`).
    ///
    /// # Errors
    /// [`Full`]; nothing is left written.
    pub fn encode(&self, e: &mut Encoder<'_>, flags: u16, seq: u32, pid: u32) -> Result<(), Full> {
        e.message(self.kind(), NLM_F_REQUEST | flags, seq, pid, |e| {
            self.emit_body(e)
        })
    }

    /// What a request needs beyond its attributes' types: a key when it is not a dump, at
    /// least one of several attributes.
    fn check(&self, dump: bool) -> Result<(), DecodeError> {
        let need = |ok: bool, policy: &'static Policy, kind: u16| {
            if ok {
                Ok(())
            } else {
                Err(DecodeError::Missing {
                    nest: policy.name,
                    name: policy.name_of(kind),
                    kind,
                    nest_offset: None,
                })
            }
        };
        use super::attrs::{bond, capture, flowreq, link, worker};
        match self {
            Self::GetLink(q) => need(
                dump || q.ifindex.is_some() || q.name.is_some(),
                &link::NEST,
                link::NAME,
            ),
            Self::SetLink(q) => need(
                q.ifindex.is_some() || q.name.is_some(),
                &link::NEST,
                link::NAME,
            ),
            Self::DelLink(q) => need(!q.names.is_empty(), &link::NEST, link::NAMES),
            Self::GetBond(q) => need(dump || q.name.is_some(), &bond::NEST, bond::NAME),
            Self::SetBond(q) => need(
                q.options.is_some() || q.active.is_some(),
                &bond::NEST,
                bond::OPTIONS,
            ),
            Self::GetWorker(q) => need(dump || q.index.is_some(), &worker::NEST, worker::INDEX),
            Self::StopCapture(q) => need(q.target.is_some(), &capture::NEST, capture::TARGET),
            Self::GetCapture(q) => {
                need(dump || q.target.is_some(), &capture::NEST, capture::TARGET)
            }
            Self::GetFlow(q) => need(dump || q.tuple.is_some(), &flowreq::NEST, flowreq::TUPLE),
            Self::DelFlow(q) => {
                if q.filter.is_some() && q.tuple.is_some() {
                    return Err(DecodeError::Invalid {
                        why: "DELFLOW takes a FILTER (flush) or a TUPLE (delete), not both",
                    });
                }
                need(
                    q.filter.is_some() || q.tuple.is_some(),
                    &flowreq::NEST,
                    flowreq::FILTER,
                )
            }
            _ => Ok(()),
        }
    }
}

/// A message as the server receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Its header (the reply's `seq` and `pid`, the error's echo).
    pub header: Header,
    /// Decoded strictly (the connection's option or `ISO_F_STRICT`).
    pub strict: bool,
    /// The request; `None` for a message that asks nothing (a standard type, or one without
    /// `NLM_F_REQUEST`: the kernel skips those and only acks them if asked).
    pub request: Option<Request>,
}

impl Incoming {
    /// Decodes one message of a client's datagram. `conn` holds the connection's options; a
    /// request's `ISO_F_STRICT` turns strict checking on for it alone.
    ///
    /// # Errors
    /// Why the message is malformed; [`super::error::DecodeError::errno`] and
    /// [`ExtAck::of`] make the error reply.
    pub fn decode(msg: &Msg<'_>, conn: Ctx) -> Result<Self, DecodeError> {
        let h = msg.header;
        let strict = conn.strict || h.flags & ISO_F_STRICT != 0;
        let ctx = Ctx { strict };
        let skip = Self {
            header: h,
            strict,
            request: None,
        };
        if h.flags & NLM_F_REQUEST == 0 || h.kind < NLMSG_MIN_TYPE {
            return Ok(skip);
        }
        let name = type_name(h.kind).ok_or(DecodeError::UnknownType { kind: h.kind })?;
        let dump = is_get(h.kind) && h.is_dump();
        if dump && !Request::dumps(h.kind) {
            return Err(DecodeError::NoDump { name });
        }
        let attrs = family(msg.payload, ctx)?;
        let request =
            Request::decode_body(h.kind, attrs, ctx).ok_or(DecodeError::NotRequest { name })??;
        request.check(dump)?;
        Ok(Self {
            header: h,
            strict,
            request: Some(request),
        })
    }

    /// A dump request.
    pub fn is_dump(&self) -> bool {
        is_get(self.header.kind) && self.header.is_dump()
    }
}

macro_rules! messages {
    ($( $(#[$m:meta])* $var:ident($body:ty) = $kind:ident; )*) => {
        /// A message the daemon sends.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[expect(
            clippy::large_enum_variant,
            reason = "decoded one at a time and matched at once; boxing would allocate per record"
        )]
        pub enum Message {
            /// `NLMSG_NOOP`.
            Noop,
            /// `NLMSG_ERROR`: an ack or an error (also the `ENOBUFS` overrun notice).
            Error(ErrorMsg),
            /// `NLMSG_DONE`: the end of a dump.
            Done(DoneMsg),
            $( $(#[$m])* $var($body), )*
        }

        /// Every type the daemon sends with a body: number, body policy.
        pub const REPLY_TYPES: &[(u16, &Policy)] = &[
            $( (kind::$kind, <$body as Body>::POLICY), )*
        ];

        impl Message {
            /// Its message type.
            pub fn kind(&self) -> u16 {
                match self {
                    Self::Noop => NLMSG_NOOP,
                    Self::Error(_) => NLMSG_ERROR,
                    Self::Done(_) => NLMSG_DONE,
                    $( Self::$var(_) => kind::$kind, )*
                }
            }

            /// Writes a reply, record or event (not the standard types: [`put_ack`],
            /// [`put_error`], [`put_done`] write those).
            ///
            /// # Errors
            /// [`Full`]; nothing is left written. A standard type is also refused as
            /// [`Full`].
            pub fn encode(
                &self,
                e: &mut Encoder<'_>,
                flags: u16,
                seq: u32,
                pid: u32,
            ) -> Result<(), Full> {
                match self {
                    Self::Noop | Self::Error(_) | Self::Done(_) => Err(Full),
                    $( Self::$var(b) => e.message(kind::$kind, flags, seq, pid, |e| b.emit(e)), )*
                }
            }

            fn decode_body(k: u16, attrs: &[u8], ctx: Ctx) -> Option<Result<Self, DecodeError>> {
                match k {
                    $( kind::$kind => Some(
                        <$body>::decode(attrs, ATTRS_OFFSET as u32, ctx).map(Self::$var)
                    ), )*
                    _ => None,
                }
            }
        }
    };
}

messages! {
    /// A link (reply, dump record, `links` event).
    NewLink(LinkMsg) = NEWLINK;
    /// A link went (`links` event).
    DelLink(LinkMsg) = DELLINK;
    /// A bond.
    NewBond(BondMsg) = NEWBOND;
    /// A worker.
    NewWorker(WorkerMsg) = NEWWORKER;
    /// Traffic totals.
    NewStats(StatsMsg) = NEWSTATS;
    /// The daemon's status.
    NewStatus(StatusMsg) = NEWSTATUS;
    /// A capture.
    NewCapture(CaptureMsg) = NEWCAPTURE;
    /// A bond event (`bonds`).
    NewBondEvent(BondEvent) = NEWBONDEV;
    /// An error event (`errors`).
    NewErrorEvent(ErrorEvent) = NEWERROREV;
    /// A flow (dump record, `flows` event).
    NewFlow(FlowMsg) = NEWFLOW;
    /// A flow ended (`flows` event).
    DelFlow(FlowMsg) = DELFLOW;
    /// Flow table counters.
    NewFlowTable(FlowTableMsg) = NEWFLOWTAB;
    /// The connection.
    NewConn(ConnMsg) = NEWCONN;
}

impl Message {
    /// Decodes one message of a datagram from the daemon.
    ///
    /// # Errors
    /// Why the message is malformed.
    pub fn decode(msg: &Msg<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        let h = msg.header;
        match h.kind {
            NLMSG_NOOP => return Ok(Self::Noop),
            NLMSG_ERROR => return ErrorMsg::decode(h.flags, msg.payload, ctx).map(Self::Error),
            NLMSG_DONE => return DoneMsg::decode(h.flags, msg.payload, ctx).map(Self::Done),
            _ => {}
        }
        let name = type_name(h.kind).ok_or(DecodeError::UnknownType { kind: h.kind })?;
        let attrs = family(msg.payload, ctx)?;
        Self::decode_body(h.kind, attrs, ctx).ok_or(DecodeError::NotReply { name })?
    }
}

#[cfg(test)]
pub(crate) mod samples;
#[cfg(test)]
mod tests;
