//! The registry and its chain, without a lab: listeners record what they see in the context.

use std::time::Instant;

use super::*;

/// What the listeners saw: (listener, event).
type Log = Vec<(&'static str, Event)>;

/// The steps of an unregistration are `lifecycle_tests`'; here they do nothing.
impl Teardown<()> for Log {
    fn quiesce(&mut self, _: &[DeviceId]) {}

    fn detach(&mut self, _: DeviceId, _: &mut Device<()>) {}
}

struct Rec {
    name: &'static str,
    /// Refuses the events this returns true for.
    veto: fn(Event) -> bool,
}

impl Listener<(), Log> for Rec {
    fn name(&self) -> &'static str {
        self.name
    }

    fn event(&mut self, ev: Event, _: &Devices<()>, log: &mut Log) -> Result<(), Veto> {
        log.push((self.name, ev));
        if (self.veto)(ev) {
            return Err(Veto::new(Errno::EBUSY, format!("{} refuses", self.name)));
        }
        Ok(())
    }
}

fn never(_: Event) -> bool {
    false
}

fn rec(name: &'static str, veto: fn(Event) -> bool) -> Box<Rec> {
    Box::new(Rec { name, veto })
}

fn port(name: &str, ifindex: u32) -> Device<()> {
    Device {
        ifindex: Some(ifindex),
        ..Device::new(name, DeviceKind::Port, ())
    }
}

fn names(log: &Log) -> Vec<&'static str> {
    log.iter().map(|e| e.0).collect()
}

#[test]
fn listeners_run_by_priority_then_in_registration_order() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("low", never), -10);
    r.listen(rec("mid-a", never), 0);
    r.listen(rec("high", never), 10);
    r.listen(rec("mid-b", never), 0);
    r.listen(rec("mid-c", never), 0);
    assert_eq!(r.listeners(), ["high", "mid-a", "mid-b", "mid-c", "low"]);
    let mut log = Log::new();
    let id = r.register(port("p0", 2), &mut log).unwrap();
    assert_eq!(names(&log), ["high", "mid-a", "mid-b", "mid-c", "low"]);
    assert!(log.iter().all(|e| e.1 == Event::Register(id)));
}

#[test]
fn a_veto_on_register_rolls_back_and_its_errno_reaches_the_caller() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("first", never), 20);
    r.listen(rec("second", never), 10);
    r.listen(rec("refuser", |e| matches!(e, Event::Register(_))), 0);
    r.listen(rec("never-told", never), -10);
    let mut log = Log::new();
    let e = r.register(port("p0", 2), &mut log).unwrap_err();
    assert_eq!(e.errno(), Errno::EBUSY);
    assert_eq!(e.to_string(), "refuser refuses");
    assert_eq!(r.devices().len(), 1, "a vetoed device is not in the table");
    // The two told before get UNREGISTER, in chain order; the refuser and those after it
    // get nothing more.
    let id = match log[0].1 {
        Event::Register(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        log,
        [
            ("first", Event::Register(id)),
            ("second", Event::Register(id)),
            ("refuser", Event::Register(id)),
            ("first", Event::Unregister(id)),
            ("second", Event::Unregister(id)),
        ]
    );
    // The name is free again (once the refuser is gone), and the id is not reused.
    r.chain = Chain::default();
    let again = r.register(port("p0", 2), &mut log).unwrap();
    assert!(again > id);
}

#[test]
fn names_are_unique_and_a_master_must_be_a_bond() {
    let mut r: Registry<(), Log> = Registry::new();
    let mut log = Log::new();
    let p = r.register(port("p0", 2), &mut log).unwrap();
    assert_eq!(
        r.register(port("p0", 3), &mut log),
        Err(RegistryError::Exists("p0".into()))
    );
    let mut child = port("p1", 3);
    child.master = Some(p);
    let e = r.register(child, &mut log).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert_eq!(r.devices().len(), 2, "the loopback and p0");
}

