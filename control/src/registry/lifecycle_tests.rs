//! A device's life without a lab: the context records every step (events, quiesces,
//! detaches) in the order the registry takes them, and the clock is the test's.

use std::time::{Duration, Instant};

use super::{lifecycle::Usage, *};

/// What the registry did, in order: "listener: event", "close NAME", "quiesce", "detach NAME".
#[derive(Default)]
struct Cx {
    steps: Vec<String>,
    quiesces: usize,
}

impl Teardown<()> for Cx {
    fn close(&mut self, _: DeviceId, dev: &mut Device<()>) {
        self.steps.push(format!("close {}", dev.name));
    }

    fn quiesce(&mut self, _: &[DeviceId]) {
        self.quiesces += 1;
        self.steps.push("quiesce".into());
    }

    fn detach(&mut self, _: DeviceId, dev: &mut Device<()>) {
        self.steps.push(format!("detach {}", dev.name));
    }
}

struct Rec {
    name: &'static str,
    /// The veto it returns for the events it refuses.
    veto: fn(Event) -> Option<Veto>,
}

impl Listener<(), Cx> for Rec {
    fn name(&self) -> &'static str {
        self.name
    }

    fn event(&mut self, ev: Event, _: &Devices<()>, cx: &mut Cx) -> Result<(), Veto> {
        cx.steps.push(format!("{}: {ev:?}", self.name));
        (self.veto)(ev).map_or(Ok(()), Err)
    }
}

fn never(_: Event) -> Option<Veto> {
    None
}

fn rec(name: &'static str, veto: fn(Event) -> Option<Veto>) -> Box<Rec> {
    Box::new(Rec { name, veto })
}

fn port(name: &str, up: bool) -> Device<()> {
    Device {
        flags: Flags {
            up,
            cross_connected: false,
        },
        ..Device::new(name, DeviceKind::Port, ())
    }
}

fn reg() -> Registry<(), Cx> {
    Registry::new()
}

#[test]
fn a_register_veto_carries_its_errno_and_rolls_back_completely() {
    let mut r = Registry::with_options(
        (),
        Options {
            max_index: 3,
            ..Options::default()
        },
    );
    r.listen(rec("low", never), -10);
    r.listen(rec("high", never), 10);
    r.listen(
        rec("refuser", |e| {
            matches!(e, Event::Register(DeviceId(2)))
                .then(|| Veto::new(Errno::ENOSPC, "no slot left"))
        }),
        0,
    );
    r.listen(rec("high-2", never), 10);
    assert_eq!(r.listeners(), ["high", "high-2", "refuser", "low"]);
    let mut cx = Cx::default();
    let e = r.register(port("p0", true), &mut cx).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOSPC);
    assert_eq!(
        e,
        RegistryError::Vetoed(Veto::new(Errno::ENOSPC, "no slot left"))
    );
    assert_eq!(
        cx.steps,
        [
            "high: Register(DeviceId(2))",
            "high-2: Register(DeviceId(2))",
            "refuser: Register(DeviceId(2))",
            "high: Unregister(DeviceId(2))",
            "high-2: Unregister(DeviceId(2))",
        ],
        "the rollback reaches those told before, in chain order, and no one else"
    );
    // Nothing visible, nothing on the todo list, the name and the index free again.
    assert_eq!(r.devices().len(), 1, "the loopback only");
    assert!(r.devices().find("p0").is_none());
    assert_eq!(r.devices().state(DeviceId(2)), None);
    assert_eq!(r.devices().unregistering().count(), 0);
    // The allocator moves on (3), then wraps to the released 2 (once the refuser is gone).
    r.chain = Chain::default();
    assert_eq!(r.register(port("p0", false), &mut cx), Ok(DeviceId(3)));
    assert_eq!(r.register(port("p1", false), &mut cx), Ok(DeviceId(2)));
    assert_eq!(
        r.register(port("p2", false), &mut cx),
        Err(RegistryError::NoIndex)
    );
}

