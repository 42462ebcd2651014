use std::time::{Duration, Instant, SystemTime};

use isopath_datapath::bond::BondView;

use super::*;
use crate::status::{Link, MemberState};

fn member(name: &str, up: bool) -> Member {
    Member {
        name: name.into(),
        ifindex: 0,
        link: if up { MemberLink::Up } else { MemberLink::Down },
        link_failures: 0,
        prio: 0,
        speed: 10_000,
        perm_mac: String::new(),
        released: false,
    }
}

fn bond(opts: BondOptions, ups: &[bool]) -> (Bond, Instant) {
    let now = Instant::now();
    let ms = ups
        .iter()
        .enumerate()
        .map(|(i, &u)| member(&format!("m{i}"), u))
        .collect();
    (Bond::new("bond0", ms, opts, now, SystemTime::now()), now)
}

fn view(b: &Bond) -> BondView {
    b.view()
}

#[test]
fn first_up_member_is_active_and_carrier_loss_fails_over() {
    let (mut b, t) = bond(BondOptions::default(), &[true, true]);
    assert_eq!(b.active(), Some(0));
    assert!(view(&b).accepts_rx(0) && !view(&b).accepts_rx(1));
    assert!(b.carrier(0, false, t, SystemTime::now()));
    assert_eq!(view(&b).active(), Some(1));
    assert_eq!(b.members[0].link_failures, 1);
    // Without a primary, the old member's return changes nothing.
    assert!(!b.carrier(0, true, t, SystemTime::now()));
    assert_eq!(b.active(), Some(1));
    // Both down: no active member, carrier down.
    b.carrier(1, false, t, SystemTime::now());
    b.carrier(0, false, t, SystemTime::now());
    assert_eq!(view(&b).active(), None);
    assert_eq!(b.status().carrier, Link::Down);
    b.carrier(1, true, t, SystemTime::now());
    assert_eq!(b.active(), Some(1));
}

#[test]
fn primary_reselect_policies() {
    for (policy, back) in [(Reselect::Always, true), (Reselect::Failure, false)] {
        let opts = BondOptions {
            primary: Some(0),
            primary_reselect: policy,
            ..Default::default()
        };
        let (mut b, t) = bond(opts, &[true, true]);
        assert_eq!(b.active(), Some(0));
        b.carrier(0, false, t, SystemTime::now());
        assert_eq!(b.active(), Some(1));
        b.carrier(0, true, t, SystemTime::now());
        assert_eq!(b.active() == Some(0), back, "{policy:?}");
    }
    // better: only if the primary is faster (speeds given in the config).
    for (primary_speed, back) in [(25_000, true), (10_000, false), (1_000, false)] {
        let opts = BondOptions {
            primary: Some(0),
            primary_reselect: Reselect::Better,
            ..Default::default()
        };
        let (mut b, t) = bond(opts, &[true, true]);
        b.members[0].speed = primary_speed;
        b.carrier(0, false, t, SystemTime::now());
        b.carrier(0, true, t, SystemTime::now());
        assert_eq!(b.active() == Some(0), back, "primary at {primary_speed}");
    }
}

#[test]
fn prio_picks_the_new_active() {
    let (mut b, t) = bond(BondOptions::default(), &[true, true, true]);
    b.members[2].prio = 10;
    b.carrier(0, false, t, SystemTime::now());
    assert_eq!(b.active(), Some(2));
}

#[test]
fn down_and_up_delays() {
    let opts = BondOptions {
        downdelay: Duration::from_millis(200),
        updelay: Duration::from_millis(300),
        ..Default::default()
    };
    let (mut b, t) = bond(opts, &[true, true]);
    b.carrier(0, false, t, SystemTime::now());
    assert_eq!(b.active(), Some(0), "still within downdelay");
    // Carrier back within the delay: nothing happened.
    b.carrier(0, true, t + Duration::from_millis(100), SystemTime::now());
    b.tick(t + Duration::from_millis(250), SystemTime::now());
    assert_eq!(b.active(), Some(0));
    assert_eq!(b.members[0].link_failures, 0);
    // Down for good.
    b.carrier(0, false, t + Duration::from_millis(300), SystemTime::now());
    b.tick(t + Duration::from_millis(499), SystemTime::now());
    assert_eq!(b.active(), Some(0));
    b.tick(t + Duration::from_millis(500), SystemTime::now());
    assert_eq!(b.active(), Some(1));
    // Up again: only after updelay does it count.
    b.carrier(1, false, t + Duration::from_millis(600), SystemTime::now());
    b.tick(t + Duration::from_millis(800), SystemTime::now());
    assert_eq!(b.active(), None);
    b.carrier(0, true, t + Duration::from_millis(900), SystemTime::now());
    assert_eq!(b.active(), None);
    b.tick(t + Duration::from_millis(1200), SystemTime::now());
    assert_eq!(b.active(), Some(0));
}

