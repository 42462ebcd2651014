//! Round trips of every message, golden bytes of acks and errors, every malformed kind, strict
//! against lax checking.

use super::{samples::*, *};
use crate::{
    attr,
    attrs::{self, nlmsgerr},
    nl::{
        self, NLA_F_NESTED, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
        NLM_F_MULTI, messages,
    },
};

const LAX: Ctx = Ctx { strict: false };
const STRICT: Ctx = Ctx { strict: true };

fn encode_request(r: &Request, flags: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let mut e = Encoder::new(&mut buf);
    r.encode(&mut e, flags, 42, 777).unwrap();
    e.bytes().to_vec()
}

fn decode_one(d: &[u8], ctx: Ctx) -> Result<Incoming, DecodeError> {
    let mut it = messages(d);
    let m = it.next().expect("one message")?;
    assert!(it.next().is_none());
    Incoming::decode(&m, ctx)
}

#[test]
fn every_request_round_trips_lax_and_strict() {
    for (r, flags) in requests() {
        let d = encode_request(&r, flags);
        for ctx in [LAX, STRICT] {
            let inc = decode_one(&d, ctx).unwrap_or_else(|e| panic!("{r:?}: {e}"));
            assert_eq!(inc.request.as_ref(), Some(&r));
            assert_eq!(inc.header.seq, 42);
            assert_eq!(inc.header.pid, 777);
            assert_eq!(inc.header.flags, NLM_F_REQUEST | flags);
            assert_eq!(inc.header.len as usize, d.len());
        }
    }
}

#[test]
fn every_reply_round_trips() {
    for (m, flags) in replies() {
        let mut buf = vec![0u8; 8192];
        let mut e = Encoder::new(&mut buf);
        m.encode(&mut e, flags, 5, 6).unwrap();
        let d = e.bytes();
        for ctx in [LAX, STRICT] {
            let got: Vec<_> = messages(d)
                .map(|x| Message::decode(&x.unwrap(), ctx))
                .collect();
            assert_eq!(got, [Ok(m.clone())]);
        }
        // A request decoder refuses what only the daemon sends, and the other way round.
        let mut as_request = d.to_vec();
        as_request[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        let inc = Incoming::decode(&messages(&as_request).next().unwrap().unwrap(), LAX);
        let both = [
            kind::NEWLINK,
            kind::DELLINK,
            kind::NEWCAPTURE,
            kind::DELFLOW,
        ];
        if !both.contains(&m.kind()) {
            assert!(
                matches!(inc, Err(DecodeError::NotRequest { .. })),
                "{inc:?}"
            );
        }
    }
    for (r, flags) in requests() {
        let d = encode_request(&r, flags);
        let got = Message::decode(&messages(&d).next().unwrap().unwrap(), LAX);
        let both = [
            kind::NEWLINK,
            kind::DELLINK,
            kind::NEWCAPTURE,
            kind::DELFLOW,
        ];
        if !both.contains(&r.kind()) {
            assert!(matches!(got, Err(DecodeError::NotReply { .. })), "{got:?}");
        }
    }
}

#[test]
fn the_samples_cover_every_type() {
    let reqs: Vec<u16> = requests().iter().map(|r| r.0.kind()).collect();
    for (k, _, _) in REQUEST_TYPES {
        assert!(reqs.contains(k), "no request sample of type {k}");
    }
    let reps: Vec<u16> = replies().iter().map(|r| r.0.kind()).collect();
    for (k, _) in REPLY_TYPES {
        assert!(reps.contains(k), "no reply sample of type {k}");
    }
    // Every named type is a request, a reply or both.
    for (k, name) in TYPE_NAMES {
        assert!(
            reqs.contains(k) || reps.contains(k),
            "{name} is neither a request nor a reply"
        );
    }
}

#[test]
fn netlink_packet_core_reads_our_messages() {
    use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};
    for (m, flags) in replies() {
        let mut buf = vec![0u8; 8192];
        let mut e = Encoder::new(&mut buf);
        m.encode(&mut e, flags, 5, 6).unwrap();
        let nb = NetlinkBuffer::new_checked(e.bytes()).unwrap();
        assert_eq!(usize::try_from(nb.length()).unwrap(), e.len());
        assert_eq!(nb.message_type(), m.kind());
        // Walk the whole attribute tree with the crate's iterator: every nest it finds parses.
        fn walk(b: &[u8]) -> usize {
            let mut n = 0;
            for a in NlasIterator::new(b) {
                let a: NlaBuffer<&[u8]> = a.expect("the crate parses every attribute");
                n += 1;
                if a.nested_flag() {
                    n += walk(a.value());
                }
            }
            n
        }
        assert!(walk(&nb.payload()[nl::ISOMSG_LEN..]) > 0);
    }
}

