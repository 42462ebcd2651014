//! Dumps as the kernel runs them (net/netlink/af_netlink.c, `netlink_dump`): a [`Dump`]
//! fills one bounded part at a time from its cursor, the server sends the part, and asks for
//! the next only when the socket accepts another datagram; the last part carries `NLMSG_DONE`
//! with the dump's final status. [`Dumper`] drives one dump and guarantees its `done` runs
//! exactly once, also when the client goes away mid-dump (drop).
//!
//! Consistency follows `nl_dump_check_consistent`: a dump over objects that have a generation
//! counter reports it; once the generation differs from the one seen when the dump began,
//! every later record and the `NLMSG_DONE` carry `NLM_F_DUMP_INTR` (sticky, where the kernel
//! flags the message at which it noticed: a client then need not look at every message).
//!
//! # Limitations
//! The generation is compared once per part: the event loop makes no change while a part is
//! being filled, so a part is internally consistent and a change between parts is caught at
//! the next one (or at `NLMSG_DONE`).

use super::{
    attr::Body,
    error::Full,
    msg::{ExtAck, put_done},
    nl::{Encoder, NLM_F_DUMP_INTR, NLM_F_MULTI},
};

/// One part of a dump: records (each an `NLM_F_MULTI` message) appended into a fixed-capacity
/// buffer until one does not fit.
#[derive(Debug)]
pub struct Part<'b> {
    enc: Encoder<'b>,
    seq: u32,
    pid: u32,
    flags: u16,
    records: usize,
    too_big: bool,
}

impl<'b> Part<'b> {
    /// A part answering the request with `seq`/`pid`, written into `buf`; `intr` marks every
    /// record `NLM_F_DUMP_INTR`.
    pub fn new(buf: &'b mut [u8], seq: u32, pid: u32, intr: bool) -> Self {
        Self {
            enc: Encoder::new(buf),
            seq,
            pid,
            flags: NLM_F_MULTI | if intr { NLM_F_DUMP_INTR } else { 0 },
            records: 0,
            too_big: false,
        }
    }

    /// Appends one record of message type `kind`.
    ///
    /// # Errors
    /// [`Full`]: the record does not fit; the part is unchanged. The dump keeps its cursor on
    /// this record and resumes there in the next part.
    pub fn push(&mut self, kind: u16, body: &impl Body) -> Result<(), Full> {
        let r = self
            .enc
            .message(kind, self.flags, self.seq, self.pid, |e| body.emit(e));
        if r.is_err() && self.enc.is_empty() {
            // Not even an empty part holds it: no later part will either.
            self.too_big = true;
        }
        r?;
        self.records += 1;
        Ok(())
    }

    /// Records in this part.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.enc.len()
    }

    /// Nothing written.
    pub fn is_empty(&self) -> bool {
        self.enc.is_empty()
    }

    /// The part's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.enc.bytes()
    }

    fn done(&mut self, status: i32, ext: &ExtAck<'_>) -> Result<(), Full> {
        let intr = self.flags & NLM_F_DUMP_INTR != 0;
        put_done(&mut self.enc, self.seq, self.pid, status, intr, ext)
    }
}

/// What a dump callback reports after filling a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Records remain: the part is full, or the callback yields (e.g. after scanning many
    /// records a filter refused, to keep the event loop responsive); call again.
    More,
    /// Nothing remains; the status for `NLMSG_DONE`: 0, or a negative errno the dump stopped
    /// with (e.g. `-ENODEV` when the object dumped went away).
    Finished(i32),
}

