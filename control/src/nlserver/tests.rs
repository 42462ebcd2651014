//! The server on a real socket in a temporary directory, driven turn by turn as the control
//! loop drives it, with the blocking client on the other side.

use std::time::{Duration, Instant};

use isopath_proto::{
    attr::Ctx,
    msg::{
        CaptureDir, CaptureMsg, ConnQuery, ConnSet, Group, LinkDel, LinkQuery, Message, Request,
        StatusQuery, kind,
    },
    nl::{ISO_F_STRICT, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, messages},
};

use super::{client::NlClient, *};

struct Fixture {
    dir: PathBuf,
    server: NlServer,
}

impl Fixture {
    fn new(tag: &str, max_clients: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("isopath-nl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = NlServer::bind(NlConfig {
            path: dir.join("nl.sock"),
            mode: 0o660,
            group: None,
            admin_group: Some(("isopath-admin".into(), 4242)),
            max_clients,
        })
        .unwrap();
        Self { dir, server }
    }

    fn client(&self) -> NlClient {
        NlClient::connect(self.server.path())
            .unwrap()
            .with_timeout(Duration::from_millis(500))
    }

    /// Turns until the server hands out a job, answering none (up to 200 turns).
    fn job(&mut self) -> Job {
        for _ in 0..200 {
            if let Some(j) = self.server.poll().into_iter().next() {
                return j;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no job");
    }

    /// Runs `f` on a client thread while the server turns, answering jobs with `answer`.
    fn serve<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(NlClient) -> T + Send + 'static,
        mut answer: impl FnMut(&Job) -> Answer,
    ) -> T {
        let c = self.client();
        let t = std::thread::spawn(move || f(c));
        while !t.is_finished() {
            for j in self.server.poll() {
                let a = answer(&j);
                self.server.answer(j.conn, &j.header, a);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        t.join().unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn capture(i: u64) -> CaptureMsg {
    CaptureMsg {
        target: format!("port{i}"),
        file: format!("/tmp/capture-{i:04}.pcap"),
        direction: CaptureDir::Both,
        captured: i,
        dropped: 0,
        written: i,
        write_errors: 0,
        snaplen: 256,
    }
}

struct Many(Vec<CaptureMsg>, usize, Arc<std::sync::atomic::AtomicU64>);

impl Dump for Many {
    fn dump(&mut self, part: &mut Part<'_>) -> Step {
        while let Some(c) = self.0.get(self.1) {
            if part.push(kind::NEWCAPTURE, c).is_err() {
                return Step::More;
            }
            self.1 += 1;
        }
        Step::Finished(0)
    }
    fn generation(&self) -> Option<u64> {
        Some(self.2.load(std::sync::atomic::Ordering::Relaxed))
    }
}

use std::sync::Arc;

#[test]
fn requests_become_jobs_and_answers_come_back_in_order() {
    let mut f = Fixture::new("jobs", 8);
    let got = f.serve(
        |mut c| {
            let status = c.request(&Request::GetStatus(StatusQuery {}), false);
            let del = c.request(
                &Request::DelLink(LinkDel {
                    names: vec!["nosuch0".into()],
                }),
                false,
            );
            (
                status.map(|m| m.len()),
                del.map_err(|e| (e.errno(), e.to_string())),
            )
        },
        |j| match &j.request {
            Request::GetStatus(_) => Answer::Records(vec![Message::NewCapture(capture(1))]),
            Request::DelLink(d) => {
                Answer::Error(libc::ENODEV, format!("no port named {:?}", d.names[0]))
            }
            r => panic!("{r:?}"),
        },
    );
    assert_eq!(got.0.unwrap(), 1);
    let (errno, text) = got.1.unwrap_err();
    assert_eq!(errno, Some(libc::ENODEV));
    assert_eq!(text, "No such device: no port named \"nosuch0\"");
    assert_eq!(f.server.counters.errors, 1);
    assert_eq!(f.server.counters.accepted, 1);
}

#[test]
fn malformed_messages_get_their_error_and_the_connection_stays_usable() {
    let mut f = Fixture::new("bad", 8);
    let mut c = f.client();
    let good = NlClient::encode(&Request::GetConn(ConnQuery {}), NLM_F_ACK, 9);
    // Each datagram: (bytes, errno expected).
    let mut past_end = good.clone();
    past_end[0..4].copy_from_slice(&200u32.to_ne_bytes());
    let mut unknown = good.clone();
    unknown[4..6].copy_from_slice(&0x7777u16.to_ne_bytes());
    let mut version = good.clone();
    version[16] = 99;
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("short header", vec![1, 2, 3, 4, 5], libc::EINVAL),
        ("length past the datagram", past_end, libc::EINVAL),
        ("unknown type", unknown, libc::EOPNOTSUPP),
        ("wrong version", version, libc::EPROTONOSUPPORT),
    ];
    for (what, bytes, errno) in cases {
        c.send_raw(&bytes).unwrap();
        f.server.poll();
        let got = c.recv().unwrap();
        match &got[..] {
            [(_, Message::Error(e))] => {
                assert_eq!(e.errno(), errno, "{what}: {e:?}");
                assert!(e.ext.msg.is_some(), "{what}: no ext-ack text");
            }
            other => panic!("{what}: {other:?}"),
        }
        // Still usable: the connection answers a good request.
        c.send_raw(&good).unwrap();
        f.server.poll();
        let got = c.recv().unwrap();
        assert!(
            matches!(&got[..], [(9, Message::NewConn(_)), (9, Message::Error(a))] if a.is_ack()),
            "{what}: {got:?}"
        );
    }
    assert_eq!(f.server.counters.malformed, 4);
    assert_eq!(f.server.clients(), 1);
}

#[test]
fn strict_checking_refuses_an_attribute_lax_checking_ignores() {
    let mut f = Fixture::new("strict", 8);
    let mut c = f.client();
    // GETSTATUS with an attribute it does not know (type 77, four bytes).
    let mut msg = NlClient::encode(&Request::GetStatus(StatusQuery {}), NLM_F_ACK, 3);
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&77u16.to_ne_bytes());
    msg.extend_from_slice(&[1, 2, 3, 4]);
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    let mut strict = msg.clone();
    let flags = u16::from_ne_bytes([strict[6], strict[7]]) | ISO_F_STRICT;
    strict[6..8].copy_from_slice(&flags.to_ne_bytes());

    c.send_raw(&msg).unwrap();
    let j = f.job();
    assert!(matches!(j.request, Request::GetStatus(_)));
    f.server.answer(j.conn, &j.header, Answer::Done);
    assert!(matches!(&c.recv().unwrap()[..], [(3, Message::Error(a))] if a.is_ack()));

    c.send_raw(&strict).unwrap();
    assert!(f.server.poll().is_empty());
    match &c.recv().unwrap()[..] {
        [(3, Message::Error(e))] => {
            assert_eq!(e.errno(), libc::EINVAL);
            // The offending attribute starts right after the header and the family header.
            assert_eq!(e.ext.offset, Some(20), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    // The same with strict checking as the connection's option.
    c.send_raw(&NlClient::encode(
        &Request::SetConn(ConnSet {
            strict: Some(true),
            dump_buf: None,
            join: None,
            leave: None,
        }),
        NLM_F_ACK,
        4,
    ))
    .unwrap();
    f.server.poll();
    assert!(matches!(&c.recv().unwrap()[..], [(4, Message::Error(a))] if a.is_ack()));
    c.send_raw(&msg).unwrap();
    assert!(f.server.poll().is_empty());
    assert!(
        matches!(&c.recv().unwrap()[..], [(3, Message::Error(e))] if e.errno() == libc::EINVAL)
    );
}

#[test]
fn a_dump_goes_out_part_by_part_as_the_reader_drains_and_ends_with_done() {
    let mut f = Fixture::new("dump", 8);
    let gen_ = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let records: Vec<CaptureMsg> = (0..2000).map(capture).collect();
    let mut c = f.client();
    // Small parts: many datagrams.
    c.send_raw(&NlClient::encode(
        &Request::SetConn(ConnSet {
            strict: None,
            dump_buf: Some(1024),
            join: None,
            leave: None,
        }),
        NLM_F_ACK,
        1,
    ))
    .unwrap();
    f.server.poll();
    c.recv().unwrap();
    c.send_raw(&NlClient::encode(
        &Request::GetCapture(isopath_proto::msg::CaptureRef { target: None }),
        NLM_F_DUMP,
        2,
    ))
    .unwrap();
    let j = f.job();
    assert!(j.dump);
    let t = Instant::now();
    f.server.answer(
        j.conn,
        &j.header,
        Answer::Dump(Box::new(Many(records.clone(), 0, gen_.clone()))),
    );
    // The reader has not read: the server sent what the socket takes and returned at once.
    assert!(t.elapsed() < Duration::from_millis(50));
    let (mut got, mut parts, mut done) = (Vec::new(), 0, None);
    while done.is_none() {
        f.server.poll();
        let d = c.recv().unwrap();
        parts += 1;
        for (seq, m) in d {
            assert_eq!(seq, 2);
            match m {
                Message::NewCapture(m) => got.push(m),
                Message::Done(d) => done = Some(d),
                m => panic!("{m:?}"),
            }
        }
        if parts == 3 {
            // A change mid-dump: the rest is marked interrupted.
            gen_.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    assert_eq!(got, records);
    assert!(parts > 100, "{parts} parts of at most 1024 bytes");
    let done = done.unwrap();
    assert_eq!(done.status, 0);
    assert!(done.intr);
    assert_eq!(f.server.counters.dumps, 1);
}

#[test]
fn a_client_that_never_reads_holds_no_one_else() {
    let mut f = Fixture::new("silent", 8);
    let mut silent = f.client();
    silent
        .send_raw(&NlClient::encode(
            &Request::GetCapture(isopath_proto::msg::CaptureRef { target: None }),
            NLM_F_DUMP,
            1,
        ))
        .unwrap();
    let j = f.job();
    let records: Vec<CaptureMsg> = (0..20_000).map(capture).collect();
    let g = Arc::new(std::sync::atomic::AtomicU64::new(0));
    f.server.answer(
        j.conn,
        &j.header,
        Answer::Dump(Box::new(Many(records, 0, g))),
    );
    // The silent client reads nothing; another is served meanwhile, each turn quick.
    let got = f.serve(
        |mut c| {
            c.request(&Request::GetConn(ConnQuery {}), false)
                .map(|m| m.len())
        },
        |_| Answer::Done,
    );
    assert_eq!(got.unwrap(), 1);
    let t = Instant::now();
    for _ in 0..100 {
        f.server.poll();
    }
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    // The other client has gone; the silent one is still connected, its dump paused.
    assert_eq!(f.server.clients(), 1);
    assert_eq!(f.server.counters.io_errors, 0);
    drop(silent);
}

#[test]
fn clients_past_max_clients_get_eusers_and_are_closed() {
    let mut f = Fixture::new("max", 2);
    let _a = f.client();
    let _b = f.client();
    f.server.poll();
    let mut c = f.client();
    f.server.poll();
    match &c.recv().unwrap()[..] {
        [(_, Message::Error(e))] => {
            assert_eq!(e.errno(), libc::EUSERS);
            let m = e.ext.msg.as_deref().unwrap();
            assert!(m.contains("max_clients = 2"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.recv(), Err(client::NlError::Closed)));
    assert_eq!(f.server.clients(), 2);
    assert_eq!(f.server.counters.refused_max_clients, 1);
}

#[test]
fn changes_and_flow_reads_need_root_or_the_admin_group() {
    let outsider = Creds {
        uid: 1000,
        gid: 1000,
        pid: 1,
        groups: vec![1000, 27],
    };
    let insider = Creds {
        groups: vec![1000, 4242],
        ..outsider.clone()
    };
    let root = Creds {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
    };
    let admin = Some(("isopath-admin".to_owned(), 4242));
    let change = Request::DelLink(LinkDel {
        names: vec!["m0".into()],
    });
    let get = Request::GetLink(LinkQuery {
        ifindex: None,
        name: None,
        kind: None,
        ext_mask: None,
    });
    let join_flows = Request::SetConn(ConnSet {
        strict: None,
        dump_buf: None,
        join: Some(Group::Flows.mask() | Group::Links.mask()),
        leave: None,
    });
    let join_links = Request::SetConn(ConnSet {
        join: Some(Group::Links.mask()),
        ..ConnSet {
            strict: None,
            dump_buf: None,
            join: None,
            leave: None,
        }
    });
    let a = |c: &Creds| is_admin(c, Some(4242));
    assert!(!a(&outsider) && a(&insider) && a(&root));
    assert!(is_admin(
        &Creds {
            gid: 4242,
            ..outsider.clone()
        },
        Some(4242)
    ));
    assert!(!is_admin(&insider, None));
    let why = refusal(&change, a(&outsider), &outsider, admin.as_ref()).unwrap();
    assert_eq!(
        why,
        "a change needs root or membership of group isopath-admin (gid 4242); the peer (uid 1000, gid 1000, groups [1000, 27]) has neither"
    );
    assert!(refusal(&join_flows, false, &outsider, admin.as_ref()).is_some());
    for r in [&get, &join_links] {
        assert_eq!(refusal(r, false, &outsider, admin.as_ref()), None, "{r:?}");
    }
    for r in [&change, &join_flows] {
        assert_eq!(refusal(r, true, &insider, admin.as_ref()), None, "{r:?}");
    }
}

#[test]
fn a_message_that_asks_nothing_is_acked_only_if_asked() {
    let mut f = Fixture::new("noop", 8);
    let mut c = f.client();
    // NLMSG_NOOP with and without NLM_F_ACK, then a request: only two answers come.
    let mut noop = vec![0u8; 16];
    noop[0..4].copy_from_slice(&16u32.to_ne_bytes());
    noop[4..6].copy_from_slice(&1u16.to_ne_bytes());
    let mut noop_ack = noop.clone();
    noop_ack[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    noop_ack[8..12].copy_from_slice(&5u32.to_ne_bytes());
    let mut dgram = noop.clone();
    dgram.extend_from_slice(&noop_ack);
    dgram.extend_from_slice(&NlClient::encode(&Request::GetConn(ConnQuery {}), 0, 6));
    c.send_raw(&dgram).unwrap();
    f.server.poll();
    let got = c.recv().unwrap();
    assert!(
        matches!(&got[..], [(5, Message::Error(a)), (6, Message::NewConn(m))] if a.is_ack() && m.admin),
        "{got:?}"
    );
    // The datagram as the client sees it splits cleanly.
    assert_eq!(messages(&dgram).count(), 3);
    let _ = Ctx { strict: false };
}

fn join(c: &mut NlClient, f: &mut Fixture, groups: u32) {
    c.send_raw(&NlClient::encode(
        &Request::SetConn(ConnSet {
            strict: None,
            dump_buf: None,
            join: Some(groups),
            leave: None,
        }),
        NLM_F_ACK,
        1,
    ))
    .unwrap();
    f.server.poll();
    assert!(matches!(&c.recv().unwrap()[..], [(1, Message::Error(a))] if a.is_ack()));
}

#[test]
fn events_reach_subscribers_in_order_and_one_that_does_not_read_is_told_what_it_lost() {
    let mut f = Fixture::new("events", 8);
    let mut reader = f.client();
    let mut sleeper = f.client();
    let mut other = f.client();
    join(&mut reader, &mut f, Group::Links.mask());
    join(&mut sleeper, &mut f, Group::Links.mask());
    join(&mut other, &mut f, Group::Bonds.mask());
    // Far more events than the socket and the server's queue hold for the sleeper (root:
    // 128 datagrams of packed events).
    let total = 40_000u64;
    let mut got = Vec::new();
    for i in 0..total {
        f.server
            .broadcast(Group::Links, &Message::NewCapture(capture(i)));
        // The reader keeps up.
        loop {
            let d = reader.recv_nowait().unwrap();
            if d.is_empty() {
                break;
            }
            got.extend(d);
        }
        f.server.poll();
    }
    while got.len() < total as usize {
        got.extend(reader.recv().unwrap());
    }
    let seen: Vec<u64> = got
        .iter()
        .map(|(seq, m)| match m {
            Message::NewCapture(c) => {
                assert_eq!(*seq, 0, "events carry sequence 0");
                c.captured
            }
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        (0..total).collect::<Vec<_>>(),
        "the reader misses nothing, in order"
    );
    // The bonds subscriber got none of the links group's events.
    assert!(other.recv_nowait().unwrap().is_empty());
    // The sleeper lost some, counted; when it drains, the notice comes before newer events.
    let lost = f.server.counters.events_lost;
    assert!(lost > 0 && lost < total, "lost {lost}");
    let mut first = Vec::new();
    loop {
        let d = sleeper.recv_nowait().unwrap();
        if d.is_empty() {
            break;
        }
        first.extend(d);
        f.server.poll();
    }
    let delivered = first.len() as u64;
    assert_eq!(delivered + lost, total);
    f.server
        .broadcast(Group::Links, &Message::NewCapture(capture(total)));
    let after = sleeper.recv().unwrap();
    match &after[..] {
        [(0, Message::Error(e))] => {
            assert_eq!(e.errno(), libc::ENOBUFS);
            let m = e.ext.msg.as_deref().unwrap();
            assert_eq!(
                m,
                format!("{lost} events lost: the subscriber did not keep up")
            );
        }
        other => panic!("{other:?}"),
    }
    let next = sleeper.recv().unwrap();
    assert!(matches!(&next[..], [(0, Message::NewCapture(c))] if c.captured == total));
    // The connection reports what it lost.
    sleeper
        .send_raw(&NlClient::encode(&Request::GetConn(ConnQuery {}), 0, 7))
        .unwrap();
    f.server.poll();
    assert!(
        matches!(&sleeper.recv().unwrap()[..], [(7, Message::NewConn(m))] if m.events_lost == lost)
    );
}

#[test]
fn a_burst_of_events_is_packed_so_a_subscriber_that_reads_after_it_loses_none() {
    let mut f = Fixture::new("burst", 8);
    let mut reader = f.client();
    join(&mut reader, &mut f, Group::Links.mask());
    // 2000 events in one turn: the peer's queue takes 10 datagrams, the server's 32 more;
    // packed, they hold them all.
    let total = 2000u64;
    for i in 0..total {
        f.server
            .broadcast(Group::Links, &Message::NewCapture(capture(i)));
    }
    let mut got = Vec::new();
    while got.len() < total as usize {
        f.server.poll();
        got.extend(reader.recv().unwrap());
    }
    assert_eq!(f.server.counters.events_lost, 0);
    let seen: Vec<u64> = got
        .iter()
        .map(|(_, m)| match m {
            Message::NewCapture(c) => c.captured,
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
}
