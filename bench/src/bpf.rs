//! isopath-bench's own XDP programs (`src/bpf/bench.bpf.c`): the live-frames traffic source
//! and the XDP_DROP receive ceiling.

use std::{
    ffi::OsStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder, ProgramInput};

const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench.bpf.o"));
/// `BPF_F_TEST_XDP_LIVE_FRAMES` (include/uapi/linux/bpf.h).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 2;
/// Frames per `BPF_PROG_RUN` call: small calls make the source bursty (it sleeps between calls
/// while the receiver's ring overflows), see shared/peers/README.md pitfall 11.
pub(crate) const FRAMES_PER_CALL: u32 = 1 << 21;
const MIN_FRAMES_PER_CALL: f64 = 65536.0;
const MAX_FRAMES_PER_CALL: f64 = 64.0 * 1024.0 * 1024.0;
/// Target length of one call.
const CALL_SECS: f64 = 0.5;

/// `struct gen_state` of bench.bpf.c, field for field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GenState {
    pub(crate) rate_pps: u64,
    pub(crate) burst: u64,
    pub(crate) start_ns: u64,
    pub(crate) issued: u64,
    pub(crate) sent: u64,
    pub(crate) paced: u64,
    pub(crate) payload_off: u32,
    pub(crate) csum_off: u32,
    pub(crate) sport_off: u32,
    pub(crate) flows: u32,
    pub(crate) sport_base: u32,
    pub(crate) stop: u32,
    pub(crate) dport_base: u32,
    /// Non-zero: each flow's ports swapped (the way back of the same flows).
    pub(crate) mirror: u32,
    /// The template's headers and probe, restored into every frame.
    pub(crate) hdr: Vec<u8>,
}

/// `HDR_MAX` of bench.bpf.c.
pub(crate) const HDR_MAX: usize = 80;
const GEN_STATE_LEN: usize = 6 * 8 + 10 * 4 + HDR_MAX;
/// Offset of `hdr` in `struct gen_state`.
const HDR_OFF: usize = 6 * 8 + 10 * 4;

impl GenState {
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(GEN_STATE_LEN);
        for v in [
            self.rate_pps,
            self.burst,
            self.start_ns,
            self.issued,
            self.sent,
            self.paced,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [
            self.payload_off,
            self.csum_off,
            self.sport_off,
            self.flows,
            self.sport_base,
            self.stop,
            self.hdr.len().min(HDR_MAX) as u32 & !1,
            self.dport_base,
            self.mirror,
            0,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let mut hdr = [0u8; HDR_MAX];
        let n = self.hdr.len().min(HDR_MAX);
        hdr[..n].copy_from_slice(&self.hdr[..n]);
        b.extend_from_slice(&hdr);
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .map(|s| u64::from_ne_bytes(s.try_into().unwrap()))
        };
        let u32_at = |i: usize| {
            b.get(i..i + 4)
                .map(|s| u32::from_ne_bytes(s.try_into().unwrap()))
        };
        Some(Self {
            rate_pps: u64_at(0)?,
            burst: u64_at(8)?,
            start_ns: u64_at(16)?,
            issued: u64_at(24)?,
            sent: u64_at(32)?,
            paced: u64_at(40)?,
            payload_off: u32_at(48)?,
            csum_off: u32_at(52)?,
            sport_off: u32_at(56)?,
            flows: u32_at(60)?,
            sport_base: u32_at(64)?,
            stop: u32_at(68)?,
            dport_base: u32_at(76)?,
            mirror: u32_at(80)?,
            hdr: {
                let n = (u32_at(72)? as usize).min(HDR_MAX);
                b.get(HDR_OFF..HDR_OFF + n)?.to_vec()
            },
        })
    }
}

pub(crate) fn open() -> Result<Object> {
    ObjectBuilder::default()
        .open_memory(OBJECT)
        .context("opening bench.bpf.o")?
        .load()
        .context("loading bench.bpf.o (needs CAP_BPF and CAP_NET_ADMIN)")
}

/// Whether this kernel runs XDP live frames from this process: one `BPF_PROG_RUN` of the
/// XDP_DROP program in live mode on `ifindex` (it sends nothing). `Err` carries the kernel's
/// refusal (seen: EPERM from a 6.18 kernel in a VM whose bounding set lacks CAP_SYS_RESOURCE,
/// where loading and attaching programs still works).
pub(crate) fn probe_live(ifindex: u32) -> Result<()> {
    let object = open()?;
    let prog = object
        .progs_mut()
        .find(|p| p.name() == OsStr::new("bench_drop"))
        .expect("bench.bpf.c defines bench_drop");
    let template = [0u8; 64];
    let mut ctx = Vec::with_capacity(24);
    for v in [0, template.len() as u32, 0, ifindex, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    let input = ProgramInput {
        data_in: Some(&template),
        context_in: Some(&mut ctx),
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        repeat: 1,
        ..ProgramInput::default()
    };
    prog.test_run(input)
        .map(|_| ())
        .context("BPF_PROG_RUN (live frames)")
}

/// The live-frames source, loaded.
pub(crate) struct LiveGen {
    object: Object,
}

impl std::fmt::Debug for LiveGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveGen").finish()
    }
}

