//! Running `isopathd` inside a lab's appliance namespace, and talking to it.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use isopath_control::client::Client;
use serde_json::Value;

use crate::{ChildGuard, Lab, bin};

/// How long start-up may take before a test gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A config for the lab's cross-connect up0 ↔ m0, with the worker on core 1 (the traffic source
/// runs on core 0) and `extra` TOML appended (extra `[rings]` keys go in `rings`).
pub fn lab_config(lab: &Lab, rings: &str, ports: &str) -> String {
    format!(
        r#"
[daemon]
control_socket = "{sock}"
[rings]
rx_ring_size = 1024
tx_ring_size = 1024
fill_ring_size = 1024
comp_ring_size = 1024
{rings}
[workers]
cores = [1]
{ports}
[[cross_connect]]
a = "up0"
b = "m0"
"#,
        sock = socket_path(lab).display()
    )
}

/// A config with up0 cross-connected to `bond0` over m0 and m1; `bond` is appended to the
/// `[[bond]]` table (options), `rings` to `[rings]`.
pub fn bond_config(lab: &Lab, rings: &str, bond: &str) -> String {
    format!(
        r#"
[daemon]
control_socket = "{sock}"
[rings]
rx_ring_size = 1024
tx_ring_size = 1024
fill_ring_size = 1024
comp_ring_size = 1024
{rings}
[workers]
cores = [1]
[[port]]
name = "up0"
[[port]]
name = "m0"
[[port]]
name = "m1"
[[bond]]
name = "bond0"
members = ["m0", "m1"]
{bond}
[[cross_connect]]
a = "up0"
b = "bond0"
"#,
        sock = socket_path(lab).display()
    )
}

/// The default `[[port]]` list: up0 and m0, all queues.
pub const PORTS: &str = "[[port]]\nname = \"up0\"\n[[port]]\nname = \"m0\"\n";

