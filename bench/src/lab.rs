//! Driving a veth lab from the root namespace: building and removing it with `deploy/lab.sh`,
//! running commands and primitives in its namespaces, reading kernel counters.
//!
//! Every process started here is a child of this process, stopped by pid (SIGINT, then SIGKILL
//! after a grace period) when its [`Proc`] drops; the lab is removed when its [`Lab`] drops,
//! so an error or a panic (bench builds with `panic = "abort"` only in release: errors are the
//! normal path) leaves nothing behind.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use isopath_control::client::Client;
use serde_json::Value;

/// The lab's fixed facts (see `deploy/lab.sh env`).
pub(crate) const MAC_T0: &str = "02:00:00:00:00:01";
pub(crate) const MAC_UP0: &str = "02:00:00:00:01:00";
pub(crate) const MAC_M0: &str = "02:00:00:00:01:01";
pub(crate) const MAC_BR0: &str = "02:00:00:00:00:02";

/// `deploy/lab.sh`: from the working directory if it has one, else next to this crate's source.
pub(crate) fn lab_script() -> PathBuf {
    let local = Path::new("deploy/lab.sh");
    if local.is_file() {
        return local.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab.sh")
}

/// A workspace binary: in `$ISOPATH_BIN_DIR` if set and it holds one, else next to this one
/// (`isopathd`, `isopath-bench`).
pub(crate) fn sibling_bin(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ISOPATH_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .ok_or_else(|| anyhow!("no parent dir"))?
        .join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build the workspace's binaries first (cargo build --release --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// A lab built by `lab.sh up`; dropping it runs `lab.sh down`.
#[derive(Debug)]
pub(crate) struct Lab {
    pub(crate) prefix: String,
}

impl Lab {
    pub(crate) fn up(prefix: &str) -> Result<Self> {
        if !(1..=10).contains(&prefix.len())
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("lab prefix {prefix:?}: 1 to 10 characters of [a-z0-9]");
        }
        let out = Command::new(lab_script())
            .args(["up", prefix])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            let _ = Command::new(lab_script()).args(["down", prefix]).output();
            bail!(
                "lab.sh up {prefix}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Runs a command in namespace `role` to completion; fails on a non-zero exit.
    pub(crate) fn sh(&self, role: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {args:?} in {}", self.ns(role)))?;
        if !out.status.success() {
            bail!(
                "{args:?} in {}: {}",
                self.ns(role),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`Self::sh`], ignoring failures (for clean-up steps).
    pub(crate) fn sh_quiet(&self, role: &str, args: &[&str]) {
        let _ = self.sh(role, args);
    }

    /// Starts `args` in namespace `role` (exec'd in place, so the pid is the program's).
    pub(crate) fn spawn(&self, role: &str, label: &str, args: &[String]) -> Result<Proc> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Proc::new(
            label,
            cmd.spawn().with_context(|| format!("starting {label}"))?,
        )
    }

    /// `(rx_packets, tx_packets)` of every link in namespace `role`, read at one moment.
    pub(crate) fn links_packets(&self, role: &str) -> Result<BTreeMap<String, (u64, u64)>> {
        let out = Command::new("ip")
            .args(["-n", &self.ns(role), "-s", "-j", "link", "show"])
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -s -j link show in {}", self.ns(role)))?;
        let mut m = BTreeMap::new();
        for l in v.as_array().into_iter().flatten() {
            let s = if l["stats64"].is_object() {
                &l["stats64"]
            } else {
                &l["stats"]
            };
            if let (Some(name), Some(rx), Some(tx)) = (
                l["ifname"].as_str(),
                s["rx"]["packets"].as_u64(),
                s["tx"]["packets"].as_u64(),
            ) {
                m.insert(name.to_owned(), (rx, tx));
            }
        }
        Ok(m)
    }

    /// An nftables netdev-ingress drop on `dev` in namespace `role` (the far side's `s0` and
    /// `s1`, the traffic side's `t0`): arrivals are counted by the veth's kernel counters and
    /// discarded cheaply before the bridge or the stack (this kernel has no tc classifiers).
    pub(crate) fn sink_on(&self, role: &str, dev: &str) -> Result<()> {
        let table = format!("benchsink{dev}");
        self.sh(role, &["nft", "add", "table", "netdev", &table])?;
        self.sh(
            role,
            &[
                "nft",
                "add",
                "chain",
                "netdev",
                &table,
                "in",
                &format!("{{ type filter hook ingress device {dev} priority 0; }}"),
            ],
        )?;
        self.sh(
            role,
            &["nft", "add", "rule", "netdev", &table, "in", "drop"],
        )?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_script())
            .args(["down", &self.prefix])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The latest `progress` line of a primitive, with when it arrived.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub(crate) value: Value,
    pub(crate) lines: u64,
}

/// A child process in a lab namespace, its stderr read by a thread (progress lines, `ready`).
pub(crate) struct Proc {
    label: String,
    child: Child,
    stderr: Arc<Mutex<(Vec<String>, Progress, bool)>>,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Proc {
    fn new(label: &str, mut child: Child) -> Result<Self> {
        let err = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let stderr = Arc::new(Mutex::new((Vec::new(), Progress::default(), false)));
        let s = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut g = s.lock().expect("stderr lock");
                if let Some(j) = line.strip_prefix("progress ") {
                    if let Ok(v) = serde_json::from_str(j) {
                        g.1.value = v;
                        g.1.lines += 1;
                    }
                } else if line.contains("ready") {
                    g.2 = true;
                    g.0.push(line);
                } else if g.0.len() < 200 {
                    g.0.push(line);
                }
            }
        });
        Ok(Self {
            label: label.to_owned(),
            child,
            stderr,
            reader: Some(reader),
        })
    }

    /// Waits for a stderr line containing `ready` (or, when `needle` is given, that text).
    pub(crate) fn wait_ready(&mut self, timeout: Duration, needle: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let g = self.stderr.lock().expect("stderr lock");
                let ok = match needle {
                    None => g.2,
                    Some(n) => g.0.iter().any(|l| l.contains(n)),
                };
                if ok {
                    return Ok(());
                }
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "{} exited ({st}) before it was ready: {}",
                    self.label,
                    self.stderr_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}: {}",
                    self.label,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's process id (the program's: `ip netns exec` execs in place).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn progress(&self) -> Progress {
        self.stderr.lock().expect("stderr lock").1.clone()
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lock").0.join("\n")
    }

    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the child to end by itself, then parses its stdout as JSON.
    pub(crate) fn wait_json(mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "{} still running after {timeout:?}: {}",
                    self.label,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.collect_json()
    }

    /// Stops the child (SIGINT, SIGKILL after 5 s) and parses its stdout as JSON.
    pub(crate) fn stop_json(mut self) -> Result<Value> {
        self.stop();
        self.collect_json()
    }

    fn collect_json(&mut self) -> Result<Value> {
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out)?;
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let st = self.child.wait()?;
        let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
        match line {
            Some(l) if st.success() => Ok(serde_json::from_str(l)?),
            _ => bail!(
                "{} ended with {st} and no JSON: {}",
                self.label,
                self.stderr_text()
            ),
        }
    }

    /// SIGINT (the child's clean stop), then SIGKILL after a grace period.
    pub(crate) fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // Our own child, not reaped yet (try_wait said running), so the pid is still ours.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Per-core busy time from /proc/stat.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuSample(Vec<(u64, u64)>);

impl CpuSample {
    pub(crate) fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        CpuSample(
            stat.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .map(|l| {
                    let v: Vec<u64> = l
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    let total: u64 = v.iter().take(8).sum();
                    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                    (total - idle, total)
                })
                .collect(),
        )
    }

    /// Busy percentage of each core between `self` and `later`.
    pub(crate) fn busy_since(&self, later: &CpuSample) -> Vec<f64> {
        self.0
            .iter()
            .zip(&later.0)
            .map(|(a, b)| {
                let t = b.1.saturating_sub(a.1);
                if t == 0 {
                    0.0
                } else {
                    100.0 * b.0.saturating_sub(a.0) as f64 / t as f64
                }
            })
            .collect()
    }
}

/// Sends `status` to an isopathd control socket and returns the reply as a document (the
/// reports keep it whole).
pub(crate) fn isopath_status(socket: &Path) -> Result<Value> {
    Client::new(socket)
        .with_timeout(Duration::from_secs(3))
        .line("status")
        .with_context(|| format!("status from {}", socket.display()))
}