/// Writes the error reply to a malformed datagram's first message and decodes it back.
fn error_reply(datagram: &[u8], ctx: Ctx) -> (DecodeError, ErrorMsg) {
    let (hdr, err) = match messages(datagram).next().unwrap() {
        Err(e) => (nl::Header::read_partial(datagram), e),
        Ok(m) => (m.header, Incoming::decode(&m, ctx).unwrap_err()),
    };
    let mut buf = [0u8; 512];
    let mut e = Encoder::new(&mut buf);
    put_error(&mut e, &hdr, err.errno(), &ExtAck::of(&err)).unwrap();
    let m = messages(e.bytes()).next().unwrap().unwrap();
    let Message::Error(em) = Message::decode(&m, LAX).unwrap() else {
        panic!("not an error");
    };
    assert_eq!(em.request, hdr);
    assert_eq!(em.errno(), err.errno());
    assert_eq!(em.ext.msg.as_deref(), Some(err.to_string().as_str()));
    assert_eq!(em.ext.offset, err.offset());
    (err, em)
}

/// The attribute at `offset` in `datagram` has type `kind`.
fn attr_at(datagram: &[u8], offset: u32) -> u16 {
    let o = offset as usize;
    u16::from_ne_bytes([datagram[o + 2], datagram[o + 3]]) & nl::NLA_TYPE_MASK
}

fn raw_request(
    kind: u16,
    flags: u16,
    body: impl FnOnce(&mut Encoder<'_>) -> Result<(), Full>,
) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut e = Encoder::new(&mut buf);
    e.message(kind, NLM_F_REQUEST | flags, 1, 2, body).unwrap();
    e.bytes().to_vec()
}

#[test]
fn framing_errors_get_einval_replies() {
    let good = encode_request(&requests()[0].0, NLM_F_ACK);
    let (e, _) = error_reply(&good[..10], LAX);
    assert_eq!(e, DecodeError::ShortHeader { have: 10 });
    let mut past = good.clone();
    past[0..4].copy_from_slice(&200u32.to_ne_bytes());
    let (e, em) = error_reply(&past, LAX);
    assert!(matches!(e, DecodeError::PastDatagram { len: 200, .. }));
    assert_eq!(em.errno(), libc::EINVAL);
    let mut short = good.clone();
    short[0..4].copy_from_slice(&8u32.to_ne_bytes());
    assert!(matches!(
        error_reply(&short, LAX).0,
        DecodeError::BadLength { len: 8 }
    ));
}

