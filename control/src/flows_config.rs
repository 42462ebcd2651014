//! `[flows]`: how frames are understood on the way through, and the per-worker flow table.
//!
//! Parsed with the rest of the file ([`crate::config`]) and validated here into
//! [`FlowParams`] (capacity and timeouts in range), so the workers only ever see valid ones.

use isopath_datapath::flow::{self, FlowParamError, FlowParams, Timeouts};
use serde::Deserialize;

use crate::config::ConfigError;

/// `[flows]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsConfig {
    /// Drop frames that do not parse (counted as `rx_drop_parse_*` by reason) instead of
    /// forwarding them (default false: the appliance is a wire first; they are counted as
    /// `parse_errors` either way).
    #[serde(default)]
    pub strict: bool,
    /// Track flows (default true). Off, the frame path is the plain wire.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Flows per worker (default 1,048,576), all allocated at start.
    #[serde(default = "capacity")]
    pub capacity: u64,
    /// Idle timeout of an established TCP connection, seconds (300).
    #[serde(default = "t_established")]
    pub tcp_established_s: u64,
    /// Idle timeout during the TCP handshake, seconds (30).
    #[serde(default = "t_syn")]
    pub tcp_syn_s: u64,
    /// Idle timeout after a FIN (fin-wait, time-wait), seconds (120).
    #[serde(default = "t_fin_wait")]
    pub tcp_fin_wait_s: u64,
    /// Idle timeout after a RST, seconds (10).
    #[serde(default = "t_closed")]
    pub tcp_closed_s: u64,
    /// Idle timeout of UDP (and other protocols) seen one way, seconds (30).
    #[serde(default = "t_udp")]
    pub udp_s: u64,
    /// Idle timeout of UDP (and other protocols) seen both ways, seconds (120).
    #[serde(default = "t_udp_stream")]
    pub udp_stream_s: u64,
    /// Idle timeout of ICMP and ICMPv6, seconds (30).
    #[serde(default = "t_icmp")]
    pub icmp_s: u64,
    /// Seconds between active-flow updates on the event ring (1800; 0: none). With an
    /// `[ipfix]` section, `ipfix.active_timeout_s` sets it (a different value here is refused).
    #[serde(default)]
    pub active_timeout: Option<u64>,
    /// Events each worker's ring holds (4096); more are dropped and counted.
    #[serde(default = "event_ring")]
    pub event_ring: u64,
}

fn yes() -> bool {
    true
}
fn capacity() -> u64 {
    flow::DEFAULT_CAPACITY.into()
}
fn t_established() -> u64 {
    Timeouts::default().tcp_established_s.into()
}
fn t_syn() -> u64 {
    Timeouts::default().tcp_syn_s.into()
}
fn t_fin_wait() -> u64 {
    Timeouts::default().tcp_fin_wait_s.into()
}
fn t_closed() -> u64 {
    Timeouts::default().tcp_closed_s.into()
}
fn t_udp() -> u64 {
    Timeouts::default().udp_s.into()
}
fn t_udp_stream() -> u64 {
    Timeouts::default().udp_stream_s.into()
}
fn t_icmp() -> u64 {
    Timeouts::default().icmp_s.into()
}
fn active_timeout() -> u64 {
    FlowParams::default().active_timeout_s().into()
}
fn event_ring() -> u64 {
    flow::DEFAULT_EVENT_RING.into()
}

impl Default for FlowsConfig {
    fn default() -> Self {
        Self {
            strict: false,
            enabled: true,
            capacity: capacity(),
            tcp_established_s: t_established(),
            tcp_syn_s: t_syn(),
            tcp_fin_wait_s: t_fin_wait(),
            tcp_closed_s: t_closed(),
            udp_s: t_udp(),
            udp_stream_s: t_udp_stream(),
            icmp_s: t_icmp(),
            active_timeout: None,
            event_ring: event_ring(),
        }
    }
}

impl FlowsConfig {
    /// The validated table parameters, `None` when tracking is off.
    ///
    /// # Errors
    /// A value out of range, naming its key (`flows.capacity`, `flows.udp_s`, ...).
    pub fn params(&self) -> Result<Option<FlowParams>, ConfigError> {
        self.params_with_active(None)
    }