#[test]
fn planned_switch_drains_the_old_member_then_makes_it_backup() {
    let (mut b, t) = bond(BondOptions::default(), &[true, true]);
    assert_eq!(b.switch_to("m1", t, SystemTime::now()), Ok(true));
    let v = view(&b);
    assert_eq!(v.active(), Some(1));
    assert!(
        v.accepts_rx(0) && v.accepts_rx(1),
        "old active still accepted while draining"
    );
    b.tick(t + Duration::from_millis(499), SystemTime::now());
    assert!(view(&b).accepts_rx(0));
    b.tick(t + Duration::from_millis(500), SystemTime::now());
    assert!(!view(&b).accepts_rx(0));
    assert!(matches!(
        b.switch_to("m9", t, SystemTime::now()),
        Err(BondError::NoMember { .. })
    ));
    b.carrier(0, false, t, SystemTime::now());
    assert!(matches!(
        b.switch_to("m0", t, SystemTime::now()),
        Err(BondError::NotUp { .. })
    ));
}

#[test]
fn notifications_follow_each_change_with_repeats_and_rate_limit() {
    let mut opts = BondOptions::default();
    opts.notify.num_grat_arp = 3;
    opts.notify.num_unsol_na = 1;
    opts.notify.peer_notif_delay = Duration::from_millis(50);
    opts.notify.reannounce_min_interval = Duration::from_secs(1);
    let (mut b, t) = bond(opts, &[true, true]);
    assert_eq!(b.due(t), None, "nothing at start");
    b.carrier(0, false, t, SystemTime::now());
    let d = b.due(t).expect("first round at once");
    assert_eq!(
        (d.member, d.grat_arp, d.unsol_na, d.reannounce),
        (1, true, true, true)
    );
    assert_eq!(
        b.due(t + Duration::from_millis(49)),
        None,
        "spaced by peer_notif_delay"
    );
    let d = b.due(t + Duration::from_millis(50)).unwrap();
    assert_eq!((d.grat_arp, d.unsol_na, d.reannounce), (true, false, false));
    assert!(b.due(t + Duration::from_millis(100)).is_some());
    assert_eq!(
        b.due(t + Duration::from_millis(150)),
        None,
        "three rounds only"
    );
    // A flap within the rate limit: GARPs again, but no second re-announcement burst.
    b.carrier(1, false, t + Duration::from_millis(160), SystemTime::now());
    b.carrier(0, true, t + Duration::from_millis(160), SystemTime::now());
    let d = b.due(t + Duration::from_millis(170)).unwrap();
    assert!(d.grat_arp && !d.reannounce);
    assert_eq!(b.sent.rate_limited, 1);
    // num_grat_arp = 0, reannounce off: nothing at all.
    let mut opts = BondOptions::default();
    opts.notify.num_grat_arp = 0;
    opts.notify.num_unsol_na = 0;
    opts.notify.reannounce = false;
    let (mut b, t) = bond(opts, &[true, true]);
    b.carrier(0, false, t, SystemTime::now());
    let d = b.due(t).unwrap();
    assert!(!d.grat_arp && !d.unsol_na && !d.reannounce);
    assert_eq!(b.due(t + Duration::from_secs(1)), None);
}

