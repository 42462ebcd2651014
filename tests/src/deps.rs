//! Which external programs the project runs, and whether a fresh machine gets each of them.
//!
//! CI runs on the developer's machine, where things were installed by hand, so a green CI can
//! hide a missing install step. This module finds the programs the project starts (the
//! `Command::new("…")` literals of its Rust sources and the first word of each command in its
//! shell scripts), resolves each with `command -v` and `dpkg -S`, and requires its Debian
//! package to be either in the base image of a fresh machine (`tests/fixtures/installed-rust.txt`,
//! a copy of the library's `env/packages/installed-rust.txt`) or in `scripts/deps.sh --list`.
//! Tools that only dependencies' build scripts run (m4 for libxdp's configure, ...) cannot be
//! discovered that way: they are in [`BUILD_TOOLS`], checked the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs run only by the build scripts of dependencies, with who runs them.
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("m4", "libxdp-sys: xdp-tools' configure"),
    ("make", "libbpf-sys and libxdp-sys"),
    (
        "clang",
        "libbpf-cargo (the XDP program), libxdp-sys (its BPF objects)",
    ),
    ("llvm-strip", "libxdp-sys strips its BPF objects"),
    ("pkg-config", "libbpf-sys finds libelf and zlib"),
    ("gcc", "cc-rs for libbpf and libxdp"),
];

/// Programs that come with the machine's toolchains rather than from a Debian package
/// (the library's `env` entry: rustup's cargo, pyenv's CPython).
const MACHINE_TOOLCHAIN: &[&str] = &["cargo", "rustc", "rustup", "python3"];

/// Shell words that are never programs to install.
const SHELL_WORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case",
    "esac", "function", "return", "local", "export", "set", "shift", "cd", "echo", "printf",
    "read", "exit", "trap", "wait", "kill", "test", "true", "false", "source", "eval", "exec",
    "declare", "unset", "break", "continue", "command", "type", "time", "readonly", "let", "pwd",
    "umask", "ulimit", "hash", "getopts", "mapfile", "select", "builtin", "exec", "jobs", "disown",
    "bg", "fg", "alias", "shopt", "printenv",
];

/// One program the project runs: where it was found, and what resolving it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The program's name.
    pub program: String,
    /// Where the project runs it (file:line), or the build-tool table's reason.
    pub used_at: Vec<String>,
    /// What is wrong; `None` when its package is guaranteed.
    pub problem: Option<String>,
}

/// Every program the sources under `root` run, with the place each is run from.
pub fn discover(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in rust_sources(root) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("Command::new(\"") {
                rest = &rest[i + "Command::new(\"".len()..];
                let Some(end) = rest.find('"') else { break };
                let prog = &rest[..end];
                if is_program_name(prog) {
                    found.entry(prog.to_string()).or_default().push(format!(
                        "{}:{}",
                        rel(root, &file),
                        n + 1
                    ));
                }
                rest = &rest[end..];
            }
        }
    }
    for file in shell_scripts(root) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (prog, n) in shell_commands(&text) {
            found
                .entry(prog)
                .or_default()
                .push(format!("{}:{}", rel(root, &file), n));
        }
    }
    found
}

/// Checks every discovered program and every build tool against the guaranteed packages:
/// `deps_list` (what `scripts/deps.sh --list --peers` prints) and `base` (the fixture's `apt`
/// lines). Returns one finding per program, problems first.
pub fn check(root: &Path, deps_list: &BTreeSet<String>, base: &BTreeSet<String>) -> Vec<Finding> {
    let mut programs = discover(root);
    for (tool, why) in BUILD_TOOLS {
        programs
            .entry((*tool).to_string())
            .or_default()
            .push(format!("build tool: {why}"));
    }
    let mut out: Vec<Finding> = programs
        .into_iter()
        .map(|(program, used_at)| {
            let problem = problem_of(&program, deps_list, base);
            Finding {
                program,
                used_at,
                problem,
            }
        })
        .collect();
    out.sort_by_key(|f| f.problem.is_none());
    out
}

fn problem_of(program: &str, deps: &BTreeSet<String>, base: &BTreeSet<String>) -> Option<String> {
    if MACHINE_TOOLCHAIN.contains(&program) {
        return None;
    }
    let Some(path) = resolve(program) else {
        return Some(format!(
            "`{program}` is not installed here (command -v finds nothing): add its package to \
             scripts/deps.sh"
        ));
    };
    let Some(pkg) = package_of(&path) else {
        return Some(format!(
            "`{program}` ({}) belongs to no Debian package",
            path.display()
        ));
    };
    if deps.contains(&pkg) || base.contains(&pkg) {
        None
    } else {
        Some(format!(
            "`{program}` comes from package {pkg}, which is neither in a fresh machine's base \
             image nor in scripts/deps.sh --list"
        ))
    }
}

/// The base image's Debian packages: the `apt` lines of an `installed-*.txt` listing.
pub fn base_packages(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some("apt")).then(|| f.next()).flatten()
        })
        .map(|p| p.split(':').next().unwrap_or(p).to_string())
        .collect()
}

/// `command -v PROGRAM` in bash, as a path (builtins and functions resolve to no path).
pub fn resolve(program: &str) -> Option<PathBuf> {
    let out = Command::new("bash")
        .args(["-c", "command -v -- \"$1\"", "bash", program])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.starts_with('/')).then(|| PathBuf::from(s))
}