#[test]
fn names_are_validated_as_linux_does() {
    use name::{NameError::*, validate};
    assert_eq!(validate("eth0"), Ok(()));
    assert_eq!(validate("a23456789012345"), Ok(()), "15 bytes");
    assert_eq!(validate("..."), Ok(()));
    assert_eq!(validate(""), Err(Empty));
    assert_eq!(validate("a234567890123456"), Err(TooLong(16)));
    assert_eq!(
        validate("ééééééééé"),
        Err(TooLong(18)),
        "bytes, not characters"
    );
    assert_eq!(validate("."), Err(Dot));
    assert_eq!(validate(".."), Err(Dot));
    assert_eq!(validate("a/b"), Err(BadChar('/')));
    assert_eq!(validate("a b"), Err(BadChar(' ')));
    assert_eq!(validate("a\tb"), Err(BadChar('\t')));
    assert_eq!(validate("a\nb"), Err(BadChar('\n')));
    assert_eq!(validate("eth0:1"), Err(BadChar(':')));
    assert_eq!(validate("a\0"), Err(BadChar('\0')));
    let mut r = reg();
    r.listen(rec("a", never), 0);
    let mut cx = Cx::default();
    let e = r.register(port("up 0", true), &mut cx).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert_eq!(e.to_string(), "\"up 0\": the name contains ' '");
    assert!(cx.steps.is_empty(), "refused before any listener");
    assert_eq!(r.devices().len(), 1);
}

#[test]
fn the_loopback_comes_with_the_registry_and_cannot_be_unregistered() {
    let mut r = reg();
    r.listen(rec("a", never), 0);
    let lo = r.devices().get(LOOPBACK).unwrap();
    assert_eq!((lo.name.as_str(), lo.kind), ("lo", DeviceKind::Loopback));
    assert_eq!(r.loopback(), DeviceId(1));
    assert_eq!(lo.mtu, Some(65_536));
    assert_eq!(lo.iff(), Iff(0x1_0049));
    assert_eq!(lo.iff().to_string(), "LOOPBACK,UP,RUNNING,LOWER_UP");
    assert_eq!(lo.life.refs(), 1, "the registry's own reference");
    let mut cx = Cx::default();
    let p0 = r.register(port("p0", true), &mut cx).unwrap();
    assert_eq!(p0, DeviceId(2), "the first device after the loopback");
    cx.steps.clear();
    let e = r
        .unregister_many(&[p0, LOOPBACK], Instant::now(), &mut cx)
        .unwrap_err();
    assert_eq!(e, RegistryError::Loopback("lo".into()));
    assert_eq!(e.errno(), Errno::EOPNOTSUPP);
    assert_eq!(
        e.to_string(),
        "lo is the loopback device: it cannot be unregistered (it goes last, with the registry)"
    );
    assert!(cx.steps.is_empty(), "nothing was asked or done");
    assert_eq!(r.stats(), Stats::default());
    assert_eq!(r.devices().state(p0), Some(RegState::Registered));
    assert_eq!(
        r.register(Device::new("lo2", DeviceKind::Loopback, ()), &mut cx),
        Err(RegistryError::OneLoopback)
    );
    // A sink: what is sent to it is counted and dropped.
    assert_eq!(r.loopback_sink(3), 3);
    assert_eq!(r.loopback_sink(5), 8);
    let lo = r.devices().get(LOOPBACK).unwrap();
    assert_eq!(lo.life.tx_drop_loopback(), 8);
    assert_eq!(r.devices().get(p0).unwrap().life.tx_drop_loopback(), 0);
    // Freed last, after a device still waiting on the todo list.
    let p1 = r.register(port("p1", false), &mut cx).unwrap();
    let held = r.hold(p1, Holder::Capture).unwrap();
    r.unregister_many(&[p1], Instant::now(), &mut cx).unwrap();
    let order: Vec<String> = r.drain().into_iter().map(|d| d.name).collect();
    assert_eq!(order, ["p0", "p1", "lo"]);
    drop(held);
}

#[test]
fn unregister_many_closes_quiesces_notifies_detaches_quiesces_and_frees() {
    let mut r = reg();
    r.listen(rec("a", never), 0);
    let mut cx = Cx::default();
    let p0 = r.register(port("p0", true), &mut cx).unwrap();
    let p1 = r.register(port("p1", false), &mut cx).unwrap();
    let p2 = r.register(port("p2", true), &mut cx).unwrap();
    cx.steps.clear();
    let t0 = Instant::now();
    let done = r.unregister_many(&[p0, p1], t0, &mut cx).unwrap();
    assert_eq!(
        cx.steps,
        [
            "a: PreUnregister(DeviceId(2))",
            "a: PreUnregister(DeviceId(3))",
            "a: Down(DeviceId(2))",
            "close p0",
            "close p1",
            "quiesce",
            "a: Unregister(DeviceId(2))",
            "detach p0",
            "a: Unregister(DeviceId(3))",
            "detach p1",
            "quiesce",
        ],
        "only the device that was up goes DOWN; the owner closes both before the first quiesce"
    );
    let freed: Vec<(DeviceId, &str)> = done
        .freed
        .iter()
        .map(|(i, d)| (*i, d.name.as_str()))
        .collect();
    assert_eq!(freed, [(p0, "p0"), (p1, "p1")]);
    assert!(done.freed.iter().all(|(_, d)| !d.flags.up));
    assert!(done.waiting.is_empty());
    assert_eq!(
        r.stats(),
        Stats {
            quiesces: 2,
            batches: 1,
            unregistered: 2,
            freed: 2
        }
    );
    assert_eq!(r.devices().state(p0), None);
    assert_eq!(r.devices().state(p2), Some(RegState::Registered));
    assert!(r.devices().find("p0").is_none());
}

