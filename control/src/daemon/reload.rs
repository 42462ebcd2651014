//! Live reload (`SIGHUP`, `isopath reload`): the configuration file read again, compared
//! with the one in force ([`crate::reload::diff`]), and applied all or nothing.
//!
//! What can fail is done first, before anything changes: the file is read and validated, the
//! fields that cannot change live are refused (every one named), the new metrics listener is
//! bound and the new IPFIX exporter started, and the ports that go are unregistered (all or
//! none). After that the rest cannot be refused: the workers' flow policy, bond options and
//! members, the swap to the new endpoint and exporter, and the ports that come (their sockets
//! handed to the workers; the loop finishes them as it does `port add`, and logs the result).

use std::{path::PathBuf, time::Duration};

use tracing::{error, info, warn};

use super::{
    Daemon,
    requests::{ReplyTo, Then, Waiting},
};
use crate::{
    config::{Config, Plan},
    host::Host,
    reload::{Changes, FlowPolicy, diff},
    request::Reloaded,
    status::ConfigStatus,
};

/// Sets the log filter from `daemon.log_level` directives.
pub type LogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// The configuration in force, to compare a reload with.
pub(super) struct Running {
    path: PathBuf,
    config: Config,
    plan: Plan,
    /// `isopathd --control-socket`, which overrides the file's.
    socket_override: Option<String>,
    /// The workers' flow policy in force (`None`: flow tracking off).
    flows: Option<FlowPolicy>,
    reloads: u64,
    refused: u64,
    last_refusal: Option<String>,
}

impl Daemon {
    /// Tells the daemon which file it runs from, so that a reload can read it again, and the
    /// control socket given on the command line instead of the file's, if one was.
    pub fn set_config(
        &mut self,
        path: PathBuf,
        config: Config,
        plan: Plan,
        socket_override: Option<String>,
    ) {
        let flows = plan.flows.map(|f| FlowPolicy {
            timeouts: f.timeouts(),
            active_timeout_s: f.active_timeout_s(),
            strict: plan.strict,
        });
        self.config = Some(Running {
            path,
            config,
            plan,
            socket_override,
            flows,
            reloads: 0,
            refused: 0,
            last_refusal: None,
        });
    }

    /// How `daemon.log_level` is applied (the binary owns the log subscriber).
    pub fn set_log_filter(&mut self, set: LogFilter) {
        self.log_filter = Some(set);
    }

    /// A reload asked for by `SIGHUP`: the service manager is told (`RELOADING=1`, then
    /// `READY=1`), and the outcome logged.
    pub(super) fn reload_signal(&mut self, host: &dyn Host) {
        // MONOTONIC_USEC (what Type=notify-reload of systemd 253 wants) from the clock the
        // datapath already reads.
        let mono = isopath_datapath::xsk::r#gen::monotonic_ns() / 1_000;
        if let Err(e) = crate::sd_notify::notify(&format!("RELOADING=1\nMONOTONIC_USEC={mono}")) {
            warn!("sd_notify RELOADING=1: {e}");
        }
        let status = match self.reload(host) {
            Ok(r) => format!("reloaded: {} changes", r.applied.len()),
            Err(e) => format!("reload refused: {e}"),
        };
        if let Err(e) = crate::sd_notify::notify(&format!("READY=1\nSTATUS={status}")) {
            warn!("sd_notify READY=1: {e}");
        }
    }

    /// Reads the configuration file again and applies it (see the module docs).
    ///
    /// # Errors
    /// The file could not be read or is invalid, a field cannot change live (each named), a
    /// new endpoint could not be bound, or a port could not be removed: nothing changed.
    pub(super) fn reload(&mut self, host: &dyn Host) -> Result<Reloaded, String> {
        let Some(running) = self.config.as_ref() else {
            return Err("no configuration file to read again".into());
        };
        let path = running.path.clone();
        let result = self.reload_from(&path, host);
        let Some(running) = self.config.as_mut() else {
            return result;
        };
        match &result {
            Ok(r) => {
                running.reloads += 1;
                info!(config = %path.display(), changes = r.applied.len(), "configuration reloaded");
                for line in &r.applied {
                    info!("reload: {line}");
                }
            }
            Err(e) => {
                running.refused += 1;
                running.last_refusal = Some(e.clone());
                error!(config = %path.display(), "reload refused, nothing changed: {e}");
            }
        }
        result
    }

