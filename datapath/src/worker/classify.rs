//! The classify pass: once per burst, each frame is parsed once ([`crate::wire::parse`]) and
//! its [`Verdict`] written into a preallocated array. Everything after it in the burst (runt
//! drops, the punt to control, backup gating, seen-MAC learning, the TX byte count and, next,
//! the flow update) reads the verdicts; none walks the frames' headers again.
//!
//! # Design
//! A frame that does not parse is still forwarded (the appliance is a wire first) and its
//! reason counted ([`Tally::errors`]); with `strict` it is dropped instead
//! ([`Fate::DropParse`]). What a frame is to the appliance itself (its own MAC: consumed;
//! neighbour discovery: copied) is decided from the L2 fields alone, so a malformed ARP still
//! reaches the ARP monitor, as before the views existed.
//!
//! The verdict carries what the flow stage needs without reading the frame: L3/L4 offsets,
//! the L3 length, the protocol, ports (or ICMP identifier and type), TCP flags, VLAN ids and
//! fragment state ([`Headers`]); the addresses sit at fixed offsets from `l3`.

use crate::{
    params::MAX_BURST,
    wire::{self, FrameClass, Headers, ParseError, ethernet},
};

/// What the stages after the classify pass do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Fate {
    /// Goes on to the output (possibly copied to control as well: [`Verdict::punt`]).
    #[default]
    Forward,
    /// Shorter than an Ethernet header: dropped (`rx_drop_runt`).
    DropRunt,
    /// For the appliance itself (its own MAC): handed to control, not forwarded.
    Consume,
    /// Did not parse and the port is strict: dropped (`rx_drop_parse_*`).
    DropParse,
}

/// One frame's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// What the parse found ([`Headers::error`] says why it stopped, if it did).
    pub hdr: Headers,
    /// Where it goes.
    pub fate: Fate,
    /// Copied to control (ARP, neighbour solicitations, frames to the appliance's MAC).
    pub punt: bool,
}

/// How a socket's frames are judged: read once per burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// The bond's MAC as a 48-bit number (0: none): unicast frames to it are consumed.
    pub own_mac: u64,
    /// Copy neighbour discovery to control: ARP, and IPv6 to a solicited-node group (NS),
    /// untagged or with one 802.1Q tag (the bond's VLANs).
    pub punt_nd: bool,
    /// Drop frames that do not parse (`[flows] strict`).
    pub strict: bool,
}

/// What one burst held, summed during the pass so that counters are updated once per burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Bytes of all frames.
    pub bytes: u64,
    /// Frames whose fate is not [`Fate::Forward`].
    pub not_forwarded: u32,
    /// Runts.
    pub runts: u32,
    /// Frames consumed by control.
    pub consumed: u32,
    /// Frames dropped because they did not parse (strict).
    pub parse_drops: u32,
    /// Those, by reason.
    pub parse_drops_by: [u32; ParseError::COUNT],
    /// Frames copied to control.
    pub punts: u32,
    /// Frames that did not parse, by reason.
    pub errors: [u32; ParseError::COUNT],
    /// Whether `errors` has a non-zero entry.
    pub any_error: bool,
    /// Frames by class (runts excluded).
    pub classes: [u32; FrameClass::COUNT],
    /// Frames with at least one VLAN tag.
    pub tagged: u32,
}

/// Judges one frame.
#[inline]
pub fn classify(frame: &[u8], policy: &Policy) -> Verdict {
    let mut v = Verdict::default();
    classify_into(frame, policy, &mut v);
    v
}

/// [`classify`] into `v` (all of it overwritten), the pass's form: no verdict is copied.
/// Returns true for a plain frame: parsed to L4 without error, forwarded and not copied to
/// control (all a burst's [`Tally`] then needs is its class).
#[inline]
pub fn classify_into(frame: &[u8], policy: &Policy, v: &mut Verdict) -> bool {
    if wire::parse_common(frame, &mut v.hdr) {
        // Untagged IPv4/IPv6 without error (the straight-line parse): only the own MAC and, for
        // IPv6, a neighbour solicitation's group can make it more than forwarded.
        let hdr = &v.hdr;
        let own = policy.own_mac != 0 && ethernet::mac_u64(&hdr.dst) == policy.own_mac;
        let nd = policy.punt_nd && hdr.ethertype == 0x86dd && hdr.dst[..3] == [0x33, 0x33, 0xff];
        v.fate = if own { Fate::Consume } else { Fate::Forward };
        v.punt = own || nd;
        return !v.punt;
    }
    classify_other(frame, policy, v);
    false
}

