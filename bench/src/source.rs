//! The `gen` subcommand: a traffic source on one interface, either the kernel's XDP
//! live-frames mode (`--source live`, the default: the fastest source on this lab) or an
//! AF_XDP socket (`--source xsk`: IMIX and pcap replay).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use isopath_datapath::xsk::if_index;
use serde_json::json;

use crate::{
    bpf::{GenState, LiveGen},
    wire::{FrameSize, FrameSpec, Probe, parse_mac},
    xsk::{self, XskGen, progress},
};

/// Which source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    /// Live frames where the kernel runs them from this process, else the AF_XDP socket (and
    /// the AF_XDP socket for IMIX and pcap replay, which only it sends); the report's
    /// `source` says which ran, and `fallback` why when live frames were refused.
    Auto,
    /// BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (~2M frames per call), XDP_TX.
    Live,
    /// An AF_XDP socket (copy mode on veth).
    Xsk,
}

/// Header fields of generated frames (defaults: the lab's t0 → far bridge).
#[derive(Debug, Clone, Args)]
pub(crate) struct HeaderArgs {
    /// Source MAC.
    #[arg(long, default_value = "02:00:00:00:00:01", value_parser = parse_mac)]
    pub(crate) src_mac: [u8; 6],
    /// Destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:02", value_parser = parse_mac)]
    pub(crate) dst_mac: [u8; 6],
    /// IPv6 instead of IPv4.
    #[arg(long)]
    pub(crate) ipv6: bool,
    /// Tag frames with this 802.1Q VLAN id.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..4095))]
    pub(crate) vlan: Option<u16>,
    #[arg(long, default_value = "198.18.0.1")]
    pub(crate) src_ip: Ipv4Addr,
    #[arg(long, default_value = "198.18.0.2")]
    pub(crate) dst_ip: Ipv4Addr,
    #[arg(long, default_value = "2001:2::1")]
    pub(crate) src_ip6: Ipv6Addr,
    #[arg(long, default_value = "2001:2::2")]
    pub(crate) dst_ip6: Ipv6Addr,
    /// UDP source port of flow 0: flow f uses sport + f % 4096.
    #[arg(long, default_value_t = 10000)]
    pub(crate) sport: u16,
    /// UDP destination port of flow 0: flow f uses dport + f / 4096.
    #[arg(long, default_value_t = 9)]
    pub(crate) dport: u16,
    /// Send the way back of the flows: each flow's ports swapped (run with the addresses and
    /// MACs swapped, so a reverse source replies on exactly the forward source's 5-tuples).
    #[arg(long)]
    pub(crate) mirror: bool,
}

impl HeaderArgs {
    pub(crate) fn spec(&self) -> FrameSpec {
        FrameSpec {
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            vlan: self.vlan,
            ipv6: self.ipv6,
            src4: self.src_ip,
            dst4: self.dst_ip,
            src6: self.src_ip6,
            dst6: self.dst_ip6,
            sport_base: self.sport,
            dport_base: self.dport,
            mirror: self.mirror,
        }
    }
}

/// Arguments of `gen`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GenArgs {
    /// Interface to transmit on.
    #[arg(long)]
    pub(crate) iface: String,
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    pub(crate) source: Source,
    /// Frame size on the wire with FCS (64..=1518), or `imix` (xsk source only).
    #[arg(long, default_value = "64")]
    pub(crate) size: FrameSize,
    /// Number of flows: distinct UDP 5-tuples, frame n in flow n % flows (ports: see --sport,
    /// --dport; the xsk source takes up to 65535, the live source as many as the destination
    /// ports hold: dport + (flows - 1) / 4096 <= 65535).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) flows: u32,
    /// Target rate in frames per second (k/M suffixes); 0 = unlimited.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub(crate) rate: u64,
    /// Token bucket depth in frames (live source).
    #[arg(long, default_value_t = 64)]
    pub(crate) burst: u64,
    /// How long to send.
    #[arg(long, value_parser = crate::parse_secs)]
    pub(crate) secs: Duration,
    /// Core to pin to.
    #[arg(long)]
    pub(crate) core: Option<usize>,
    /// Send one back-to-back burst of exactly this many frames (at the source's full speed;
    /// the live source takes no --rate with it) and stop; --secs still bounds the run.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) count: Option<u32>,
    /// Replay the frames of this pcap file instead of generating probes (xsk source).
    #[arg(long)]
    pub(crate) pcap: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) headers: HeaderArgs,
}

/// Parses a rate: `0`, `250000`, `500k`, `1.5M`.
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|e| format!("rate {s:?}: {e}"))?;
    if !(0.0..=1e9).contains(&v) || !v.is_finite() {
        return Err(format!("rate {s:?} out of range"));
    }
    Ok((v * mul).round() as u64)
}

