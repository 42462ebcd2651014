//! The appliance service: install and uninstall into a temporary root, the systemd unit, the
//! daemon under exactly the unit's capabilities (no systemd as PID 1 here: `setpriv` plays its
//! part), readiness notification, SIGTERM under traffic, and crash recovery with a supervisor
//! loop playing `Restart=on-failure`.

use std::{
    collections::BTreeMap,
    os::unix::{fs::PermissionsExt, net::UnixDatagram, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use isopath_tests::{
    ChildGuard, Lab, bin,
    isopathd::{
        Isopathd, PORTS, START_TIMEOUT, assert_clean_stop, lab_config, request, socket_path, u,
        xdp_prog,
    },
    repo_root, require_privileges,
};
use serde_json::Value;

const EXIT_FAILURE: i32 = 1;
/// The unprivileged user the daemon runs as under setpriv (nobody: no user is created).
const NOBODY: u32 = 65534;
/// Capability numbers of include/uapi/linux/capability.h, for reading /proc/PID/status.
const CAP_NUMBERS: &[(&str, u32)] = &[
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_NICE", 23),
    ("CAP_BPF", 39),
];
/// What the SIGTERM test allows for a stop with traffic flowing.
const STOP_BOUND: Duration = Duration::from_secs(2);
/// What the crash test allows from SIGKILL to the first frame forwarded again.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A directory removed on drop, writable by everyone (the daemon runs as nobody in some tests).
struct TempDir(PathBuf);

impl TempDir {
    fn new(hint: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "isopath-svc-{hint}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temporary directory");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unit_text() -> String {
    std::fs::read_to_string(repo_root().join("deploy/isopath.service")).expect("the unit")
}

/// The value of `key=` in the unit (last occurrence), split on whitespace.
fn unit_list(key: &str) -> Vec<String> {
    unit_text()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The unit's capability set, checked to be the same as ambient and bounding set.
fn unit_caps() -> Vec<String> {
    let ambient = unit_list("AmbientCapabilities");
    assert_eq!(
        ambient,
        unit_list("CapabilityBoundingSet"),
        "the unit grants exactly its bounding set"
    );
    ambient
}

fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| {
            let n = CAP_NUMBERS
                .iter()
                .find(|(name, _)| name == c)
                .unwrap_or_else(|| panic!("{c}: add its number to CAP_NUMBERS"))
                .1;
            1u64 << n
        })
        .fold(0, |a, b| a | b)
}

/// `setpriv` running the rest of the command as nobody with exactly `caps` (inheritable,
/// ambient, bounding), no supplementary groups and no_new_privs: what systemd does with the
/// unit's User=, AmbientCapabilities=, CapabilityBoundingSet= and NoNewPrivileges=.
fn setpriv(caps: &[String]) -> Vec<String> {
    let list: String = caps
        .iter()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    vec![
        "setpriv".into(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--no-new-privs".into(),
    ]
}

/// isopathd where nobody can run it: a copy in a world-readable directory, as an install puts
/// it in PREFIX/sbin. The build's own path may not be (a checkout under /root, mode 0700).
fn daemon_binary() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        // Copies left by earlier runs whose process is gone.
        for e in std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("isopath-svc-bin-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = std::env::temp_dir().join(format!("isopath-svc-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the daemon's copy");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let to = dir.join("isopathd");
        std::fs::copy(bin("isopathd"), &to).expect("copying isopathd");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    })
    .clone()
}

/// A lab config whose control socket is in `dir` (where nobody may create it).
fn config_in(lab: &Lab, dir: &Path) -> (PathBuf, PathBuf) {
    let sock = dir.join("isopathd.sock");
    let text = lab_config(lab, "", PORTS).replace(
        &socket_path(lab).display().to_string(),
        &sock.display().to_string(),
    );
    let cfg = dir.join("isopath.toml");
    std::fs::write(&cfg, text).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    (cfg, sock)
}

/// Starts isopathd in the lab's appliance namespace behind `prefix` (setpriv, taskset, env).
fn spawn(lab: &Lab, prefix: &[String], cfg: &Path) -> ChildGuard {
    let mut cmd = prefix.to_vec();
    cmd.extend([
        daemon_binary().display().to_string(),
        "-c".into(),
        cfg.display().to_string(),
    ]);
    ChildGuard::new(lab.spawn(lab.ns_app(), &cmd)).with_label("isopathd")
}

fn wait_ready(d: &mut ChildGuard) {
    if !d.wait_stderr_contains(" ready ", START_TIMEOUT) {
        let st = d.try_wait();
        panic!(
            "isopathd did not become ready ({st:?}):\n{}",
            d.stderr_so_far()
        );
    }
}

fn no_program_left(lab: &Lab) {
    for dev in ["up0", "m0"] {
        assert_eq!(
            xdp_prog(lab, lab.ns_app(), dev),
            None,
            "XDP program left on {dev}"
        );
    }
}

/// `(comm, status fields)` of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's tasks") {
        let dir = e.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let fields = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        out.push((comm.trim().to_owned(), fields));
    }
    out
}

