//! A bond's member ports and their link as the bond sees it.

use std::time::Instant;

/// A member's link as the bond sees it (after up/down delays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberLink {
    /// Counts as up.
    Up,
    /// Carrier lost; becomes down at the deadline unless it returns.
    GoingDown(Instant),
    /// Counts as down.
    Down,
    /// Carrier back; becomes up at the deadline unless it drops again.
    GoingUp(Instant),
}

impl MemberLink {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::GoingDown(_) => "going down",
            Self::Down => "down",
            Self::GoingUp(_) => "going up",
        }
    }

    pub(super) fn counts_up(self) -> bool {
        matches!(self, Self::Up | Self::GoingDown(_))
    }
}

/// A member port.
#[derive(Debug, Clone)]
pub struct Member {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Link state.
    pub link: MemberLink,
    /// Times the link went down.
    pub link_failures: u64,
    /// Priority when choosing a new active member (higher wins; Linux's `prio`).
    pub prio: i32,
    /// Speed in Mb/s, from the NIC or the config (used by `primary_reselect = better`).
    pub speed: u32,
    /// The member's own MAC address.
    pub perm_mac: String,
    /// Taken out of the bond at run time: never selected, its frames no longer the bond's.
    pub released: bool,
}
