//! The netlink-format control socket of a running daemon on the lab: link dumps through the
//! CLI, malformed messages, permissions for a peer outside and inside the admin group (the
//! CLI run as nobody with `setpriv`), and many clients sending random bytes.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use isopath_control::{
    nlserver::client::NlClient,
    proto::{
        msg::{
            ConnSet, EndReason, FlowFilter, FlowMsg, FlowQuery, FlowTuple, Group, LinkQuery,
            Message, Request,
        },
        nl::NLM_F_DUMP,
    },
};
use isopath_tests::{
    ChildGuard, Lab, bin,
    isopathd::{Isopathd, PORTS, assert_clean_stop, bond_config, lab_config, socket_path},
    require_privileges,
};
use serde_json::Value;

/// A group created for one test and deleted on drop (also when the test fails).
struct TestGroup {
    name: String,
    gid: u32,
}

impl TestGroup {
    fn new(tag: &str) -> Self {
        let name = format!("isopath-t{tag}{}", std::process::id() % 100_000);
        let _ = std::process::Command::new("groupdel").arg(&name).output();
        let out = std::process::Command::new("groupadd")
            .args(["--system", &name])
            .output()
            .expect("groupadd");
        assert!(out.status.success(), "groupadd: {out:?}");
        let text = std::fs::read_to_string("/etc/group").unwrap();
        let gid = text
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == name).then(|| f[2].parse().unwrap())
            })
            .expect("the new group in /etc/group");
        Self { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("groupdel")
            .arg(&self.name)
            .output();
    }
}

/// The CLI where nobody can run it (the build's path may be under a 0700 directory).
fn cli_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("isopath-nl-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.join("isopath");
    std::fs::copy(bin("isopath"), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// `isopath -s SOCKET ARGS` run as nobody with these supplementary groups (none: cleared).
fn cli_as_nobody(cli: &Path, socket: &Path, groups: Option<u32>, args: &[&str]) -> Output {
    let groups = match groups {
        Some(g) => format!("--groups={g}"),
        None => "--clear-groups".to_owned(),
    };
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &groups])
        .arg(cli)
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn links(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(o)))
        .as_array()
        .unwrap()
        .clone()
}