fn hex(fields: &BTreeMap<String, String>, k: &str) -> u64 {
    u64::from_str_radix(&fields[k], 16).unwrap_or_else(|e| panic!("{k}: {e}"))
}

fn bench(args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "taskset".to_owned(),
        "-c".into(),
        "0".into(),
        bin("isopath-bench").display().to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// UDP datagrams through the datapath, counted at the far end.
fn udp_through(lab: &Lab, count: u64) -> Value {
    let dst = format!("{}:9000", Lab::FAR_IP);
    let mut rx = ChildGuard::new(lab.spawn(
        lab.ns_far(),
        bench(&[
            "udp-recv",
            "--bind",
            &dst,
            "--expect",
            &count.to_string(),
            "--timeout-secs",
            "10",
        ]),
    ))
    .with_label("udp-recv");
    assert!(
        rx.wait_ready(Duration::from_secs(5)),
        "{}",
        rx.stderr_so_far()
    );
    let tx = lab.exec(
        lab.ns_traffic(),
        bench(&[
            "udp-send",
            "--dst",
            &dst,
            "--size",
            "18",
            "--count",
            &count.to_string(),
            "--rate",
            "20000",
        ]),
    );
    assert!(
        tx.status.success(),
        "{}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let out = rx.wait_output(Duration::from_secs(15));
    serde_json::from_slice(&out.stdout).expect("udp-recv report")
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every entry under `root`: relative path → (mode, content or symlink target).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let content = if md.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if md.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(rel, (md.permissions().mode(), content));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn install(args: &[&str]) -> Output {
    let from = bin("isopathd").parent().unwrap().to_path_buf();
    run(Command::new(repo_root().join("deploy/install.sh"))
        .args(args)
        .arg("--from")
        .arg(from)
        .env_remove("DESTDIR"))
}

fn uninstall(args: &[&str]) -> Output {
    run(Command::new(repo_root().join("deploy/uninstall.sh"))
        .args(args)
        .env_remove("DESTDIR"))
}

// ---------------------------------------------------------------------------------------------
// Install, uninstall, the unit

#[test]
fn install_and_uninstall_into_a_temporary_root_leave_nothing_behind() {
    if !require_privileges() {
        return;
    }
    let t = TempDir::new("root");
    let root = &t.0;
    // The account databases of a fresh system, without shadow-utils' backups (passwd- ...).
    std::fs::create_dir(root.join("etc")).unwrap();
    for (f, line, mode) in [
        ("passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644),
        ("group", "root:x:0:\n", 0o644),
        ("shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("gshadow", "root:*::\n", 0o640),
    ] {
        let p = root.join("etc").join(f);
        std::fs::write(&p, line).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let before = tree(root);
    let dest = root.display().to_string();

    let out = install(&["--destdir", &dest, "--housekeeping", "0"]);
    assert!(out.status.success(), "install: {}", text(&out.stderr));
    let unit = std::fs::read_to_string(root.join("usr/local/lib/systemd/system/isopath.service"))
        .expect("the unit is installed");
    assert!(
        unit.contains("\nExecStart=/usr/local/sbin/isopathd --config /etc/isopath/isopath.toml\n")
    );
    assert!(unit.contains("\nCPUAffinity=0\n"));
    assert!(!unit.contains('@'), "a placeholder is left:\n{unit}");
    for (f, mode) in [
        ("usr/local/sbin/isopathd", 0o755),
        ("usr/local/bin/isopath", 0o755),
        ("etc/isopath/isopath.toml", 0o644),
        ("usr/local/share/doc/isopath/README.md", 0o644),
        ("usr/local/share/isopath/install-manifest", 0o644),
    ] {
        let md = std::fs::metadata(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(md.permissions().mode() & 0o777, mode, "{f}");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("isopath:x:") && passwd.contains(":/usr/sbin/nologin"),
        "{passwd}"
    );
    assert!(
        std::fs::read_to_string(root.join("etc/group"))
            .unwrap()
            .contains("\nisopath:x:")
    );

    // A second install refuses, and changes nothing.
    let installed = tree(root);
    let out = install(&["--destdir", &dest]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already installed"));
    assert_eq!(tree(root), installed, "a refused install changed the tree");

    let out = uninstall(&["--destdir", &dest]);
    assert!(out.status.success(), "uninstall: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed everything"));
    assert_eq!(
        tree(root),
        before,
        "uninstall did not restore the temporary root exactly"
    );

    // An edited configuration is the operator's: kept and named, everything else removed.
    let out = install(&["--destdir", &dest]);
    assert!(out.status.success(), "install: {}", text(&out.stderr));
    let cfg = root.join("etc/isopath/isopath.toml");
    std::fs::write(&cfg, "# edited\n").unwrap();
    let out = uninstall(&["--destdir", &dest]);
    assert!(out.status.success(), "uninstall: {}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("keeping /etc/isopath/isopath.toml: changed since it was installed"),
        "{}",
        text(&out.stderr)
    );
    let mut left = tree(root);
    for kept in ["etc/isopath/isopath.toml", "etc/isopath"] {
        assert!(left.remove(Path::new(kept)).is_some(), "{kept} not kept");
    }
    assert_eq!(left, before);
}

#[test]
fn the_installed_unit_verifies_with_empty_stderr() {
    if !require_privileges() {
        return;
    }
    let t = TempDir::new("prefix");
    let prefix = t.0.display().to_string();
    let sysconf = t.0.join("etc").display().to_string();
    // A real prefix (no DESTDIR), so ExecStart= names an executable that exists.
    let out = install(&["--prefix", &prefix, "--sysconfdir", &sysconf, "--no-user"]);
    assert!(out.status.success(), "install: {}", text(&out.stderr));
    let unit = t.0.join("lib/systemd/system/isopath.service");
    // systemd-analyze exits 0 on unknown keys and bad values: only stderr tells.
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {}: {:?}\n{}",
        unit.display(),
        out.status,
        text(&out.stderr)
    );
    let caps = unit_caps();
    assert_eq!(
        caps,
        ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK"],
        "the capability set changed: update control/src/privs.rs NEEDED and deploy/README.md"
    );
    let out = uninstall(&["--prefix", &prefix]);
    assert!(out.status.success(), "uninstall: {}", text(&out.stderr));
    assert!(tree(&t.0).is_empty(), "left: {:?}", tree(&t.0).keys());
}

// ---------------------------------------------------------------------------------------------
// Least privilege

#[test]
fn the_daemon_forwards_as_nobody_with_only_the_unit_capabilities() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("cap");
    let dir = TempDir::new("cap");
    let (cfg, sock) = config_in(&lab, &dir.0);
    let caps = unit_caps();
    let mut prefix = setpriv(&caps);
    // The unit's CPUAffinity= (housekeeping core 0): workers still pin themselves to core 1.
    prefix.extend(["taskset".into(), "-c".into(), "0".into()]);
    let mut d = spawn(&lab, &prefix, &cfg);
    wait_ready(&mut d);
    let log = d.stderr_so_far();
    assert!(log.contains("start-up capabilities dropped"), "{log}");

    // Every thread runs as nobody with nothing effective; the main thread keeps the unit's set
    // as permitted (for run-time changes), the workers keep nothing.
    let pid = d.id();
    let ts = threads(pid);
    assert!(ts.len() >= 2, "{ts:?}");
    for (comm, f) in &ts {
        assert!(
            f["Uid"].starts_with(&format!("{NOBODY}\t")),
            "{comm}: {}",
            f["Uid"]
        );
        assert_eq!(hex(f, "CapEff"), 0, "{comm}: capabilities left effective");
        assert_eq!(hex(f, "CapAmb"), 0, "{comm}: ambient capabilities left");
        assert_eq!(hex(f, "CapInh"), 0, "{comm}: inheritable capabilities left");
        if comm == "isopathd" {
            assert_eq!(hex(f, "CapPrm"), cap_mask(&caps), "{comm}: permitted set");
        } else if comm.starts_with("isopath-w") || comm == "isopath-rtnl" {
            // Threads spawned during start-up give up everything.
            assert_eq!(hex(f, "CapPrm"), 0, "{comm}: keeps permitted capabilities");
        } else {
            assert_eq!(
                hex(f, "CapPrm") & !cap_mask(&caps),
                0,
                "{comm}: permitted set"
            );
        }
        if comm.starts_with("isopath-w") {
            assert_eq!(
                f["Cpus_allowed_list"], "1",
                "{comm} is not pinned to its core"
            );
        }
    }
    let main = ts
        .iter()
        .find(|(c, _)| c == "isopathd")
        .expect("main thread");
    assert_eq!(
        main.1["Cpus_allowed_list"], "0",
        "the control thread left the housekeeping core"
    );

    // It forwards, and answers on its control socket, without any capability effective.
    lab.ping_far();
    let r = udp_through(&lab, 2000);
    isopath_tests::assert_udp_accounted(&r, 2000, "udp through the unprivileged daemon");
    let st = request(&sock, "status").expect("status");
    assert_eq!(st["state"], "running");
    assert!(u(&st["ports"][1], "tx_packets") >= 2000, "{st}");

    let out = d.stop();
    assert_clean_stop(&out);
    no_program_left(&lab);
    assert!(!sock.exists(), "control socket file left");
}

#[test]
fn a_missing_capability_is_named_before_anything_is_attached() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("nocap");
    let dir = TempDir::new("nocap");
    let (cfg, _) = config_in(&lab, &dir.0);
    let caps = unit_caps();
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = spawn(&lab, &setpriv(&fewer), &cfg).wait_output(START_TIMEOUT);
        let log = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_FAILURE),
            "without {missing}:\n{log}"
        );
        assert!(
            log.contains(&format!("missing capability {missing}: needed to ")),
            "without {missing}:\n{log}"
        );
        assert!(
            !log.contains("Operation not permitted"),
            "without {missing}, an EPERM surfaced:\n{log}"
        );
        no_program_left(&lab);
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness

#[test]
fn ready_is_notified_once_every_port_is_bound_and_every_worker_polls() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("ntfy");
    let dir = TempDir::new("ntfy");
    let (cfg, sock) = config_in(&lab, &dir.0);
    let notify_path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
    notify.set_read_timeout(Some(START_TIMEOUT)).unwrap();
    let prefix = vec![
        "env".to_owned(),
        format!("NOTIFY_SOCKET={}", notify_path.display()),
    ];
    let mut d = spawn(&lab, &prefix, &cfg);

    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap_or_else(|e| {
        panic!("no READY=1 ({e}):\n{}", d.stderr_so_far());
    });
    // At this moment everything must already be in place.
    for dev in ["up0", "m0"] {
        assert_eq!(
            xdp_prog(&lab, lab.ns_app(), dev).map(|p| p.1),
            Some("isopath_xdp".into()),
            "{dev} has no program at READY=1"
        );
    }
    let st = request(&sock, "status").expect("status right after READY=1");
    let msg = text(&buf[..n]);
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines[0], "READY=1", "{msg:?}");
    assert!(
        lines.contains(&format!("MAINPID={}", d.id()).as_str()),
        "{msg:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=forwarding: 2 ports, 1 workers")),
        "{msg:?}"
    );
    for p in st["ports"].as_array().unwrap() {
        assert_eq!(u(p, "queues"), 2, "{p}");
        assert_eq!(p["bind"], "copy", "{p}");
    }
    let workers = st["workers"].as_array().unwrap();
    assert!(!workers.is_empty());
    for w in workers {
        assert!(u(w, "loops") > 0, "a worker had not polled at READY=1: {w}");
    }
    wait_ready(&mut d);

    let out = d.stop();
    assert_clean_stop(&out);
    let n = notify.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(text(&buf[..n]), "STOPPING=1");
}