/// A dump: a cursor over some objects and the callbacks `netlink_dump` calls.
pub trait Dump {
    /// Fills `part` with records from the cursor on, advancing it past each record pushed;
    /// stops at the first [`Full`].
    fn dump(&mut self, part: &mut Part<'_>) -> Step;

    /// The generation of the objects dumped, if they have one (links, bonds: a counter bumped
    /// by every change); `None` for loosely consistent dumps (flows).
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Releases the cursor; runs exactly once, when the dump finishes or is abandoned.
    fn done(&mut self) {}
}

/// One part produced by [`Dumper::next_part`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOut {
    /// Bytes of the part (send them as one datagram; 0 when the dump yielded without a record:
    /// send nothing and call again on a later turn).
    pub len: usize,
    /// Records in it.
    pub records: usize,
    /// The part ends with `NLMSG_DONE`: the dump is over.
    pub last: bool,
}

/// Drives one dump for one request.
#[derive(Debug)]
pub struct Dumper<D: Dump> {
    dump: D,
    seq: u32,
    pid: u32,
    start_gen: Option<u64>,
    intr: bool,
    over: bool,
    pending_done: Option<i32>,
}

impl<D: Dump> Dumper<D> {
    /// Starts a dump answering the request with `seq`/`pid`; records the generation.
    pub fn new(dump: D, seq: u32, pid: u32) -> Self {
        let start_gen = dump.generation();
        Self {
            dump,
            seq,
            pid,
            start_gen,
            intr: false,
            over: false,
            pending_done: None,
        }
    }

    /// The dump is over (the last part has been produced, `done` has run).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The dump has seen a change of generation.
    pub fn interrupted(&self) -> bool {
        self.intr
    }

    /// The dump's cursor.
    pub fn cursor(&self) -> &D {
        &self.dump
    }

    /// Produces the next part into `buf` (call only when the socket accepts a datagram);
    /// `None` once the dump is over. A record that does not fit even in an empty part ends the
    /// dump with `-EMSGSIZE`, as the kernel's does. `buf` must hold at least an `NLMSG_DONE`
    /// (20 bytes); [`super::frame::MIN_DUMP_BUF`] is the practical minimum.
    pub fn next_part(&mut self, buf: &mut [u8]) -> Option<PartOut> {
        if self.over {
            return None;
        }
        if self.dump.generation() != self.start_gen {
            self.intr = true;
        }
        let mut part = Part::new(buf, self.seq, self.pid, self.intr);
        let status = match self.pending_done.take() {
            Some(status) => status,
            None => match self.dump.dump(&mut part) {
                Step::More if part.too_big => -libc::EMSGSIZE,
                Step::More => {
                    return Some(PartOut {
                        len: part.len(),
                        records: part.records(),
                        last: false,
                    });
                }
                Step::Finished(status) => status,
            },
        };
        if self.dump.generation() != self.start_gen {
            self.intr = true;
            part.flags |= NLM_F_DUMP_INTR;
        }
        // NLMSG_DONE goes into this part if it fits, else it is the next part alone.
        let done = part.done(status, &ExtAck::default());
        if done.is_ok() || part.is_empty() {
            self.finish();
            return Some(PartOut {
                len: part.len(),
                records: part.records(),
                last: true,
            });
        }
        self.pending_done = Some(status);
        Some(PartOut {
            len: part.len(),
            records: part.records(),
            last: false,
        })
    }

    fn finish(&mut self) {
        if !self.over {
            self.over = true;
            self.dump.done();
        }
    }
}

impl<D: Dump> Drop for Dumper<D> {
    /// A client gone mid-dump still releases the cursor.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, rc::Rc};

    use super::*;
    use crate::{
        attr::Ctx,
        msg::{FlowMsg, Message, kind, samples::flow},
        nl::messages,
    };

    /// A dump of `n` flow records with ids 0..n, its cursor an index.
    struct Flows {
        next: u64,
        n: u64,
        generation: Option<Rc<Cell<u64>>>,
        done: Rc<Cell<u32>>,
    }

    impl Flows {
        fn new(n: u64) -> (Self, Rc<Cell<u32>>) {
            let done = Rc::new(Cell::new(0));
            let f = Self {
                next: 0,
                n,
                generation: None,
                done: done.clone(),
            };
            (f, done)
        }
    }