    fn reload_from(&mut self, path: &std::path::Path, host: &dyn Host) -> Result<Reloaded, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let mut plan = config
            .plan(host)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let running = self.config.as_ref().ok_or("no configuration in force")?;
        if let Some(s) = &running.socket_override {
            plan.control_socket.clone_from(s);
        }
        let changes = diff(&running.config, &running.plan, &config, &plan).map_err(|r| {
            let r: Vec<String> = r.iter().map(ToString::to_string).collect();
            r.join("; ")
        })?;
        let applied = changes.lines.clone();
        self.apply(changes, host)?;
        if let Some(r) = self.config.as_mut() {
            r.config = config;
            r.plan = plan;
        }
        Ok(Reloaded {
            ok: true,
            config: path.display().to_string(),
            applied,
        })
    }

    fn apply(&mut self, ch: Changes, host: &dyn Host) -> Result<(), String> {
        // 1. What can fail, before anything changes.
        let metrics = match ch.metrics {
            Some(Some(addr)) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("metrics.listen: binding {addr}: {e}"))?;
                Some(Some(l))
            }
            Some(None) => Some(None),
            None => None,
        };
        let ipfix = match &ch.ipfix {
            Some(Some(p)) => Some(Some(
                super::nl_flows::start_ipfix(p, self.housekeeping.clone())
                    .map_err(|e| format!("ipfix: {}", super::error_chain(&e)))?,
            )),
            Some(None) => Some(None),
            None => None,
        };
        if !ch.ports_removed.is_empty() {
            let names: Vec<&str> = ch.ports_removed.iter().map(String::as_str).collect();
            self.port_del(&names)
                .map_err(|e| format!("removing ports: {e}"))?;
        }
        // 2. What cannot be refused any more.
        if let Some(p) = ch.flows {
            self.set_flow_policy(p);
        }
        for o in &ch.bond_options {
            if let Err(e) = self.bond_set(&o.bond, o.key, &o.value) {
                // Validated by the plan: a failure here is a bug, said loudly.
                error!(bond = %o.bond, option = o.key, value = %o.value, "reload: {e}");
            }
        }
        for (bond, port) in &ch.members_released {
            if let Err(e) = self.bond_member(bond, port, false) {
                error!(%bond, %port, "reload: releasing: {e}");
            }
        }
        if let Some(m) = metrics {
            // The old endpoint's thread ends when it is dropped.
            self.metrics = match m {
                Some(l) => match super::start::spawn_metrics(l, self.housekeeping.clone()) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        error!("reload: metrics endpoint: {}", super::error_chain(&e));
                        None
                    }
                },
                None => None,
            };
        }
        if let Some(x) = ipfix {
            self.ipfix = x;
        }
        if let Some(level) = &ch.log_level {
            match &self.log_filter {
                Some(set) => {
                    if let Err(e) = set(level) {
                        error!("reload: daemon.log_level {level:?}: {e}");
                    }
                }
                None => warn!("reload: daemon.log_level: no log filter to change"),
            }
        }
        for (name, bond) in &ch.ports_added {
            match self.port_begin(name, host) {
                Ok(p) => {
                    let then = bond.clone().map_or(Then::Reply, Then::Join);
                    self.waiting
                        .push(Waiting::new(ReplyTo::Log, Box::new(p), then));
                }
                Err(e) => error!(port = %name, "reload: adding: {e}"),
            }
        }
        for (bond, port) in &ch.members_added {
            if let Err(e) = self.bond_member(bond, port, true) {
                error!(%bond, %port, "reload: joining: {e}");
            }
        }
        Ok(())
    }

    /// Gives every worker the new flow policy; a full command queue is waited for (briefly:
    /// a polling worker empties it every loop).
    fn set_flow_policy(&mut self, p: FlowPolicy) {
        for (i, w) in self.plane.workers.iter().enumerate() {
            let mut sent = false;
            for _ in 0..200 {
                if w.handle
                    .set_flow_policy(p.timeouts, p.active_timeout_s, p.strict)
                {
                    sent = true;
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            if !sent {
                error!(
                    worker = i,
                    "reload: the worker's command queue stayed full; flow policy not sent"
                );
            }
        }
        if let Some(r) = self.config.as_mut() {
            r.flows = Some(p);
        }
    }

    /// The status's view of the configuration in force.
    pub(super) fn config_status(&self) -> Option<ConfigStatus> {
        let r = self.config.as_ref()?;
        Some(ConfigStatus {
            path: r.path.display().to_string(),
            reloads: r.reloads,
            reloads_refused: r.refused,
            last_refusal: r.last_refusal.clone(),
            flows_strict: r.flows.map_or(r.plan.strict, |f| f.strict),
            flow_timeouts: r
                .flows
                .map(|f| {
                    f.timeouts
                        .named()
                        .iter()
                        .map(|&(k, v)| (k.to_owned(), v))
                        .collect()
                })
                .unwrap_or_default(),
            flow_active_timeout_s: r.flows.map_or(0, |f| f.active_timeout_s),
        })
    }
}