#[test]
fn join_is_vetoable_and_a_veto_unlinks_and_tells_those_before() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("bonding", never), 10);
    r.listen(rec("xconnect", |e| matches!(e, Event::Join { .. })), 0);
    let mut log = Log::new();
    let bond = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let p = r.register(port("p0", 2), &mut log).unwrap();
    log.clear();
    let e = r.join(p, bond, &mut log).unwrap_err();
    assert_eq!(
        e,
        RegistryError::Vetoed(Veto::new(Errno::EBUSY, "xconnect refuses"))
    );
    assert_eq!(r.devices().get(p).unwrap().master, None);
    assert_eq!(
        log,
        [
            ("bonding", Event::Join { port: p, bond }),
            ("xconnect", Event::Join { port: p, bond }),
            ("bonding", Event::Leave { port: p, bond }),
        ]
    );
}

#[test]
fn join_and_leave_check_the_topology() {
    let mut r: Registry<(), Log> = Registry::new();
    let mut log = Log::new();
    let b0 = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let b1 = r
        .register(Device::new("bond1", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let p = r.register(port("p0", 2), &mut log).unwrap();
    assert!(matches!(
        r.join(b0, b1, &mut log),
        Err(RegistryError::Kind { .. })
    ));
    assert!(matches!(
        r.leave(p, b0, &mut log),
        Err(RegistryError::NotMember { .. })
    ));
    r.join(p, b0, &mut log).unwrap();
    assert!(matches!(
        r.join(p, b0, &mut log),
        Err(RegistryError::AlreadyMember { .. })
    ));
    assert_eq!(
        r.join(p, b1, &mut log),
        Err(RegistryError::OtherMaster { port: "p0".into() })
    );
    assert_eq!(r.devices().span(b0), [2]);
    assert!(r.devices().span(b1).is_empty());
    r.leave(p, b0, &mut log).unwrap();
    assert!(r.devices().span(b0).is_empty());
    r.join(p, b1, &mut log).unwrap();
    assert_eq!(r.devices().members(b1).count(), 1);
}

#[test]
fn unregister_cascades_member_leave_before_unregister_and_tears_down_in_order() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("a", never), 0);
    let mut log = Log::new();
    let bond = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    let mut p1 = port("p1", 3);
    p1.master = Some(bond);
    let p1 = r.register(p1, &mut log).unwrap();
    r.join(p0, bond, &mut log).unwrap();
    r.set_active(bond, Some(p0), &mut log).unwrap();
    log.clear();
    let gone = r
        .unregister_many(&[p1, p0], Instant::now(), &mut log)
        .unwrap();
    assert_eq!(
        gone.freed
            .iter()
            .map(|d| d.1.name.as_str())
            .collect::<Vec<_>>(),
        ["p0", "p1"],
        "freed in index order"
    );
    assert_eq!(
        log.iter().map(|e| e.1).collect::<Vec<_>>(),
        [
            Event::PreUnregister(p1),
            Event::PreUnregister(p0),
            Event::Leave { port: p1, bond },
            Event::Leave { port: p0, bond },
            Event::Unregister(p1),
            Event::Unregister(p0),
        ]
    );
    assert_eq!(
        r.devices().get(bond).unwrap().active,
        None,
        "the active member left"
    );
    assert_eq!(r.devices().len(), 2, "the loopback and the bond");
}

#[test]
fn unregistering_a_bond_releases_its_members_first() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("a", never), 0);
    let mut log = Log::new();
    let bond = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    r.join(p0, bond, &mut log).unwrap();
    log.clear();
    r.unregister_many(&[bond], Instant::now(), &mut log)
        .unwrap();
    assert_eq!(
        log.iter().map(|e| e.1).collect::<Vec<_>>(),
        [
            Event::PreUnregister(bond),
            Event::Leave { port: p0, bond },
            Event::Unregister(bond),
        ]
    );
    assert_eq!(r.devices().get(p0).unwrap().master, None);
}

