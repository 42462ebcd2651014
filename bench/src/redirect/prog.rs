//! The xdp-redirect peer's programs held by a process: the loader ([`Redirect`], [`Pass`]) and
//! the primitives `isopath-bench xdp-redirect` and `isopath-bench xdp-pass`.

use std::{
    ffi::OsStr,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use isopath_datapath::xsk::if_index;
use libbpf_rs::{Link, MapCore, MapFlags, Object, Xdp, XdpFlags};
use serde_json::json;

use super::{Mode, Via};
use crate::bpf;

/// An XDP attachment: a BPF link (ends with the process) or, in skb mode, a netlink attach
/// detached on drop.
enum Attach {
    Link(#[expect(dead_code, reason = "held for its drop")] Link),
    Netlink { ifindex: i32, flags: XdpFlags },
}

fn attach(object: &Object, prog: &str, ifindex: u32, mode: Mode) -> Result<Attach> {
    let p = object
        .progs_mut()
        .find(|p| p.name() == OsStr::new(prog))
        .with_context(|| format!("bench.bpf.c defines no {prog}"))?;
    match mode {
        Mode::Native => Ok(Attach::Link(p.attach_xdp(ifindex as i32).with_context(
            || format!("attaching {prog} to ifindex {ifindex} (another XDP program attached?)"),
        )?)),
        Mode::Generic => {
            let flags = XdpFlags::SKB_MODE | XdpFlags::UPDATE_IF_NOEXIST;
            Xdp::new(p.as_fd())
                .attach(ifindex as i32, flags)
                .with_context(|| format!("attaching {prog} to ifindex {ifindex} in skb mode"))?;
            Ok(Attach::Netlink {
                ifindex: ifindex as i32,
                flags: XdpFlags::SKB_MODE,
            })
        }
    }
}

/// One direction of the cross-connect: its own object (maps), program attached to the input.
pub(crate) struct Redirect {
    object: Object,
    attach: Option<Attach>,
}

impl Redirect {
    /// Loads the programs, points the output at `out` and attaches the `via` program to `input`.
    pub(crate) fn attach(input: u32, out: u32, via: Via, mode: Mode) -> Result<Self> {
        let object = bpf::open()?;
        for name in ["redir_out", "redir_port"] {
            object
                .maps()
                .find(|m| m.name() == OsStr::new(name))
                .with_context(|| format!("bench.bpf.c defines no {name}"))?
                .update(&0u32.to_ne_bytes(), &out.to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("writing {name} (output ifindex {out})"))?;
        }
        let prog = match via {
            Via::Map => "bench_redirect_map",
            Via::Direct => "bench_redirect",
        };
        let a = attach(&object, prog, input, mode)?;
        Ok(Self {
            object,
            attach: Some(a),
        })
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        // Detaching names the interface and mode only; any program's fd will do.
        if let Some(Attach::Netlink { ifindex, flags }) = self.attach.take()
            && let Some(p) = self.object.progs().next()
        {
            let _ = Xdp::new(p.as_fd()).detach(ifindex, flags);
        }
    }
}

/// XDP_PASS on an interface (native, through a BPF link).
pub(crate) struct Pass {
    _object: Object,
    _attach: Attach,
}

impl Pass {
    pub(crate) fn attach(ifindex: u32) -> Result<Self> {
        let object = bpf::open()?;
        let a = attach(&object, "bench_pass", ifindex, Mode::Native)?;
        Ok(Self {
            _object: object,
            _attach: a,
        })
    }
}

/// Arguments of `xdp-redirect`.
#[derive(Debug, Clone, Args)]
pub(crate) struct XdpRedirectArgs {
    /// Input interface.
    #[arg(long)]
    iface: String,
    /// Output interface.
    #[arg(long)]
    to: String,
    /// Also redirect frames arriving on --to back to --iface.
    #[arg(long)]
    back: bool,
    #[arg(long, value_enum, default_value_t = Via::Map)]
    via: Via,
    #[arg(long, value_enum, default_value_t = Mode::Native)]
    mode: Mode,
    #[arg(long, value_parser = crate::parse_secs)]
    secs: Duration,
}

/// Arguments of `xdp-pass`.
#[derive(Debug, Clone, Args)]
pub(crate) struct XdpPassArgs {
    /// Interfaces (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    iface: Vec<String>,
    #[arg(long, value_parser = crate::parse_secs)]
    secs: Duration,
}

/// `xdp-redirect`: holds the cross-connect until `--secs` or SIGINT.
pub(crate) fn run_redirect(a: &XdpRedirectArgs) -> Result<()> {
    let stop = bpf::stop_flag()?;
    let (i, o) = (if_index(&a.iface)?, if_index(&a.to)?);
    let mut held = vec![Redirect::attach(i, o, a.via, a.mode)?];
    if a.back {
        held.push(Redirect::attach(o, i, a.via, a.mode)?);
    }
    eprintln!("ready");
    let t = Instant::now();
    bpf::sleep_until(t + a.secs, &stop);
    drop(held);
    crate::print_json(
        &json!({"iface": a.iface, "to": a.to, "back": a.back, "via": a.via,
                              "mode": a.mode, "secs": t.elapsed().as_secs_f64()}),
    )
}

/// `xdp-pass`: XDP_PASS on each interface until `--secs` or SIGINT.
pub(crate) fn run_pass(a: &XdpPassArgs) -> Result<()> {
    let stop = bpf::stop_flag()?;
    let held = a
        .iface
        .iter()
        .map(|n| Pass::attach(if_index(n)?))
        .collect::<Result<Vec<_>>>()?;
    eprintln!("ready");
    let t = Instant::now();
    bpf::sleep_until(t + a.secs, &stop);
    drop(held);
    crate::print_json(&json!({"iface": a.iface, "secs": t.elapsed().as_secs_f64()}))
}