fn names(links: &[Value]) -> Vec<String> {
    links
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

/// A daemon with up0 ↔ m0 cross-connected and m1 a free port, its netlink socket open to
/// everyone (mode 0666) and changes allowed to root and the members of `admin`.
fn start(lab: &Lab, admin: &TestGroup, extra: &str) -> Isopathd {
    start_with(lab, admin, extra, "")
}

/// [`start`] with more configuration after the ports (`[flows]`...).
fn start_with(lab: &Lab, admin: &TestGroup, extra: &str, tail: &str) -> Isopathd {
    let ports = format!("{PORTS}[[port]]\nname = \"m1\"\n{tail}");
    let config = lab_config(lab, "", &ports).replacen(
        "[daemon]\n",
        &format!(
            "[daemon]\nsocket_mode = 0o666\nadmin_group = \"{}\"\n{extra}",
            admin.name
        ),
        1,
    );
    Isopathd::start(lab, &config, &[])
}

#[test]
fn links_are_dumped_and_changed_over_the_netlink_socket_by_those_allowed() {
    if !require_privileges() {
        return;
    }
    let admin = TestGroup::new("a");
    let lab = Lab::up("nlk");
    let d = start(&lab, &admin, "");
    let sock = socket_path(&lab);
    let cli = cli_copy();

    // Root: the dump lists the three ports, with the kernel's indexes and the daemon's state.
    let all = links(&d.cli_output(&["link", "show", "-j", "-s"]));
    assert_eq!(names(&all), ["up0", "m0", "m1"], "{all:?}");
    for l in &all {
        assert_eq!(l["kind"], "port", "{l}");
        assert!(l["ifindex"].as_u64().unwrap() > 0, "{l}");
        assert!(l["queues"].as_u64().unwrap() >= 1, "{l}");
        assert!(l["stats"]["rx_packets"].is_u64(), "{l}");
        let flags: Vec<&str> = l["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(flags.contains(&"UP") && flags.contains(&"LOWER_UP"), "{l}");
    }
    let one = d.cli(&["link", "show", "m0"]);
    assert!(
        one.starts_with(&format!(
            "{}: m0: <UP,RUNNING,LOWER_UP> kind port",
            all[1]["ifindex"]
        )),
        "{one}"
    );
    let missing = d.cli_output(&["link", "show", "nosuch0"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("No such device: no link named"),
        "{}",
        text(&missing)
    );

    // An outsider (nobody, no supplementary group) reads links but may not change them.
    let seen = links(&cli_as_nobody(&cli, &sock, None, &["link", "show", "-j"]));
    assert_eq!(names(&seen), ["up0", "m0", "m1"]);
    let refused = cli_as_nobody(&cli, &sock, None, &["link", "del", "m1"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("Operation not permitted: a change needs root or membership of group")
            && err.contains(&admin.name)
            && err.contains("uid 65534"),
        "{}",
        text(&refused)
    );
    assert_eq!(d.status()["ports"].as_array().unwrap().len(), 3);

    // A member of the admin group through a supplementary group may.
    let done = cli_as_nobody(&cli, &sock, Some(admin.gid), &["link", "del", "m1"]);
    assert!(done.status.success(), "{}", text(&done));
    let after = links(&d.cli_output(&["link", "show", "-j"]));
    assert_eq!(names(&after), ["up0", "m0"]);
    // A refusal of the daemon itself comes back with its errno: m0 is cross-connected.
    let busy = cli_as_nobody(&cli, &sock, Some(admin.gid), &["link", "del", "m0"]);
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("Device or resource busy"),
        "{}",
        text(&busy)
    );
    // And it comes back, over the same protocol (the reply waits for the workers).
    let added = d.cli_output(&["link", "add", "m1"]);
    assert!(added.status.success(), "{}", text(&added));
    assert_eq!(
        names(&links(&d.cli_output(&["link", "show", "-j"]))),
        ["up0", "m0", "m1"]
    );

    // Malformed messages get their error; the same connection then dumps.
    let mut c = NlClient::connect(&PathBuf::from(format!("{}.nl", sock.display()))).unwrap();
    c.send_raw(&[0xff; 7]).unwrap();
    match &c.recv().unwrap()[..] {
        [(_, Message::Error(e))] => assert_eq!(e.errno(), libc::EINVAL, "{e:?}"),
        other => panic!("{other:?}"),
    }
    let q = LinkQuery {
        ifindex: None,
        name: None,
        kind: None,
        ext_mask: None,
    };
    let dumped = c.request_flags(&Request::GetLink(q), NLM_F_DUMP).unwrap();
    assert_eq!(dumped.len(), 3, "{dumped:?}");
    drop(c);
    assert_clean_stop(&d.stop());
    let _ = std::fs::remove_dir_all(cli.parent().unwrap());
}

#[test]
fn many_clients_sending_random_bytes_neither_kill_nor_slow_the_daemon() {
    if !require_privileges() {
        return;
    }
    let admin = TestGroup::new("r");
    let lab = Lab::up("nlr");
    let d = start(&lab, &admin, "max_clients = 1100\n");
    let nl = PathBuf::from(format!("{}.nl", socket_path(&lab).display()));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    // 1,000 connections at once, each sending a random datagram, all held open.
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut c = NlClient::connect(&nl).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let n = 1 + (i * 37) % 300;
        c.send_raw(&random(n)).unwrap();
        held.push(c);
    }
    // Meanwhile a link dump is answered within 50 ms.
    let t = Instant::now();
    let mut probe = NlClient::connect(&nl).unwrap();
    let q = || LinkQuery {
        ifindex: None,
        name: None,
        kind: None,
        ext_mask: None,
    };
    let dumped = probe.request(&Request::GetLink(q()), true).unwrap();
    let took = t.elapsed();
    assert_eq!(dumped.len(), 3);
    assert!(
        took < Duration::from_millis(50),
        "link dump took {took:?} among 1000 clients"
    );
    // Every held client got an answer to its bytes (an error: nothing random is a request).
    let mut answered = 0;
    for c in &mut held {
        if let Ok(msgs) = c.recv() {
            answered += usize::from(
                msgs.iter()
                    .any(|(_, m)| matches!(m, Message::Error(e) if e.errno() != 0)),
            );
        }
    }
    assert_eq!(answered, 1000);
    drop(held);
    // 2,000 sequential connections, each sending random bytes and going.
    for _ in 0..2000 {
        let mut c = NlClient::connect(&nl).unwrap();
        c.send_raw(&random(64)).unwrap();
    }
    let t = Instant::now();
    let dumped = probe.request(&Request::GetLink(q()), true).unwrap();
    assert_eq!(dumped.len(), 3);
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    assert_eq!(d.status()["state"], "running");
    assert_clean_stop(&d.stop());
}

/// `isopath monitor` while the active member's far end loses carrier: the member's link
/// event, then the bond's member-down and active-changed events, in order, each with its time.
#[test]
fn the_monitor_shows_a_failover_as_it_happens_in_order() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("nlm");
    let d = Isopathd::start(&lab, &bond_config(&lab, "", ""), &[]);
    d.wait_for("m0 active", Duration::from_secs(5), |s| {
        s["bonds"][0]["active"] == "m0"
    });
    let sock = socket_path(&lab);
    let mon = ChildGuard::new(
        std::process::Command::new(bin("isopath"))
            .arg("-s")
            .arg(&sock)
            .args(["monitor", "all", "-t", "--count", "4"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .with_label("monitor");
    // The monitor has joined once its connection shows in the status.
    let mut c = NlClient::connect(&PathBuf::from(format!("{}.nl", sock.display()))).unwrap();
    let joined = Instant::now();
    loop {
        let st = c
            .request(
                &Request::GetStatus(isopath_control::proto::msg::StatusQuery {}),
                false,
            )
            .unwrap();
        if matches!(&st[..], [Message::NewStatus(s)] if s.clients >= 2) {
            break;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(5),
            "the monitor did not connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The bond dump: bond0 over m0 (active) and m1, as `bond show` reports it.
    let bonds = c
        .request_flags(
            &Request::GetBond(isopath_control::proto::msg::BondQuery {
                name: None,
                event_limit: Some(0),
            }),
            NLM_F_DUMP,
        )
        .unwrap();
    let b = match &bonds[..] {
        [Message::NewBond(b)] => b.clone(),
        other => panic!("{other:?}"),
    };
    let status = d.bond();
    assert_eq!(b.name, "bond0");
    assert_eq!(b.active.as_deref(), Some("m0"));
    assert!(b.carrier && b.events.is_empty());
    assert_eq!(
        b.members
            .iter()
            .map(|m| (m.name.as_str(), m.state.name()))
            .collect::<Vec<_>>(),
        [("m0", "active"), ("m1", "backup")]
    );
    assert_eq!(
        b.address.map(|m| m.to_string()),
        status["mac"].as_str().map(str::to_owned)
    );
    assert_eq!(
        b.options.as_ref().and_then(|o| o.miimon_ms).map(u64::from),
        status["options"]["miimon_ms"].as_u64()
    );
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    let st = lab.exec(lab.ns_far(), ["ip", "link", "set", "s0", "down"]);
    assert!(st.status.success());
    let out = mon.wait_output(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for l in &lines {
        assert!(l.starts_with('['), "timestamped: {l}");
    }
    let body: Vec<String> = lines
        .iter()
        .map(|l| {
            l.split_once("] ")
                .map(|x| x.1.to_owned())
                .unwrap_or_default()
        })
        .collect();
    let pos = |p: &str| body.iter().position(|l| l.starts_with(p));
    let down = pos("bond bond0 member_link member m0: up -> down");
    let active = pos("bond bond0 active_changed");
    let m0 = pos(&format!("link {}: m0: <UP> kind port state DOWN", {
        let l = links(&d.cli_output(&["link", "show", "m0", "-j"]));
        l[0]["ifindex"].as_u64().unwrap()
    }));
    let bond0 = body.iter().position(|l| {
        l.starts_with("link ") && l.ends_with(": bond0: <UP,RUNNING,LOWER_UP> kind bond state UP")
    });
    assert!(
        matches!((down, active, m0, bond0), (Some(a), Some(b), Some(_), Some(_)) if a < b),
        "member-down before active-changed, m0's link down, bond0's new active: {text}"
    );
    // Times never go backwards.
    let ts: Vec<f64> = lines
        .iter()
        .map(|l| l[1..l.find(']').unwrap()].parse().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert_clean_stop(&d.stop());
}

/// Frames on each of `flows` 5-tuples from the traffic namespace (`isopath-bench gen`:
/// 198.18.0.1:`sport + f % 4096` → 198.18.0.2:`9 + f / 4096`) at 20 kpps: three rounds, and
/// at least 0.2 s (a generator started on a loaded machine may send nothing in a few ms).
fn udp_flows(lab: &Lab, flows: u32, sport: u16) {
    let secs = format!("{:.3}", (f64::from(flows) * 3.0 / 20_000.0).max(0.2));
    let g = lab.exec(
        lab.ns_traffic(),
        [
            bin("isopath-bench").to_str().unwrap(),
            "gen",
            "--iface",
            "t0",
            "--core",
            "0",
            "--rate",
            "20k",
            "--secs",
            &secs,
            "--flows",
            &flows.to_string(),
            "--sport",
            &sport.to_string(),
        ],
    );
    assert!(g.status.success(), "{}", text(&g));
}

/// The flow records of a whole dump through `c`, each checked against the others.
fn flow_dump(c: &mut NlClient, filter: Option<FlowFilter>) -> Vec<FlowMsg> {
    let mut got = Vec::new();
    let q = FlowQuery {
        filter,
        limit: None,
        tuple: None,
    };
    let intr = c
        .request_each(&Request::GetFlow(q), NLM_F_DUMP, |m| {
            if let Message::NewFlow(f) = m {
                got.push(f);
            }
        })
        .unwrap();
    assert!(
        !intr,
        "flow dumps are loosely consistent, never interrupted"
    );
    got
}

/// What a filter selects, written out against the records.
type Reference = Box<dyn Fn(&FlowMsg) -> bool>;

/// The generator's flows (198.18.0.1 → 198.18.0.2, UDP) in a dump.
fn generated(flows: &[FlowMsg]) -> Vec<&FlowMsg> {
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) =
        ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
    flows
        .iter()
        .filter(|f| f.proto == 17 && f.src == src && f.dst == dst)
        .collect()
}

fn status_of(c: &mut NlClient) -> isopath_control::proto::msg::StatusMsg {
    match c
        .request(
            &Request::GetStatus(isopath_control::proto::msg::StatusQuery {}),
            false,
        )
        .unwrap()
        .pop()
    {
        Some(Message::NewStatus(s)) => s,
        other => panic!("{other:?}"),
    }
}

/// Flow state over the netlink-format socket, with real flows through the datapath: a dump
/// in many 1 KiB parts with every flow once, server-side filters against the whole dump
/// filtered here, two dumps at once, a client leaving mid-dump (its cursor freed), one that
/// never reads (nobody else waits, the daemon does not grow), flow events with an overrun
/// notice, `flow del` of one 5-tuple, `flow flush`, and a peer outside the admin group
/// refused.
#[test]
fn flows_are_dumped_filtered_watched_and_removed_over_the_netlink_socket() {
    if !require_privileges() {
        return;
    }
    let admin = TestGroup::new("f");
    let lab = Lab::up("nlf");
    let d = start_with(
        &lab,
        &admin,
        "",
        "[flows]\ncapacity = 65536\nevent_ring = 65536\n",
    );
    let nl = PathBuf::from(format!("{}.nl", socket_path(&lab).display()));
    let flows_subscriber = || {
        let mut c = NlClient::connect(&nl).unwrap();
        let join = ConnSet {
            strict: None,
            dump_buf: None,
            join: Some(Group::Flows.mask()),
            leave: None,
        };
        c.request(&Request::SetConn(join), false).unwrap();
        c
    };
    let mut watcher = flows_subscriber();
    let mut sleeper = flows_subscriber();

    const N: u32 = 6000;
    // The watcher reads while the flows are made: each new flow once, as it came, in time
    // order.
    let reader = std::thread::spawn(move || {
        let mut news = std::collections::HashSet::new();
        let mut last_ns = 0;
        let t = Instant::now();
        while news.len() < N as usize && t.elapsed() < Duration::from_secs(10) {
            let Ok(msgs) = watcher.recv() else { continue };
            for (seq, m) in msgs {
                assert_eq!(seq, 0, "events carry sequence 0");
                if let Message::Error(e) = &m {
                    panic!("the watcher reads and loses nothing: {e:?}");
                }
                if let Message::NewFlow(f) = m
                    && f.proto == 17
                    && f.event_ns == f.first_ns
                {
                    assert!(news.insert(f.id), "one NEW per flow: {f:?}");
                    let ns = f.event_ns.unwrap();
                    assert!(
                        ns >= last_ns,
                        "in the order they came: {ns} after {last_ns}"
                    );
                    last_ns = last_ns.max(ns);
                }
            }
        }
        (watcher, news)
    });
    udp_flows(&lab, N, 10_000);
    let (mut watcher, news) = reader.join().expect("the watcher");
    let mut c = NlClient::connect(&nl)
        .unwrap()
        .with_timeout(Duration::from_secs(10));

    // The whole table in 1 KiB parts: every generated 5-tuple once.
    c.request(
        &Request::SetConn(ConnSet {
            strict: None,
            dump_buf: Some(1024),
            join: None,
            leave: None,
        }),
        false,
    )
    .unwrap();
    let all = flow_dump(&mut c, None);
    let mine = generated(&all);
    let tuples: std::collections::HashSet<(u16, u16)> = mine
        .iter()
        .map(|f| (f.sport.unwrap(), f.dport.unwrap()))
        .collect();
    assert_eq!(tuples.len(), mine.len(), "no flow twice");
    let ids: std::collections::HashSet<u64> = all.iter().map(|f| f.id).collect();
    assert_eq!(ids.len(), all.len(), "no id twice");
    for &(s, dp) in &tuples {
        let f = u32::from(s - 10_000) + 4096 * u32::from(dp - 9);
        assert!(
            f < N && u32::from(s - 10_000) == f % 4096,
            "a generated tuple: {s} {dp}"
        );
    }
    assert!(
        mine.len() as u32 >= N * 99 / 100,
        "{} of {N} flows",
        mine.len()
    );
    assert_eq!(
        news.len(),
        mine.len(),
        "as many NEW events as flows in the table"
    );
    let table = match c
        .request(
            &Request::GetFlowTable(isopath_control::proto::msg::FlowTableQuery { zone: None }),
            false,
        )
        .unwrap()
        .pop()
    {
        Some(Message::NewFlowTable(t)) => t,
        other => panic!("{other:?}"),
    };
    // Counters, not a dump: the same flows (give or take one the lab's hosts opened since).
    assert!(
        table.count.abs_diff(all.len() as u64) <= 2,
        "{table:?} vs {}",
        all.len()
    );
    assert_eq!(table.capacity, 65536);
    let up0 = match c
        .request(
            &Request::GetLink(LinkQuery {
                ifindex: None,
                name: Some("up0".into()),
                kind: None,
                ext_mask: None,
            }),
            false,
        )
        .unwrap()
        .pop()
    {
        Some(Message::NewLink(l)) => l.ifindex,
        other => panic!("{other:?}"),
    };
    assert!(
        mine.iter().all(|f| f.in_link == Some(up0)),
        "entered on up0"
    );

    // Filters in the server select what the whole dump filtered here does.
    let filters: Vec<(FlowFilter, Reference)> = vec![
        (
            FlowFilter {
                l4_port: Some(10),
                ..FlowFilter::any()
            },
            Box::new(|f: &FlowMsg| f.sport == Some(10) || f.dport == Some(10)),
        ),
        (
            FlowFilter {
                l4_port: Some(10_007),
                proto: Some(17),
                ..FlowFilter::any()
            },
            Box::new(|f: &FlowMsg| {
                f.proto == 17 && (f.sport == Some(10_007) || f.dport == Some(10_007))
            }),
        ),
        (
            FlowFilter {
                link: Some(up0),
                min_packets: Some(3),
                ..FlowFilter::any()
            },
            Box::new(move |f: &FlowMsg| {
                (f.in_link == Some(up0) || f.out_link == Some(up0))
                    && f.packets_orig + f.packets_reply >= 3
            }),
        ),
        (
            FlowFilter {
                addr: Some("198.18.0.2".parse().unwrap()),
                prefix_len: Some(31),
                ..FlowFilter::any()
            },
            Box::new(|f: &FlowMsg| {
                let hit = |a: std::net::IpAddr| matches!(a, std::net::IpAddr::V4(v) if u32::from(v) >> 1 == u32::from(std::net::Ipv4Addr::new(198, 18, 0, 2)) >> 1);
                hit(f.src) || hit(f.dst)
            }),
        ),
        (
            FlowFilter {
                proto: Some(6),
                ..FlowFilter::any()
            },
            Box::new(|f: &FlowMsg| f.proto == 6),
        ),
    ];
    for (filter, want) in &filters {
        // The generator's flows only: the lab's hosts may open a flow of their own meanwhile.
        let mut got: Vec<u64> = generated(&flow_dump(&mut c, Some(filter.clone())))
            .iter()
            .map(|f| f.id)
            .collect();
        let mut expect: Vec<u64> = mine.iter().filter(|f| want(f)).map(|f| f.id).collect();
        got.sort_unstable();
        expect.sort_unstable();
        assert_eq!(got, expect, "{filter:?}");
    }

    // Two dumps at once, read a datagram in turn: each gets the whole table.
    let mut a = NlClient::connect(&nl).unwrap();
    let mut b = NlClient::connect(&nl).unwrap();
    let dump = NlClient::encode(
        &Request::GetFlow(FlowQuery {
            filter: None,
            limit: None,
            tuple: None,
        }),
        NLM_F_DUMP,
        1,
    );
    a.send_raw(&dump).unwrap();
    b.send_raw(&dump).unwrap();
    let (mut na, mut nb, mut done) = (0usize, 0usize, [false; 2]);
    while !(done[0] && done[1]) {
        for (i, cl) in [&mut a, &mut b].into_iter().enumerate() {
            if done[i] {
                continue;
            }
            for (_, m) in cl.recv().unwrap() {
                match m {
                    Message::NewFlow(f) if generated(std::slice::from_ref(&f)).is_empty() => {}
                    Message::NewFlow(_) if i == 0 => na += 1,
                    Message::NewFlow(_) => nb += 1,
                    Message::Done(x) => {
                        assert_eq!(x.status, 0);
                        done[i] = true;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    assert_eq!((na, nb), (mine.len(), mine.len()));

    // A client gone after one part frees its cursor; one that never reads holds one, costs
    // the daemon at most a part, and delays nobody's link dump.
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss(d.pid());
    let mut gone = NlClient::connect(&nl).unwrap();
    gone.send_raw(&dump).unwrap();
    gone.recv().unwrap();
    drop(gone);
    let mut silent = NlClient::connect(&nl).unwrap();
    silent.send_raw(&dump).unwrap();
    let t = Instant::now();
    loop {
        let s = status_of(&mut c);
        if s.dumps_active == Some(1) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "cursors live: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let links = c
        .request(
            &Request::GetLink(LinkQuery {
                ifindex: None,
                name: None,
                kind: None,
                ext_mask: None,
            }),
            true,
        )
        .unwrap();
    assert_eq!(links.len(), 3);
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    let grew = rss(d.pid()).saturating_sub(before);
    assert!(
        grew < 4096,
        "the daemon grew {grew} KiB holding a silent dump"
    );
    drop(silent);
    let t = Instant::now();
    while status_of(&mut c).dumps_active != Some(0) {
        assert!(t.elapsed() < Duration::from_secs(2), "cursor not freed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A peer outside the admin group may not read flows; the admin group may.
    let cli = cli_copy();
    let socket = socket_path(&lab);
    let o = cli_as_nobody(&cli, &socket, None, &["flow", "show", "limit", "5"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{}",
        text(&o)
    );
    let o = cli_as_nobody(
        &cli,
        &socket,
        Some(admin.gid),
        &["flow", "show", "port", "10", "-j"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["flows"].as_array().unwrap().len(),
        all.iter()
            .filter(|f| f.sport == Some(10) || f.dport == Some(10))
            .count()
    );

    // `flow del` of one 5-tuple (named from the replier's side), then `flow flush`: destroy
    // events with their reason.
    // The watcher reads the destroy events meanwhile.
    let ids: std::collections::HashSet<u64> = mine.iter().map(|f| f.id).collect();
    let want = ids.clone();
    let destroyer = std::thread::spawn(move || {
        let mut flushed = std::collections::HashSet::new();
        let t = Instant::now();
        while flushed.len() < want.len() && t.elapsed() < Duration::from_secs(10) {
            let Ok(msgs) = watcher.recv() else { continue };
            for (_, m) in msgs {
                match m {
                    Message::Error(e) => panic!(
                        "the watcher reads and loses nothing: {e:?} after {} destroys in {:?}",
                        flushed.len(),
                        t.elapsed()
                    ),
                    Message::DelFlow(f) if want.contains(&f.id) => {
                        assert_eq!(f.end_reason, Some(EndReason::Flush), "{f:?}");
                        assert!(flushed.insert(f.id), "one destroy per flow: {f:?}");
                    }
                    _ => {}
                }
            }
        }
        flushed
    });
    let victim = mine[0];
    let (s, dp) = (
        victim.sport.unwrap().to_string(),
        victim.dport.unwrap().to_string(),
    );
    let out = d.cli(&[
        "flow",
        "del",
        "proto",
        "udp",
        "src",
        "198.18.0.2",
        "dst",
        "198.18.0.1",
        "sport",
        &dp,
        "dport",
        &s,
    ]);
    assert!(out.contains("1 flow entry has been deleted"), "{out}");
    let tuple = FlowTuple {
        zone: None,
        proto: 17,
        src: victim.src,
        dst: victim.dst,
        sport: victim.sport,
        dport: victim.dport,
    };
    let one = |c: &mut NlClient| {
        c.request(
            &Request::GetFlow(FlowQuery {
                filter: None,
                limit: None,
                tuple: Some(tuple.clone()),
            }),
            false,
        )
    };
    let t = Instant::now();
    while one(&mut c).is_ok() {
        assert!(t.elapsed() < Duration::from_secs(2), "the flow stays");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(one(&mut c).unwrap_err().errno(), Some(libc::ENOENT));
    let o = d.cli_output(&[
        "flow",
        "del",
        "proto",
        "udp",
        "src",
        "198.18.0.2",
        "dst",
        "198.18.0.1",
        "sport",
        &dp,
        "dport",
        &s,
    ]);
    assert!(
        !o.status.success(),
        "a second del finds nothing: {}",
        text(&o)
    );
    assert!(d.cli(&["flow", "flush"]).contains("flushed"));
    let t = Instant::now();
    while !generated(&flow_dump(&mut c, None)).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(3), "flush left flows");
        std::thread::sleep(Duration::from_millis(20));
    }
    let flushed = destroyer.join().expect("the watcher");
    assert_eq!(flushed, ids, "a destroy event for every flow, reason flush");
    // The sleeper, which read nothing, lost events and is told how many before the next.
    let lost = status_of(&mut c).events_lost;
    assert!(lost > 0, "a subscriber that never reads loses events");
    // Another burst of new flows: the sleeper has now been offered 18,000 events, past the
    // ~11,000 an admin peer's queue and socket hold.
    udp_flows(&lab, N, 20_000);
    // It drains what it was sent (the server refills the socket as it empties); each overrun
    // notice says how many were lost before it, and they add up to what the daemon counted
    // for the connection. A notice comes before the first event after a loss: new events
    // after the drain bring the last one.
    let mut notices: Vec<String> = Vec::new();
    let drain = |sleeper: &mut NlClient, notices: &mut Vec<String>| {
        let mut quiet = 0;
        while quiet < 20 {
            let d = sleeper.recv_nowait().unwrap();
            if d.is_empty() {
                quiet += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            for (_, m) in d {
                quiet = 0;
                if let Message::Error(e) = m {
                    assert_eq!(e.errno(), libc::ENOBUFS, "{e:?}");
                    notices.push(e.ext.msg.clone().unwrap_or_default());
                }
            }
        }
    };
    drain(&mut sleeper, &mut notices);
    udp_flows(&lab, 20, 30_000);
    drain(&mut sleeper, &mut notices);
    let told: u64 = notices
        .iter()
        .map(|n| {
            assert!(
                n.ends_with("events lost: the subscriber did not keep up"),
                "{n}"
            );
            n.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    let conn = match sleeper
        .request(
            &Request::GetConn(isopath_control::proto::msg::ConnQuery {}),
            false,
        )
        .unwrap()
        .pop()
    {
        Some(Message::NewConn(c)) => c,
        other => panic!("{other:?}"),
    };
    assert!(told > 0, "a subscriber that never read lost events");
    assert_eq!(told, conn.events_lost, "{notices:?}");
    assert_eq!(d.status()["state"], "running");
    assert_clean_stop(&d.stop());
}