#[test]
fn every_malformed_kind_gets_its_error() {
    use attrs::link;
    // Attribute overrun: nla_len past the message.
    let mut d = raw_request(kind::GETLINK, 0, |e| e.str(link::NAME, "m0"));
    let at = nl::ATTRS_OFFSET;
    d[at..at + 2].copy_from_slice(&40u16.to_ne_bytes());
    let (e, em) = error_reply(&d, LAX);
    assert!(matches!(e, DecodeError::Overrun { .. }), "{e}");
    assert_eq!(em.ext.offset, Some(nl::ATTRS_OFFSET as u32));
    // nla_len shorter than the attribute header.
    d[at..at + 2].copy_from_slice(&3u16.to_ne_bytes());
    assert!(matches!(
        error_reply(&d, LAX).0,
        DecodeError::Overrun { .. }
    ));

    // Nesting too deep: unknown nests are still walked for structure, to MAX_DEPTH.
    let deep = |levels: usize| {
        raw_request(kind::GETLINK, 0, |e| {
            e.str(link::NAME, "m0")?;
            let mut nests = Vec::new();
            for _ in 0..levels {
                nests.push(e.nest(30)?);
            }
            e.u32(1, 1)?;
            for n in nests.into_iter().rev() {
                e.nest_end(n)?;
            }
            Ok(())
        })
    };
    assert!(decode_one(&deep(attr::MAX_DEPTH - 1), LAX).is_ok());
    let d = deep(attr::MAX_DEPTH);
    let (e, em) = error_reply(&d, LAX);
    assert!(matches!(e, DecodeError::TooDeep { .. }), "{e}");
    assert_eq!(attr_at(&d, em.ext.offset.unwrap()), 30);

    // Unknown message type; a reply type sent as a request; a dump of what has none.
    let d = raw_request(200, 0, |_| Ok(()));
    let (e, em) = error_reply(&d, LAX);
    assert_eq!(e, DecodeError::UnknownType { kind: 200 });
    assert_eq!(em.errno(), libc::EOPNOTSUPP);
    let d = raw_request(kind::NEWWORKER, 0, |_| Ok(()));
    assert_eq!(error_reply(&d, LAX).1.errno(), libc::EOPNOTSUPP);
    let d = raw_request(kind::GETSTATUS, NLM_F_DUMP, |_| Ok(()));
    assert_eq!(
        error_reply(&d, LAX).0,
        DecodeError::NoDump { name: "GETSTATUS" }
    );

    // No isomsg; a version this side does not speak.
    let mut b = [0u8; 64];
    let mut enc = Encoder::new(&mut b);
    let m = enc.begin(kind::GETSTATUS, NLM_F_REQUEST, 1, 2).unwrap();
    enc.end(m);
    let d = enc.bytes().to_vec();
    assert!(matches!(
        error_reply(&d, LAX).0,
        DecodeError::ShortPayload { have: 0, need: 4 }
    ));
    let mut d = raw_request(kind::GETSTATUS, 0, |_| Ok(()));
    d[nl::NLMSG_HDRLEN] = 2;
    let (e, em) = error_reply(&d, LAX);
    assert_eq!(e, DecodeError::Version { version: 2 });
    assert_eq!(em.errno(), libc::EPROTONOSUPPORT);

    // Wrong size, bad string.
    let d = raw_request(kind::GETLINK, 0, |e| e.u16(link::IFINDEX, 7));
    let (e, em) = error_reply(&d, LAX);
    assert!(matches!(e, DecodeError::Size { len: 2, .. }), "{e}");
    assert_eq!(attr_at(&d, em.ext.offset.unwrap()), link::IFINDEX);
    let d = raw_request(kind::GETLINK, 0, |e| e.attr(link::NAME, b"m\xff0"));
    assert!(matches!(
        error_reply(&d, LAX).0,
        DecodeError::BadString { .. }
    ));
    let d = raw_request(kind::GETLINK, 0, |e| {
        e.str(link::NAME, "a-name-longer-than-15")
    });
    assert!(matches!(
        error_reply(&d, LAX).0,
        DecodeError::BadString { .. }
    ));
    // An array entry of the wrong type.
    let d = raw_request(kind::DELLINK, 0, |e| {
        e.nested(link::NAMES, |e| e.str(2, "m0"))
    });
    assert!(matches!(
        error_reply(&d, LAX).0,
        DecodeError::BadValue { .. }
    ));
}

