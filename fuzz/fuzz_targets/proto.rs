//! Any bytes as a datagram of the control protocol, read by the daemon's request decoder and by
//! a client's reply decoder, lax and strict. Neither may panic; every decoding error must make
//! an error reply that fits a small buffer and reads back with the same errno and offset; and
//! whatever decodes must encode again and decode to the same value (the encoding is canonical).
//!
//! Run: `cargo +nightly fuzz run proto fuzz/corpus/proto fuzz/seeds/proto` (cargo-fuzz), seeded from `fuzz/seeds/proto/` (one
//! datagram of every request and reply type, written by the `fuzz_seeds_are_the_samples`
//! unit test).
#![no_main]

use isopath_proto::{
    attr::Ctx,
    error::DecodeError,
    msg::{ExtAck, Incoming, Message, put_error},
    nl::{Encoder, Header, NLM_F_REQUEST, messages},
};
use libfuzzer_sys::fuzz_target;

/// The error reply to `e` for a message with header `h` fits in 512 bytes and says the same.
fn reply(h: &Header, e: &DecodeError) {
    let mut buf = [0u8; 512];
    let mut enc = Encoder::new(&mut buf);
    put_error(&mut enc, h, e.errno(), &ExtAck::of(e)).expect("an error reply always fits");
    let m = messages(enc.bytes()).next().unwrap().unwrap();
    let Ok(Message::Error(em)) = Message::decode(&m, Ctx { strict: true }) else {
        panic!("the error reply does not read back");
    };
    assert_eq!(em.errno(), e.errno());
    assert_eq!(em.ext.offset, e.offset());
    assert_eq!(em.request, *h);
}

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 1 << 17];
    for strict in [false, true] {
        let ctx = Ctx { strict };
        for m in messages(data) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    assert!(e.is_framing());
                    reply(&Header::read_partial(data), &e);
                    break;
                }
            };
            // The daemon's side.
            match Incoming::decode(&m, ctx) {
                Err(e) => reply(&m.header, &e),
                Ok(inc) => {
                    if let Some(r) = inc.request {
                        let h = inc.header;
                        let mut enc = Encoder::new(&mut out);
                        if r.encode(&mut enc, h.flags & !NLM_F_REQUEST, h.seq, h.pid)
                            .is_ok()
                        {
                            let again = messages(enc.bytes()).next().unwrap().unwrap();
                            let back = Incoming::decode(&again, ctx).expect("re-encoded request");
                            assert_eq!(back.request.as_ref(), Some(&r));
                        }
                    }
                }
            }
            // A client's side.
            if let Ok(msg) = Message::decode(&m, ctx) {
                let h = m.header;
                let mut enc = Encoder::new(&mut out);
                // Standard types are refused by encode (they have their own writers).
                if msg.encode(&mut enc, h.flags, h.seq, h.pid).is_ok() {
                    let again = messages(enc.bytes()).next().unwrap().unwrap();
                    assert_eq!(Message::decode(&again, ctx).as_ref(), Ok(&msg));
                }
            }
        }
    }
});
