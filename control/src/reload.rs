//! What a reload changes: the running configuration against the file read again, as a list
//! of changes the daemon can apply live, or the fields that cannot change without a restart.
//!
//! Pure (no I/O): both sides are validated [`Plan`]s with the [`Config`]s they came from. The
//! daemon applies a [`Changes`] only when nothing was refused, so a reload is all or nothing.
//!
//! Live: bond options that `bond set` takes, bond membership and ports added or removed
//! (through the device-lifecycle path, as `port add|del` and `bond add|release`), the flow
//! timeouts and `[flows] strict`, `[metrics]`, `[ipfix]` and `daemon.log_level`. Not live: the core layout,
//! rings, frame and UMEM sizes, the flow table's size, the control sockets, cross-connects,
//! bonds added or removed, and the bond options fixed at start (addresses, VLANs, MAC, ARP
//! monitor, re-announcement table).

use std::{net::SocketAddr, time::Duration};

use isopath_datapath::flow::Timeouts;

use crate::{
    bond::BondOptions,
    config::{BondPlan, Config, Plan},
    ipfix::IpfixPlan,
};

/// A field that cannot change while the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its dotted path in the file (`rings.rx_ring_size`).
    pub field: String,
    /// Why, with the old and new values.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The workers' flow policy after a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowPolicy {
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Seconds between active-flow updates.
    pub active_timeout_s: u32,
    /// `[flows] strict`.
    pub strict: bool,
}

/// A bond option to set, as `bond set BOND KEY VALUE` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondOption {
    /// The bond.
    pub bond: String,
    /// The option's name.
    pub key: &'static str,
    /// The running value.
    pub old: String,
    /// The new value.
    pub value: String,
}

/// What a reload applies, in this order: ports removed, flow policy, bond options, members
/// released, metrics, IPFIX, ports added, members added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Ports no longer in the file (unregistered as one batch).
    pub ports_removed: Vec<String>,
    /// The new flow policy, when it changed.
    pub flows: Option<FlowPolicy>,
    /// Bond options changed.
    pub bond_options: Vec<BondOption>,
    /// (bond, port): ports that stay but leave their bond.
    pub members_released: Vec<(String, String)>,
    /// The metrics endpoint's new address (`Some(None)`: turned off), when it changed.
    pub metrics: Option<Option<SocketAddr>>,
    /// The new IPFIX export (`Some(None)`: turned off), when it changed.
    pub ipfix: Option<Option<IpfixPlan>>,
    /// The new log filter, when it changed.
    pub log_level: Option<String>,
    /// Ports new in the file, with the bond each joins.
    pub ports_added: Vec<(String, Option<String>)>,
    /// (bond, port): ports already registered that join a bond.
    pub members_added: Vec<(String, String)>,
    /// One line per change, for the reply and the log.
    pub lines: Vec<String>,
}