#[test]
fn a_missing_attribute_is_named_with_miss_type_and_miss_nest() {
    use attrs::{flow_tuple, flowreq, link};
    // GETLINK without a key and without NLM_F_DUMP.
    let d = raw_request(kind::GETLINK, NLM_F_ACK, |_| Ok(()));
    let (e, em) = error_reply(&d, LAX);
    assert_eq!(e.missing(), Some((link::NAME, None)));
    assert_eq!(em.ext.miss_type, Some(u32::from(link::NAME)));
    assert_eq!(em.ext.miss_nest, None);
    assert_eq!(em.ext.msg.as_deref(), Some("missing attribute link.NAME"));
    // A flow tuple without its protocol: missing inside the TUPLE nest.
    let d = raw_request(kind::GETFLOW, 0, |e| {
        e.nested(flowreq::TUPLE, |e| {
            e.ip(flow_tuple::SRC, V4)?;
            e.ip(flow_tuple::DST, V4)
        })
    });
    let (_, em) = error_reply(&d, LAX);
    assert_eq!(em.ext.miss_type, Some(u32::from(flow_tuple::PROTO)));
    let nest = em.ext.miss_nest.expect("MISS_NEST");
    assert_eq!(attr_at(&d, nest), flowreq::TUPLE);
    // DELFLOW with both a filter and a tuple.
    let mut q = FlowQuery {
        filter: Some(FlowFilter::any()),
        limit: None,
        tuple: Some(tuple()),
    };
    let d = encode_request(&Request::DelFlow(q.clone()), 0);
    assert!(matches!(
        error_reply(&d, LAX).0,
        DecodeError::Invalid { .. }
    ));
    q.tuple = None;
    assert!(decode_one(&encode_request(&Request::DelFlow(q), 0), LAX).is_ok());
}

#[test]
fn strict_mode_refuses_what_lax_mode_ignores() {
    use attrs::link;
    let unknown = raw_request(kind::GETLINK, 0, |e| {
        e.str(link::NAME, "m0")?;
        e.u32(29, 5)?; // a type the link nest does not define
        e.u32(link::MTU, 1500) // defined, but not part of GETLINK
    });
    let want = Request::GetLink(LinkQuery {
        ifindex: None,
        name: Some("m0".into()),
        kind: None,
        ext_mask: None,
    });
    assert_eq!(
        decode_one(&unknown, LAX).unwrap().request,
        Some(want.clone())
    );
    let (e, em) = error_reply(&unknown, STRICT);
    assert!(matches!(e, DecodeError::UnknownAttr { .. }), "{e}");
    assert_eq!(em.errno(), libc::EINVAL);
    assert_eq!(attr_at(&unknown, em.ext.offset.unwrap()), 29);
    // The per-request flag turns strict checking on without the connection option.
    let mut flagged = unknown.clone();
    flagged[6..8].copy_from_slice(&(NLM_F_REQUEST | nl::ISO_F_STRICT).to_ne_bytes());
    assert!(matches!(
        decode_one(&flagged, LAX),
        Err(DecodeError::UnknownAttr { .. })
    ));

    let not_used = raw_request(kind::GETLINK, 0, |e| {
        e.str(link::NAME, "m0")?;
        e.u32(link::MTU, 1500)
    });
    assert_eq!(decode_one(&not_used, LAX).unwrap().request, Some(want));
    let (e, em) = error_reply(&not_used, STRICT);
    assert!(matches!(e, DecodeError::NotAllowed { .. }), "{e}");
    assert_eq!(attr_at(&not_used, em.ext.offset.unwrap()), link::MTU);
    assert_eq!(
        em.ext.msg.as_deref(),
        Some("link.MTU is not valid in this request")
    );

    // Trailing bytes, reserved header bytes, a nest without NLA_F_NESTED.
    let trailing = raw_request(kind::GETSTATUS, 0, |e| e.raw(&[0, 0])); // 2 bytes after isomsg
    assert!(decode_one(&trailing, LAX).is_ok());
    assert!(matches!(
        decode_one(&trailing, STRICT),
        Err(DecodeError::Trailing { len: 2, .. })
    ));
    let mut reserved = raw_request(kind::GETSTATUS, 0, |_| Ok(()));
    reserved[nl::NLMSG_HDRLEN + 2] = 1;
    assert!(decode_one(&reserved, LAX).is_ok());
    assert_eq!(
        decode_one(&reserved, STRICT),
        Err(DecodeError::Reserved { offset: 18 })
    );
    let mut flat = encode_request(&requests()[3].0, 0); // DELLINK: NAMES is a nest
    let t = nl::ATTRS_OFFSET + 2;
    let raw = u16::from_ne_bytes([flat[t], flat[t + 1]]) & !NLA_F_NESTED;
    flat[t..t + 2].copy_from_slice(&raw.to_ne_bytes());
    assert!(decode_one(&flat, LAX).is_ok());
    assert!(matches!(
        decode_one(&flat, STRICT),
        Err(DecodeError::NotNested { .. })
    ));
}

