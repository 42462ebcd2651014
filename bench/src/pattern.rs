//! Deterministic payload patterns, so a receiver can verify every byte it gets.
//!
//! - Datagrams: bytes `0..8` hold the sequence number (u64, big endian); every later byte
//!   `i` is `(seq + i) as u8`.
//! - Streams: the byte at stream offset `i` is `(i % 251) as u8` (251 is prime, so the pattern
//!   does not line up with power-of-two buffer or segment sizes).

/// Bytes of the sequence-number header at the start of each datagram.
pub(crate) const SEQ_LEN: usize = 8;

/// Period of the stream pattern.
pub(crate) const STREAM_PERIOD: usize = 251;

/// Writes datagram `seq` into `buf` (its whole length).
///
/// # Panics
/// If `buf` is shorter than [`SEQ_LEN`].
pub(crate) fn fill_datagram(buf: &mut [u8], seq: u64) {
    let (head, body) = buf.split_at_mut(SEQ_LEN);
    head.copy_from_slice(&seq.to_be_bytes());
    // (seq + i) as u8 == (seq as u8).wrapping_add(i as u8): truncation commutes with addition.
    let base = (seq as u8).wrapping_add(SEQ_LEN as u8);
    for (i, b) in body.iter_mut().enumerate() {
        *b = base.wrapping_add(i as u8);
    }
}

/// The sequence number of a well-formed datagram, or `None` if it is too short or any byte
/// differs from the pattern.
pub(crate) fn check_datagram(buf: &[u8]) -> Option<u64> {
    let head: [u8; SEQ_LEN] = buf.get(..SEQ_LEN)?.try_into().ok()?;
    let seq = u64::from_be_bytes(head);
    let base = (seq as u8).wrapping_add(SEQ_LEN as u8);
    buf[SEQ_LEN..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == base.wrapping_add(i as u8))
        .then_some(seq)
}

/// The stream pattern's byte at `offset`.
pub(crate) fn stream_byte(offset: u64) -> u8 {
    (offset % STREAM_PERIOD as u64) as u8
}

/// A precomputed run of the stream pattern, to write or compare large chunks at once.
#[derive(Debug, Clone)]
pub(crate) struct StreamPattern {
    /// `chunk_len + STREAM_PERIOD` bytes of the pattern starting at offset 0.
    buf: Vec<u8>,
    chunk_len: usize,
}

impl StreamPattern {
    /// A pattern able to hand out chunks of up to about `max_chunk` bytes (rounded up to a
    /// whole number of periods, at least one).
    pub(crate) fn new(max_chunk: usize) -> Self {
        let chunk_len = max_chunk.div_ceil(STREAM_PERIOD).max(1) * STREAM_PERIOD;
        let buf = (0..(chunk_len + STREAM_PERIOD) as u64)
            .map(stream_byte)
            .collect();
        Self { buf, chunk_len }
    }

    /// The pattern bytes from stream offset `offset`: `len` of them, at most one chunk.
    pub(crate) fn chunk(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % STREAM_PERIOD as u64) as usize;
        &self.buf[start..start + len.min(self.chunk_len)]
    }

    /// How many bytes of `data`, found at stream offset `offset`, differ from the pattern.
    pub(crate) fn mismatches(&self, data: &[u8], offset: u64) -> u64 {
        let mut bad = 0u64;
        let mut pos = 0usize;
        while pos < data.len() {
            let expected = self.chunk(offset + pos as u64, data.len() - pos);
            let got = &data[pos..pos + expected.len()];
            if got != expected {
                bad += got.iter().zip(expected).filter(|(a, b)| a != b).count() as u64;
            }
            pos += expected.len();
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_layout() {
        let mut buf = [0u8; 20];
        fill_datagram(&mut buf, 0x0102_0304_0506_07f8);
        assert_eq!(&buf[..8], &[1, 2, 3, 4, 5, 6, 7, 0xf8]);
        for (i, &b) in buf.iter().enumerate().skip(SEQ_LEN) {
            assert_eq!(b, (0x0102_0304_0506_07f8u64.wrapping_add(i as u64)) as u8);
        }
        // Wraps through 0xff.
        assert_eq!(buf[8], 0x00);
        assert_eq!(buf[9], 0x01);
    }

    #[test]
    fn datagram_round_trip_all_sizes() {
        for size in [8usize, 9, 64, 255, 256, 257, 1472] {
            for seq in [0u64, 1, 255, 256, 12345, u64::MAX] {
                let mut buf = vec![0u8; size];
                fill_datagram(&mut buf, seq);
                assert_eq!(check_datagram(&buf), Some(seq), "size {size} seq {seq}");
            }
        }
    }

    #[test]
    fn datagram_corruption_detected() {
        let mut buf = vec![0u8; 100];
        fill_datagram(&mut buf, 42);
        for i in SEQ_LEN..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert_eq!(check_datagram(&bad), None, "flip at {i}");
        }
        // A corrupted sequence number no longer matches its body.
        let mut bad = buf.clone();
        bad[7] ^= 1;
        assert_eq!(check_datagram(&bad), None);
        // Too short.
        assert_eq!(check_datagram(&buf[..7]), None);
        assert_eq!(check_datagram(&[]), None);
        // Truncation keeps a valid prefix (length is checked by nobody but the sender).
        assert_eq!(check_datagram(&buf[..50]), Some(42));
    }

    #[test]
    fn stream_bytes() {
        assert_eq!(stream_byte(0), 0);
        assert_eq!(stream_byte(250), 250);
        assert_eq!(stream_byte(251), 0);
        assert_eq!(stream_byte(251 * 1000 + 7), 7);
    }

    #[test]
    fn stream_chunks_follow_the_pattern() {
        let p = StreamPattern::new(1000);
        assert_eq!(p.chunk_len % STREAM_PERIOD, 0);
        assert!(p.chunk_len >= 1000);
        for offset in [0u64, 1, 250, 251, 252, 1_000_003] {
            let c = p.chunk(offset, usize::MAX);
            assert_eq!(c.len(), p.chunk_len);
            for (i, &b) in c.iter().enumerate() {
                assert_eq!(b, stream_byte(offset + i as u64));
            }
            assert_eq!(p.chunk(offset, 3).len(), 3);
        }
    }

    #[test]
    fn stream_mismatches_counted() {
        let p = StreamPattern::new(300);
        let offset = 777u64;
        let mut data: Vec<u8> = (0..5000u64).map(|i| stream_byte(offset + i)).collect();
        assert_eq!(p.mismatches(&data, offset), 0);
        assert_eq!(p.mismatches(&data[..0], offset), 0);
        // Same bytes at the wrong offset mismatch (almost) everywhere.
        assert!(p.mismatches(&data, offset + 1) > 4900);
        data[0] ^= 1;
        data[2999] = data[2999].wrapping_add(1);
        data[4999] ^= 0x80;
        assert_eq!(p.mismatches(&data, offset), 3);
    }
}
