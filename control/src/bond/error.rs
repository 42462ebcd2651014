//! Errors of bond commands.

use isopath_datapath::bond::MAX_MEMBERS;

/// Errors of bond commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BondError {
    /// `bond set` of an option that does not exist or cannot change at run time.
    #[error(
        "unknown or read-only option {0:?} (run-time options: primary, primary_reselect, miimon, updelay, downdelay, drain_ms, peer_notif_delay, num_grat_arp, num_unsol_na, reannounce, all_members_active, fail_over_mac)"
    )]
    UnknownOption(String),
    /// A value out of the option's range or not of its kind.
    #[error("{key} = {value:?}: {expected}")]
    BadValue {
        /// The option.
        key: String,
        /// The value given.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// `primary` names an interface that is not a member.
    #[error("primary = {member:?}: not a member of {bond}")]
    NotAMember {
        /// Bond.
        bond: String,
        /// The name given.
        member: String,
    },
    /// `bond add` of a member already in the bond.
    #[error("{bond}: {member} is already a member")]
    AlreadyMember {
        /// Bond.
        bond: String,
        /// Member.
        member: String,
    },
    /// `bond add` to a bond with [`MAX_MEMBERS`] members.
    #[error("{bond}: already {MAX_MEMBERS} members")]
    Full {
        /// Bond.
        bond: String,
    },
    /// No such member.
    #[error("{bond}: no member named {member:?}")]
    NoMember {
        /// Bond.
        bond: String,
        /// The name given.
        member: String,
    },
    /// The member's link is not up.
    #[error("{bond}: cannot switch to {member}: its link is {link}")]
    NotUp {
        /// Bond.
        bond: String,
        /// Member.
        member: String,
        /// Its link state.
        link: &'static str,
    },
}