#[test]
fn golden_ack_error_and_done() {
    let n = |v: u32| v.to_ne_bytes();
    let s = |v: u16| v.to_ne_bytes();
    let req = nl::Header {
        len: 28,
        kind: kind::SETLINK,
        flags: NLM_F_REQUEST | NLM_F_ACK,
        seq: 9,
        pid: 1234,
    };
    let mut buf = [0u8; 256];
    let mut e = Encoder::new(&mut buf);
    put_ack(&mut e, &req).unwrap();
    let mut want = Vec::new();
    want.extend(n(36));
    want.extend(s(nl::NLMSG_ERROR));
    want.extend(s(NLM_F_CAPPED));
    want.extend(n(9));
    want.extend(n(1234));
    want.extend(0i32.to_ne_bytes());
    want.extend(req.bytes());
    assert_eq!(e.bytes(), &want[..]);

    e.clear();
    let text = "no link named \"x\"";
    let ext = ExtAck {
        msg: Some(&text),
        offset: Some(20),
        miss_type: None,
        miss_nest: None,
    };
    put_error(&mut e, &req, libc::ENODEV, &ext).unwrap();
    let mut want = Vec::new();
    want.extend(n(36 + 4 + 20 + 8)); // header, error, request header, MSG (18 + NUL), OFFS
    want.extend(s(nl::NLMSG_ERROR));
    want.extend(s(NLM_F_CAPPED | NLM_F_ACK_TLVS));
    want.extend(n(9));
    want.extend(n(1234));
    want.extend((-libc::ENODEV).to_ne_bytes());
    want.extend(req.bytes());
    want.extend(s(4 + 17 + 1));
    want.extend(s(nlmsgerr::MSG));
    want.extend(text.as_bytes());
    want.extend([0, 0, 0]); // NUL and two bytes of padding
    want.extend(s(8));
    want.extend(s(nlmsgerr::OFFS));
    want.extend(n(20));
    assert_eq!(e.bytes(), &want[..]);
    // The crate reads the same errno.
    let nm = netlink_packet_core::NetlinkMessage::<netlink_packet_route::RouteNetlinkMessage>::deserialize(e.bytes()).unwrap();
    let netlink_packet_core::NetlinkPayload::Error(em) = nm.payload else {
        panic!("not an error: {nm:?}");
    };
    assert_eq!(em.raw_code(), -libc::ENODEV);

    e.clear();
    put_done(&mut e, 9, 1234, 0, true, &ExtAck::default()).unwrap();
    let mut want = Vec::new();
    want.extend(n(20));
    want.extend(s(nl::NLMSG_DONE));
    want.extend(s(NLM_F_MULTI | NLM_F_DUMP_INTR));
    want.extend(n(9));
    want.extend(n(1234));
    want.extend(0i32.to_ne_bytes());
    assert_eq!(e.bytes(), &want[..]);
    let m = messages(e.bytes()).next().unwrap().unwrap();
    assert_eq!(
        Message::decode(&m, LAX),
        Ok(Message::Done(DoneMsg {
            status: 0,
            intr: true,
            ext: ExtAckAttrs::decode(&[], 0, LAX).unwrap(),
        }))
    );
}

#[test]
fn overrun_is_enobufs_with_a_count() {
    let mut buf = [0u8; 256];
    let mut e = Encoder::new(&mut buf);
    put_overrun(&mut e, 17).unwrap();
    let m = messages(e.bytes()).next().unwrap().unwrap();
    let Ok(Message::Error(em)) = Message::decode(&m, LAX) else {
        panic!()
    };
    assert_eq!(em.errno(), libc::ENOBUFS);
    assert_eq!(em.request.seq, 0);
    assert!(em.ext.msg.unwrap().starts_with("17 events lost"));
}