// ---------------------------------------------------------------------------------------------
// Watchdog

/// The notify datagrams of `d` over `window` after READY=1: each `WATCHDOG=1` with its arrival.
fn beats(notify: &UnixDatagram, window: Duration) -> Vec<Instant> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        notify
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match notify.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"WATCHDOG=1" => out.push(Instant::now()),
            Ok(n) => panic!("unexpected notification {:?}", text(&buf[..n])),
            Err(_) => break,
        }
    }
    out
}

/// The longest gap between `t0`, the beats and the end of the window.
fn longest_gap(t0: Instant, beats: &[Instant], end: Instant) -> Duration {
    std::iter::once(t0)
        .chain(beats.iter().copied())
        .chain(std::iter::once(end))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

/// Starts the daemon as systemd with `WatchdogSec=400ms` would (plus `extra` environment) and
/// returns it with its notify socket once READY=1 came.
fn with_watchdog(lab: &Lab, dir: &TempDir, extra: &[String]) -> (ChildGuard, UnixDatagram) {
    let (cfg, _) = config_in(lab, &dir.0);
    let notify_path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
    notify.set_read_timeout(Some(START_TIMEOUT)).unwrap();
    let mut prefix = vec![
        "env".to_owned(),
        format!("NOTIFY_SOCKET={}", notify_path.display()),
        "WATCHDOG_USEC=400000".to_owned(),
    ];
    prefix.extend_from_slice(extra);
    let mut d = spawn(lab, &prefix, &cfg);
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap_or_else(|e| {
        panic!("no READY=1 ({e}):\n{}", d.stderr_so_far());
    });
    assert!(
        text(&buf[..n]).starts_with("READY=1"),
        "{}",
        text(&buf[..n])
    );
    (d, notify)
}

#[test]
fn an_idle_appliance_keeps_feeding_the_watchdog() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("wdog");
    let dir = TempDir::new("wdog");
    let (mut d, notify) = with_watchdog(&lab, &dir, &[]);
    // No traffic: the worker's loop still turns, so the beats come every 200 ms, and never
    // 400 ms apart (systemd's timeout: it would restart the service).
    let t0 = Instant::now();
    let b = beats(&notify, Duration::from_secs(3));
    let gap = longest_gap(t0, &b, Instant::now());
    assert!(
        b.len() >= 12 && gap < Duration::from_millis(400),
        "{} beats in 3 s, longest gap {gap:?}:\n{}",
        b.len(),
        d.stderr_so_far()
    );
    let log = d.stderr_so_far();
    assert!(
        log.contains("watchdog: WATCHDOG=1 every half of it"),
        "{log}"
    );
    assert!(!log.contains("worker stalled"), "{log}");
    let out = d.stop();
    assert_clean_stop(&out);
}

