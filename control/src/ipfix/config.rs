//! `[ipfix]`: flow export to IPFIX collectors, as written and validated.
//!
//! ```toml
//! [ipfix]
//! observation_domain_id = 1
//! active_timeout_s = 60
//! template_refresh_s = 600
//! [[ipfix.collector]]
//! address = "198.18.0.100"
//! port = 4739
//! ```
//!
//! # The active timeout
//! The datapath's flow table sends an update event for every live flow each `active_timeout`
//! (`[flows] active_timeout`), and the exporter turns each into an interim record: the two
//! are one setting. With an `[ipfix]` section, `active_timeout_s` sets the flow table's
//! interval; a `[flows] active_timeout` that says otherwise is refused (naming both fields)
//! rather than one silently winning.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::config::ConfigError;

/// The IANA port for IPFIX over UDP (RFC 7011 §10.3.4).
pub const DEFAULT_PORT: u16 = 4739;
/// Default observation domain: 1, because RFC 7011 §3.1 keeps 0 for records that belong to
/// no single observation domain.
pub const DEFAULT_DOMAIN: u32 = 1;
/// Most collectors.
pub const MAX_COLLECTORS: usize = 8;
/// Longest interval either timer takes (a day, as the flow table's timeouts).
pub const MAX_INTERVAL_S: u64 = 86_400;

/// `[ipfix]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixConfig {
    /// The collectors (`[[ipfix.collector]]`), each sent every message.
    #[serde(default, rename = "collector")]
    pub collectors: Vec<CollectorConfig>,
    /// The observation domain id in every message header (default 1).
    #[serde(default = "domain")]
    pub observation_domain_id: u32,
    /// Seconds between interim records of a live flow (default 60; 0: records only when a
    /// flow ends). Also the flow table's active timeout (see the module doc).
    #[serde(default = "active")]
    pub active_timeout_s: u64,
    /// Seconds between sends of the templates (default 600; RFC 7011 §8.1: over UDP they
    /// are sent again periodically, since a collector may have restarted).
    #[serde(default = "refresh")]
    pub template_refresh_s: u64,
}

/// `[[ipfix.collector]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// The collector's IPv4 or IPv6 address.
    pub address: String,
    /// Its UDP port (default 4739).
    #[serde(default = "port")]
    pub port: u16,
}

fn domain() -> u32 {
    DEFAULT_DOMAIN
}
fn active() -> u64 {
    60
}
fn refresh() -> u64 {
    600
}
fn port() -> u16 {
    DEFAULT_PORT
}

/// `[ipfix]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfixPlan {
    /// Where every message goes.
    pub collectors: Vec<SocketAddr>,
    /// The observation domain.
    pub domain: u32,
    /// Seconds between interim records (0: none).
    pub active_timeout_s: u32,
    /// Seconds between template sends.
    pub template_refresh_s: u32,
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

