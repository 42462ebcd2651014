//! The TCP state machine of a flow, after conntrack's in loose mode
//! (`nf_conntrack_tcp_loose = 1`): a connection seen from its SYN walks the handshake, one
//! picked up mid-stream becomes established on its first ACK, a RST closes it, a FIN from
//! each side takes it through fin-wait to time-wait. No sequence-window checks: the appliance
//! is a wire and sees both directions. Pure functions of the state, the direction and the
//! flags: no clock, no I/O.

use super::Timeouts;
use crate::wire::tcp::{ACK, FIN, RST, SYN};

/// TCP connection state (0: the flow is not TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TcpState {
    /// Not a TCP flow.
    #[default]
    None = 0,
    /// A SYN seen from the originator, no answer yet.
    SynSent = 1,
    /// The SYN answered with SYN+ACK (or a simultaneous open).
    SynRecv = 2,
    /// The handshake completed, or a mid-stream ACK picked the connection up.
    Established = 3,
    /// One side sent a FIN.
    FinWait = 4,
    /// Both sides sent a FIN (close-wait and time-wait in one).
    TimeWait = 5,
    /// A RST was seen.
    Closed = 6,
}

impl TcpState {
    /// From the record's 4-bit field.
    #[inline]
    pub fn from_bits(b: u32) -> Self {
        match b & 0xf {
            1 => Self::SynSent,
            2 => Self::SynRecv,
            3 => Self::Established,
            4 => Self::FinWait,
            5 => Self::TimeWait,
            6 => Self::Closed,
            _ => Self::None,
        }
    }

    /// conntrack's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Closed => "CLOSE",
        }
    }
}

/// A flow's state as shown to operators: TCP's, or for other protocols whether a reply was
/// seen (conntrack's `[UNREPLIED]` and `[ASSURED]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// A TCP state.
    Tcp(TcpState),
    /// Not TCP, seen one way only.
    Unreplied,
    /// Not TCP, seen both ways.
    Replied,
}

impl FlowState {
    /// The name shown by `isopath flow show`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp(t) => t.name(),
            Self::Unreplied => "UNREPLIED",
            Self::Replied => "ASSURED",
        }
    }
}

/// How a TCP flow opens on its first segment: its state and whether the sender is the
/// originator. `None`: the segment opens nothing (RST, or neither SYN nor ACK).
#[inline]
pub fn open(flags: u8) -> Option<(TcpState, bool)> {
    if flags & RST != 0 {
        return None;
    }
    match (flags & SYN != 0, flags & ACK != 0) {
        (true, false) => Some((TcpState::SynSent, true)),
        // A SYN+ACK first: the handshake picked up halfway; the receiver opened it.
        (true, true) => Some((TcpState::SynRecv, false)),
        // Mid-stream pickup (loose mode): the sender is taken as the originator.
        (false, true) => Some((
            if flags & FIN != 0 {
                TcpState::FinWait
            } else {
                TcpState::Established
            },
            true,
        )),
        (false, false) => None,
    }
}

/// What a segment does to an existing flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The new state.
    pub state: TcpState,
    /// A new connection reuses the 5-tuple (a SYN after time-wait or close): the old flow
    /// ends and a new one starts in the same record.
    pub reopen: bool,
}

/// The transition of `state` on a segment with `flags` from the originator (`orig`) or the
/// replier; `fin_orig` and `fin_reply` say whether each side has sent a FIN before (this
/// segment included).
#[inline]
pub fn step(state: TcpState, orig: bool, flags: u8, fin_orig: bool, fin_reply: bool) -> Step {
    use TcpState::*;
    let keep = Step {
        state,
        reopen: false,
    };
    let to = |state| Step {
        state,
        reopen: false,
    };
    if flags & RST != 0 {
        return to(Closed);
    }
    let syn = flags & SYN != 0;
    let ack = flags & ACK != 0;
    let fin = flags & FIN != 0;
    match state {
        SynSent if syn && !orig => to(SynRecv),
        SynSent if ack && orig && !syn => to(Established),
        SynRecv if ack && !syn && orig => to(if fin { FinWait } else { Established }),
        Established | SynRecv if fin => to(FinWait),
        FinWait if fin_orig && fin_reply => to(TimeWait),
        TimeWait | Closed if syn && !ack => Step {
            state: SynSent,
            reopen: true,
        },
        _ => keep,
    }
}