#[test]
fn arp_monitor_fails_over_when_the_target_goes_silent_and_rotates_probes() {
    use std::net::Ipv4Addr;
    let target = Ipv4Addr::new(198, 18, 0, 2);
    let opts = BondOptions {
        arp: Some(ArpOptions {
            interval: Duration::from_millis(100),
            targets: vec![target],
            ns_targets: Vec::new(),
            validate: ArpValidate::Active,
            all_targets: false,
            missed_max: 2,
        }),
        mac: Some([2, 0, 0, 0, 0xb, 1]),
        ..Default::default()
    };
    let (mut b, t) = bond(opts, &[true, true]);
    let w = SystemTime::now();
    let reply = ArpSeen {
        spa: target,
        tpa: Ipv4Addr::new(198, 18, 0, 10),
        sha: [2, 0, 0, 0, 0, 2],
        reply: true,
    };
    let chatter = ArpSeen {
        spa: Ipv4Addr::new(198, 18, 0, 77),
        tpa: target,
        sha: [2, 0, 0, 0, 0, 9],
        reply: false,
    };
    assert_eq!(
        b.arp_tick(t, w).map(|p| p.member),
        Some(0),
        "the active member probes"
    );
    // Replies on m0 keep it up; chatter keeps the backup up (validate = active).
    for i in 1..=5 {
        let now = t + Duration::from_millis(100 * i);
        b.arp_rx(0, &reply, now);
        b.arp_rx(1, &chatter, now);
        b.arp_tick(now, w);
        assert_eq!(b.active(), Some(0));
    }
    // Carrier never moves, carrier events cannot bring a member up under ARP.
    assert!(!b.carrier(0, true, t, w));
    // The target goes silent on m0 (chatter alone does not count for the active member).
    for i in 6..=9 {
        let now = t + Duration::from_millis(100 * i);
        b.arp_rx(0, &chatter, now);
        b.arp_rx(1, &chatter, now);
        b.arp_tick(now, w);
    }
    assert_eq!(b.active(), Some(1), "failed over to the backup");
    // (m0 hears chatter, so under validate = active it may count as a live backup again.)
    assert_eq!(b.members[0].link_failures, 1);
    // Everything silent: no active member, probes rotate over the members.
    let mut probed = std::collections::BTreeSet::new();
    for i in 10..=16 {
        let p = b.arp_tick(t + Duration::from_millis(100 * i), w).unwrap();
        probed.insert(p.member);
    }
    assert_eq!(b.active(), None);
    assert_eq!(probed.len(), 2, "each member got to probe");
    // A reply through m0 brings it back.
    b.arp_rx(0, &reply, t + Duration::from_millis(1700));
    b.arp_tick(t + Duration::from_millis(1700), w);
    assert_eq!(b.active(), Some(0));
}

/// A bond whose ARP monitor probes 198.18.0.2 every 50 ms (validate = active, missed_max 2),
/// with `primary` active, and the two frames its members hear each period: the target's reply
/// and the bond's own probe flooded back by the switch.
fn arp_bond_50ms(primary: usize) -> (Bond, Instant, ArpSeen, ArpSeen) {
    use std::net::Ipv4Addr;
    let target = Ipv4Addr::new(198, 18, 0, 2);
    let own = [2, 0, 0, 0, 0xb, 1];
    let opts = BondOptions {
        arp: Some(ArpOptions {
            interval: Duration::from_millis(50),
            targets: vec![target],
            ns_targets: Vec::new(),
            validate: ArpValidate::Active,
            all_targets: false,
            missed_max: 2,
        }),
        mac: Some(own),
        primary: Some(primary),
        ..Default::default()
    };
    let (b, t) = bond(opts, &[true, true]);
    let reply = ArpSeen {
        spa: target,
        tpa: Ipv4Addr::new(198, 18, 0, 10),
        sha: [2, 0, 0, 0, 0, 2],
        reply: true,
    };
    let flooded_probe = ArpSeen {
        spa: Ipv4Addr::new(198, 18, 0, 10),
        tpa: target,
        sha: own,
        reply: false,
    };
    (b, t, reply, flooded_probe)
}

/// The active member's path dies: the backup, which heard only the active member's probes
/// flooded back (and went quiet a moment *before* the last reply), must still be up when
/// the active member is judged, so the bond fails over directly instead of to no member.
#[test]
fn arp_monitor_backup_outlives_the_active_members_silence() {
    // The active member is the one judged last in a period (index 1), the case where equal
    // windows let the backup expire first.
    let (mut b, t, reply, flooded_probe) = arp_bond_50ms(1);
    let w = SystemTime::now();
    let ms = |n: u64| t + Duration::from_millis(n);
    let mut last = 0;
    for i in 0..10u64 {
        // Each period: the probe floods back to the backup, the reply arrives on the active
        // member 0.2 ms later; then the monitor runs.
        b.arp_rx(0, &flooded_probe, ms(50 * i));
        b.arp_rx(1, &reply, ms(50 * i) + Duration::from_micros(200));
        b.arp_tick(ms(50 * i + 10), w);
        last = 50 * i + 10;
    }
    assert_eq!(b.active(), Some(1));
    // The active member's far end goes silent: neither member hears anything any more.
    let mut t_fail = None;
    for k in 1..=20u64 {
        b.arp_tick(ms(last + 50 * k), w);
        if b.active() != Some(1) {
            t_fail = Some(k);
            break;
        }
    }
    assert!(
        t_fail.is_some_and(|k| k <= 3),
        "detected within missed_max + 1 periods"
    );
    assert_eq!(b.active(), Some(0), "failed over directly to the backup");
    assert!(
        !b.events().any(|e| e.kind == EventKind::NoActiveMember),
        "never without an active member"
    );
}

