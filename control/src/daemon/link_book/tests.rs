//! The link book without a lab: frames handed over on the bond's real punt queue, what it
//! sends read back from the real mailbox, the clock injected.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use isopath_datapath::{
    bond::{BondShared, Inject, MAILBOX, Mailbox, Punt},
    stats::LinkState,
};

use super::LinkBook;
use crate::{
    bond::{ArpOptions, ArpValidate, Bond, BondOptions, Member, MemberLink},
    frames,
};

const BOND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
const OWN4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const VLAN4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const OWN6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

/// A book with one bond over members m0 (ifindex 10), m1 (11), ... with carrier `ups`.
fn book(opts: BondOptions, ups: &[bool], now: Instant) -> LinkBook {
    let members = ups
        .iter()
        .enumerate()
        .map(|(i, &up)| Member {
            name: format!("m{i}"),
            ifindex: 10 + i as u32,
            link: if up { MemberLink::Up } else { MemberLink::Down },
            link_failures: 0,
            prio: 0,
            speed: 10_000,
            perm_mac: String::new(),
            released: false,
        })
        .collect();
    let opts = BondOptions {
        mac: Some(BOND_MAC),
        ..opts
    };
    let bond = Bond::new("bond0", members, opts, now, SystemTime::UNIX_EPOCH);
    LinkBook {
        held_down: Vec::new(),
        links: ups
            .iter()
            .enumerate()
            .map(|(i, &up)| (format!("m{i}"), 10 + i as u32, Arc::new(LinkState::new(up))))
            .collect(),
        shared: vec![Arc::new(BondShared::new())],
        bonds: vec![bond],
        outboxes: vec![(Arc::new(Mailbox::new(MAILBOX)), None)],
        punts: vec![Arc::new(Punt::new())],
        events_out: Vec::new(),
        events_out_lost: 0,
    }
}

fn owning(addrs: &[IpAddr]) -> BondOptions {
    BondOptions {
        addresses: addrs.to_vec(),
        ..BondOptions::default()
    }
}

/// A worker hands `frame`, received on `member`, to control.
fn punt(b: &LinkBook, member: usize, frame: &[u8]) {
    b.punts[0]
        .queue
        .push(Inject::new(member, frame).unwrap())
        .unwrap();
}

/// What control queued for the workers to send: (member, frame).
fn sent(b: &LinkBook) -> Vec<(u8, Vec<u8>)> {
    std::iter::from_fn(|| b.outboxes[0].0.pop())
        .map(|i| (i.member, i.frame().to_vec()))
        .collect()
}

#[test]
fn arp_requests_for_own_addresses_are_answered_through_the_active_member() {
    let t = Instant::now();
    let mut b = book(owning(&[OWN4.into()]), &[true, true], t);
    // Arriving on the backup (m1): the answer still leaves through the active member (m0).
    punt(&b, 1, &frames::arp_request(PEER_MAC, PEER4, OWN4));
    // Not ours, and our own request seen again: no answer.
    punt(
        &b,
        0,
        &frames::arp_request(PEER_MAC, PEER4, Ipv4Addr::new(198, 18, 0, 9)),
    );
    punt(&b, 0, &frames::arp_request(BOND_MAC, OWN4, OWN4));
    b.control_frames(t, SystemTime::UNIX_EPOCH);
    let out = sent(&b);
    assert_eq!(out.len(), 1, "{out:?}");
    let (member, f) = &out[0];
    assert_eq!(*member, 0);
    let arp = frames::parse_arp(f).unwrap();
    assert_eq!(
        (arp.op, arp.sha, arp.spa, arp.tpa),
        (2, BOND_MAC, OWN4, PEER4)
    );
    assert_eq!(b.bonds[0].sent.mailbox_full, 0);
}

#[test]
fn a_vlan_s_addresses_are_answered_on_that_vlan_only() {
    let t = Instant::now();
    let opts = BondOptions {
        vlans: vec![(10, vec![VLAN4.into()])],
        ..owning(&[OWN4.into()])
    };
    let mut b = book(opts, &[true], t);
    let req = frames::arp_request(PEER_MAC, PEER4, VLAN4);
    punt(&b, 0, &frames::tag(req.clone(), Some(10)));
    // The same address asked untagged or on another VLAN is not ours there.
    punt(&b, 0, &req);
    punt(&b, 0, &frames::tag(req, Some(20)));
    // The untagged address asked on VLAN 10 is not VLAN 10's.
    punt(
        &b,
        0,
        &frames::tag(frames::arp_request(PEER_MAC, PEER4, OWN4), Some(10)),
    );
    b.control_frames(t, SystemTime::UNIX_EPOCH);
    let out = sent(&b);
    assert_eq!(out.len(), 1, "{out:?}");
    let (vid, f) = frames::untag(&out[0].1);
    assert_eq!(vid, Some(10));
    let arp = frames::parse_arp(&f).unwrap();
    assert_eq!((arp.op, arp.spa), (2, VLAN4));
}