#[test]
fn a_batch_needs_two_quiesces_whatever_its_size() {
    let mut r = reg();
    let mut cx = Cx::default();
    let one = r.register(port("one", true), &mut cx).unwrap();
    r.unregister_many(&[one], Instant::now(), &mut cx).unwrap();
    assert_eq!((r.stats().quiesces, cx.quiesces), (2, 2));
    let ids: Vec<DeviceId> = (0..1000)
        .map(|i| r.register(port(&format!("p{i}"), true), &mut cx).unwrap())
        .collect();
    assert_eq!(r.devices().len(), 1001);
    let done = r.unregister_many(&ids, Instant::now(), &mut cx).unwrap();
    assert_eq!(done.freed.len(), 1000);
    assert_eq!(
        (r.stats().quiesces, cx.quiesces),
        (4, 4),
        "2 for the batch of 1000"
    );
    assert_eq!(r.stats().batches, 2);
    assert_eq!(r.stats().freed, 1001);
    assert_eq!(r.devices().len(), 1);
}

#[test]
fn a_held_device_waits_reported_every_10_s_and_is_freed_when_its_last_reference_goes() {
    let mut r = reg();
    let mut cx = Cx::default();
    let p0 = r.register(port("p0", true), &mut cx).unwrap();
    let capture = r.hold(p0, Holder::Capture).unwrap();
    let flush = r.hold(p0, Holder::PendingFlush).unwrap();
    assert_eq!(r.devices().get(p0).unwrap().life.refs(), 3);
    let t0 = Instant::now();
    let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
    let done = r.unregister_many(&[p0], t0, &mut cx).unwrap();
    assert!(done.freed.is_empty());
    assert_eq!(
        done.waiting,
        [Waiting {
            id: p0,
            name: "p0".into(),
            refs: 2
        }],
        "the registry's reference went; the two holders' stay"
    );
    assert_eq!(r.devices().state(p0), Some(RegState::Unregistering));
    assert_eq!(RegState::Unregistering.to_string(), "unregistering");
    assert!(r.devices().find("p0").is_none(), "no longer visible");
    assert_eq!(
        r.devices().unregistering().map(|d| d.0).collect::<Vec<_>>(),
        [p0]
    );
    assert!(matches!(
        r.hold(p0, Holder::DumpCursor),
        Err(RegistryError::NoDevice(_))
    ));
    // The name is free at once (the index is not).
    let again = r.register(port("p0", false), &mut cx).unwrap();
    assert_ne!(again, p0);
    let msgs = |rep: TodoReport<()>| -> Vec<String> {
        assert!(rep.freed.is_empty());
        rep.waiting.iter().map(ToString::to_string).collect()
    };
    assert!(msgs(r.poll_todo(s(0.0))).is_empty());
    assert!(msgs(r.poll_todo(s(9.999))).is_empty());
    assert_eq!(
        msgs(r.poll_todo(s(10.0))),
        ["unregister: waiting for p0 to become free. Usage count = 2"]
    );
    assert!(msgs(r.poll_todo(s(10.0))).is_empty(), "once per step");
    assert!(msgs(r.poll_todo(s(15.0))).is_empty());
    assert_eq!(msgs(r.poll_todo(s(20.0))).len(), 1);
    drop(capture);
    assert!(
        msgs(r.poll_todo(s(21.0))).is_empty(),
        "one reference still held"
    );
    // A late poll reports once and keeps to the 10 s steps.
    assert_eq!(
        msgs(r.poll_todo(s(47.0))),
        ["unregister: waiting for p0 to become free. Usage count = 1"]
    );
    assert!(msgs(r.poll_todo(s(49.9))).is_empty());
    assert_eq!(msgs(r.poll_todo(s(50.0))).len(), 1);
    // The last reference goes: freed that moment, not at the next step.
    let (id, dev) = r.release(flush).expect("freed by the last release");
    assert_eq!((id, dev.name.as_str()), (p0, "p0"));
    assert_eq!(dev.life.refs(), 0);
    assert_eq!(r.devices().state(p0), None);
    assert_eq!(r.stats().freed, 1);
    let rep = r.poll_todo(s(60.0));
    assert!(rep.freed.is_empty() && rep.waiting.is_empty());
}

