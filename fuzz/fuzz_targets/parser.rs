//! Any bytes as frames: the packet views and the worker's classify pass must answer with
//! headers or a named parse error, never panic, and every offset they report must lie inside
//! the frame; the parse's straight-line path for common frames must answer exactly as the
//! layered walk. Run: `cargo +nightly fuzz run parser --no-default-features` (cargo-fuzz; the
//! datapath is built without its XDP modules).
//!
//! Input: the first byte picks the policy (own MAC from bytes 1..7, ND punting, strict); the
//! rest is split into frames, each led by a one-byte length.
#![no_main]

use isopath_datapath::{
    wire::{self, FrameClass, Headers, ParseError},
    worker::classify::{Fate, Policy, Verdicts, classify},
};
use libfuzzer_sys::fuzz_target;

/// What must hold of any parse.
fn check(frame: &[u8], h: &Headers) {
    let len = frame.len();
    assert_eq!(usize::from(h.len), len.min(65535));
    assert!(usize::from(h.tags) <= wire::MAX_VLAN_TAGS);
    if len < 14 {
        assert_eq!(h.error, Some(ParseError::Truncated));
        return;
    }
    assert_eq!(&h.dst[..], &frame[..6]);
    assert_eq!(&h.src[..], &frame[6..12]);
    assert!(usize::from(h.l3) <= len);
    if h.error.is_none() && matches!(h.class, FrameClass::Ipv4 | FrameClass::Ipv6) {
        let l3 = usize::from(h.l3);
        assert!(
            l3 + usize::from(h.l3_len) <= len,
            "L3 packet inside the frame"
        );
        assert!(
            usize::from(h.l4) <= l3 + usize::from(h.l3_len),
            "L4 inside the packet"
        );
        // The views at the reported offsets read what parse read.
        if h.class == FrameClass::Ipv4 {
            let ip = wire::Ipv4Packet::new_checked(&frame[l3..]).expect("parsed IPv4");
            assert!(ip.verify_checksum());
            assert_eq!(ip.protocol_raw(), h.proto);
            let _ = (ip.src(), ip.dst(), ip.options(), ip.payload());
        } else {
            let ip = wire::Ipv6Packet::new_checked(&frame[l3..]).expect("parsed IPv6");
            let _ = (ip.src(), ip.dst(), ip.flow_label(), ip.payload());
        }
        let l4 = &frame[usize::from(h.l4)..l3 + usize::from(h.l3_len)];
        if h.frag != wire::Fragment::Later {
            match h.proto {
                6 => {
                    let t = wire::TcpPacket::new_checked(l4).expect("parsed TCP");
                    assert_eq!(
                        (t.src_port(), t.dst_port(), t.flags()),
                        (h.sport, h.dport, h.tcp_flags)
                    );
                    let _ = (t.seq(), t.ack(), t.window(), t.payload());
                }
                // A first fragment's UDP length counts the whole datagram: only whole ones
                // pass the checked view.
                17 if h.frag == wire::Fragment::First => {
                    let u = wire::UdpPacket::new_unchecked(l4);
                    assert_eq!((u.src_port(), u.dst_port()), (h.sport, h.dport));
                }
                17 => {
                    let u = wire::UdpPacket::new_checked(l4).expect("parsed UDP");
                    assert_eq!((u.src_port(), u.dst_port()), (h.sport, h.dport));
                    let _ = u.payload();
                }
                1 | 58 => {
                    let i = wire::IcmpPacket::new_checked(l4).expect("parsed ICMP");
                    let _ = (i.nd_target(), i.echo_seq(), i.rest());
                }
                _ => {}
            }
        }
    }
    if h.class == FrameClass::Arp && h.error.is_none() {
        let a = wire::ArpPacket::new_checked(&frame[usize::from(h.l3)..]).expect("parsed ARP");
        let _ = (
            a.op(),
            a.sha(),
            a.spa(),
            a.tha(),
            a.tpa(),
            a.is_ethernet_ipv4(),
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input as one frame; the straight-line path answers as the layered walk.
    let h = wire::parse(data);
    assert_eq!(
        h,
        wire::parse_layered(data),
        "straight-line path and layered walk"
    );
    check(data, &h);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let own: [u8; 6] = rest
        .get(..6)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 6]);
    let policy = Policy {
        own_mac: if mode & 1 != 0 {
            wire::ethernet::mac_u64(&own)
        } else {
            0
        },
        punt_nd: mode & 2 != 0,
        strict: mode & 4 != 0,
    };
    // The rest as a burst of length-prefixed frames.
    let mut frames = Vec::new();
    let mut at = rest;
    while let Some((&n, tail)) = at.split_first() {
        let n = usize::from(n).min(tail.len());
        frames.push(&tail[..n]);
        at = &tail[n..];
    }
    VERDICTS.with_borrow_mut(|vs| burst(vs, &frames, policy));
});

thread_local! {
    /// One burst's verdicts, allocated once (as the worker does).
    static VERDICTS: std::cell::RefCell<Verdicts> = std::cell::RefCell::new(Verdicts::new());
}

/// The classify pass over `frames` and what must hold of its verdicts and tally.
fn burst(vs: &mut Verdicts, frames: &[&[u8]], policy: Policy) {
    vs.classify(frames.iter().copied(), policy);
    assert_eq!(vs.len(), frames.len().min(256));
    let t = *vs.tally();
    let mut forwarded = 0u32;
    for (v, f) in vs.as_slice().iter().zip(frames) {
        assert_eq!(*v, classify(f, &policy), "the pass judges each frame alone");
        assert_eq!(
            v.hdr,
            wire::parse_layered(f),
            "straight-line path and layered walk"
        );
        if v.fate != Fate::DropRunt {
            check(f, &v.hdr);
        }
        if v.fate == Fate::DropParse {
            assert!(policy.strict && v.hdr.error.is_some());
        }
        forwarded += u32::from(v.fate == Fate::Forward);
    }
    assert_eq!(t.not_forwarded + forwarded, vs.len() as u32);
    assert_eq!(t.classes.iter().sum::<u32>() + t.runts, vs.len() as u32);
    assert_eq!(
        t.bytes,
        frames.iter().take(256).map(|f| f.len() as u64).sum::<u64>()
    );
    vs.keep_forwarded();
    assert_eq!(vs.len() as u32, forwarded);
}