#[test]
fn neighbour_solicitations_for_own_ipv6_addresses_get_an_advertisement() {
    let t = Instant::now();
    let mut b = book(owning(&[OWN6.into()]), &[true, true], t);
    punt(
        &b,
        0,
        &frames::neighbour_solicitation(PEER_MAC, PEER6, OWN6),
    );
    punt(
        &b,
        0,
        &frames::neighbour_solicitation(PEER_MAC, PEER6, PEER6),
    );
    b.control_frames(t, SystemTime::UNIX_EPOCH);
    let out = sent(&b);
    assert_eq!(out.len(), 1, "{out:?}");
    let nd = frames::parse_nd(&out[0].1).unwrap();
    assert_eq!((nd.kind, nd.target, nd.src_mac), (136, OWN6, BOND_MAC));
}

#[test]
fn the_arp_monitor_probes_the_active_member_once_per_interval_from_the_own_address() {
    let t = Instant::now();
    let target = Ipv4Addr::new(198, 18, 0, 254);
    let arp = ArpOptions {
        interval: Duration::from_millis(100),
        targets: vec![target],
        ns_targets: vec![],
        validate: ArpValidate::None,
        all_targets: false,
        missed_max: 2,
    };
    let opts = BondOptions {
        arp: Some(arp.clone()),
        ..owning(&[OWN4.into()])
    };
    let mut b = book(opts, &[true, true], t);
    let active = b.bonds[0].active().unwrap() as u8;
    b.control_frames(t, SystemTime::UNIX_EPOCH);
    let out = sent(&b);
    assert_eq!(out.len(), 1, "one probe: {out:?}");
    assert_eq!(out[0].0, active);
    let req = frames::parse_arp(&out[0].1).unwrap();
    assert_eq!(
        (req.op, req.sha, req.spa, req.tpa),
        (1, BOND_MAC, OWN4, target)
    );
    // Nothing before the next period, one probe at it.
    b.control_frames(t + Duration::from_millis(99), SystemTime::UNIX_EPOCH);
    assert!(sent(&b).is_empty());
    b.control_frames(t + Duration::from_millis(100), SystemTime::UNIX_EPOCH);
    assert_eq!(sent(&b).len(), 1);

    // Without an address of its own the bond has no source to probe from: it sends nothing.
    let mut quiet = book(
        BondOptions {
            arp: Some(arp),
            ..BondOptions::default()
        },
        &[true],
        t,
    );
    quiet.control_frames(t, SystemTime::UNIX_EPOCH);
    assert!(sent(&quiet).is_empty());
}

#[test]
fn carrier_loss_fails_over_sets_the_link_and_announces_through_the_new_member() {
    let t = Instant::now();
    let mut b = book(owning(&[OWN4.into(), OWN6.into()]), &[true, true], t);
    assert_eq!(b.bonds[0].active(), Some(0));
    b.carrier(10, false, t, SystemTime::UNIX_EPOCH);
    assert_eq!(b.bonds[0].active(), Some(1));
    assert_eq!(
        b.shared[0].view().active(),
        Some(1),
        "the new view is published to the workers"
    );
    assert!(!b.links[0].2.is_up(), "m0's link flag follows its carrier");
    assert!(b.links[1].2.is_up());
    let out = sent(&b);
    assert_eq!(
        out.len(),
        2,
        "one gratuitous ARP, one unsolicited NA: {out:?}"
    );
    assert!(out.iter().all(|(m, _)| *m == 1));
    let garp = frames::parse_arp(&out[0].1).unwrap();
    assert_eq!((garp.sha, garp.spa, garp.tpa), (BOND_MAC, OWN4, OWN4));
    let na = frames::parse_nd(&out[1].1).unwrap();
    assert_eq!((na.kind, na.target), (136, OWN6));
    let c = b.bonds[0].sent;
    assert_eq!((c.grat_arp, c.unsol_na, c.mailbox_full), (1, 1, 0));
    // A carrier report for an interface that is not a member changes nothing.
    b.carrier(99, false, t, SystemTime::UNIX_EPOCH);
    assert_eq!(b.bonds[0].active(), Some(1));
    assert!(sent(&b).is_empty());
}

#[test]
fn a_full_mailbox_is_counted_not_waited_for() {
    let t = Instant::now();
    let mut b = book(owning(&[OWN4.into()]), &[true], t);
    let filler = Inject::new(0, &[0u8; 60]).unwrap();
    while b.outboxes[0].0.push(filler).is_ok() {}
    punt(&b, 0, &frames::arp_request(PEER_MAC, PEER4, OWN4));
    b.control_frames(t, SystemTime::UNIX_EPOCH);
    assert_eq!(b.bonds[0].sent.mailbox_full, 1);
    assert_eq!(b.outboxes[0].0.len(), MAILBOX, "nothing pushed out");
}