impl Changes {
    /// Whether the file changed nothing.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Compares the running configuration (`old`) with the one read again (`new`).
///
/// # Errors
/// Every field that cannot change live, each named.
pub fn diff(
    old_cfg: &Config,
    old: &Plan,
    new_cfg: &Config,
    new: &Plan,
) -> Result<Changes, Vec<Refusal>> {
    let mut refused = Refused::default();
    let (r0, r1) = (&old.rings, &new.rings);
    refused.fixed("rings.rx_ring_size", show(r0.rx.get()), show(r1.rx.get()));
    refused.fixed("rings.tx_ring_size", show(r0.tx.get()), show(r1.tx.get()));
    refused.fixed(
        "rings.fill_ring_size",
        show(r0.fill.get()),
        show(r1.fill.get()),
    );
    refused.fixed(
        "rings.comp_ring_size",
        show(r0.comp.get()),
        show(r1.comp.get()),
    );
    refused.fixed(
        "rings.frame_size",
        show(r0.frame_size.get()),
        show(r1.frame_size.get()),
    );
    refused.fixed("rings.burst", show(old.burst.get()), show(new.burst.get()));
    refused.fixed("rings.zero_copy", dbg(old.zero_copy), dbg(new.zero_copy));
    refused.fixed("rings.xdp_mode", dbg(old.xdp_mode), dbg(new.xdp_mode));
    refused.fixed(
        "rings.busy_poll_budget",
        show(old.busy_poll_budget),
        show(new.busy_poll_budget),
    );
    let (w0, w1) = (&old_cfg.workers, &new_cfg.workers);
    refused.fixed("workers.cores", dbg(&w0.cores), dbg(&w1.cores));
    refused.fixed(
        "workers.allow_siblings",
        dbg(w0.allow_siblings),
        dbg(w1.allow_siblings),
    );
    refused.fixed(
        "workers.frame_count",
        dbg(w0.frame_count),
        dbg(w1.frame_count),
    );
    refused.fixed(
        "workers.spare_queues",
        dbg(w0.spare_queues),
        dbg(w1.spare_queues),
    );
    refused.fixed(
        "daemon.control_socket",
        old.control_socket.clone(),
        new.control_socket.clone(),
    );
    refused.fixed("daemon.netlink", dbg(&old.netlink), dbg(&new.netlink));
    let size = |p: &Plan| p.flows.map(|f| (f.capacity(), f.event_ring()));
    refused.fixed(
        "flows.enabled",
        show(old.flows.is_some()),
        show(new.flows.is_some()),
    );
    if old.flows.is_some() && new.flows.is_some() {
        let (a, b) = (size(old).unwrap_or_default(), size(new).unwrap_or_default());
        refused.fixed("flows.capacity", show(a.0), show(b.0));
        refused.fixed("flows.event_ring", show(a.1), show(b.1));
    }
    let xc = |c: &Config| {
        let mut v: Vec<(String, String)> = c
            .cross_connects
            .iter()
            .map(|x| (x.a.clone(), x.b.clone()))
            .collect();
        v.sort();
        v
    };
    refused.fixed("cross_connect", dbg(xc(old_cfg)), dbg(xc(new_cfg)));

    let mut ch = Changes::default();
    // Ports: by name; a port that stays keeps its queues.
    for (i, p) in new.ports.iter().enumerate() {
        match old.ports.iter().find(|o| o.name == p.name) {
            Some(o) => refused.fixed(&format!("port[{i}].queues"), show(o.queues), show(p.queues)),
            None => {
                let bond = member_of(new, i).map(|b| b.name.clone());
                ch.lines.push(match &bond {
                    Some(b) => format!("port {}: added, joins {b}", p.name),
                    None => format!("port {}: added", p.name),
                });
                ch.ports_added.push((p.name.clone(), bond));
            }
        }
    }
    for p in &old.ports {
        if !new.ports.iter().any(|n| n.name == p.name) {
            ch.lines.push(format!("port {}: removed", p.name));
            ch.ports_removed.push(p.name.clone());
        }
    }

    // Bonds: the same set, by name.
    let names = |p: &Plan| {
        let mut v: Vec<String> = p.bonds.iter().map(|b| b.name.clone()).collect();
        v.sort();
        v
    };
    if names(old) != names(new) {
        refused.0.push(Refusal {
            field: "bond".into(),
            message: format!(
                "{:?} -> {:?}: adding or removing a bond needs a restart",
                names(old),
                names(new)
            ),
        });
    }
    for (bi, nb) in new.bonds.iter().enumerate() {
        let Some(ob) = old.bonds.iter().find(|b| b.name == nb.name) else {
            continue;
        };
        let f = |k: &str| format!("bond[{bi}].{k}");
        let member_names = |p: &Plan, b: &BondPlan| -> Vec<String> {
            b.members.iter().map(|&m| p.ports[m].name.clone()).collect()
        };
        let (m0, m1) = (member_names(old, ob), member_names(new, nb));
        for m in &m0 {
            if !m1.contains(m) && new.ports.iter().any(|p| &p.name == m) {
                ch.lines.push(format!("bond {}: {m} released", nb.name));
                ch.members_released.push((nb.name.clone(), m.clone()));
            }
        }
        for m in &m1 {
            if !m0.contains(m) && old.ports.iter().any(|p| &p.name == m) {
                ch.lines.push(format!("bond {}: {m} joins", nb.name));
                ch.members_added.push((nb.name.clone(), m.clone()));
            }
        }
        // Per-member prio and speed of members on both sides.
        for (i, m) in m1.iter().enumerate() {
            if let Some(j) = m0.iter().position(|x| x == m) {
                refused.fixed(&f("prio"), dbg((m, ob.prio[j])), dbg((m, nb.prio[i])));
                refused.fixed(&f("speed"), dbg((m, ob.speed[j])), dbg((m, nb.speed[i])));
            }
        }
        refused.fixed(
            &f("link_state_tracking"),
            show(ob.link_state_tracking),
            show(nb.link_state_tracking),
        );
        let (o0, o1) = (&ob.opts, &nb.opts);
        refused.fixed(&f("mac"), dbg(o0.mac), dbg(o1.mac));
        refused.fixed(&f("addresses"), dbg(&o0.addresses), dbg(&o1.addresses));
        refused.fixed(&f("vlan"), dbg(&o0.vlans), dbg(&o1.vlans));
        refused.fixed(&f("arp_interval"), dbg(&o0.arp), dbg(&o1.arp));
        let (n0, n1) = (&o0.notify, &o1.notify);
        refused.fixed(
            &f("reannounce_table"),
            show(n0.reannounce_table),
            show(n1.reannounce_table),
        );
        refused.fixed(
            &f("reannounce_max_age"),
            show(n0.reannounce_max_age_s),
            show(n1.reannounce_max_age_s),
        );
        let (w0, w1) = (live_words(o0, &m0), live_words(o1, &m1));
        for ((key, a), (_, b)) in w0.into_iter().zip(w1) {
            if a != b {
                ch.lines.push(format!("bond {}: {key} {a} -> {b}", nb.name));
                ch.bond_options.push(BondOption {
                    bond: nb.name.clone(),
                    key,
                    old: a,
                    value: b,
                });
            }
        }
    }

    // The flow policy.
    let policy = |p: &Plan| {
        p.flows.map(|f| FlowPolicy {
            timeouts: f.timeouts(),
            active_timeout_s: f.active_timeout_s(),
            strict: p.strict,
        })
    };
    if let (Some(a), Some(b)) = (policy(old), policy(new))
        && a != b
    {
        for ((k, x), (_, y)) in a.timeouts.named().into_iter().zip(b.timeouts.named()) {
            if x != y {
                ch.lines.push(format!("flows.{k}: {x} -> {y}"));
            }
        }
        if a.active_timeout_s != b.active_timeout_s {
            ch.lines.push(format!(
                "flows.active_timeout: {} -> {}",
                a.active_timeout_s, b.active_timeout_s
            ));
        }
        if a.strict != b.strict {
            ch.lines
                .push(format!("flows.strict: {} -> {}", a.strict, b.strict));
        }
        ch.flows = Some(b);
    } else if old.flows.is_none() && old.strict != new.strict {
        ch.lines
            .push(format!("flows.strict: {} -> {}", old.strict, new.strict));
        ch.flows = Some(FlowPolicy {
            timeouts: Timeouts::default(),
            active_timeout_s: 0,
            strict: new.strict,
        });
    }
    if old.metrics != new.metrics {
        ch.lines.push(format!(
            "metrics.listen: {:?} -> {:?}",
            old.metrics, new.metrics
        ));
        ch.metrics = Some(new.metrics);
    }
    if old.log_level != new.log_level {
        ch.lines.push(format!(
            "daemon.log_level: {} -> {}",
            old.log_level, new.log_level
        ));
        ch.log_level = Some(new.log_level.clone());
    }
    if old.ipfix != new.ipfix {
        ch.lines.push("ipfix: changed (exporter restarted)".into());
        ch.ipfix = Some(new.ipfix.clone());
    }
    if refused.0.is_empty() {
        Ok(ch)
    } else {
        Err(refused.0)
    }
}

/// The refusals found so far.
#[derive(Default)]
struct Refused(Vec<Refusal>);

impl Refused {
    /// Refuses `field` when its value changed.
    fn fixed(&mut self, field: &str, old: String, new: String) {
        if old != new {
            self.0.push(Refusal {
                field: field.to_owned(),
                message: format!("{old} -> {new}: needs a restart"),
            });
        }
    }
}

/// The bond that `new.ports[port]` is a member of.
fn member_of(plan: &Plan, port: usize) -> Option<&BondPlan> {
    plan.bonds.iter().find(|b| b.members.contains(&port))
}

fn show(v: impl std::fmt::Display) -> String {
    v.to_string()
}

fn dbg(v: impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

/// The options `bond set` takes, as its words, in a fixed order (`members` names the
/// primary).
fn live_words(o: &BondOptions, members: &[String]) -> Vec<(&'static str, String)> {
    let ms = |d: Duration| d.as_millis().to_string();
    vec![
        ("miimon", ms(o.miimon)),
        ("updelay", ms(o.updelay)),
        ("downdelay", ms(o.downdelay)),
        ("drain_ms", ms(o.drain)),
        (
            "primary",
            o.primary
                .and_then(|i| members.get(i).cloned())
                .unwrap_or_else(|| "none".into()),
        ),
        ("primary_reselect", o.primary_reselect.name().to_owned()),
        ("all_members_active", o.all_members_active.to_string()),
        ("fail_over_mac", o.fail_over_mac.name().to_owned()),
        ("num_grat_arp", o.notify.num_grat_arp.to_string()),
        ("num_unsol_na", o.notify.num_unsol_na.to_string()),
        ("peer_notif_delay", ms(o.notify.peer_notif_delay)),
        ("reannounce", o.notify.reannounce.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    const BASE: &str = r#"
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
miimon = 10
[[cross_connect]]
a = "up0"
b = "bond0"
[flows]
udp_s = 30
"#;

    fn host() -> FakeHost {
        FakeHost::new(2, &[("up0", 1), ("m0", 1), ("m1", 1), ("m2", 1)])
    }

    fn run(old: &str, new: &str) -> Result<Changes, Vec<Refusal>> {
        let (c0, c1) = (Config::parse(old).unwrap(), Config::parse(new).unwrap());
        let (p0, p1) = (c0.plan(&host()).unwrap(), c1.plan(&host()).unwrap());
        diff(&c0, &p0, &c1, &p1)
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let ch = run(BASE, BASE).unwrap();
        assert!(ch.is_empty(), "{:?}", ch.lines);
        assert_eq!(ch, Changes::default());
    }

    #[test]
    fn live_changes_are_listed_with_their_values() {
        let new = BASE
            .replace("miimon = 10", "miimon = 50\nprimary = \"m1\"")
            .replace("udp_s = 30", "udp_s = 5\nstrict = true")
            .replace("[workers]", "[daemon]\nlog_level = \"debug\"\n[workers]");
        let ch = run(BASE, &new).unwrap();
        let opts: Vec<(&str, &str, &str)> = ch
            .bond_options
            .iter()
            .map(|o| (o.key, o.old.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(opts, [("miimon", "10", "50"), ("primary", "none", "m1")]);
        let f = ch.flows.expect("flow policy changed");
        assert_eq!(f.timeouts.udp_s, 5);
        assert!(f.strict);
        assert_eq!(
            ch.lines,
            [
                "bond bond0: miimon 10 -> 50",
                "bond bond0: primary none -> m1",
                "flows.udp_s: 30 -> 5",
                "flows.strict: false -> true",
                "daemon.log_level: info -> debug",
            ]
        );
        assert!(ch.metrics.is_none() && ch.ipfix.is_none());
    }

    #[test]
    fn ports_and_members_come_and_go_through_the_lifecycle() {
        let new = BASE
            .replace("members = [\"m0\", \"m1\"]", "members = [\"m0\", \"m2\"]")
            .replace("name = \"m1\"", "name = \"m2\"");
        let ch = run(BASE, &new).unwrap();
        assert_eq!(ch.ports_removed, ["m1"]);
        assert_eq!(
            ch.ports_added,
            [("m2".to_owned(), Some("bond0".to_owned()))]
        );
        // m1 goes with its port (unregistering releases it); nothing else moves.
        assert!(ch.members_released.is_empty() && ch.members_added.is_empty());
    }

    #[test]
    fn what_cannot_change_live_is_refused_field_by_field() {
        let new = BASE
            .replace(
                "[workers]",
                "[rings]\nrx_ring_size = 4096\nframe_size = 4096\n[workers]",
            )
            .replace("udp_s = 30", "udp_s = 30\ncapacity = 65536")
            .replace("miimon = 10", "miimon = 10\naddresses = [\"198.18.0.1\"]");
        let e = run(BASE, &new).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rings.rx_ring_size",
                "rings.frame_size",
                "flows.capacity",
                "bond[0].addresses"
            ]
        );
        assert_eq!(e[0].message, "2048 -> 4096: needs a restart");
    }

    #[test]
    fn bonds_and_cross_connects_are_fixed() {
        let no_xc = BASE.replace("[[cross_connect]]\na = \"up0\"\nb = \"bond0\"\n", "");
        let e = run(BASE, &no_xc).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "cross_connect");
        let renamed = BASE.replace("bond0", "bond1");
        let e = run(BASE, &renamed).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["cross_connect", "bond"]);
    }
}