#[test]
fn an_error_to_an_uncapped_kernel_style_reply_is_read_too() {
    // The kernel echoes the whole request unless NETLINK_CAP_ACK: TLVs follow the echo.
    let req = encode_request(&requests()[0].0, NLM_F_ACK);
    let mut buf = [0u8; 256];
    let mut e = Encoder::new(&mut buf);
    let m = e.begin(nl::NLMSG_ERROR, NLM_F_ACK_TLVS, 42, 777).unwrap();
    e.raw(&(-libc::EINVAL).to_ne_bytes()).unwrap();
    e.raw(&req).unwrap();
    e.u32(nlmsgerr::OFFS, 20).unwrap();
    e.end(m);
    let m = messages(e.bytes()).next().unwrap().unwrap();
    let Ok(Message::Error(em)) = Message::decode(&m, LAX) else {
        panic!()
    };
    assert_eq!((em.errno(), em.ext.offset), (libc::EINVAL, Some(20)));
    assert_eq!(em.request.len as usize, req.len());
}

#[test]
fn messages_after_a_bad_one_in_the_same_datagram_still_decode() {
    // A datagram of three requests, the middle one unknown: the first and last decode, the
    // middle gets its error, nothing is lost (the connection stays usable).
    let mut d = encode_request(&requests()[0].0, NLM_F_ACK);
    d.extend(raw_request(999, NLM_F_ACK, |e| e.u32(1, 1)));
    d.extend(encode_request(&requests()[1].0, NLM_F_DUMP));
    let got: Vec<_> = messages(&d)
        .map(|m| Incoming::decode(&m.unwrap(), LAX).map(|i| i.request.unwrap().kind()))
        .collect();
    assert_eq!(
        got,
        [
            Ok(kind::GETLINK),
            Err(DecodeError::UnknownType { kind: 999 }),
            Ok(kind::GETLINK)
        ]
    );
}

#[test]
fn non_requests_and_standard_types_are_skipped() {
    let mut d = encode_request(&requests()[0].0, NLM_F_ACK);
    d[6..8].copy_from_slice(&NLM_F_ACK.to_ne_bytes()); // NLM_F_REQUEST cleared
    assert_eq!(decode_one(&d, STRICT).unwrap().request, None);
    let mut b = [0u8; 32];
    let mut e = Encoder::new(&mut b);
    let m = e
        .begin(nl::NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, 1, 1)
        .unwrap();
    e.end(m);
    assert_eq!(decode_one(e.bytes(), STRICT).unwrap().request, None);
}

#[test]
fn a_full_buffer_is_reported_not_overrun() {
    for (m, flags) in replies() {
        let mut need = vec![0u8; 8192];
        let mut e = Encoder::new(&mut need);
        m.encode(&mut e, flags, 1, 1).unwrap();
        let len = e.len();
        // One byte less than the message needs: Full, nothing written.
        let mut small = vec![0u8; len - 1];
        let mut e = Encoder::new(&mut small);
        assert_eq!(m.encode(&mut e, flags, 1, 1), Err(Full));
        assert!(e.is_empty());
    }
}

/// The fuzz target's seeds: one datagram per sample request and reply, and one with several
/// messages. `ISOPATH_BLESS=1 cargo test fuzz_seeds` rewrites them after a format change.
#[test]
fn fuzz_seeds_are_the_samples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/proto");
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, (r, flags)) in requests().iter().enumerate() {
        let name = type_name(r.kind()).unwrap_or("?");
        seeds.push((format!("req-{i:02}-{name}"), encode_request(r, *flags)));
    }
    for (i, (m, flags)) in replies().iter().enumerate() {
        let mut buf = vec![0u8; 8192];
        let mut e = Encoder::new(&mut buf);
        m.encode(&mut e, *flags, 5, 6).unwrap();
        let name = type_name(m.kind()).unwrap_or("?");
        seeds.push((format!("rep-{i:02}-{name}"), e.bytes().to_vec()));
    }
    let mut several = Vec::new();
    for (r, flags) in requests().iter().take(4) {
        several.extend(encode_request(r, *flags));
    }
    seeds.push(("req-datagram-of-four".into(), several));
    if std::env::var_os("ISOPATH_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        let stored = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("seed {name}: {e}; ISOPATH_BLESS=1 writes it"));
        assert_eq!(
            &stored, bytes,
            "seed {name} is stale; ISOPATH_BLESS=1 rewrites it"
        );
    }
}
