//! A fresh machine gets every program the project runs: each resolves to a Debian package in the
//! base image (`tests/fixtures/installed-rust.txt`) or in `scripts/deps.sh --list`; and no
//! documented command uses `sudo`, which these machines do not have.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use isopath_tests::deps::{self, BUILD_TOOLS};
use isopath_tests::repo_root;

fn deps_list(root: &Path) -> BTreeSet<String> {
    let out = Command::new("bash")
        .arg(root.join("scripts/deps.sh"))
        .args(["--list", "--peers"])
        .output()
        .expect("run scripts/deps.sh --list");
    assert!(out.status.success(), "deps.sh --list failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let names: Vec<&str> = text.lines().collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        names, sorted,
        "deps.sh --list prints one name per line, sorted"
    );
    names.into_iter().map(String::from).collect()
}

fn base(root: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(root.join("tests/fixtures/installed-rust.txt"))
        .expect("tests/fixtures/installed-rust.txt");
    let base = deps::base_packages(&text);
    assert!(
        base.len() > 500,
        "the base image lists {} packages",
        base.len()
    );
    base
}

fn problems(root: &Path) -> Vec<String> {
    deps::check(root, &deps_list(&repo_root()), &base(&repo_root()))
        .into_iter()
        .filter_map(|f| {
            f.problem
                .map(|p| format!("{p} (used at {})", f.used_at.join(", ")))
        })
        .collect()
}

#[test]
fn every_program_the_project_runs_has_a_guaranteed_package() {
    let root = repo_root();
    let found = deps::discover(&root);
    // The discovery itself must see the programs the lab cannot work without.
    for p in [
        "ip",
        "tcpdump",
        "nft",
        "ethtool",
        "ping",
        "taskset",
        "sysctl",
        "dpdk-testpmd",
        "valgrind",
    ] {
        assert!(
            found.contains_key(p),
            "discovery missed `{p}`: {:?}",
            found.keys()
        );
    }
    let bad = problems(&root);
    assert!(
        bad.is_empty(),
        "programs a fresh machine would lack:\n{}",
        bad.join("\n")
    );
}

#[test]
fn deps_list_is_sorted_and_names_the_build_tools_packages() {
    let list = deps_list(&repo_root());
    for pkg in [
        "m4",
        "clang",
        "libelf-dev",
        "libbpf-dev",
        "bpftool",
        "tcpdump",
        "nftables",
    ] {
        assert!(list.contains(pkg), "deps.sh --list lacks {pkg}");
    }
    assert!(BUILD_TOOLS.iter().any(|(t, _)| *t == "m4"));
}

/// The check can fail: a planted `Command::new` of an unknown tool (`frobnicate-tool`) in a copy
/// of the tree is reported, and so is a script that runs it.
#[test]
fn a_planted_unknown_tool_fails_the_check() {
    let root = repo_root();
    let tmp = std::env::temp_dir().join(format!("isopath-deps-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    copy_tree(&root.join("control/src"), &tmp.join("control/src"));
    copy_tree(&root.join("scripts"), &tmp.join("scripts"));
    assert!(problems(&tmp).is_empty(), "the copy alone passes");

    fs::write(
        tmp.join("control/src/planted.rs"),
        "fn f() { let _ = std::process::Command::new(\"frobnicate-tool\").status(); }\n",
    )
    .unwrap();
    let bad = problems(&tmp);
    assert!(
        bad.iter()
            .any(|p| p.contains("frobnicate-tool") && p.contains("control/src/planted.rs:1")),
        "planted Command::new not reported: {bad:?}"
    );
    fs::remove_file(tmp.join("control/src/planted.rs")).unwrap();

    fs::write(
        tmp.join("scripts/planted.sh"),
        "#!/usr/bin/env bash\nset -e\nfrobnicate-tool --now\n",
    )
    .unwrap();
    let bad = problems(&tmp);
    assert!(
        bad.iter()
            .any(|p| p.contains("frobnicate-tool") && p.contains("scripts/planted.sh:3")),
        "planted script command not reported: {bad:?}"
    );
    // A program that is installed but whose package nothing guarantees is refused too.
    let empty = BTreeSet::new();
    let f = deps::check(&tmp, &empty, &empty);
    assert!(
        f.iter().any(|f| f.program == "ip"
            && f.problem
                .as_deref()
                .is_some_and(|p| p.contains("package iproute2"))),
        "an unlisted package is reported"
    );
    let _ = fs::remove_dir_all(&tmp);
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &dst);
        } else {
            fs::copy(&p, &dst).unwrap();
        }
    }
}

/// No documented command uses `sudo`: these machines run everything as root and have none.
#[test]
fn no_sudo_in_documented_commands() {
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("deploy/README.md")];
    for dir in ["bench", "scripts", "deploy", "bench/scripts", ".ci"] {
        for e in fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.is_file()
                && (p.extension().is_some_and(|x| x == "md" || x == "sh")
                    || fs::read_to_string(&p).is_ok_and(|t| t.starts_with("#!")))
            {
                files.push(p);
            }
        }
    }
    let mut bad = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let hit = line.match_indices("sudo").any(|(i, _)| {
                let before = line[..i].chars().last().unwrap_or(' ');
                let after = line[i + 4..].chars().next().unwrap_or(' ');
                (before.is_whitespace() || "`($".contains(before))
                    && (after == ' ' || after == '\t' || after == 'e'/* sudoedit */)
            });
            if hit {
                bad.push(format!("{}:{}: {line}", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "documented commands with sudo:\n{}",
        bad.join("\n")
    );
}

/// `.ci/run` runs exactly the README's test command (its second code block).
#[test]
fn ci_runs_the_readme_test_command() {
    let root = repo_root();
    let ci = fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.contains("README.md"),
        ".ci/run reads the README's command"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "awk '/^```/{n+=f?0:1; f=!f; next} f && n==2 && NF{sub(/[[:space:]]+#.*/, \"\"); \
             print; exit}' README.md",
        )
        .current_dir(&root)
        .output()
        .unwrap();
    let cmd = String::from_utf8(out.stdout).unwrap();
    assert_eq!(cmd.trim(), "scripts/test.sh", "README's second code block");
    assert!(ci.contains("n==2"), ".ci/run takes the second block");
}
