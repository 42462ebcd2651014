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
        msg::{LinkQuery, Message, Request},
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
    let ports = format!("{PORTS}[[port]]\nname = \"m1\"\n");
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