#[test]
fn a_pre_unregister_veto_or_a_bad_batch_changes_nothing() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("pin", |e| matches!(e, Event::PreUnregister(_))), 0);
    let mut log = Log::new();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    let e = r
        .unregister_many(&[p0], Instant::now(), &mut log)
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EBUSY);
    assert_eq!(r.devices().len(), 2);
    assert!(!log.iter().any(|e| matches!(e.1, Event::Unregister(_))));

    let mut r: Registry<(), Log> = Registry::new();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    assert_eq!(
        r.unregister_many(&[p0, p0], Instant::now(), &mut log)
            .unwrap_err(),
        RegistryError::Twice("p0".into())
    );
    assert!(matches!(
        r.unregister_many(&[p0, DeviceId(99)], Instant::now(), &mut log),
        Err(RegistryError::NoDevice(_))
    ));
    assert_eq!(r.devices().len(), 2);
    assert_eq!(r.stats().quiesces, 0, "a refused batch quiesces nothing");
}

#[test]
fn a_failure_on_leave_stops_the_batch_with_what_left_so_far() {
    let mut r: Registry<(), Log> = Registry::new();
    let bond_of = |e: Event| matches!(e, Event::Leave { port, .. } if port == DeviceId(4));
    r.listen(rec("bonding", bond_of), 0);
    let mut log = Log::new();
    let bond = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    let p1 = r.register(port("p1", 3), &mut log).unwrap();
    assert_eq!(p1, DeviceId(4), "the loopback is 1, the bond 2, p0 3");
    r.join(p0, bond, &mut log).unwrap();
    r.join(p1, bond, &mut log).unwrap();
    let e = r
        .unregister_many(&[p0, p1], Instant::now(), &mut log)
        .unwrap_err();
    assert_eq!(
        e,
        RegistryError::Unlink {
            port: "p1".into(),
            bond: "bond0".into(),
            veto: Veto::new(Errno::EBUSY, "bonding refuses"),
        }
    );
    assert_eq!(r.devices().len(), 4, "nothing was unregistered");
    assert_eq!(r.devices().get(p0).unwrap().master, None, "p0 had left");
}

#[test]
fn up_is_vetoable_down_and_change_are_not() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("first", never), 10);
    r.listen(
        rec("strict", |e| matches!(e, Event::Up(_) | Event::Change(_))),
        0,
    );
    r.listen(rec("last", never), -10);
    let mut log = Log::new();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    log.clear();
    let e = r.set_up(p0, true, &mut log).unwrap_err();
    assert_eq!(e.errno(), Errno::EBUSY);
    assert!(!r.devices().get(p0).unwrap().flags.up);
    assert_eq!(
        log,
        [
            ("first", Event::Up(p0)),
            ("strict", Event::Up(p0)),
            ("first", Event::Down(p0)),
        ]
    );
    log.clear();
    // A failure on CHANGE is reported, the state is recorded, and the chain goes on.
    let e = r.set_operstate(p0, OperState::Up, &mut log).unwrap_err();
    assert!(matches!(e, RegistryError::Failed(_)));
    assert_eq!(r.devices().get(p0).unwrap().operstate, OperState::Up);
    assert_eq!(names(&log), ["first", "strict", "last"]);
    log.clear();
    assert_eq!(r.set_operstate(p0, OperState::Up, &mut log), Ok(false));
    assert!(log.is_empty(), "no event without a change");
}

#[test]
fn active_is_emitted_on_change_only() {
    let mut r: Registry<(), Log> = Registry::new();
    r.listen(rec("a", never), 0);
    let mut log = Log::new();
    let bond = r
        .register(Device::new("bond0", DeviceKind::Bond, ()), &mut log)
        .unwrap();
    let p0 = r.register(port("p0", 2), &mut log).unwrap();
    log.clear();
    assert_eq!(r.set_active(bond, Some(p0), &mut log), Ok(true));
    assert_eq!(r.set_active(bond, Some(p0), &mut log), Ok(false));
    assert_eq!(r.set_active(bond, None, &mut log), Ok(true));
    assert_eq!(
        log.iter().map(|e| e.1).collect::<Vec<_>>(),
        [
            Event::Active {
                bond,
                member: Some(p0)
            },
            Event::Active { bond, member: None },
        ]
    );
    assert!(matches!(
        r.set_active(p0, None, &mut log),
        Err(RegistryError::Kind { .. })
    ));
}