    /// The validated table parameters with the active timeout `active` (from `[ipfix]`, which
    /// checked it against this section's) when given.
    ///
    /// # Errors
    /// As [`Self::params`].
    pub fn params_with_active(
        &self,
        active: Option<u64>,
    ) -> Result<Option<FlowParams>, ConfigError> {
        // A value beyond u32 is out of range whatever the key: saturate, then let
        // FlowParams name it.
        let t = |field: &'static str, v: u64| {
            u32::try_from(v).map_err(|_| FlowParamError::Timeout { field, value: v })
        };
        let timeouts = Timeouts {
            tcp_established_s: t("tcp_established_s", self.tcp_established_s)?,
            tcp_syn_s: t("tcp_syn_s", self.tcp_syn_s)?,
            tcp_fin_wait_s: t("tcp_fin_wait_s", self.tcp_fin_wait_s)?,
            tcp_closed_s: t("tcp_closed_s", self.tcp_closed_s)?,
            udp_s: t("udp_s", self.udp_s)?,
            udp_stream_s: t("udp_stream_s", self.udp_stream_s)?,
            icmp_s: t("icmp_s", self.icmp_s)?,
        };
        let p = FlowParams::new(
            self.capacity,
            timeouts,
            active
                .or(self.active_timeout)
                .unwrap_or_else(active_timeout),
            self.event_ring,
        )?;
        Ok(self.enabled.then_some(p))
    }
}

impl From<FlowParamError> for ConfigError {
    fn from(e: FlowParamError) -> Self {
        ConfigError::Field {
            field: format!("flows.{}", e.key()),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn flows(text: &str) -> Result<Option<isopath_datapath::flow::FlowParams>, String> {
        let c = Config::parse(&format!("[flows]\n{text}\n")).map_err(|e| e.to_string())?;
        c.flows.params().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_keys_and_refusals() {
        let p = flows("").unwrap().unwrap();
        assert_eq!(p.capacity(), 1 << 20);
        assert_eq!(p.timeouts(), isopath_datapath::flow::Timeouts::default());
        assert_eq!(p.active_timeout_s(), 1800);
        assert_eq!(flows("enabled = false").unwrap(), None);
        let p = flows(
            "capacity = 4096\ntcp_established_s = 600\ntcp_syn_s = 5\ntcp_fin_wait_s = 60\n\
             tcp_closed_s = 2\nudp_s = 10\nudp_stream_s = 50\nicmp_s = 7\nactive_timeout = 0",
        )
        .unwrap()
        .unwrap();
        let t = p.timeouts();
        assert_eq!(p.capacity(), 4096);
        assert_eq!(
            (
                t.tcp_established_s,
                t.tcp_syn_s,
                t.tcp_fin_wait_s,
                t.tcp_closed_s
            ),
            (600, 5, 60, 2)
        );
        assert_eq!((t.udp_s, t.udp_stream_s, t.icmp_s), (10, 50, 7));
        assert_eq!(p.active_timeout_s(), 0);
        assert_eq!(
            flows("capacity = 10").unwrap_err(),
            "flows.capacity: 10: must be between 64 and 8388608"
        );
        assert_eq!(
            flows("capacity = 99999999999").unwrap_err(),
            "flows.capacity: 99999999999: must be between 64 and 8388608"
        );
        assert_eq!(
            flows("udp_s = 0").unwrap_err(),
            "flows.udp_s: 0: must be between 1 and 86400 seconds"
        );
        assert_eq!(
            flows("icmp_s = 4294967296").unwrap_err(),
            "flows.icmp_s: 4294967296: must be between 1 and 86400 seconds"
        );
        assert_eq!(
            flows("active_timeout = 90000").unwrap_err(),
            "flows.active_timeout: 90000: must be 0 (off) or between 1 and 86400 seconds"
        );
        assert!(flows("capacity = -1").is_err());
        assert!(
            flows("tcp_timeout = 3")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
