//! `docs/protocol.md` against the code: every message type, every attribute of every nest
//! (number, name, type), every enumeration value, event group and flag the code has must be in
//! the file's tables, and the file may list nothing the code lacks.

use std::collections::BTreeSet;

use super::{
    attrs,
    msg::{
        ArpAllTargets, ArpValidate, BindMode, BondEventKind, BondMode, CaptureDir, DaemonState,
        ErrorKind, FailOverMac, Group, LinkKind, MemberLink, MemberState, OperState, REPLY_TYPES,
        REQUEST_TYPES, Reselect, TYPE_NAMES, TcpState, XdpMode,
    },
    nl,
};

const DOC: &str = include_str!("../../docs/protocol.md");

/// The cells of the table rows of the section that starts with heading `head` (up to the next
/// heading of the same or a higher level).
fn section_rows(head: &str) -> Vec<Vec<String>> {
    let level = head.chars().take_while(|&c| c == '#').count();
    let mut rows = Vec::new();
    let mut inside = false;
    for line in DOC.lines() {
        if line.starts_with('#') {
            let l = line.chars().take_while(|&c| c == '#').count();
            if line == head {
                inside = true;
                continue;
            }
            if inside && l <= level {
                break;
            }
        }
        if inside && line.starts_with('|') && !line.starts_with("|---") {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            rows.push(cells);
        }
    }
    assert!(
        !rows.is_empty(),
        "docs/protocol.md has no table under {head:?}"
    );
    rows
}

/// Rows whose first cell is a number (skips the header row).
fn numbered(head: &str) -> Vec<Vec<String>> {
    section_rows(head)
        .into_iter()
        .filter(|r| r[0].parse::<u32>().is_ok())
        .collect()
}

fn same(what: &str, code: BTreeSet<String>, doc: BTreeSet<String>) {
    let missing: Vec<_> = code.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/protocol.md and the code disagree on {what}:\n  in the code, not the doc: \
         {missing:?}\n  in the doc, not the code: {extra:?}"
    );
}

#[test]
fn every_attribute_of_every_nest_is_documented() {
    let mut code = BTreeSet::new();
    let mut doc = BTreeSet::new();
    for p in attrs::ALL {
        for a in p.attrs {
            code.insert(format!("{}.{} = {}: {}", p.name, a.name, a.kind, a.ty));
        }
        for r in numbered(&format!("### Nest `{}`", p.name)) {
            doc.insert(format!("{}.{} = {}: {}", p.name, r[1], r[0], r[2]));
        }
    }
    same("attributes", code, doc);
    // And no nest documented that the code lacks.
    let nests: BTreeSet<String> = attrs::ALL.iter().map(|p| p.name.to_owned()).collect();
    let documented: BTreeSet<String> = DOC
        .lines()
        .filter_map(|l| l.strip_prefix("### Nest `"))
        .map(|l| l.trim_end_matches('`').to_owned())
        .collect();
    same("nests", nests, documented);
}

#[test]
fn every_message_type_is_documented_with_its_bodies() {
    let mut code = BTreeSet::new();
    for &(kind, name) in TYPE_NAMES {
        let req = REQUEST_TYPES.iter().find(|t| t.0 == kind);
        let rep = REPLY_TYPES.iter().find(|t| t.0 == kind);
        code.insert(format!(
            "{kind} {name} request={} reply={} dump={}",
            req.map_or("-", |t| t.1.name),
            rep.map_or("-", |t| t.1.name),
            req.is_some_and(|t| t.2),
        ));
    }
    let body = |cell: &str| {
        if cell == "—" {
            "-".to_owned()
        } else {
            // "`link` (LinkAdd)": the nest's name.
            cell.split('`').next().unwrap_or("").trim().to_owned()
        }
    };
    let doc = numbered("## Message types")
        .iter()
        .map(|r| {
            format!(
                "{} {} request={} reply={} dump={}",
                r[0],
                r[1],
                body(&r[2]),
                body(&r[3]),
                r[4] == "yes"
            )
        })
        .collect();
    same("message types", code, doc);
}

#[test]
fn every_value_group_standard_type_and_flag_is_documented() {
    macro_rules! enums {
        ($($t:ident),* $(,)?) => {{
            let mut code = BTreeSet::new();
            let mut doc = BTreeSet::new();
            $(
                for v in $t::ALL {
                    code.insert(format!("{} {} {}", stringify!($t), v.raw(), v.name()));
                }
                for r in numbered(concat!("#### `", stringify!($t), "`")) {
                    doc.insert(format!("{} {} {}", stringify!($t), r[0], r[1]));
                }
            )*
            same("enumeration values", code, doc);
            let listed = [$(stringify!($t)),*];
            let headed = DOC.lines().filter(|l| l.starts_with("#### `")).count();
            assert_eq!(headed, listed.len(), "an enumeration in the doc is not checked here");
        }};
    }
    enums!(
        LinkKind,
        OperState,
        BindMode,
        XdpMode,
        BondMode,
        Reselect,
        FailOverMac,
        ArpValidate,
        ArpAllTargets,
        MemberLink,
        MemberState,
        BondEventKind,
        DaemonState,
        CaptureDir,
        ErrorKind,
        TcpState,
    );

    let code = Group::ALL
        .iter()
        .map(|g| format!("{} {}", *g as u32, g.name()))
        .collect();
    let doc = numbered("## Events")
        .iter()
        .map(|r| format!("{} {}", r[0], r[1]))
        .collect();
    same("event groups", code, doc);

    let code = [
        (nl::NLMSG_NOOP, "NLMSG_NOOP"),
        (nl::NLMSG_ERROR, "NLMSG_ERROR"),
        (nl::NLMSG_DONE, "NLMSG_DONE"),
    ]
    .iter()
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    let doc = numbered("## Standard types and flags")
        .iter()
        .map(|r| format!("{} {}", r[0], r[1]))
        .collect();
    same("standard types", code, doc);

    let flags = [
        ("NLM_F_REQUEST", nl::NLM_F_REQUEST),
        ("NLM_F_MULTI", nl::NLM_F_MULTI),
        ("NLM_F_ACK", nl::NLM_F_ACK),
        ("NLM_F_ECHO", nl::NLM_F_ECHO),
        ("NLM_F_DUMP_INTR", nl::NLM_F_DUMP_INTR),
        ("NLM_F_DUMP_FILTERED", nl::NLM_F_DUMP_FILTERED),
        ("ISO_F_STRICT", nl::ISO_F_STRICT),
        ("NLM_F_DUMP", nl::NLM_F_DUMP),
        ("NLM_F_REPLACE", nl::NLM_F_REPLACE),
        ("NLM_F_EXCL", nl::NLM_F_EXCL),
        ("NLM_F_CREATE", nl::NLM_F_CREATE),
        ("NLM_F_CAPPED", nl::NLM_F_CAPPED),
        ("NLM_F_ACK_TLVS", nl::NLM_F_ACK_TLVS),
    ];
    let code = flags.iter().map(|(n, v)| format!("{n} {v:#x}")).collect();
    let doc = section_rows("## Standard types and flags")
        .iter()
        .filter(|r| r[0].starts_with("NLM_F_") || r[0].starts_with("ISO_F_"))
        .map(|r| {
            let v = u16::from_str_radix(r[1].trim_start_matches("0x"), 16).unwrap_or(u16::MAX);
            format!("{} {v:#x}", r[0])
        })
        .collect();
    same("flags", code, doc);
}