/// Runs `isopath -s SOCKET ARGS...`.
pub fn cli_output(socket: &Path, args: &[&str]) -> Output {
    std::process::Command::new(bin("isopath"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("isopath {args:?}: {e}"))
}

/// Runs `isopath -s SOCKET ARGS...`; returns its stdout.
///
/// # Panics
/// If the command fails (its stderr is shown).
pub fn cli(socket: &Path, args: &[&str]) -> String {
    let out = cli_output(socket, args);
    assert!(
        out.status.success(),
        "isopath {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The control socket path of a lab's daemon.
pub fn socket_path(lab: &Lab) -> PathBuf {
    PathBuf::from(format!("/run/isopath/test-{}.sock", lab.prefix))
}

/// Writes `config` where [`Isopathd::start`] reads it (a reload test rewrites it); returns
/// its path.
pub fn write_config(lab: &Lab, config: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("isopath-{}.toml", lab.prefix));
    std::fs::write(&path, config).expect("writing the test config");
    path
}

/// A running daemon.
#[derive(Debug)]
pub struct Isopathd {
    guard: ChildGuard,
    socket: PathBuf,
}

impl Isopathd {
    /// Starts isopathd with `config` in the lab's appliance namespace and waits until it says
    /// ready and answers on its control socket.
    ///
    /// # Panics
    /// If it does not, with its stderr.
    pub fn start(lab: &Lab, config: &str, args: &[&str]) -> Isopathd {
        let path = write_config(lab, config);
        let mut cmd: Vec<String> = vec![
            bin("isopathd").display().to_string(),
            "-c".into(),
            path.display().to_string(),
        ];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let mut guard = ChildGuard::new(lab.spawn(lab.ns_app(), &cmd)).with_label("isopathd");
        if !guard.wait_stderr_contains(" ready ", START_TIMEOUT) {
            let status = guard.try_wait();
            panic!(
                "isopathd did not become ready ({status:?}):\n{}",
                guard.stderr_so_far()
            );
        }
        let d = Isopathd {
            guard,
            socket: socket_path(lab),
        };
        assert_eq!(d.status()["state"], "running");
        d
    }

    /// Runs isopathd expecting it to fail at start; returns its output (exit code, stderr).
    ///
    /// # Panics
    /// If it becomes ready instead, or does not exit within the start timeout.
    pub fn start_failing(lab: &Lab, config: &str, args: &[&str]) -> Output {
        let path = write_config(lab, config);
        let mut cmd: Vec<String> = vec![
            bin("isopathd").display().to_string(),
            "-c".into(),
            path.display().to_string(),
        ];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let guard = ChildGuard::new(lab.spawn(lab.ns_app(), &cmd)).with_label("isopathd");
        let out = guard.wait_output(START_TIMEOUT);
        assert!(
            !out.status.success(),
            "isopathd was expected to fail:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Sends it SIGHUP: a reload of its configuration file.
    pub fn hangup(&mut self) {
        self.guard.hangup();
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// The status document.
    ///
    /// # Panics
    /// If the daemon does not answer.
    pub fn status(&self) -> Value {
        request(&self.socket, "status").unwrap_or_else(|e| panic!("status: {e}"))
    }

    /// One port's status.
    pub fn port(&self, name: &str) -> Value {
        let s = self.status();
        s["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no port {name} in {s}"))
    }

    /// Waits until `f(status)` holds, or panics after `timeout` with the last status.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last status: {s:#}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first bond's status.
    pub fn bond(&self) -> Value {
        self.status()["bonds"][0].clone()
    }

    /// Runs the `isopath` CLI against this daemon, as an operator would.
    pub fn cli_output(&self, args: &[&str]) -> Output {
        cli_output(&self.socket, args)
    }

    /// Runs the `isopath` CLI against this daemon; returns its stdout.
    ///
    /// # Panics
    /// If the command fails (its stderr is shown).
    pub fn cli(&self, args: &[&str]) -> String {
        cli(&self.socket, args)
    }

    /// Sends a control request; panics on transport errors, returns the reply.
    pub fn request(&self, req: &str) -> Value {
        request(&self.socket, req).unwrap_or_else(|e| panic!("{req}: {e}"))
    }

    /// Stderr so far.
    pub fn log(&mut self) -> String {
        self.guard.stderr_so_far()
    }

    /// SIGTERM; waits for exit; returns the output.
    pub fn stop(self) -> Output {
        self.guard.stop()
    }

    /// SIGKILL, like a crash; waits for exit.
    pub fn kill(mut self) {
        let pid = self.guard.id() as i32;
        // Our own child, not yet reaped (checked by try_wait), so the pid is still ours.
        if self.guard.try_wait().is_none() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.guard.wait_timeout(Duration::from_secs(5));
    }
}

/// Sends one request line on the control socket and returns the JSON reply (an error reply
/// included), through the control client.
///
/// # Errors
/// Connection, I/O or JSON errors, as text.
pub fn request(socket: &Path, req: &str) -> Result<Value, String> {
    Client::new(socket)
        .with_timeout(Duration::from_secs(3))
        .line(req)
        .map_err(|e| e.to_string())
}

/// The XDP program id attached to `iface` in `ns`, if any (from `ip -d -j link`).
pub fn xdp_prog(lab: &Lab, ns: &str, iface: &str) -> Option<(u64, String)> {
    let d = lab.link_details(ns, iface);
    let xdp = d.get("xdp")?;
    let prog = xdp.get("prog").or_else(|| {
        xdp.get("attached")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.get("prog"))
    })?;
    Some((
        prog["id"].as_u64()?,
        prog["name"].as_str().unwrap_or("").to_owned(),
    ))
}

/// Port `name` in a status document.
///
/// # Panics
/// If the status has no such port.
pub fn port_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no port {name} in {status}"))
}

/// A field of a JSON object as u64 (0 if absent).
pub fn u(v: &Value, path: &str) -> u64 {
    path.split('.').fold(v, |v, k| &v[k]).as_u64().unwrap_or(0)
}

/// Checks the frame audit of every worker in a status document: free + in_fill + in_tx = total.
///
/// # Panics
/// If a worker's frames do not add up.
pub fn assert_frames_add_up(status: &Value) {
    for w in status["workers"].as_array().expect("workers") {
        let f = &w["frames"];
        let (t, free, fill, tx) = (u(f, "total"), u(f, "free"), u(f, "in_fill"), u(f, "in_tx"));
        assert!(t > 0, "{w}");
        assert_eq!(free + fill + tx, t, "frames do not add up: {w}");
    }
}

/// The stop log's frame audit lines: asserts every worker reported `unaccounted=0`.
///
/// # Panics
/// If no audit line is found or one shows a leak.
pub fn assert_clean_stop(out: &Output) {
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "isopathd exit {:?}:\n{log}",
        out.status
    );
    let audits: Vec<&str> = log.lines().filter(|l| l.contains("frame audit")).collect();
    assert!(!audits.is_empty(), "no frame audit in the stop log:\n{log}");
    for a in audits {
        assert!(
            a.contains("unaccounted=0") && a.contains("drained=true"),
            "leak at stop: {a}"
        );
    }
}