#[test]
fn a_reference_dropped_anywhere_frees_at_the_next_poll_and_the_interval_is_configurable() {
    let mut r = Registry::with_options(
        (),
        Options {
            wait_interval: Duration::from_secs(1),
            ..Options::default()
        },
    );
    let mut cx = Cx::default();
    let p0 = r.register(port("p0", false), &mut cx).unwrap();
    let cursor = r.hold(p0, Holder::DumpCursor).unwrap();
    let t0 = Instant::now();
    r.unregister_many(&[p0], t0, &mut cx).unwrap();
    assert!(
        r.poll_todo(t0 + Duration::from_millis(999))
            .waiting
            .is_empty()
    );
    let rep = r.poll_todo(t0 + Duration::from_secs(1));
    assert_eq!(rep.waiting.len(), 1);
    assert_eq!(rep.waiting[0].refs, 1);
    std::thread::spawn(move || drop(cursor)).join().unwrap();
    let rep = r.poll_todo(t0 + Duration::from_millis(1001));
    assert_eq!(rep.freed.len(), 1, "freed at the first poll after the drop");
    assert!(rep.waiting.is_empty());
}

#[test]
fn an_index_is_reused_only_after_its_last_reference_goes() {
    let mut r = Registry::with_options(
        (),
        Options {
            max_index: 3,
            ..Options::default()
        },
    );
    let mut cx = Cx::default();
    let a = r.register(port("a", false), &mut cx).unwrap();
    let b = r.register(port("b", false), &mut cx).unwrap();
    assert_eq!((a, b), (DeviceId(2), DeviceId(3)));
    let cursor = r.hold(a, Holder::DumpCursor).unwrap();
    r.unregister_many(&[a], Instant::now(), &mut cx).unwrap();
    let e = r.register(port("c", false), &mut cx).unwrap_err();
    assert_eq!(
        e,
        RegistryError::NoIndex,
        "2 is still referenced, 3 registered"
    );
    assert_eq!(e.errno(), Errno::EBUSY);
    assert!(r.release(cursor).is_some());
    assert_eq!(r.register(port("c", false), &mut cx), Ok(DeviceId(2)));
    // With room to spare the allocator moves on rather than reuse a freed index at once.
    let mut r = reg();
    let a = r.register(port("a", false), &mut cx).unwrap();
    r.unregister_many(&[a], Instant::now(), &mut cx).unwrap();
    assert_eq!(r.register(port("a", false), &mut cx), Ok(DeviceId(3)));
}

#[test]
fn bond_membership_holds_a_reference_until_the_member_leaves() {
    let mut r = reg();
    r.listen(
        rec("bonding", |e| {
            matches!(
                e,
                Event::Join {
                    port: DeviceId(4),
                    ..
                }
            )
            .then(|| Veto::new(Errno::ENOSPC, "full"))
        }),
        0,
    );
    let mut cx = Cx::default();
    let bond = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut cx)
        .unwrap();
    let p0 = r.register(port("p0", true), &mut cx).unwrap();
    let p1 = r.register(port("p1", true), &mut cx).unwrap();
    r.join(p0, bond, &mut cx).unwrap();
    let m = r.devices().get(p0).unwrap();
    assert_eq!((m.life.refs(), m.life.held_by(Holder::BondMember)), (2, 1));
    assert!(m.iff().contains(Iff::SLAVE | Iff::UP));
    assert!(
        m.iff().contains(Iff::RUNNING),
        "an unknown operational state runs"
    );
    assert!(!m.iff().contains(Iff::LOWER_UP), "but has no known carrier");
    assert!(r.devices().get(bond).unwrap().iff().contains(Iff::MASTER));
    // A vetoed join gives its reference back.
    assert!(r.join(p1, bond, &mut cx).is_err());
    assert_eq!(r.devices().get(p1).unwrap().life.refs(), 1);
    // A member unregistered leaves first, so nothing lingers.
    let done = r.unregister_many(&[p0], Instant::now(), &mut cx).unwrap();
    assert_eq!(done.freed.len(), 1);
    // Registered as a member from the start: held from the start.
    let mut p2 = port("p2", false);
    p2.master = Some(bond);
    let p2 = r.register(p2, &mut cx).unwrap();
    assert_eq!(
        r.devices()
            .get(p2)
            .unwrap()
            .life
            .held_by(Holder::BondMember),
        1
    );
    r.leave(p2, bond, &mut cx).unwrap();
    assert_eq!(r.devices().get(p2).unwrap().life.refs(), 1);
}

