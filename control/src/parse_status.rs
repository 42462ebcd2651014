//! The parse-counter part of a port's status: what the workers' classify pass found on the
//! port (frames that did not parse, by reason; frames by class) and, with `[flows] strict`,
//! the frames dropped for not parsing. Summed over the port's sockets on every worker.

use std::collections::BTreeMap;

use isopath_datapath::{
    stats::QueueCounters,
    wire::{FrameClass, ParseError},
};
use serde::Serialize;

/// A port's parse counters, every reason and class present (0 when none was seen).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParseCounters {
    /// `parse_truncated`, `parse_bad_ihl`, ...: frames that did not parse, forwarded unless
    /// strict.
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// `rx_drop_parse_truncated`, ...: those dropped because the port is strict (drops, listed
    /// with the port's other drops).
    pub parse_drops: BTreeMap<&'static str, u64>,
    /// `ipv4`, `ipv6`, `arp`, `lldp`, `other`: frames received by class (runts excluded).
    pub classes: BTreeMap<&'static str, u64>,
}

impl ParseCounters {
    /// The sum over a port's sockets.
    pub fn sum<'a>(sockets: impl IntoIterator<Item = &'a QueueCounters>) -> Self {
        let mut p = Self::default();
        for e in ParseError::ALL {
            p.parse_errors.insert(e.name(), 0);
            p.parse_drops.insert(e.drop_name(), 0);
        }
        for c in FrameClass::ALL {
            p.classes.insert(c.name(), 0);
        }
        for q in sockets {
            for e in ParseError::ALL {
                *p.parse_errors.entry(e.name()).or_default() += q.parse_errors(e);
                *p.parse_drops.entry(e.drop_name()).or_default() += q.parse_drops(e);
            }
            for c in FrameClass::ALL {
                *p.classes.entry(c.name()).or_default() += q.class(c);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_class_is_listed_and_sockets_add_up() {
        let p = ParseCounters::sum(std::iter::empty());
        assert_eq!(p.parse_errors.len(), ParseError::COUNT);
        assert_eq!(p.parse_drops["rx_drop_parse_bad_ihl"], 0);
        assert_eq!(
            p.classes.keys().copied().collect::<Vec<_>>(),
            ["arp", "ipv4", "ipv6", "lldp", "other"]
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["parse_errors"]["parse_bad_ipv4_checksum"], 0);
    }
}