impl IpfixConfig {
    /// The validated plan. `flows_active` is `[flows] active_timeout` if the file sets it.
    ///
    /// # Errors
    /// A bad or repeated collector address, no collector, a timer out of range, or an
    /// active timeout that contradicts `[flows] active_timeout`; each names its field.
    pub fn plan(&self, flows_active: Option<u64>) -> Result<IpfixPlan, ConfigError> {
        if self.collectors.is_empty() {
            return Err(field(
                "ipfix.collector",
                "no [[ipfix.collector]] configured",
            ));
        }
        if self.collectors.len() > MAX_COLLECTORS {
            return Err(field(
                "ipfix.collector",
                format!(
                    "{} collectors: at most {MAX_COLLECTORS}",
                    self.collectors.len()
                ),
            ));
        }
        let mut collectors = Vec::with_capacity(self.collectors.len());
        for (i, c) in self.collectors.iter().enumerate() {
            let ip: IpAddr = c.address.parse().map_err(|_| {
                field(
                    format!("ipfix.collector[{i}].address"),
                    format!("{:?} is not an IPv4 or IPv6 address", c.address),
                )
            })?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(field(
                    format!("ipfix.collector[{i}].address"),
                    format!("{ip}: not a unicast address"),
                ));
            }
            if c.port == 0 {
                return Err(field(
                    format!("ipfix.collector[{i}].port"),
                    "0 is not a port",
                ));
            }
            let addr = SocketAddr::new(ip, c.port);
            if collectors.contains(&addr) {
                return Err(field(
                    format!("ipfix.collector[{i}]"),
                    format!("{addr} is listed twice"),
                ));
            }
            collectors.push(addr);
        }
        if self.active_timeout_s > MAX_INTERVAL_S {
            return Err(field(
                "ipfix.active_timeout_s",
                format!(
                    "{}: must be 0 (off) or between 1 and {MAX_INTERVAL_S} seconds",
                    self.active_timeout_s
                ),
            ));
        }
        if let Some(f) = flows_active
            && f != self.active_timeout_s
        {
            return Err(field(
                "ipfix.active_timeout_s",
                format!(
                    "{} contradicts flows.active_timeout = {f}: the flow table's updates are \
                     the interim records; set one of them, or both alike",
                    self.active_timeout_s
                ),
            ));
        }
        if !(1..=MAX_INTERVAL_S).contains(&self.template_refresh_s) {
            return Err(field(
                "ipfix.template_refresh_s",
                format!(
                    "{}: must be between 1 and {MAX_INTERVAL_S} seconds",
                    self.template_refresh_s
                ),
            ));
        }
        Ok(IpfixPlan {
            collectors,
            domain: self.observation_domain_id,
            active_timeout_s: self.active_timeout_s as u32,
            template_refresh_s: self.template_refresh_s as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn plan(text: &str) -> Result<Option<IpfixPlan>, String> {
        let c = Config::parse(text).map_err(|e| e.to_string())?;
        c.ipfix_plan().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_fields() {
        assert_eq!(plan("").unwrap(), None);
        let p = plan("[[ipfix.collector]]\naddress = \"198.18.0.100\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            IpfixPlan {
                collectors: vec!["198.18.0.100:4739".parse().unwrap()],
                domain: 1,
                active_timeout_s: 60,
                template_refresh_s: 600,
            }
        );
        let p = plan(
            "[ipfix]\nobservation_domain_id = 77\nactive_timeout_s = 0\ntemplate_refresh_s = 5\n\
             [[ipfix.collector]]\naddress = \"2001:2::64\"\nport = 9995\n\
             [[ipfix.collector]]\naddress = \"198.18.0.100\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            p.collectors,
            [
                "[2001:2::64]:9995".parse().unwrap(),
                "198.18.0.100:4739".parse().unwrap()
            ]
        );
        assert_eq!(
            (p.domain, p.active_timeout_s, p.template_refresh_s),
            (77, 0, 5)
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let c = |s: &str| format!("[[ipfix.collector]]\naddress = \"198.18.0.100\"\n{s}");
        assert_eq!(
            plan("[ipfix]\nactive_timeout_s = 5\n").unwrap_err(),
            "ipfix.collector: no [[ipfix.collector]] configured"
        );
        assert_eq!(
            plan("[[ipfix.collector]]\naddress = \"collector.example\"\n").unwrap_err(),
            "ipfix.collector[0].address: \"collector.example\" is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            plan(&c("[[ipfix.collector]]\naddress = \"0.0.0.0\"\n")).unwrap_err(),
            "ipfix.collector[1].address: 0.0.0.0: not a unicast address"
        );
        assert_eq!(
            plan(&c("[[ipfix.collector]]\naddress = \"198.18.0.100\"\n")).unwrap_err(),
            "ipfix.collector[1]: 198.18.0.100:4739 is listed twice"
        );
        assert_eq!(
            plan("[[ipfix.collector]]\naddress = \"198.18.0.1\"\nport = 0\n").unwrap_err(),
            "ipfix.collector[0].port: 0 is not a port"
        );
        assert!(
            plan("[[ipfix.collector]]\naddress = \"198.18.0.1\"\nport = 70000\n")
                .unwrap_err()
                .contains("port")
        );
        assert_eq!(
            plan(&c("[ipfix]\ntemplate_refresh_s = 0\n")).unwrap_err(),
            "ipfix.template_refresh_s: 0: must be between 1 and 86400 seconds"
        );
        assert_eq!(
            plan(&c("[ipfix]\nactive_timeout_s = 86401\n")).unwrap_err(),
            "ipfix.active_timeout_s: 86401: must be 0 (off) or between 1 and 86400 seconds"
        );
        assert!(
            plan(&c("[ipfix]\ncollectors = 1\n"))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            plan("[[ipfix.collector]]\naddress = \"198.18.0.1\"\nprot = 1\n")
                .unwrap_err()
                .contains("unknown field `prot`")
        );
    }

    /// `[ipfix] active_timeout_s` is the flow table's active timeout; a `[flows]` value that
    /// says otherwise is refused, one that agrees is fine.
    #[test]
    fn active_timeout_is_the_flow_tables() {
        let c = "[[ipfix.collector]]\naddress = \"198.18.0.100\"\n";
        let flows = |text: &str| {
            let c = Config::parse(text).unwrap();
            c.flow_params().map(|p| p.unwrap().active_timeout_s())
        };
        assert_eq!(flows("").unwrap(), 1800);
        assert_eq!(flows("[flows]\nactive_timeout = 7\n").unwrap(), 7);
        assert_eq!(flows(c).unwrap(), 60);
        assert_eq!(
            flows(&format!("[ipfix]\nactive_timeout_s = 3\n{c}")).unwrap(),
            3
        );
        assert_eq!(
            flows(&format!(
                "[flows]\nactive_timeout = 3\n[ipfix]\nactive_timeout_s = 3\n{c}"
            ))
            .unwrap(),
            3
        );
        assert_eq!(
            flows(&format!("[flows]\nactive_timeout = 1800\n{c}"))
                .unwrap_err()
                .to_string(),
            "ipfix.active_timeout_s: 60 contradicts flows.active_timeout = 1800: the flow \
             table's updates are the interim records; set one of them, or both alike"
        );
    }

    /// The sample's commented `[ipfix]` section, uncommented, is valid and says what the
    /// defaults are.
    #[test]
    fn the_samples_ipfix_section_is_valid() {
        let text = include_str!("../../../deploy/isopath.toml");
        let start = text
            .find("# [ipfix]\n")
            .expect("a commented [ipfix] in the sample");
        let end = start
            + text[start..]
                .find("# port = 4739\n")
                .expect("its last line")
            + 14;
        let section: String = text[start..end]
            .lines()
            .filter(|l| {
                let l = l.trim_start_matches("# ");
                l.starts_with('[') || l.contains(" = ")
            })
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let c = Config::parse(&section).unwrap();
        let p = c.ipfix_plan().unwrap().unwrap();
        assert_eq!(
            p,
            IpfixPlan {
                collectors: vec!["198.18.0.100:4739".parse().unwrap()],
                domain: DEFAULT_DOMAIN,
                active_timeout_s: 60,
                template_refresh_s: 600,
            },
            "{section}"
        );
    }
}