#[test]
fn a_usage_count_never_goes_below_zero() {
    let u = Usage::default();
    u.put(Holder::Capture);
    assert_eq!(u.held(Holder::Capture), 0);
}

#[test]
fn promiscuity_counts_the_operator_once_and_each_capture() {
    use PromiscFlag::*;
    let mut r = reg();
    let mut cx = Cx::default();
    let p = r.register(port("p0", true), &mut cx).unwrap();
    let pr = |count, flag| Ok(Promiscuity { count, flag });
    // The operator: on, on, off, off.
    assert_eq!(r.set_promisc(p, true), pr(1, Set));
    assert!(r.devices().get(p).unwrap().iff().contains(Iff::PROMISC));
    assert_eq!(r.set_promisc(p, true), pr(1, Unchanged));
    assert_eq!(r.set_promisc(p, false), pr(0, Cleared));
    assert!(!r.devices().get(p).unwrap().iff().contains(Iff::PROMISC));
    assert_eq!(r.set_promisc(p, false), pr(0, Unchanged));
    // Two captures.
    assert_eq!(r.set_promiscuity(p, 1), pr(1, Set));
    assert_eq!(r.set_promiscuity(p, 1), pr(2, Unchanged));
    assert_eq!(r.set_promiscuity(p, -1), pr(1, Unchanged));
    assert_eq!(r.set_promiscuity(p, -1), pr(0, Cleared));
    // Both: the flag goes with the last of them.
    assert_eq!(r.set_promisc(p, true), pr(1, Set));
    assert_eq!(r.set_promiscuity(p, 1), pr(2, Unchanged));
    assert_eq!(r.set_promisc(p, true), pr(2, Unchanged));
    assert_eq!(r.set_promisc(p, false), pr(1, Unchanged));
    assert!(r.devices().get(p).unwrap().life.promiscuity() == 1);
    assert_eq!(r.set_promiscuity(p, -1), pr(0, Cleared));
    // Underflow, even with the operator's on: a capture cannot take the operator's count.
    let e = r.set_promiscuity(p, -1).unwrap_err();
    assert_eq!(e, RegistryError::PromiscUnderflow("p0".into()));
    assert_eq!(e.errno(), Errno::EINVAL);
    assert_eq!(r.set_promisc(p, true), pr(1, Set));
    assert!(r.set_promiscuity(p, -1).is_err());
    assert_eq!(r.devices().get(p).unwrap().life.promiscuity(), 1);
    // Overflow: refused, never wraps.
    assert_eq!(r.set_promiscuity(p, i32::MAX), pr(1 << 31, Unchanged));
    assert_eq!(r.set_promiscuity(p, i32::MAX), pr(u32::MAX, Unchanged));
    let e = r.set_promiscuity(p, 1).unwrap_err();
    assert_eq!(e, RegistryError::PromiscOverflow("p0".into()));
    assert_eq!(e.errno(), Errno::EOVERFLOW);
    assert_eq!(r.devices().get(p).unwrap().life.promiscuity(), u32::MAX);
    assert_eq!(r.set_promisc(p, false), pr(u32::MAX - 1, Unchanged));
    assert_eq!(r.set_promiscuity(p, 1).map(|p| p.count), Ok(u32::MAX));
    assert!(matches!(
        r.set_promisc(p, true),
        Err(RegistryError::PromiscOverflow(_))
    ));
    assert!(matches!(
        r.set_promiscuity(DeviceId(99), 1),
        Err(RegistryError::NoDevice(_))
    ));
}

#[test]
fn set_mtu_records_the_kernel_s_mtu_and_emits_change_only_when_it_changed() {
    let mut r = reg();
    r.listen(rec("a", never), 0);
    let mut cx = Cx::default();
    let p = r.register(port("p0", true), &mut cx).unwrap();
    cx.steps.clear();
    assert_eq!(r.set_mtu(p, 3000, &mut cx), Ok(true));
    assert_eq!(r.devices().get(p).unwrap().mtu, Some(3000));
    assert_eq!(
        r.set_mtu(p, 3000, &mut cx),
        Ok(false),
        "unchanged: no event"
    );
    assert_eq!(cx.steps, ["a: Change(DeviceId(2))"]);
    assert!(r.set_mtu(DeviceId(99), 1500, &mut cx).is_err());
}