    impl Dump for Flows {
        fn dump(&mut self, part: &mut Part<'_>) -> Step {
            while self.next < self.n {
                let f = FlowMsg {
                    id: self.next,
                    ..flow()
                };
                if part.push(kind::NEWFLOW, &f).is_err() {
                    return Step::More;
                }
                self.next += 1;
            }
            Step::Finished(0)
        }
        fn generation(&self) -> Option<u64> {
            self.generation.as_ref().map(|g| g.get())
        }
        fn done(&mut self) {
            self.done.set(self.done.get() + 1);
        }
    }

    /// What one part held: record ids with their INTR flag, and the DONE if any.
    #[derive(Debug, Default)]
    struct Seen {
        ids: Vec<(u64, bool)>,
        done: Option<(i32, bool)>,
    }

    fn read_part(bytes: &[u8]) -> Seen {
        let mut s = Seen::default();
        for m in messages(bytes) {
            let m = m.unwrap();
            assert_eq!((m.header.seq, m.header.pid), (7, 8));
            let intr = m.header.flags & NLM_F_DUMP_INTR != 0;
            assert!(m.header.flags & NLM_F_MULTI != 0);
            match Message::decode(&m, Ctx::default()).unwrap() {
                Message::NewFlow(f) => s.ids.push((f.id, intr)),
                Message::Done(d) => {
                    assert_eq!(d.intr, intr);
                    s.done = Some((d.status, d.intr));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        s
    }

    fn run(d: &mut Dumper<Flows>, cap: usize, mut between: impl FnMut(usize)) -> Vec<Seen> {
        let mut buf = vec![0u8; cap];
        let mut parts = Vec::new();
        while let Some(p) = d.next_part(&mut buf) {
            assert!(p.len <= cap);
            let seen = read_part(&buf[..p.len]);
            assert_eq!(seen.ids.len(), p.records);
            assert_eq!(seen.done.is_some(), p.last);
            parts.push(seen);
            between(parts.len());
        }
        parts
    }

    #[test]
    fn a_dump_resumes_across_many_parts_exactly_once() {
        let (f, done) = Flows::new(1000);
        let mut d = Dumper::new(f, 7, 8);
        let parts = run(&mut d, 512, |_| {});
        assert!(parts.len() > 100, "{} parts", parts.len());
        let ids: Vec<u64> = parts
            .iter()
            .flat_map(|p| p.ids.iter().map(|i| i.0))
            .collect();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>());
        assert!(parts.iter().flat_map(|p| &p.ids).all(|i| !i.1));
        assert_eq!(parts.last().unwrap().done, Some((0, false)));
        assert!(parts[..parts.len() - 1].iter().all(|p| p.done.is_none()));
        assert!(d.is_over());
        assert_eq!(done.get(), 1);
        drop(d);
        assert_eq!(done.get(), 1, "done runs once, not again on drop");
    }

    #[test]
    fn a_change_mid_dump_marks_the_rest_dump_intr() {
        let (mut f, _) = Flows::new(300);
        let g = Rc::new(Cell::new(5));
        f.generation = Some(g.clone());
        let mut d = Dumper::new(f, 7, 8);
        let parts = run(&mut d, 512, |n| {
            if n == 3 {
                g.set(6); // a link added while the dump runs
            }
        });
        for (i, p) in parts.iter().enumerate() {
            let want = i >= 3;
            assert!(p.ids.iter().all(|x| x.1 == want), "part {i}");
        }
        assert_eq!(parts.last().unwrap().done, Some((0, true)));
        assert!(d.interrupted());

        // Without a change nothing is marked.
        let (mut f, _) = Flows::new(300);
        f.generation = Some(Rc::new(Cell::new(5)));
        let parts = run(&mut Dumper::new(f, 7, 8), 512, |_| {});
        assert!(parts.iter().flat_map(|p| &p.ids).all(|i| !i.1));
        assert_eq!(parts.last().unwrap().done, Some((0, false)));
    }

    #[test]
    fn a_client_gone_mid_dump_releases_the_cursor() {
        let (f, done) = Flows::new(1000);
        let mut d = Dumper::new(f, 7, 8);
        let mut buf = [0u8; 512];
        assert!(!d.next_part(&mut buf).unwrap().last);
        assert_eq!(done.get(), 0);
        drop(d);
        assert_eq!(done.get(), 1);
    }

    #[test]
    fn a_record_larger_than_a_part_ends_the_dump_with_emsgsize() {
        let (f, done) = Flows::new(3);
        let mut d = Dumper::new(f, 7, 8);
        let parts = run(&mut d, 64, |_| {});
        assert_eq!(parts.len(), 1);
        assert!(parts[0].ids.is_empty());
        assert_eq!(parts[0].done, Some((-libc::EMSGSIZE, false)));
        assert_eq!(done.get(), 1);
    }

    #[test]
    fn done_that_does_not_fit_comes_alone_in_the_next_part() {
        // Size the buffer so that exactly two records fill it.
        let mut probe = [0u8; 1024];
        let mut p = Part::new(&mut probe, 7, 8, false);
        p.push(kind::NEWFLOW, &flow()).unwrap();
        let rec = p.len();
        let (f, done) = Flows::new(2);
        let parts = run(&mut Dumper::new(f, 7, 8), 2 * rec, |_| {});
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].ids.len(), 2);
        assert_eq!(parts[0].done, None);
        assert!(parts[1].ids.is_empty());
        assert_eq!(parts[1].done, Some((0, false)));
        assert_eq!(done.get(), 1);
    }

