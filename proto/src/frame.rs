//! Framing for `SOCK_SEQPACKET` Unix sockets: one datagram carries one or more whole messages,
//! as a netlink socket's skb does. A sender packs messages into a [`Datagram`] of bounded size
//! and sends it in one `send`; a receiver reads one datagram and splits it with
//! [`super::nl::messages`].
//!
//! On `SOCK_SEQPACKET` a datagram longer than the receive buffer is cut (`MSG_TRUNC`), so both
//! sides agree on [`MAX_DATAGRAM`]: nothing larger is ever sent, and a receiver whose buffer is
//! that large never sees a cut datagram.

use super::{
    error::Full,
    nl::{Encoder, Msg, messages},
};
use crate::error::DecodeError;

/// The largest datagram either side sends (the daemon's dump parts are bounded below it).
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// The dump part size when the client asks for none (the kernel's default for dumps is about
/// a page; 32 KiB halves the system calls of a large dump).
pub const DEFAULT_DUMP_BUF: usize = 32 * 1024;

/// The smallest dump part a client may ask for (two of the largest flow records and the
/// `NLMSG_DONE` fit).
pub const MIN_DUMP_BUF: usize = 1024;

/// A datagram being filled with whole messages, up to a fixed capacity chosen once; reused
/// after [`Datagram::clear`] without allocating.
#[derive(Debug, Clone)]
pub struct Datagram {
    buf: Box<[u8]>,
    len: usize,
}

impl Datagram {
    /// An empty datagram of at most `cap` bytes (the one allocation).
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: vec![0; cap].into_boxed_slice(),
            len: 0,
        }
    }

    /// Appends what `f` writes (one or more whole messages); on [`Full`] the datagram is as it
    /// was before the call.
    ///
    /// # Errors
    /// [`Full`]: send this datagram and start another.
    pub fn push(
        &mut self,
        f: impl FnOnce(&mut Encoder<'_>) -> Result<(), Full>,
    ) -> Result<(), Full> {
        let mut e = Encoder::resume(&mut self.buf, self.len);
        let at = e.len();
        let r = f(&mut e);
        if r.is_err() {
            e.rollback(at);
        }
        self.len = e.len();
        r
    }

    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes used.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing in it yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Empties it (after sending).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The whole buffer, to receive a datagram into; then [`Datagram::received`].
    pub fn recv_buf(&mut self) -> &mut [u8] {
        self.len = 0;
        &mut self.buf
    }

    /// Marks `n` bytes as received into [`Datagram::recv_buf`].
    pub fn received(&mut self, n: usize) {
        self.len = n.min(self.buf.len());
    }

    /// The messages of the datagram.
    pub fn messages(&self) -> impl Iterator<Item = Result<Msg<'_>, DecodeError>> {
        messages(self.bytes())
    }
}

/// Packs items into as few datagrams of at most `cap` bytes as possible, each item written by
/// `put` as whole messages; `send` gets every full datagram (and the last one).
///
/// # Errors
/// An item that does not fit even in an empty datagram ([`Full`]); what was packed before it
/// has been sent.
pub fn pack<T, E: From<Full>>(
    items: impl IntoIterator<Item = T>,
    dgram: &mut Datagram,
    mut put: impl FnMut(&mut Encoder<'_>, &T) -> Result<(), Full>,
    mut send: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    dgram.clear();
    for item in items {
        if dgram.push(|e| put(e, &item)).is_err() {
            if dgram.is_empty() {
                return Err(Full.into());
            }
            send(dgram.bytes())?;
            dgram.clear();
            dgram.push(|e| put(e, &item))?;
        }
    }
    if !dgram.is_empty() {
        send(dgram.bytes())?;
        dgram.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;
    use crate::{
        attr::Ctx,
        msg::{Incoming, LinkQuery, Request},
        nl::{NLM_F_ACK, NLM_F_DUMP},
    };

    fn query(i: u32) -> Request {
        Request::GetLink(LinkQuery {
            ifindex: Some(i),
            name: None,
            kind: None,
            ext_mask: None,
        })
    }

    #[test]
    fn many_messages_share_a_datagram_and_come_back_in_order() {
        // A real datagram socket pair keeps message boundaries as SOCK_SEQPACKET does.
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut out = Datagram::with_capacity(256);
        let mut sent = Vec::new();
        pack::<_, anyhow::Error>(
            1..=20u32,
            &mut out,
            |e, &i| query(i).encode(e, NLM_F_ACK, i, 0),
            |d| {
                sent.push(d.len());
                Ok(a.send(d).map(drop)?)
            },
        )
        .unwrap();
        // 20 messages of 28 bytes: 9 per 256-byte datagram.
        assert_eq!(sent, [252, 252, 56]);
        let mut inp = Datagram::with_capacity(MAX_DATAGRAM);
        let mut got = Vec::new();
        for _ in 0..sent.len() {
            let n = b.recv(inp.recv_buf()).unwrap();
            inp.received(n);
            for m in inp.messages() {
                let inc = Incoming::decode(&m.unwrap(), Ctx::default()).unwrap();
                assert_eq!(inc.request, Some(query(inc.header.seq)));
                got.push(inc.header.seq);
            }
        }
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn an_item_larger_than_a_datagram_is_refused() {
        let mut d = Datagram::with_capacity(24);
        let r = pack::<_, Full>(
            [1u32],
            &mut d,
            |e, &i| query(i).encode(e, NLM_F_DUMP, 1, 0),
            |_| Ok(()),
        );
        assert_eq!(r, Err(Full));
        assert!(d.is_empty());
    }
}