/// The same silence, but the monitor's period that judges it runs late (a busy core held the
/// control loop): both the active member's and the backup's windows have expired when it runs.
/// The bond must still fail over to the backup, and a backup that is really dead must follow
/// once its grace as the new active member runs out.
#[test]
fn arp_monitor_fails_over_directly_when_the_judging_period_runs_late() {
    for active in [0usize, 1] {
        let (mut b, t, reply, flooded_probe) = arp_bond_50ms(active);
        let backup = 1 - active;
        let w = SystemTime::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        for i in 0..10u64 {
            b.arp_rx(backup, &flooded_probe, ms(50 * i));
            b.arp_rx(active, &reply, ms(50 * i) + Duration::from_micros(200));
            b.arp_tick(ms(50 * i + 10), w);
        }
        assert_eq!(b.active(), Some(active));
        // Silence from 450 ms on. One period on time (500 ms, both fresh), then the next
        // runs 250 ms late: at 800 ms both windows (125 ms, 175 ms) have long expired.
        b.arp_tick(ms(510), w);
        assert_eq!(b.active(), Some(active), "still within its window");
        b.arp_tick(ms(800), w);
        assert_eq!(
            b.active(),
            Some(backup),
            "failed over directly to the backup"
        );
        assert!(
            !b.events().any(|e| e.kind == EventKind::NoActiveMember),
            "never without an active member"
        );
        assert_eq!(
            (
                b.members[active].link_failures,
                b.members[backup].link_failures
            ),
            (1, 0)
        );
        // Nothing is heard through the new active member either: its grace (missed_max
        // intervals and a half) runs out and the bond has no member left.
        for k in 1..=4u64 {
            b.arp_tick(ms(800 + 50 * k), w);
        }
        assert_eq!(b.active(), None, "a dead backup follows after its grace");
        assert_eq!(b.members[backup].link_failures, 1);
    }
}

#[test]
fn fail_over_mac_active_follows_the_active_member() {
    let mut opts = BondOptions {
        fail_over_mac: FailOverMac::Active,
        ..Default::default()
    };
    opts.mac = Some([2, 0, 0, 0, 9, 9]);
    let (mut b, t) = bond(opts, &[true, true]);
    b.members[0].perm_mac = "02:00:00:00:01:01".into();
    b.members[1].perm_mac = "02:00:00:00:01:02".into();
    assert_eq!(b.own_mac(), [2, 0, 0, 0, 1, 1]);
    b.carrier(0, false, t, SystemTime::now());
    assert_eq!(b.own_mac(), [2, 0, 0, 0, 1, 2]);
    b.opts.fail_over_mac = FailOverMac::None;
    assert_eq!(b.own_mac(), [2, 0, 0, 0, 9, 9]);
}

#[test]
fn options_change_at_run_time_and_bad_ones_change_nothing() {
    let (mut b, t) = bond(BondOptions::default(), &[true, true]);
    let w = SystemTime::now();
    assert_eq!(b.active(), Some(0));
    b.set_option("primary", "m1", t, w).unwrap();
    assert_eq!(b.active(), Some(1), "a new primary takes over");
    b.set_option("all_members_active", "true", t, w).unwrap();
    assert!(b.view().accepts_rx(0));
    b.set_option("downdelay", "200", t, w).unwrap();
    assert_eq!(b.opts.downdelay, Duration::from_millis(200));
    let before = b.opts.clone();
    for (k, v) in [
        ("primary", "m9"),
        ("miimon", "-1"),
        ("num_grat_arp", "999"),
        ("colour", "red"),
        ("reannounce", "maybe"),
    ] {
        let e = b.set_option(k, v, t, w).unwrap_err();
        assert!(e.to_string().contains(k), "{e}");
    }
    assert_eq!(b.opts, before);
    assert_eq!(
        b.set_option("miimon", "60001", t, w),
        Err(BondError::BadValue {
            key: "miimon".into(),
            value: "60001".into(),
            expected: "milliseconds, at most 60000",
        })
    );
    assert!(b.set_option("miimon", "60000", t, w).is_ok());
    b.set_option("miimon", "10", t, w).unwrap();
    assert_eq!(
        b.set_option("primary", "m9", t, w),
        Err(BondError::NotAMember {
            bond: b.name.clone(),
            member: "m9".into()
        })
    );
    assert!(matches!(
        b.set_option("colour", "red", t, w),
        Err(BondError::UnknownOption(k)) if k == "colour"
    ));
    assert!(
        b.events()
            .any(|e| e.kind == EventKind::OptionChanged && e.detail == "primary = m1")
    );
}

