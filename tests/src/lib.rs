//! Harness for isopath's privileged integration tests.
//!
//! Tests build a real veth lab in three network namespaces with `deploy/lab.sh` and run
//! programs inside it. A test starts with
//!
//! ```no_run
//! # use isopath_tests::*;
//! # use std::time::Duration;
//! if !require_privileges() {
//!     return;
//! }
//! let lab = Lab::up("udp");
//! let mut rx = ChildGuard::new(lab.spawn(
//!     lab.ns_far(),
//!     [bin("isopath-bench").to_str().unwrap(), "udp-recv", "--bind", "198.18.0.2:9000",
//!      "--expect", "1000", "--timeout-secs", "10"],
//! ));
//! assert!(rx.wait_ready(Duration::from_secs(5)));
//! // ... send, then:
//! let out = rx.wait_output(Duration::from_secs(15));
//! ```
//!
//! Declare the [`Lab`] before the [`ChildGuard`]s of processes running inside it: locals drop
//! in reverse order, so the processes are stopped before the namespaces are deleted.
//! Cleanup runs in `Drop`, so it also happens when a test panics (tests build with
//! `panic = "unwind"`; a `panic = "abort"` profile would skip it).

pub mod bench;
pub mod deps;
pub mod fixture;
pub mod isopathd;
pub mod nft;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`Lab::exec`] lets a command run before killing it and panicking.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a [`ChildGuard`] waits after SIGTERM before sending SIGKILL.
pub const DEFAULT_TERM_GRACE: Duration = Duration::from_secs(3);

/// Poll interval while waiting for a child to exit.
const WAIT_POLL: Duration = Duration::from_millis(10);

/// The repository root (the workspace directory holding `deploy/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// Path of `deploy/lab.sh`.
pub fn lab_script() -> PathBuf {
    repo_root().join("deploy").join("lab.sh")
}

// ---------------------------------------------------------------------------------------------
// Privileges

/// Whether this process may build labs: root, `ip netns` works, AF_XDP sockets are supported.
///
/// If not: with `ISOPATH_REQUIRE_PRIV=1` in the environment this panics with the reason;
/// otherwise it prints `SKIP: <reason>` to stderr (even under libtest's capture) and returns false, and the test should
/// return at once.
pub fn require_privileges() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    match CHECK.get_or_init(check_privileges) {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var_os("ISOPATH_REQUIRE_PRIV").is_some_and(|v| v == "1") {
                panic!("ISOPATH_REQUIRE_PRIV=1 but privileged tests cannot run: {reason}");
            }
            // Written to the stderr handle rather than with eprintln!, so libtest's output
            // capture does not hide it: a skipped privileged test must be visible.
            let _ = writeln!(std::io::stderr(), "SKIP: {reason}");
            false
        }
    }
}

fn check_privileges() -> Result<(), String> {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("not root (euid {euid})"));
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(format!(
                "`ip netns list` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("cannot run `ip`: {e}")),
    }
    if !af_xdp_supported() {
        return Err("AF_XDP sockets are not supported by this kernel".into());
    }
    let script = lab_script();
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    Ok(())
}

fn af_xdp_supported() -> bool {
    if Path::new("/proc/net/xdp_sock").exists() {
        return true;
    }
    // SAFETY: socket() has no memory-safety preconditions; it returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just returned by socket(), is open, and nothing else owns it.
    unsafe { libc::close(fd) };
    true
}

// ---------------------------------------------------------------------------------------------
// Binaries

