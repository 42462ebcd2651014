//! What a bond records: why the active member changed, and the stamped event log.

use serde::{Deserialize, Serialize};

/// Why the active member changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The bond started.
    Start,
    /// The active member's link went down.
    LinkDown,
    /// A member's link came up and the policy prefers it.
    LinkUp,
    /// The operator asked (planned switch).
    Manual,
    /// Options changed.
    Options,
}

impl Reason {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::LinkDown => "link down",
            Self::LinkUp => "link up",
            Self::Manual => "manual switch",
            Self::Options => "options changed",
        }
    }
}

/// What a bond event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A member's link changed (as the bond sees it, after the delays).
    MemberLink,
    /// A planned switch's drain ended.
    DrainDone,
    /// An option changed (`bond set`).
    OptionChanged,
    /// The active member changed.
    ActiveChanged,
    /// No member is active any more.
    NoActiveMember,
    /// A member was released.
    MemberReleased,
    /// A member was added.
    MemberAdded,
}

impl EventKind {
    /// The name logged and sent (`active_changed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MemberLink => "member_link",
            Self::DrainDone => "drain_done",
            Self::OptionChanged => "option_changed",
            Self::ActiveChanged => "active_changed",
            Self::NoActiveMember => "no_active_member",
            Self::MemberReleased => "member_released",
            Self::MemberAdded => "member_added",
        }
    }
}

/// One state change, stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch (comparable across processes).
    pub unix_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The member concerned, if any.
    pub member: Option<String>,
    /// Free text: from/to, reason.
    pub detail: String,
}