/// [`classify_into`] of a frame off the straight-line parse (tagged, fragmented, with IPv4
/// options or IPv6 extension headers, not IP, malformed, a runt).
#[inline(never)]
fn classify_other(frame: &[u8], policy: &Policy, v: &mut Verdict) {
    wire::parse_layered_into(frame, &mut v.hdr);
    if frame.len() < ethernet::HEADER_LEN {
        v.fate = Fate::DropRunt;
        v.punt = false;
        return;
    }
    let hdr = &v.hdr;
    let own = policy.own_mac != 0 && ethernet::mac_u64(&hdr.dst) == policy.own_mac;
    let nd = policy.punt_nd
        && hdr.untagged_or_dot1q()
        && (hdr.ethertype == 0x0806
            || (hdr.ethertype == 0x86dd && hdr.dst[..3] == [0x33, 0x33, 0xff]));
    v.fate = if own {
        Fate::Consume
    } else if hdr.error.is_some() && policy.strict {
        Fate::DropParse
    } else {
        Fate::Forward
    };
    v.punt = own || nd;
}

impl Tally {
    /// Counts one verdict that is not plain (see [`classify_into`]), bytes excepted.
    #[inline(never)]
    fn count(&mut self, v: &Verdict) {
        if v.fate == Fate::DropRunt {
            self.runts += 1;
        } else {
            self.classes[v.hdr.class as usize] += 1;
            if let Some(e) = v.hdr.error {
                self.errors[e as usize] += 1;
                self.any_error = true;
            }
        }
        self.consumed += u32::from(v.fate == Fate::Consume);
        if v.fate == Fate::DropParse
            && let Some(e) = v.hdr.error
        {
            self.parse_drops += 1;
            self.parse_drops_by[e as usize] += 1;
        }
        self.punts += u32::from(v.punt);
        self.tagged += u32::from(v.hdr.tags > 0);
    }
}

/// The verdicts of one burst, in frame order, and its [`Tally`]. Allocated once per worker.
#[derive(Debug)]
pub struct Verdicts {
    v: Box<[Verdict]>,
    len: usize,
    /// Bytes of the frames of `v[..len]`.
    bytes: u64,
    tally: Tally,
}

impl Default for Verdicts {
    fn default() -> Self {
        Self::new()
    }
}

impl Verdicts {
    /// Room for a burst of [`MAX_BURST`] frames.
    pub fn new() -> Self {
        Self {
            v: vec![Verdict::default(); MAX_BURST as usize].into_boxed_slice(),
            len: 0,
            bytes: 0,
            tally: Tally::default(),
        }
    }