#[test]
fn a_stalled_worker_stops_the_watchdog_beats_and_is_named() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("wdst");
    let dir = TempDir::new("wdst");
    // Worker 0 sleeps 1.5 s, 1 s after start (the test-only hook): a stuck worker.
    let (mut d, notify) = with_watchdog(
        &lab,
        &dir,
        &["ISOPATH_TEST_STALL_WORKER=0:1000:1500".to_owned()],
    );
    let t0 = Instant::now();
    let b = beats(&notify, Duration::from_secs(4));
    let end = Instant::now();
    let log = d.stderr_so_far();
    // The beats stop for longer than systemd's 400 ms (it would restart the service): at least
    // the stall less one beat period (the worker moved up to then) ...
    let gap = longest_gap(t0, &b, end);
    assert!(
        gap >= Duration::from_millis(1200) && gap < Duration::from_millis(2500),
        "longest gap {gap:?} ({} beats):\n{log}",
        b.len()
    );
    // ... and come back once it moves again.
    assert!(
        b.last()
            .is_some_and(|l| end.duration_since(*l) < Duration::from_millis(400)),
        "no beat after the stall ({} beats):\n{log}",
        b.len()
    );
    assert!(log.contains("test hook: stalling a worker"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("worker stalled") && l.contains("worker=0")),
        "the stalled worker is not named:\n{log}"
    );
    let st = request(&dir.0.join("isopathd.sock"), "status").unwrap();
    assert!(u(&st, "watchdog.withheld") >= 5, "{st}");
    assert!(u(&st, "watchdog.beats") >= 5, "{st}");
    assert!(u(&st["workers"][0], "last_loop_unix_ns") > 0, "{st}");
    let out = d.stop();
    assert_clean_stop(&out);
}