    /// A dump over a sparse table that yields after scanning a bounded number of slots.
    struct Sparse {
        slot: u64,
        slots: u64,
        every: u64,
    }

    impl Dump for Sparse {
        fn dump(&mut self, part: &mut Part<'_>) -> Step {
            let stop = (self.slot + 100).min(self.slots);
            while self.slot < stop {
                if self.slot.is_multiple_of(self.every) {
                    let f = FlowMsg {
                        id: self.slot,
                        ..flow()
                    };
                    if part.push(kind::NEWFLOW, &f).is_err() {
                        return Step::More;
                    }
                }
                self.slot += 1;
            }
            if self.slot == self.slots {
                Step::Finished(0)
            } else {
                Step::More
            }
        }
    }

    #[test]
    fn a_dump_may_yield_without_a_record() {
        let mut d = Dumper::new(
            Sparse {
                slot: 0,
                slots: 1000,
                every: 450,
            },
            7,
            8,
        );
        let mut buf = [0u8; 4096];
        let mut ids = Vec::new();
        let mut empty = 0;
        while let Some(p) = d.next_part(&mut buf) {
            if p.len == 0 {
                empty += 1;
                continue;
            }
            ids.extend(read_part(&buf[..p.len]).ids.iter().map(|i| i.0));
        }
        assert_eq!(ids, [0, 450, 900]);
        assert!(empty >= 5, "{empty} empty turns");
    }

    #[test]
    fn the_smallest_dump_buffer_holds_the_largest_flow_record_and_done() {
        use std::net::{IpAddr, Ipv6Addr};
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1));
        let max = FlowMsg {
            src: v6,
            dst: v6,
            event_ns: Some(u64::MAX),
            vlan_inner: Some(4095),
            end_reason: Some(crate::msg::EndReason::Evict),
            ..flow()
        };
        let mut buf = [0u8; crate::frame::MIN_DUMP_BUF];
        let mut p = Part::new(&mut buf, 7, 8, false);
        p.push(kind::NEWFLOW, &max).unwrap();
        p.done(0, &ExtAck::default()).unwrap();
        assert!(
            p.len() <= crate::frame::MIN_DUMP_BUF / 2,
            "{} bytes",
            p.len()
        );
    }
}
