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
        }
    }

    /// Appends one record of message type `kind`.
    ///
    /// # Errors
    /// [`Full`]: the record does not fit; the part is unchanged. The dump keeps its cursor on
    /// this record and resumes there in the next part.
    pub fn push(&mut self, kind: u16, body: &impl Body) -> Result<(), Full> {
        self.enc
            .message(kind, self.flags, self.seq, self.pid, |e| body.emit(e))?;
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
    /// Records remain: the part is full (or the callback wants to yield); call again.
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
    /// Bytes of the part (send them as one datagram).
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
    /// `None` once the dump is over. A part that cannot hold even one record ends the dump
    /// with `-EMSGSIZE`, as the kernel's does. `buf` must hold at least an `NLMSG_DONE`
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
                Step::More if part.is_empty() => -libc::EMSGSIZE,
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