/// The Debian package holding `path` (`dpkg -S`), trying the path as given, its canonical form
/// and its merged-/usr twin (`/usr/bin/x` is registered as `/bin/x` by some packages).
pub fn package_of(path: &Path) -> Option<String> {
    let mut tries = vec![path.to_path_buf()];
    if let Ok(c) = fs::canonicalize(path) {
        tries.push(c);
    }
    for p in tries.clone() {
        let s = p.to_string_lossy().to_string();
        if let Some(rest) = s.strip_prefix("/usr") {
            tries.push(PathBuf::from(rest));
        } else {
            tries.push(PathBuf::from(format!("/usr{s}")));
        }
    }
    for p in tries {
        let Ok(out) = Command::new("dpkg").arg("-S").arg(&p).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // "pkg[:arch][, pkg2]: /path"; diversions print "diversion by ..." lines.
        for line in text.lines().filter(|l| !l.starts_with("diversion")) {
            if let Some((pkgs, _)) = line.rsplit_once(": ") {
                let first = pkgs.split(',').next()?.trim();
                return Some(first.split(':').next().unwrap_or(first).to_string());
            }
        }
    }
    None
}

fn is_program_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._+-".contains(c))
}

fn rel(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn rust_sources(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["datapath", "control", "bench", "tests", "fuzz"] {
        walk(&root.join(dir), &mut |p| {
            if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.to_path_buf());
            }
        });
    }
    out.sort();
    out
}

fn shell_scripts(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["scripts", "deploy", "bench/scripts", ".ci"] {
        let Ok(rd) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(text) = fs::read_to_string(&p) else {
                continue;
            };
            let first = text.lines().next().unwrap_or("");
            if p.is_file() && first.starts_with("#!") && (first.contains("sh")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == "corpus" || n == "artifacts")
            {
                continue;
            }
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// The programs in command position in a shell script, with their line numbers: the first word
/// of each simple command (after `;`, `&&`, `||`, `|`, `(`, `$(`, `then`, `do`, ...), looking
/// through `exec`, `time`, `!`, variable assignments and the wrappers `ip netns exec NS`,
/// `taskset -c CPUS`, `timeout SECS`. Heredoc bodies (other languages, config files) and the
/// script's own functions are skipped.
pub fn shell_commands(text: &str) -> Vec<(String, usize)> {
    let functions: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let name = l.split("()").next()?;
            (l.contains("()") && is_program_name(name.trim())).then(|| name.trim().to_string())
        })
        .collect();
    let mut out = Vec::new();
    let mut heredoc: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        if let Some(end) = &heredoc {
            if raw.trim() == end {
                heredoc = None;
            }
            continue;
        }
        let line = strip_comment(raw);
        if let Some(i) = line.find("<<") {
            let tag: String = line[i + 2..]
                .trim_start_matches('-')
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !tag.is_empty() {
                heredoc = Some(tag);
            }
        }
        let line = strip_single_quoted(&line);
        for seg in split_commands(&line) {
            if let Some(prog) = command_word(&seg)
                && !SHELL_WORDS.contains(&prog.as_str())
                && !functions.contains(&prog)
            {
                out.push((prog, n + 1));
            }
        }
    }
    out
}

fn strip_comment(line: &str) -> String {
    // A `#` starts a comment at the start of a word, outside quotes.
    let (mut sq, mut dq) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            '#' if !sq && !dq && (prev.is_whitespace() || i == 0) => return line[..i].to_string(),
            _ => {}
        }
        prev = c;
    }
    line.to_string()
}

fn strip_single_quoted(line: &str) -> String {
    let mut out = String::new();
    let (mut sq, mut dq) = (false, false);
    for c in line.chars() {
        match c {
            '\'' if !dq => {
                sq = !sq;
                out.push('_');
            }
            '"' if !sq => {
                dq = !dq;
                out.push(c);
            }
            _ if sq => {}
            _ => out.push(c),
        }
    }
    out
}

fn split_commands(line: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two: String = b[i..(i + 2).min(b.len())].iter().collect();
        if two == "&&" || two == "||" || two == "$(" {
            segs.push(std::mem::take(&mut cur));
            i += 2;
            continue;
        }
        if c == ';' || c == '|' || c == '(' || c == '`' || c == '{' {
            segs.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
        i += 1;
    }
    segs.push(cur);
    segs
}

fn command_word(seg: &str) -> Option<String> {
    let mut words = seg.split_whitespace().peekable();
    loop {
        let w = words.next()?;
        match w {
            "then" | "do" | "else" | "elif" | "if" | "while" | "until" | "!" | "exec" | "time"
            | "command" => continue,
            "taskset" => {
                // taskset -c CPUS CMD
                if words.peek() == Some(&"-c") {
                    words.next();
                    words.next();
                    continue;
                }
                return Some(w.to_string());
            }
            "timeout" => {
                while words.peek().is_some_and(|a| a.starts_with('-')) {
                    words.next();
                }
                words.next();
                continue;
            }
            "ip" => {
                let rest: Vec<&str> = words.clone().take(2).collect();
                if rest == ["netns", "exec"] {
                    words.next();
                    words.next();
                    words.next();
                    continue;
                }
                return Some(w.to_string());
            }
            _ if w.contains('=') && !w.starts_with('=') && !w.starts_with('-') => continue,
            _ => return is_program_name(w).then(|| w.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_in_command_position_only() {
        let script = "#!/bin/bash\nset -e\nfoo() { bar; }\nX=1 ip link add a type veth # comment tcpdump\n\
            ip netns exec NS taskset -c 0 nft list ruleset | grep -q x && ethtool -K a tx off\n\
            echo 'not; acmd' \"$(bpftool prog)\"\ncat <<'EOF'\nheredoc-tool arg\nEOF\nfoo\n";
        let got: Vec<String> = shell_commands(script).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            got,
            ["bar", "ip", "nft", "grep", "ethtool", "bpftool", "cat"]
        );
    }
}