pub(crate) fn run(a: &GenArgs) -> Result<()> {
    let stop = crate::bpf::stop_flag()?;
    let spec = a.headers.spec();
    let mut fallback = None;
    let source = match a.source {
        Source::Auto if a.pcap.is_some() || a.size == FrameSize::Imix => Source::Xsk,
        Source::Auto => {
            let ifindex = if_index(&a.iface).with_context(|| format!("interface {}", a.iface))?;
            match crate::bpf::probe_live(ifindex) {
                Ok(()) => Source::Live,
                Err(e) => {
                    let why = format!("{e:#}");
                    eprintln!(
                        "gen: the kernel refuses XDP live frames ({why}); sending from an AF_XDP \
                         socket instead"
                    );
                    fallback = Some(why);
                    Source::Xsk
                }
            }
        }
        s => s,
    };
    let mut out = match source {
        Source::Xsk => {
            let replay = match &a.pcap {
                Some(p) => crate::pcap::read(p)?,
                None => Vec::new(),
            };
            let flows = u16::try_from(a.flows).map_err(|_| match &fallback {
                Some(why) => anyhow::anyhow!(
                    "{} flows need the live source, which the kernel refuses here ({why}); the \
                     AF_XDP source takes at most 65535",
                    a.flows
                ),
                None => anyhow::anyhow!("--source xsk takes at most 65535 flows"),
            })?;
            let g = XskGen {
                spec,
                size: a.size,
                flows,
                rate_pps: a.rate,
                replay,
                count: a.count.map(u64::from),
            };
            xsk::send(&a.iface, &g, a.secs, a.core, &stop)?
        }
        Source::Live | Source::Auto => {
            if a.pcap.is_some() {
                bail!("--pcap needs --source xsk");
            }
            let FrameSize::Fixed(size) = a.size else {
                bail!("IMIX needs --source xsk (the live source sends one template)");
            };
            live(a, &spec, size, &stop)?
        }
    };
    if let Some(why) = fallback {
        out["fallback"] = json!(why);
    }
    crate::print_json(&out)
}

fn live(
    a: &GenArgs,
    spec: &FrameSpec,
    size: usize,
    stop: &Arc<AtomicBool>,
) -> Result<serde_json::Value> {
    if size < spec.min_size() {
        bail!(
            "frame size {size} is below {} for this header stack",
            spec.min_size()
        );
    }
    if a.count.is_some() && a.rate > 0 {
        // The program paces by turning iterations over the rate into drops, and a counted run
        // is one call of `count` iterations: paced, it would send almost none of them.
        bail!("--count sends one back-to-back burst: it cannot be paced with --rate");
    }
    let last_dport = u32::from(spec.dport_base) + (a.flows - 1) / u32::from(crate::wire::PORT_SPAN);
    if last_dport > u32::from(u16::MAX) {
        bail!(
            "{} flows from destination port {} need ports up to {last_dport}",
            a.flows,
            spec.dport_base
        );
    }
    crate::bpf::pin(a.core)?;
    let template = spec.build(
        size,
        Probe {
            flow: 0,
            seq: 0,
            ts: 0,
        },
    );
    let o = spec.offsets();
    let state = GenState {
        rate_pps: a.rate,
        burst: a.burst.max(1),
        payload_off: o.probe as u32,
        csum_off: o.csum as u32,
        sport_off: o.sport as u32,
        flows: a.flows,
        sport_base: u32::from(spec.sport_base),
        dport_base: u32::from(spec.dport_base),
        mirror: u32::from(spec.mirror),
        hdr: template[..(o.probe + crate::wire::PROBE_LEN).min(crate::bpf::HDR_MAX)].to_vec(),
        ..GenState::default()
    };
    let ifindex = if_index(&a.iface).with_context(|| format!("interface {}", a.iface))?;
    let g = Arc::new(LiveGen::new(state)?);
    let start = Instant::now();
    let deadline = start + a.secs;
    let done = Arc::new(AtomicBool::new(false));
    // Progress from a second thread: BPF_PROG_RUN blocks for a whole call.
    let reporter = {
        let (g, done) = (g.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            let mut next = start + Duration::from_secs(1);
            while !done.load(Ordering::Relaxed) {
                crate::bpf::sleep_until(next, &done);
                if let Ok(s) = g.state() {
                    progress(
                        &json!({"t": start.elapsed().as_secs_f64(), "sent": s.sent, "pps": s.sent - last}),
                    );
                    last = s.sent;
                }
                next += Duration::from_secs(1);
            }
        })
    };
    eprintln!("ready");
    let r = g.run(&template, ifindex, deadline, stop, a.count);
    done.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    r?;
    let secs = start.elapsed().as_secs_f64();
    let s = g.state()?;
    Ok(json!({
        "source": "live",
        "iface": a.iface,
        "size": size,
        "sent": s.sent,
        "paced": s.paced,
        "bytes": s.sent * template.len() as u64,
        "secs": secs,
        "rate_pps": s.sent as f64 / secs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("250000"), Ok(250_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("x").is_err());
    }
}