// ---------------------------------------------------------------------------------------------
// Stop and crash

#[test]
fn sigterm_under_traffic_exits_within_the_bound_and_leaves_no_program() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("term");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    let dst = format!("{}:9000", Lab::FAR_IP);
    let _tx = ChildGuard::new(lab.spawn(
        lab.ns_traffic(),
        bench(&[
            "udp-send",
            "--dst",
            &dst,
            "--size",
            "18",
            "--count",
            "100000000",
            "--rate",
            "100000",
            "--duration-secs",
            "20",
        ]),
    ))
    .with_label("udp-send");
    let start = u(&d.port("up0"), "rx_packets");
    let st = d.wait_for("100k frames forwarded", Duration::from_secs(10), |s| {
        u(&s["ports"][0], "rx_packets") > start + 100_000
    });
    assert!(u(&st["ports"][1], "tx_packets") > 100_000, "{st}");

    let t = Instant::now();
    let out = d.stop();
    let took = t.elapsed();
    eprintln!(
        "SIGTERM to exit with ~100 kpps flowing: {} ms (bound {} ms)",
        took.as_millis(),
        STOP_BOUND.as_millis()
    );
    assert_clean_stop(&out);
    assert!(took < STOP_BOUND, "stop took {took:?}");
    no_program_left(&lab);
    assert!(!socket_path(&lab).exists(), "control socket file left");
}