impl LiveGen {
    /// Loads the program and writes its configuration.
    pub(crate) fn new(state: GenState) -> Result<Self> {
        let g = Self { object: open()? };
        g.write(state)?;
        Ok(g)
    }

    fn map(&self) -> libbpf_rs::Map<'_> {
        self.object
            .maps()
            .find(|m| m.name() == OsStr::new("gen"))
            .expect("bench.bpf.c defines the gen map")
    }

    fn write(&self, s: GenState) -> Result<()> {
        self.map()
            .update(&0u32.to_ne_bytes(), &s.to_bytes(), MapFlags::ANY)
            .context("writing the generator's state")
    }

    /// The program's state now (counters included).
    pub(crate) fn state(&self) -> Result<GenState> {
        let v = self
            .map()
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
            .ok_or_else(|| anyhow!("gen map has no entry 0"))?;
        GenState::from_bytes(&v).ok_or_else(|| anyhow!("gen map value is {} bytes", v.len()))
    }

    /// Transmits copies of `template` on interface `ifindex` until `deadline` or `stop`, in
    /// calls of about half a second each (the last one ends near the deadline); with `count`,
    /// one call of exactly `count` iterations instead (a back-to-back burst when unpaced).
    pub(crate) fn run(
        &self,
        template: &[u8],
        ifindex: u32,
        deadline: Instant,
        stop: &AtomicBool,
        count: Option<u32>,
    ) -> Result<()> {
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == OsStr::new("bench_gen"))
            .expect("bench.bpf.c defines bench_gen");
        // Frames per call: start at FRAMES_PER_CALL, then size each call to ~CALL_SECS of the
        // program's measured iteration rate (paced frames included) so that the gaps between
        // calls, when nothing is sent, stay rare, and the last call ends near the deadline.
        let mut repeat = count.unwrap_or(FRAMES_PER_CALL);
        while !stop.load(Ordering::Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let before = self.state()?;
            let t0 = Instant::now();
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex. data_end must equal the frame length; ingress_ifindex is the
            // device XDP_TX transmits on.
            let mut ctx = Vec::with_capacity(24);
            for v in [0, template.len() as u32, 0, ifindex, 0, 0] {
                ctx.extend_from_slice(&v.to_ne_bytes());
            }
            let input = ProgramInput {
                data_in: Some(template),
                context_in: Some(&mut ctx),
                flags: BPF_F_TEST_XDP_LIVE_FRAMES,
                repeat,
                ..ProgramInput::default()
            };
            if let Err(e) = prog.test_run(input) {
                // A signal (the run's stop) interrupts the call: not an error.
                if e.kind() == libbpf_rs::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("BPF_PROG_RUN (live frames)");
            }
            if count.is_some() {
                // One burst of exactly `count` iterations.
                break;
            }
            let after = self.state()?;
            let iters = (after.sent + after.paced).saturating_sub(before.sent + before.paced);
            let per_sec = iters as f64 / t0.elapsed().as_secs_f64().max(1e-6);
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            repeat = (per_sec * left.min(CALL_SECS)).clamp(MIN_FRAMES_PER_CALL, MAX_FRAMES_PER_CALL)
                as u32;
        }
        Ok(())
    }
}

/// The XDP_DROP ceiling: counts and drops every frame on an interface while it lives.
pub(crate) struct DropCounter {
    object: Object,
    _link: Link,
}

impl std::fmt::Debug for DropCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropCounter").finish()
    }
}

impl DropCounter {
    /// Attaches to `ifindex` in native mode (through a BPF link: it goes when the process does).
    pub(crate) fn attach(ifindex: u32) -> Result<Self> {
        let object = open()?;
        let link = {
            let prog = object
                .progs_mut()
                .find(|p| p.name() == OsStr::new("bench_drop"))
                .expect("bench.bpf.c defines bench_drop");
            prog.attach_xdp(ifindex as i32)
                .context("attaching bench_drop (is another XDP program attached?)")?
        };
        Ok(Self {
            object,
            _link: link,
        })
    }

    /// Frames dropped so far, summed over CPUs.
    pub(crate) fn count(&self) -> Result<u64> {
        let map = self
            .object
            .maps()
            .find(|m| m.name() == OsStr::new("drops"))
            .expect("bench.bpf.c defines the drops map");
        let per_cpu = map
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_ne_bytes)
            .sum())
    }
}

/// Pins the calling thread to `core`.
pub(crate) fn pin(core: Option<usize>) -> Result<()> {
    if let Some(id) = core
        && !core_affinity::set_for_current(core_affinity::CoreId { id })
    {
        bail!("cannot pin to core {id}");
    }
    Ok(())
}

/// A flag raised by SIGINT or SIGTERM.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// Sleeps in small steps until `until` or `stop`.
pub(crate) fn sleep_until(until: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_state_round_trips() {
        let s = GenState {
            rate_pps: 1,
            burst: 2,
            start_ns: 3,
            issued: 4,
            sent: 5,
            paced: 6,
            payload_off: 7,
            csum_off: 8,
            sport_off: 9,
            flows: 10,
            sport_base: 11,
            stop: 12,
            dport_base: 13,
            mirror: 1,
            hdr: (0..54).collect(),
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), GEN_STATE_LEN);
        assert_eq!(GenState::from_bytes(&b), Some(s));
    }
}