    /// The classify pass: judges `frames` (at most [`MAX_BURST`]; the rest are ignored) in
    /// order, replacing the previous burst's verdicts.
    #[inline]
    pub fn classify<'a>(&mut self, frames: impl Iterator<Item = &'a [u8]>, policy: Policy) {
        let mut t = Tally::default();
        let mut n = 0;
        for (v, f) in self.v.iter_mut().zip(frames) {
            t.bytes += f.len() as u64;
            if classify_into(f, &policy, v) {
                t.classes[v.hdr.class as usize] += 1;
            } else {
                t.count(v);
            }
            n += 1;
        }
        t.not_forwarded = t.runts + t.consumed + t.parse_drops;
        self.len = n;
        // Frames are at most 4096 bytes (`FrameSize::MAX`): each verdict's `hdr.len` is the
        // frame's whole length, so the burst's bytes are its verdicts' bytes.
        self.bytes = t.bytes;
        self.tally = t;
    }

    /// This burst's verdicts.
    #[inline]
    pub fn as_slice(&self) -> &[Verdict] {
        &self.v[..self.len]
    }

    /// This burst's tally.
    #[inline]
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Number of verdicts.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the verdicts of forwarded frames, in order (after the burst's frames were kept
    /// the same way), so that index `k` still names frame `k`.
    #[inline]
    pub fn keep_forwarded(&mut self) {
        let mut kept = 0;
        let mut bytes = 0;
        for i in 0..self.len {
            if self.v[i].fate == Fate::Forward {
                self.v[kept] = self.v[i];
                bytes += u64::from(self.v[i].hdr.len);
                kept += 1;
            }
        }
        self.len = kept;
        self.bytes = bytes;
    }

    /// Bytes of the first `n` frames (what a TX ring took).
    #[inline]
    pub fn bytes_of_first(&self, n: usize) -> u64 {
        if n >= self.len {
            return self.bytes;
        }
        self.as_slice()[..n]
            .iter()
            .map(|v| u64::from(v.hdr.len))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EthernetFrame, Ipv4Packet};

    const OWN: [u8; 6] = [2, 0, 0, 0, 0xb, 1];

    fn udp4(dst: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_dst(dst);
        e.set_src([2, 0, 0, 0, 0, 1]);
        e.set_ethertype(wire::EtherType::Ipv4);
        Ipv4Packet::new_unchecked(&mut f[14..]).fill(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            wire::IpProtocol::Udp,
            8,
            64,
            true,
        );
        f[38..40].copy_from_slice(&8u16.to_be_bytes());
        f
    }

    fn policy(own: bool, nd: bool, strict: bool) -> Policy {
        Policy {
            own_mac: if own { ethernet::mac_u64(&OWN) } else { 0 },
            punt_nd: nd,
            strict,
        }
    }

    #[test]
    fn punts_arp_and_ns_copies_and_consumes_own_mac() {
        let mut arp = vec![0u8; 60];
        arp[..6].copy_from_slice(&[0xff; 6]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let v = classify(&arp, &policy(true, true, false));
        assert_eq!(
            (v.punt, v.fate),
            (true, Fate::Forward),
            "broadcast ARP: copy"
        );
        assert!(
            !classify(&arp, &policy(true, false, false)).punt,
            "ND punting off"
        );
        arp[..6].copy_from_slice(&OWN);
        let v = classify(&arp, &policy(true, true, false));
        assert_eq!(
            (v.punt, v.fate),
            (true, Fate::Consume),
            "ARP to us: consumed"
        );
        let v = classify(&udp4(OWN), &policy(true, false, false));
        assert_eq!((v.punt, v.fate), (true, Fate::Consume), "IPv4 to us");
        assert!(
            !classify(&udp4(OWN), &policy(false, false, false)).punt,
            "no own MAC"
        );
        let v = classify(&arp[..10], &policy(true, true, false));
        assert_eq!((v.punt, v.fate), (false, Fate::DropRunt), "runt");
        let mut ns = vec![0u8; 78];
        ns[..6].copy_from_slice(&[0x33, 0x33, 0xff, 0, 0, 0x10]);
        ns[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(classify(&ns, &policy(true, true, false)).punt, "NS: copy");
        ns[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        assert!(
            !classify(&ns, &policy(true, true, false)).punt,
            "all-nodes: not ND"
        );
        // On a VLAN: the EtherType after one 802.1Q tag decides; QinQ is not the bond's VLAN.
        let mut tagged = vec![0u8; 64];
        tagged[..6].copy_from_slice(&[0xff; 6]);
        tagged[12..18].copy_from_slice(&[0x81, 0x00, 0x00, 100, 0x08, 0x06]);
        assert!(
            classify(&tagged, &policy(true, true, false)).punt,
            "tagged ARP"
        );
        tagged[16..18].copy_from_slice(&[0x08, 0x00]);
        assert!(
            !classify(&tagged, &policy(true, true, false)).punt,
            "tagged IPv4"
        );
        let mut qinq = vec![0u8; 68];
        qinq[..6].copy_from_slice(&[0xff; 6]);
        qinq[12..22].copy_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 100, 0x08, 0x06]);
        assert!(
            !classify(&qinq, &policy(true, true, false)).punt,
            "QinQ ARP"
        );
        assert!(
            !classify(&tagged[..16], &policy(true, true, false)).punt,
            "tag without EtherType"
        );
    }

    #[test]
    fn errors_are_forwarded_unless_strict_and_the_tally_adds_up() {
        let good = udp4([2, 0, 0, 0, 0, 2]);
        let mut bad = good.clone();
        bad[24] ^= 0xff; // IPv4 checksum
        let mut lldp = good.clone();
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        let frames = [&good[..], &bad[..], &good[..10], &lldp[..], &udp4(OWN)[..]];
        let mut vs = Verdicts::new();
        vs.classify(frames.iter().copied(), policy(true, false, false));
        let fates: Vec<Fate> = vs.as_slice().iter().map(|v| v.fate).collect();
        use Fate::*;
        assert_eq!(fates, [Forward, Forward, DropRunt, Forward, Consume]);
        let t = *vs.tally();
        assert_eq!(t.bytes, 60 * 4 + 10);
        assert_eq!(
            (t.runts, t.consumed, t.parse_drops, t.not_forwarded),
            (1, 1, 0, 2)
        );
        assert_eq!(t.errors[ParseError::BadIpv4Checksum as usize], 1);
        assert!(t.any_error);
        assert_eq!(t.classes, [3, 0, 0, 1, 0]);
        vs.classify(frames.iter().copied(), policy(true, false, true));
        let fates: Vec<Fate> = vs.as_slice().iter().map(|v| v.fate).collect();
        assert_eq!(fates, [Forward, DropParse, DropRunt, Forward, Consume]);
        assert_eq!(vs.tally().not_forwarded, 3);
        vs.keep_forwarded();
        assert_eq!(vs.len(), 2);
        assert_eq!(vs.bytes_of_first(1), 60);
    }
}
