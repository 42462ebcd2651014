//! Changes control asks a running worker to make, applied between two loops (cold code).

use super::{Out, Worker};
use crate::{
    bond::MAX_MEMBERS,
    flow::Flush,
    xsk::{Rings, SocketInfo},
};

/// A change control asks a running worker to make (applied between two loops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCmd {
    /// The port named `ifname` becomes member `member` of bond `bond` (its frames are gated by
    /// the bond and go where the bond's other members' go), or stops being one (`on == false`:
    /// its frames are then dropped as `rx_drop_no_output`).
    SetMember {
        /// Bond index (configuration order).
        bond: usize,
        /// Member index in the bond.
        member: usize,
        /// Interface name, NUL-padded (IFNAMSIZ).
        ifname: [u8; 16],
        /// Add or remove.
        on: bool,
    },
    /// Every socket on the port named `ifname` leaves the loop and goes back to control
    /// ([`WorkerHandle::take_retired`](super::WorkerHandle::take_retired)), which closes it;
    /// the frames it held stay counted as lent until [`WorkerCmd::Reclaim`].
    Detach {
        /// Interface name, NUL-padded (IFNAMSIZ).
        ifname: [u8; 16],
    },
    /// The socket with this id is closed and the kernel has let go of its buffers: its frames
    /// come back to the pool.
    Reclaim {
        /// The socket's id ([`RetiredQueue::id`](super::RetiredQueue::id)).
        id: u16,
    },
    /// Remove the flows `Flush` selects from the worker's table, a slice per loop.
    FlushFlows(Flush),
    /// A reload's flow policy: the idle and active timeouts (applied to the flows already in
    /// the table too) and whether frames that do not parse are dropped.
    SetFlowPolicy {
        /// Idle timeouts.
        timeouts: crate::flow::Timeouts,
        /// Seconds between active-flow updates (0: none).
        active_timeout_s: u32,
        /// `[flows] strict`.
        strict: bool,
    },
    /// Test-only: the worker stops moving (sleeps) for this long, as a stuck worker would,
    /// so that the watchdog's withheld beat can be tested. Control sends it only when
    /// `ISOPATH_TEST_STALL_WORKER` asks for it.
    Stall(std::time::Duration),
}

impl WorkerCmd {
    /// An interface name as the command carries it; `None` if longer than 15 bytes.
    pub fn ifname(name: &str) -> Option<[u8; 16]> {
        let b = name.as_bytes();
        (b.len() < 16).then(|| {
            let mut out = [0u8; 16];
            out[..b.len()].copy_from_slice(b);
            out
        })
    }
}

/// Commands control queues for a worker.
pub type CommandQueue = crossbeam_queue::ArrayQueue<WorkerCmd>;

/// The name in a NUL-padded IFNAMSIZ array.
fn name_of(ifname: &[u8; 16]) -> &[u8] {
    &ifname[..ifname.iter().position(|&c| c == 0).unwrap_or(16)]
}

impl<R: Rings> Worker<R> {
    #[cold]
    pub(super) fn apply_commands(&mut self) {
        self.take_attached();
        while let Some(cmd) = self.cmds.pop() {
            // A command queued after a hand-over may name the new port, and the hand-over may
            // have been queued after the pass above looked: having popped the command, every
            // hand-over queued before it is visible now (the pop pairs with the push), so take
            // them before applying it.
            self.take_attached();
            match cmd {
                WorkerCmd::SetMember {
                    bond,
                    member,
                    ifname,
                    on,
                } => self.set_member(bond, member, &ifname, on),
                WorkerCmd::Detach { ifname } => self.detach(&ifname),
                WorkerCmd::Reclaim { id } => {
                    let (fill, tx) = self.rings.reclaim(id);
                    self.counters.frames_reclaimed.add(fill + tx);
                }
                WorkerCmd::FlushFlows(f) => {
                    if let Some(t) = &mut self.flows {
                        t.start_flush(f);
                    }
                }
                WorkerCmd::SetFlowPolicy {
                    timeouts,
                    active_timeout_s,
                    strict,
                } => {
                    self.strict = strict;
                    if let Some(t) = &mut self.flows {
                        t.set_timeouts(timeouts, active_timeout_s);
                    }
                }
                WorkerCmd::Stall(d) => std::thread::sleep(d),
            }
        }
    }

    /// Takes the sockets handed over (new ports), while slots remain.
    fn take_attached(&mut self) {
        while self.slots.len() < self.slots.capacity()
            && let Some(mut slot) = self.attach.pop()
        {
            // Stock the fill ring before the first poll, so the port's first frames find room.
            self.rings.refill(&mut slot.q, usize::MAX);
            self.slots.push(slot);
            self.counters.queues_attached.add(1);
        }
    }

    #[cold]
    fn set_member(&mut self, bond: usize, member: usize, ifname: &[u8; 16], on: bool) {
        if bond >= self.bonds.len() || member >= MAX_MEMBERS {
            return;
        }
        let name = name_of(ifname);
        // Where the bond's members send what they receive (the cross-connect's other end).
        let peer_out = self
            .slots
            .iter()
            .find(|s| s.member.is_some_and(|(b, _)| b == bond) && s.out != Out::None)
            .map_or(Out::None, |s| s.out);
        let mut first = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.q.ifname().as_bytes() != name {
                continue;
            }
            if on {
                slot.member = Some((bond, member));
                slot.out = peer_out;
                first.get_or_insert(i);
            } else if slot.member == Some((bond, member)) {
                slot.member = None;
                slot.out = Out::None;
            }
        }
        self.bonds[bond].members[member] = if on { first } else { None };
    }

    /// Takes every socket of port `ifname` out of the loop and gives it to control. Slot
    /// indices above a removed one shift down: outputs and bond members are renumbered.
    #[cold]
    fn detach(&mut self, ifname: &[u8; 16]) {
        let name = name_of(ifname);
        while let Some(i) = self
            .slots
            .iter()
            .rposition(|s| s.q.ifname().as_bytes() == name)
        {
            let slot = self.slots.remove(i);
            let renumber = |j: usize| match j.cmp(&i) {
                std::cmp::Ordering::Less => Some(j),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some(j - 1),
            };
            for s in &mut self.slots {
                if let Out::Slot(j) = s.out {
                    s.out = renumber(j).map_or(Out::None, Out::Slot);
                }
            }
            for b in &mut self.bonds {
                for m in &mut b.members {
                    *m = m.and_then(renumber);
                }
            }
            // The queue has room for every slot the worker can hold.
            if self.retired.push(slot).is_ok() {
                self.counters.queues_retired.add(1);
            }
        }
        // A bond member whose first slot went may have another on this worker.
        for (bi, b) in self.bonds.iter_mut().enumerate() {
            for (k, m) in b.members.iter_mut().enumerate() {
                if m.is_none() {
                    *m = self.slots.iter().position(|s| s.member == Some((bi, k)));
                }
            }
        }
    }
}