/// Path of the workspace binary `name` (for example `"isopath-bench"`).
///
/// Looks in `$ISOPATH_BIN_DIR` if set (and only there); otherwise in the profile directory of
/// the running test executable (`target/<profile>`, the parent of `deps/`), then in
/// `target/release` and `target/debug` beside it. `cargo test -p isopath-tests` does not build
/// other packages' binaries: build them first (`cargo build -p isopath-bench`).
///
/// # Panics
/// If the binary is not found, naming every place searched.
pub fn bin(name: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("ISOPATH_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let exe = std::env::current_exe().expect("path of the running test executable");
            let mut dir = exe
                .parent()
                .expect("test executable has a directory")
                .to_path_buf();
            if dir.file_name() == Some(OsStr::new("deps")) {
                dir.pop();
            }
            let mut dirs = vec![dir.clone()];
            if let Some(target) = dir.parent() {
                for profile in ["release", "debug"] {
                    let d = target.join(profile);
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
            dirs
        }
    };
    for dir in &candidates {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "binary `{name}` not found in {}: build it first (e.g. `cargo build --release -p {name}`, \
         or the package that defines it) or set ISOPATH_BIN_DIR",
        searched.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Labs

/// Network namespaces that currently exist (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
        .expect("running `ip netns list`");
    assert!(
        out.status.success(),
        "`ip netns list` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A lab prefix from a hint, a process id and a per-process counter: up to 3 characters of
/// the hint (lowercased, `[a-z0-9]` only), then the pid (5 base-36 digits) and the counter
/// (2 base-36 digits). The fixed-width tail makes prefixes of live processes unique whatever
/// the hints; the whole is at most 10 characters of `[a-z0-9]`, as `lab.sh` requires.
pub fn lab_prefix(name_hint: &str, pid: u32, counter: u32) -> String {
    let hint: String = name_hint
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(3)
        .collect();
    format!(
        "{hint}{}{}",
        base36(u64::from(pid) % 36u64.pow(5), 5),
        base36(u64::from(counter) % 36u64.pow(2), 2)
    )
}

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("ASCII digits")
}

/// A running lab built by `deploy/lab.sh up`; dropping it runs `deploy/lab.sh down`.
#[derive(Debug)]
pub struct Lab {
    /// The lab's PREFIX: its namespaces are `PREFIX-traffic`, `PREFIX-app`, `PREFIX-far`.
    pub prefix: String,
    ns_traffic: String,
    ns_app: String,
    ns_far: String,
}

impl Lab {
    /// Traffic-side address (on `t0`).
    pub const TRAFFIC_IP: &str = "198.18.0.1";
    /// Far-side address (on `br0`).
    pub const FAR_IP: &str = "198.18.0.2";
    /// Traffic-side IPv6 address (on `t0`).
    pub const TRAFFIC_IP6: &str = "2001:2::1";
    /// Far-side IPv6 address (on `br0`).
    pub const FAR_IP6: &str = "2001:2::2";

    /// Builds a new lab whose prefix starts with (up to 3 characters of) `name_hint`.
    ///
    /// # Panics
    /// If `lab.sh up` fails (it removes what it built before failing).
    pub fn up(name_hint: &str) -> Lab {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = lab_prefix(
            name_hint,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        let out = run_lab_script("up", &prefix);
        if !out.status.success() {
            // lab.sh cleans up after itself; make sure anyway.
            let _ = run_lab_script("down", &prefix);
            panic!(
                "`lab.sh up {prefix}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Lab {
            ns_traffic: format!("{prefix}-traffic"),
            ns_app: format!("{prefix}-app"),
            ns_far: format!("{prefix}-far"),
            prefix,
        }
    }

    /// The traffic namespace (holds `t0`, 198.18.0.1, 2001:2::1).
    pub fn ns_traffic(&self) -> &str {
        &self.ns_traffic
    }

    /// The appliance namespace, where isopath runs (holds `up0`, `m0`, `m1`).
    pub fn ns_app(&self) -> &str {
        &self.ns_app
    }

    /// The far namespace (bridge `br0` over `s0` and `s1`, 198.18.0.2, 2001:2::2).
    pub fn ns_far(&self) -> &str {
        &self.ns_far
    }

    /// The `KEY=value` pairs printed by `lab.sh env PREFIX`.
    pub fn env(&self) -> Vec<(String, String)> {
        let out = run_lab_script("env", &self.prefix);
        assert!(out.status.success(), "`lab.sh env` failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Runs `ip netns exec NS ARGS...` to completion and returns its output (whatever its
    /// exit status).
    ///
    /// # Panics
    /// If it cannot be started, or runs longer than [`DEFAULT_EXEC_TIMEOUT`] (it is killed).
    pub fn exec<I, S>(&self, ns: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_timeout(ns, args, DEFAULT_EXEC_TIMEOUT)
    }

    /// Like [`Lab::exec`] with an explicit time limit.
    pub fn exec_timeout<I, S>(&self, ns: &str, args: I, timeout: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ChildGuard::new(self.spawn(ns, args)).wait_output(timeout)
    }

    /// Starts `ip netns exec NS ARGS...` (which execs ARGS in place, so the child's pid is the
    /// program's) with stdin from /dev/null and stdout and stderr piped. Wrap the child in a
    /// [`ChildGuard`] so it is stopped whatever happens.
    ///
    /// # Panics
    /// If it cannot be started.
    pub fn spawn<I, S>(&self, ns: &str, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
    }

    /// `(rx_packets, tx_packets)` of `iface` in `ns`, from `ip -n NS -s -j link show dev IF`.
    ///
    /// # Panics
    /// If the command fails or its JSON lacks the counters.
    pub fn link_stats(&self, ns: &str, iface: &str) -> (u64, u64) {
        let v = ip_json(&["-n", ns, "-s", "-j", "link", "show", "dev", iface]);
        let link = &v[0];
        let stats = if link["stats64"].is_object() {
            &link["stats64"]
        } else {
            &link["stats"]
        };
        let get = |dir: &str| {
            stats[dir]["packets"].as_u64().unwrap_or_else(|| {
                panic!("no {dir}.packets for {ns}/{iface} in `ip -s -j link`: {link}")
            })
        };
        (get("rx"), get("tx"))
    }

    /// The JSON object describing `iface` in `ns` from `ip -n NS -d -j link show dev IF`
    /// (fields such as `num_rx_queues`, `address`, `flags`, `master`, `operstate`).
    pub fn link_details(&self, ns: &str, iface: &str) -> serde_json::Value {
        let mut v = ip_json(&["-n", ns, "-d", "-j", "link", "show", "dev", iface]);
        v[0].take()
    }
}

impl Lab {
    /// Pings the far host from the traffic namespace (two echoes) through whatever forwards
    /// between them; panics with ping's output if it fails.
    pub fn ping_far(&self) {
        let out = self.exec(
            self.ns_traffic(),
            ["ping", "-c", "2", "-i", "0.2", "-W", "2", Self::FAR_IP],
        );
        assert!(
            out.status.success(),
            "ping: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Starts `isopath-bench udp-recv` in `ns`, bound to `bind`, expecting `expect` datagrams
    /// within `timeout_secs`; returns once it is ready. Its JSON report is its stdout.
    ///
    /// # Panics
    /// If it does not become ready within 5 s.
    pub fn udp_recv(&self, ns: &str, bind: &str, expect: u64, timeout_secs: u64) -> ChildGuard {
        let bench = bin("isopath-bench");
        let mut rx = ChildGuard::new(self.spawn(
            ns,
            [
                bench.to_str().unwrap_or_default(),
                "udp-recv",
                "--bind",
                bind,
                "--expect",
                &expect.to_string(),
                "--timeout-secs",
                &timeout_secs.to_string(),
            ],
        ))
        .with_label("udp-recv");
        assert!(
            rx.wait_ready(Duration::from_secs(5)),
            "udp-recv not ready: {}",
            rx.stderr_so_far()
        );
        rx
    }

    fn udp_send_args(cpu: usize, dst: &str, size: usize, count: u64, rate: u64) -> Vec<String> {
        // On veth the receive work runs on the sender's core: the traffic source stays off the
        // worker's core unless a test means otherwise.
        let bench = bin("isopath-bench").display().to_string();
        [
            "taskset",
            "-c",
            &cpu.to_string(),
            &bench,
            "udp-send",
            "--dst",
            dst,
            "--size",
            &size.to_string(),
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `isopath-bench udp-send` in `ns` on CPU `cpu`: `count` datagrams of `size` payload
    /// bytes to `dst` at `rate` per second; returns its JSON report.
    ///
    /// # Panics
    /// If it fails or its report is not JSON.
    pub fn udp_send(
        &self,
        ns: &str,
        cpu: usize,
        dst: &str,
        size: usize,
        count: u64,
        rate: u64,
    ) -> serde_json::Value {
        let out = self.exec(ns, Self::udp_send_args(cpu, dst, size, count, rate));
        assert!(
            out.status.success(),
            "udp-send: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "udp-send output {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Starts `isopath-bench udp-send` like [`Lab::udp_send`] without waiting for it.
    pub fn udp_send_spawn(
        &self,
        ns: &str,
        cpu: usize,
        dst: &str,
        size: usize,
        count: u64,
        rate: u64,
    ) -> ChildGuard {
        ChildGuard::new(self.spawn(ns, Self::udp_send_args(cpu, dst, size, count, rate)))
            .with_label("udp-send")
    }
}

/// Checks that a `udp-recv` report accounts for every one of `sent` datagrams: each was
/// received exactly once and intact, or dropped by the receiving host's kernel where it counts
/// them (`kernel_drops`: the namespace's UDP `InErrors`, i.e. receive-buffer overflows). The
/// datapath's own drops are checked separately by the tests (they must be zero); a kernel
/// socket that shares core 0 with the sender may overflow now and then, which is not the
/// datapath's doing and is counted rather than hoped away. Returns the kernel's drops.
///
/// # Panics
/// If any datagram is unaccounted for, corrupt, duplicated or out of range.
pub fn assert_udp_accounted(r: &serde_json::Value, sent: u64, what: &str) -> u64 {
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{what}: udp-recv report lacks {k}: {r}"))
    };
    let drops = n("kernel_drops");
    assert_eq!(
        (n("corrupt"), n("duplicates"), n("out_of_range")),
        (0, 0, 0),
        "{what}: corrupt, duplicated or out-of-range datagrams: {r}"
    );
    assert_eq!(
        n("received") + drops,
        sent,
        "{what}: received + dropped by the receiving kernel != sent: {r}"
    );
    assert_eq!(
        n("missing"),
        drops,
        "{what}: missing datagrams not all counted by the kernel: {r}"
    );
    drops
}

/// A child's stdout as JSON.
///
/// # Panics
/// If it is not JSON.
pub fn json_out(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

impl Drop for Lab {
    fn drop(&mut self) {
        match Command::new(lab_script())
            .args(["down", &self.prefix])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {
                if !out.stderr.is_empty() {
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                }
            }
            Ok(out) => eprintln!(
                "warning: `lab.sh down {}` failed ({}): {}",
                self.prefix,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("warning: cannot run `lab.sh down {}`: {e}", self.prefix),
        }
    }
}

fn run_lab_script(cmd: &str, prefix: &str) -> Output {
    let script = lab_script();
    Command::new(&script)
        .args([cmd, prefix])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} {cmd} {prefix}: {e}", script.display()))
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("`ip {}` printed invalid JSON: {e}", args.join(" ")));
    assert!(
        v.as_array().is_some_and(|a| !a.is_empty()),
        "`ip {}` printed no object: {v}",
        args.join(" ")
    );
    v
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Owns a spawned child and stops it when dropped: SIGTERM to its pid, then SIGKILL if it has
/// not exited after the grace period. Signals go only to this child's own pid, and only while
/// it has not been reaped (so the pid cannot have been reused).
///
/// If the child's stdout and stderr are piped, the guard drains them on background threads
/// (so the child never blocks on a full pipe): stderr line by line, for
/// [`ChildGuard::wait_stderr_line`].
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    label: String,
    grace: Duration,
    status: Option<ExitStatus>,
    stdout_rx: Option<Receiver<Vec<u8>>>,
    stderr_rx: Option<Receiver<String>>,
    stderr_lines: Vec<String>,
}

impl ChildGuard {
    /// Takes ownership of `child` (and of its piped stdout/stderr, if any).
    pub fn new(mut child: Child) -> Self {
        let stdout_rx = child.stdout.take().map(|mut out| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = out.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
            rx
        });
        let stderr_rx = child.stderr.take().map(|err| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut reader = BufReader::new(err);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if tx
                                .send(String::from_utf8_lossy(&line).into_owned())
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            });
            rx
        });
        let label = format!("pid {}", child.id());
        ChildGuard {
            child,
            label,
            grace: DEFAULT_TERM_GRACE,
            status: None,
            stdout_rx,
            stderr_rx,
            stderr_lines: Vec::new(),
        }
    }

    /// Names the child in panic messages.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = format!("{} (pid {})", label.into(), self.child.id());
        self
    }

    /// Sets how long to wait after SIGTERM before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's exit status if it has exited (reaping it), else `None`.
    ///
    /// # Panics
    /// If `waitpid` fails (it cannot for a child this guard owns).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.poll()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.label))
    }

    fn poll(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::sleep(WAIT_POLL.min(deadline - now));
        }
    }

    /// Waits up to `timeout` for a stderr line equal to `line` (ignoring surrounding
    /// whitespace). False on timeout or if stderr ended first (the child exited).
    pub fn wait_stderr_line(&mut self, line: &str, timeout: Duration) -> bool {
        if self.stderr_lines.iter().any(|l| l.trim() == line) {
            return true;
        }
        let Some(rx) = &self.stderr_rx else {
            panic!("{}: stderr is not piped", self.label);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let found = l.trim() == line;
                    self.stderr_lines.push(l);
                    if found {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Waits up to `timeout` for a stderr line containing `needle`. False on timeout or if
    /// stderr ended first (the child exited).
    pub fn wait_stderr_contains(&mut self, needle: &str, timeout: Duration) -> bool {
        if self.stderr_lines.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let Some(rx) = &self.stderr_rx else {
            panic!("{}: stderr is not piped", self.label);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let found = l.contains(needle);
                    self.stderr_lines.push(l);
                    if found {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Waits up to `timeout` for the `ready` line that isopath-bench receivers print.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        self.wait_stderr_line("ready", timeout)
    }

    /// Stderr lines read so far (without waiting).
    pub fn stderr_so_far(&mut self) -> String {
        if let Some(rx) = &self.stderr_rx {
            self.stderr_lines.extend(rx.try_iter());
        }
        self.stderr_lines.concat()
    }

    /// Sends SIGTERM, then SIGKILL if the child has not exited after the grace period;
    /// returns its exit status (`None` only if even SIGKILL did not end it within 5 s).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        for (sig, wait) in [
            (libc::SIGTERM, self.grace),
            (libc::SIGKILL, Duration::from_secs(5)),
        ] {
            match self.poll() {
                Ok(Some(st)) => return Some(st),
                Ok(None) => self.signal(sig),
                // Not waitable: never signal a pid we cannot vouch for.
                Err(_) => return None,
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                match self.poll() {
                    Ok(Some(st)) => return Some(st),
                    Ok(None) => thread::sleep(WAIT_POLL),
                    Err(_) => return None,
                }
            }
        }
        self.poll().ok().flatten()
    }

    /// Stops the child now ([`ChildGuard::terminate`]) and returns its output.
    ///
    /// # Panics
    /// If it could not be stopped.
    pub fn stop(mut self) -> Output {
        let status = self.terminate();
        self.collect(status)
    }

    /// Waits up to `timeout` for the child to exit by itself and returns its output.
    ///
    /// # Panics
    /// If it is still running after `timeout` (it is stopped first; its stderr is shown),
    /// or if it could not be stopped.
    pub fn wait_output(mut self, timeout: Duration) -> Output {
        if let Some(st) = self.wait_timeout(timeout) {
            return self.collect(Some(st));
        }
        let status = self.terminate();
        let label = self.label.clone();
        let out = self.collect(status);
        panic!(
            "{label} still running after {timeout:?}; stopped it ({:?}). stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends SIGHUP (a reload, for isopathd) if the child still runs.
    pub fn hangup(&mut self) {
        if self.try_wait().is_none() {
            self.signal(libc::SIGHUP);
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill() has no memory-safety preconditions. `pid` is our own child, which has
        // not been reaped (the callers check try_wait first), so the pid still names it.
        unsafe { libc::kill(pid, sig) };
    }

    /// Gathers the output once the child has exited (pipes are read for at most 5 s more,
    /// in case a grandchild still holds them open).
    fn collect(&mut self, status: Option<ExitStatus>) -> Output {
        let deadline = Instant::now() + Duration::from_secs(5);
        let stdout = self
            .stdout_rx
            .take()
            .and_then(|rx| {
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok()
            })
            .unwrap_or_default();
        if let Some(rx) = self.stderr_rx.take() {
            while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                self.stderr_lines.push(l);
            }
        }
        let status = status.unwrap_or_else(|| {
            panic!("{} did not exit even after SIGKILL", self.label);
        });
        Output {
            status,
            stdout,
            stderr: self.stderr_lines.concat().into_bytes(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.terminate().is_none() {
            eprintln!("warning: {} did not exit even after SIGKILL", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_valid_and_distinct() {
        let cases = [
            ("lab", 1, 0),
            ("", 32768, 5),
            ("UDP-Send!", 4_194_304, 1295),
            ("x", u32::MAX, u32::MAX),
        ];
        for (hint, pid, n) in cases {
            let p = lab_prefix(hint, pid, n);
            assert!(
                (1..=10).contains(&p.len())
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{p:?}"
            );
        }
        assert_eq!(lab_prefix("UDP-Send!", 1, 2), "udp0000102");
        assert_eq!(lab_prefix("", 36, 37), "0001011");
        // Same hint, same pid, different counter; and hints that could blur pid boundaries.
        assert_ne!(lab_prefix("ab", 7, 0), lab_prefix("ab", 7, 1));
        assert_ne!(lab_prefix("a1", 2, 0), lab_prefix("a", 12, 0));
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36, 2), "10");
        assert_eq!(base36(36u64.pow(5) - 1, 5), "zzzzz");
    }

    #[test]
    fn repo_root_holds_the_lab_script() {
        assert!(lab_script().is_file(), "{}", lab_script().display());
    }

    #[test]
    fn missing_binary_panics_with_a_clear_message() {
        let err = std::panic::catch_unwind(|| bin("isopath-no-such-binary")).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("isopath-no-such-binary"), "{msg}");
    }
}