/// The idle timeout of a flow, seconds: by TCP state, or for other protocols by whether a
/// reply was seen.
#[inline]
pub fn timeout_s(t: &Timeouts, proto: u8, state: TcpState, replied: bool) -> u32 {
    match state {
        TcpState::SynSent | TcpState::SynRecv => t.tcp_syn_s,
        TcpState::Established => t.tcp_established_s,
        TcpState::FinWait | TcpState::TimeWait => t.tcp_fin_wait_s,
        TcpState::Closed => t.tcp_closed_s,
        TcpState::None => match proto {
            1 | 58 => t.icmp_s,
            _ if replied => t.udp_stream_s,
            _ => t.udp_s,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    fn s(state: TcpState, orig: bool, flags: u8, fo: bool, fr: bool) -> TcpState {
        step(state, orig, flags, fo, fr).state
    }

    #[test]
    fn every_transition() {
        // Opening segments.
        assert_eq!(open(SYN), Some((SynSent, true)));
        assert_eq!(open(SYN | ACK), Some((SynRecv, false)));
        assert_eq!(open(ACK), Some((Established, true)), "mid-stream pickup");
        assert_eq!(open(ACK | FIN), Some((FinWait, true)));
        assert_eq!(open(RST), Option::None);
        assert_eq!(open(RST | ACK), Option::None);
        assert_eq!(open(FIN), Option::None, "no ACK, no SYN");
        assert_eq!(open(0), Option::None);
        // The handshake.
        assert_eq!(s(SynSent, true, SYN, false, false), SynSent, "SYN again");
        assert_eq!(s(SynSent, false, SYN | ACK, false, false), SynRecv);
        assert_eq!(
            s(SynSent, false, SYN, false, false),
            SynRecv,
            "simultaneous open"
        );
        assert_eq!(s(SynSent, true, ACK, false, false), Established);
        assert_eq!(s(SynRecv, true, ACK, false, false), Established);
        assert_eq!(
            s(SynRecv, false, SYN | ACK, false, false),
            SynRecv,
            "SYN+ACK again"
        );
        assert_eq!(s(SynRecv, true, ACK | FIN, true, false), FinWait);
        assert_eq!(s(SynRecv, false, FIN | ACK, false, true), FinWait);
        // Data and close.
        assert_eq!(s(Established, true, ACK, false, false), Established);
        assert_eq!(s(Established, false, ACK | FIN, false, true), FinWait);
        assert_eq!(s(Established, true, ACK | FIN, true, false), FinWait);
        assert_eq!(
            s(FinWait, true, ACK, false, true),
            FinWait,
            "ACK of the FIN"
        );
        assert_eq!(
            s(FinWait, false, FIN, false, true),
            FinWait,
            "same side again"
        );
        assert_eq!(
            s(FinWait, true, ACK | FIN, true, true),
            TimeWait,
            "both FINs"
        );
        assert_eq!(s(TimeWait, false, ACK, true, true), TimeWait, "last ACK");
        // RST from any state, either side.
        for st in [SynSent, SynRecv, Established, FinWait, TimeWait, Closed] {
            for orig in [true, false] {
                assert_eq!(s(st, orig, RST, false, false), Closed, "{st:?}");
                assert_eq!(s(st, orig, RST | ACK, false, false), Closed, "{st:?}");
            }
        }
        assert_eq!(s(Closed, true, ACK, false, false), Closed);
        // A new connection on the same 5-tuple.
        for st in [TimeWait, Closed] {
            let r = step(st, true, SYN, true, true);
            assert_eq!((r.state, r.reopen), (SynSent, true));
        }
        assert!(!step(Established, true, SYN, false, false).reopen);
    }

    #[test]
    fn timeouts_by_state() {
        let t = Timeouts::default();
        assert_eq!(timeout_s(&t, 6, SynSent, false), 30);
        assert_eq!(timeout_s(&t, 6, SynRecv, true), 30);
        assert_eq!(timeout_s(&t, 6, Established, true), 300);
        assert_eq!(timeout_s(&t, 6, FinWait, true), 120);
        assert_eq!(timeout_s(&t, 6, TimeWait, true), 120);
        assert_eq!(timeout_s(&t, 6, Closed, true), 10);
        assert_eq!(timeout_s(&t, 17, None, false), 30);
        assert_eq!(timeout_s(&t, 17, None, true), 120);
        assert_eq!(timeout_s(&t, 1, None, true), 30);
        assert_eq!(timeout_s(&t, 58, None, false), 30);
        assert_eq!(timeout_s(&t, 47, None, true), 120);
        assert_eq!(TcpState::from_bits(5), TimeWait);
        assert_eq!(FlowState::Tcp(Closed).name(), "CLOSE");
    }
}