/// What systemd's `Restart=on-failure` with `RestartPreventExitStatus=2` decides for an exit:
/// restart after a non-zero exit other than 2, and after a signal other than the clean ones.
fn restart_wanted(st: ExitStatus) -> bool {
    match (st.code(), st.signal()) {
        (Some(0 | 2), _) => false,
        (Some(_), _) => true,
        (None, Some(sig)) => {
            ![libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE].contains(&sig)
        }
        (None, None) => true,
    }
}

/// The supervisor loop: watches the daemon, and when it dies in a way `Restart=on-failure`
/// restarts, restarts it at once (the unit waits `RestartSec=100ms` more). Returns the new daemon, when the death was
/// seen and when the new one was spawned; bounded by `limit`.
fn supervise(
    lab: &Lab,
    prefix: &[String],
    cfg: &Path,
    mut d: ChildGuard,
    limit: Duration,
) -> (ChildGuard, Instant, Instant) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = d.try_wait() {
            let died = Instant::now();
            assert!(restart_wanted(st), "exit {st:?} would not be restarted");
            let fresh = spawn(lab, prefix, cfg);
            return (fresh, died, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not die within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn after_sigkill_a_supervised_restart_forwards_again() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("crash");
    let dir = TempDir::new("crash");
    let (cfg, sock) = config_in(&lab, &dir.0);
    // As the unit runs it: nobody, the unit's capabilities, the housekeeping core.
    let mut prefix = setpriv(&unit_caps());
    prefix.extend(["taskset".into(), "-c".into(), "0".into()]);
    let mut d = spawn(&lab, &prefix, &cfg);
    wait_ready(&mut d);
    let (old_prog, _) = xdp_prog(&lab, lab.ns_app(), "up0").expect("attached");
    lab.ping_far();

    // A paced stream across the crash, counted at the far end.
    let rate = 20_000u64;
    let count = rate * 8;
    let dst = format!("{}:9000", Lab::FAR_IP);
    let mut rx = ChildGuard::new(lab.spawn(
        lab.ns_far(),
        bench(&[
            "udp-recv",
            "--bind",
            &dst,
            "--expect",
            &count.to_string(),
            "--timeout-secs",
            "15",
        ]),
    ))
    .with_label("udp-recv");
    assert!(
        rx.wait_ready(Duration::from_secs(5)),
        "{}",
        rx.stderr_so_far()
    );
    let tx = ChildGuard::new(lab.spawn(
        lab.ns_traffic(),
        bench(&[
            "udp-send",
            "--dst",
            &dst,
            "--size",
            "18",
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
        ]),
    ))
    .with_label("udp-send");
    let flowing = Instant::now() + Duration::from_secs(10);
    while u(&request(&sock, "status").unwrap()["ports"][1], "tx_packets") < rate {
        assert!(Instant::now() < flowing, "traffic is not flowing");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The crash.
    let pid = libc::pid_t::try_from(d.id()).unwrap();
    let killed = Instant::now();
    // SAFETY: kill() has no memory-safety preconditions; `pid` is our own child, not yet reaped
    // (the supervisor reaps it below), so it still names the daemon.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let (mut d, died, respawned) = supervise(&lab, &prefix, &cfg, d, Duration::from_secs(5));
    wait_ready(&mut d);
    let ready = Instant::now();
    // First frame forwarded by the new instance: its m0 TX counter leaves 0 (the control loop
    // answers every 20 ms, which bounds the resolution).
    let first = loop {
        if let Ok(st) = request(&sock, "status")
            && u(&st["ports"][1], "tx_packets") > 0
        {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no frame forwarded after the restart:\n{}",
            d.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let recovery = first - killed;

    let sent: Value = serde_json::from_slice(&tx.wait_output(Duration::from_secs(20)).stdout)
        .expect("udp-send report");
    let got: Value = serde_json::from_slice(&rx.wait_output(Duration::from_secs(25)).stdout)
        .expect("udp-recv report");
    // Lost to the outage: missing and not dropped by the receiving kernel's socket.
    let missing = u(&got, "missing") - u(&got, "kernel_drops");
    eprintln!(
        "crash recovery (SIGKILL -> supervised restart): {} ms to the first forwarded frame \
         [death seen {} ms, respawned {} ms, ready {} ms, first frame {} ms after the kill]; \
         {missing} of {} datagrams lost at {rate}/s = {} ms of outage",
        recovery.as_millis(),
        (died - killed).as_millis(),
        (respawned - killed).as_millis(),
        (ready - killed).as_millis(),
        (first - killed).as_millis(),
        u(&sent, "sent"),
        missing * 1000 / rate,
    );
    assert!(recovery < RECOVERY_BOUND, "recovery took {recovery:?}");
    assert!(missing < rate * RECOVERY_BOUND.as_secs(), "{got}");
    assert_eq!(u(&got, "corrupt"), 0, "{got}");

    // What the dead instance left was found and replaced without a manual step.
    let log = d.stderr_so_far();
    assert!(log.contains("removing a stale control socket"), "{log}");
    if let Some(l) = log.lines().find(|l| l.contains("AF_XDP queues free again")) {
        eprintln!("the restart waited for the dead instance's AF_XDP queues: {l}");
    }
    let (new_prog, name) = xdp_prog(&lab, lab.ns_app(), "up0").expect("attached again");
    assert_ne!(new_prog, old_prog);
    assert_eq!(name, "isopath_xdp");
    assert_clean_stop(&d.stop());
    no_program_left(&lab);
}

#[test]
fn restart_policy_matches_restart_on_failure() {
    let code = |c: i32| ExitStatus::from_raw(c << 8);
    let signal = ExitStatus::from_raw;
    assert!(!restart_wanted(code(0)));
    assert!(restart_wanted(code(1)));
    assert!(!restart_wanted(code(2)), "RestartPreventExitStatus=2");
    assert!(restart_wanted(code(3)));
    assert!(restart_wanted(signal(libc::SIGKILL)));
    assert!(restart_wanted(signal(libc::SIGSEGV)));
    assert!(!restart_wanted(signal(libc::SIGTERM)));
}

// ---------------------------------------------------------------------------------------------
// Host readiness, live

#[test]
fn doctor_runs_live_on_the_lab_ports_and_changes_nothing() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("doc");
    let dir = TempDir::new("doc");
    let (cfg, _) = config_in(&lab, &dir.0);
    let before = lab.link_details(lab.ns_app(), "up0");
    let doctor = |extra: &[&str]| {
        let mut cmd = vec![
            bin("isopath").display().to_string(),
            "doctor".into(),
            "-c".into(),
            cfg.display().to_string(),
        ];
        cmd.extend(extra.iter().map(|s| s.to_string()));
        lab.exec_timeout(lab.ns_app(), &cmd, Duration::from_secs(30))
    };
    let out = doctor(&["--json"]);
    assert!(
        out.status.success(),
        "doctor failed a check or crashed ({:?}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let find = |check: &str, subject: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check && f["subject"] == subject)
            .cloned()
            .unwrap_or_else(|| panic!("no {check} for {subject} in {v:#}"))
    };
    for port in ["up0", "m0"] {
        assert_eq!(find("port.driver", port)["detail"], "veth (virtual device)");
        assert_eq!(find("port.zero_copy", port)["status"], "warn");
        assert_eq!(find("port.link", port)["status"], "ok");
        assert_eq!(find("port.mtu", port)["status"], "ok");
        assert_eq!(find("port.irqs", port)["status"], "ok");
    }
    for check in [
        "kernel.version",
        "kernel.af_xdp",
        "kernel.xdp",
        "kernel.need_wakeup",
    ] {
        assert_eq!(find(check, "kernel")["status"], "ok", "{check}");
    }
    assert_eq!(v["worker_cores"], "1");
    let table = doctor(&[]);
    assert!(table.status.success());
    eprintln!("{}", text(&table.stdout));
    // It only read: the port is as it was.
    assert_eq!(lab.link_details(lab.ns_app(), "up0"), before);
}