#[test]
fn members_are_released_and_added_at_run_time() {
    let (mut b, t) = bond(BondOptions::default(), &[true, true]);
    let w = SystemTime::now();
    assert_eq!(b.release("m0", t, w), Ok(0));
    assert_eq!(
        b.active(),
        Some(1),
        "the active member left: failover at once"
    );
    assert!(b.release("m0", t, w).is_err(), "already released");
    b.carrier(1, false, t, w);
    assert_eq!(b.active(), None, "a released member is never selected");
    assert_eq!(
        b.enslave(member("m0", true), t, w),
        Ok(0),
        "re-added in its old place"
    );
    assert_eq!(b.active(), Some(0));
    assert_eq!(b.enslave(member("m2", true), t, w), Ok(2), "a new port");
    assert!(b.enslave(member("m2", true), t, w).is_err());
    assert_eq!(b.status().members[2].state, MemberState::Backup);
}

#[test]
fn events_are_kept_bounded_and_stamped() {
    let (mut b, t) = bond(BondOptions::default(), &[true, true]);
    // Each carrier report stamped with its own wall time: 1 s after the epoch plus i ms.
    let wall = |i: usize| UNIX_EPOCH + Duration::from_secs(1) + Duration::from_millis(i as u64);
    let n = EVENT_LOG + 10;
    for i in 0..n {
        b.carrier(1, i % 2 == 1, t, wall(i));
    }
    // Bounded: the oldest went first, the newest are kept, in order.
    assert_eq!(b.events().count(), EVENT_LOG);
    let stamps: Vec<u64> = b.events().map(|e| e.unix_ns).collect();
    assert_eq!(stamps.last(), Some(&unix_ns(wall(n - 1))));
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "in time order");
    // Stamped with the time the caller passed: the first kept is that of report n - 1024.
    assert_eq!(stamps[0], unix_ns(wall(n - EVENT_LOG)));
    // Each report of m1's carrier is one member_link event, down and up alternating.
    assert!(
        b.events()
            .all(|e| e.kind == EventKind::MemberLink && e.member.as_deref() == Some("m1"))
    );
    let last = b.events().last().unwrap();
    assert!(last.detail.contains("up"), "{last:?}");
}

#[test]
fn option_names_are_their_serde_names() {
    for r in [Reselect::Always, Reselect::Better, Reselect::Failure] {
        assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        assert_eq!(Reselect::parse(r.name()), Some(r));
    }
    for m in [FailOverMac::None, FailOverMac::Active, FailOverMac::Follow] {
        assert_eq!(serde_json::to_value(m).unwrap(), m.name());
        assert_eq!(FailOverMac::parse(m.name()), Some(m));
    }
    for v in [
        ArpValidate::None,
        ArpValidate::Active,
        ArpValidate::Backup,
        ArpValidate::All,
    ] {
        assert_eq!(serde_json::to_value(v).unwrap(), v.name());
        assert_eq!(ArpValidate::parse(v.name()), Some(v));
    }
    assert_eq!(Reselect::parse("sometimes"), None);
    assert_eq!(Reselect::parse("Always"), None);
    for k in [
        EventKind::MemberLink,
        EventKind::DrainDone,
        EventKind::OptionChanged,
        EventKind::ActiveChanged,
        EventKind::NoActiveMember,
        EventKind::MemberReleased,
        EventKind::MemberAdded,
    ] {
        assert_eq!(serde_json::to_value(k).unwrap(), k.name());
    }
}

#[test]
fn option_bounds_are_shared() {
    assert_eq!(option_ms(MAX_OPTION_MS), Some(Duration::from_secs(60)));
    assert_eq!(option_ms(MAX_OPTION_MS + 1), None);
    assert_eq!(notify_count(255), Some(255));
    assert_eq!(notify_count(256), None);
}
