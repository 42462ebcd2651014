//! Which external programs the project runs, and whether a fresh machine gets each of them.
//!
//! CI runs on the developer's machine, where things were installed by hand, so a green CI can
//! hide a missing install step. This module finds the programs the project starts (the
//! `Command::new("…")` literals of its Rust sources and the first word of each command in its
//! shell scripts), resolves each with `type -P` and the dpkg database (`dpkg -S`), and requires its Debian
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
            if line.trim_start().starts_with("//") {
                continue; // comments name programs without running them
            }
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
    // A script may call functions of one it sources (scripts/deps.sh's isopath_deps).
    let scripts: Vec<(PathBuf, String)> = shell_scripts(root)
        .into_iter()
        .filter_map(|f| fs::read_to_string(&f).ok().map(|t| (f, t)))
        .collect();
    let functions: BTreeSet<String> = scripts
        .iter()
        .flat_map(|(_, t)| shell_functions(t))
        .collect();
    for (file, text) in &scripts {
        for (prog, n) in shell_commands(text) {
            if !functions.contains(&prog) {
                found
                    .entry(prog)
                    .or_default()
                    .push(format!("{}:{}", rel(root, file), n));
            }
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
    let provided = deps_sh_files(root);
    let dpkg = DpkgIndex::load();
    let mut out: Vec<Finding> = programs
        .into_iter()
        .map(|(program, used_at)| {
            let problem = problem_of(&program, deps_list, base, &provided, &dpkg);
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

fn problem_of(
    program: &str,
    deps: &BTreeSet<String>,
    base: &BTreeSet<String>,
    provided: &BTreeMap<String, String>,
    dpkg: &DpkgIndex,
) -> Option<String> {
    if MACHINE_TOOLCHAIN.contains(&program) {
        return None;
    }
    let Some(path) = resolve(program) else {
        // Not installed here, but deps.sh installs the package whose proof file it is (the
        // benchmark peers, which only `scripts/deps.sh --peers` installs).
        if provided.get(program).is_some_and(|pkg| deps.contains(pkg)) {
            return None;
        }
        return Some(format!(
            "`{program}` is not installed here (type -P finds nothing): add its package to \
             scripts/deps.sh"
        ));
    };
    let Some(pkg) = dpkg.package_of(&path) else {
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

/// What scripts/deps.sh installs, as the program name of each entry's proof file → package
/// (`"dpdk-dev:/usr/bin/dpdk-testpmd"` gives dpdk-testpmd → dpdk-dev).
fn deps_sh_files(root: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(root.join("scripts/deps.sh")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim_start();
        let Some(entry) = l.strip_prefix('"').and_then(|r| r.split('"').next()) else {
            continue;
        };
        if let Some((pkg, file)) = entry.split_once(':')
            && file.starts_with('/')
            && let Some(name) = Path::new(file).file_name()
        {
            out.insert(name.to_string_lossy().to_string(), pkg.to_string());
        }
    }
    out
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

/// The file `PROGRAM` runs from PATH (`type -P` in bash: the executable a `Command::new` or a
/// script would start, even where bash has a builtin of that name, such as kill).
pub fn resolve(program: &str) -> Option<PathBuf> {
    let out = Command::new("bash")
        .args(["-c", "type -P -- \"$1\"", "bash", program])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.starts_with('/')).then(|| PathBuf::from(s))
}

/// Which Debian package owns each file: what `dpkg -S` reads (`/var/lib/dpkg/info/*.list`),
/// loaded once (one `dpkg -S` call per path costs about half a second).
#[derive(Debug, Default)]
pub struct DpkgIndex {
    owner: BTreeMap<PathBuf, String>,
}

impl DpkgIndex {
    /// Reads the dpkg database of this machine.
    pub fn load() -> Self {
        let mut owner = BTreeMap::new();
        let Ok(rd) = fs::read_dir("/var/lib/dpkg/info") else {
            return Self { owner };
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(pkg) = name.strip_suffix(".list") else {
                continue;
            };
            let pkg = pkg.split(':').next().unwrap_or(pkg).to_string();
            if let Ok(text) = fs::read_to_string(e.path()) {
                for line in text.lines() {
                    owner
                        .entry(PathBuf::from(line))
                        .or_insert_with(|| pkg.clone());
                }
            }
        }
        Self { owner }
    }

    /// The package holding `path`, trying the path as given, its canonical form and its
    /// merged-/usr twin (`/usr/bin/x` is registered as `/bin/x` by some packages).
    pub fn package_of(&self, path: &Path) -> Option<String> {
        let mut tries = vec![path.to_path_buf()];
        if let Ok(c) = fs::canonicalize(path) {
            tries.push(c);
        }
        for p in tries.clone() {
            let s = p.to_string_lossy().to_string();
            match s.strip_prefix("/usr") {
                Some(rest) => tries.push(PathBuf::from(rest)),
                None => tries.push(PathBuf::from(format!("/usr{s}"))),
            }
        }
        tries.iter().find_map(|p| self.owner.get(p).cloned())
    }
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
/// of each simple command (after a newline, `;`, `&&`, `||`, `|`, `(`, `$(`, `<(`, a backquote,
/// `then`, `do`, ...), looking through `exec`, `time`, `!`, variable assignments and the
/// wrappers `ip netns exec NS`, `taskset -c CPUS` and `timeout SECS`. Quotes (also across
/// lines), arithmetic, parameter expansions, case patterns, comments, heredoc bodies (other
/// languages, config files) and the script's own functions are not commands.
pub fn shell_commands(text: &str) -> Vec<(String, usize)> {
    let functions = shell_functions(text);
    let mut sh = Shell::default();
    sh.run(text);
    sh.out
        .into_iter()
        .filter(|(p, _)| !SHELL_WORDS.contains(&p.as_str()) && !functions.contains(p))
        .collect()
}

/// The functions a script defines (`name() {` or `function name`).
pub fn shell_functions(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("function ").unwrap_or(l);
            let name = l.split(['(', ' ', '{']).next()?.trim();
            (l.contains("()") && is_program_name(name)).then(|| name.to_string())
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// Commands: the top level, `$( )`, `( )`, `<( )`.
    Cmd,
    /// Commands inside backquotes.
    Backtick,
    Dq,
    Sq,
    /// `$(( ))` or `(( ))`, with its open parentheses.
    Arith(u32),
    /// `${ }`, with its open braces.
    Param(u32),
}

/// A word of a command: its text, and whether any of it was quoted or substituted (then it is
/// not a program name the script spells out).
#[derive(Debug, Default, Clone)]
struct Word {
    text: String,
    quoted: bool,
}

#[derive(Debug, Default)]
struct Shell {
    out: Vec<(String, usize)>,
    stack: Vec<Ctx>,
    /// Per command context: the words of the simple command being read, and its line.
    segs: Vec<(Vec<Word>, usize)>,
    /// Per nested command context: the outer word it is part of (`"$(cmd)"`, `x=$(cmd)`).
    outer: Vec<Option<Word>>,
    word: Option<Word>,
    line: usize,
    /// Inside `case ... in` at a pattern (until its `)`).
    pattern: bool,
    /// The line ended with a backslash: the command goes on.
    continued: bool,
    heredocs: Vec<String>,
}

impl Shell {
    fn run(&mut self, text: &str) {
        self.stack.push(Ctx::Cmd);
        self.segs.push((Vec::new(), 1));
        self.line = 1;
        let lines: Vec<&str> = text.split('\n').collect();
        let mut li = 0;
        while li < lines.len() {
            self.line = li + 1;
            let chars: Vec<char> = lines[li].chars().collect();
            self.scan(&chars);
            self.newline();
            li += 1;
            // Heredoc bodies: skip to each terminator line in turn.
            for tag in std::mem::take(&mut self.heredocs) {
                while li < lines.len() && lines[li].trim() != tag {
                    li += 1;
                }
                li += 1;
            }
        }
        self.flush();
    }

    fn top(&self) -> Ctx {
        *self.stack.last().unwrap_or(&Ctx::Cmd)
    }

    fn in_cmd(&self) -> bool {
        matches!(self.top(), Ctx::Cmd | Ctx::Backtick)
    }

    fn word_mut(&mut self) -> &mut Word {
        self.word.get_or_insert_with(Word::default)
    }

    fn end_word(&mut self) {
        if let Some(w) = self.word.take() {
            let line = self.line;
            if let Some((words, l)) = self.segs.last_mut() {
                if words.is_empty() {
                    *l = line;
                }
                words.push(w);
            }
        }
    }

    /// The simple command read so far ends here: record its program.
    fn flush(&mut self) {
        self.end_word();
        let Some((words, line)) = self.segs.last_mut() else {
            return;
        };
        let words = std::mem::take(words);
        let line = *line;
        let first = words.first().map(|w| w.text.as_str());
        if self.pattern {
            if first == Some("esac") {
                self.pattern = false;
            }
            return;
        }
        if first == Some("case") {
            self.pattern = true;
            return;
        }
        for p in command_words(&words) {
            self.out.push((p, line));
        }
    }

    fn push(&mut self, c: Ctx) {
        if matches!(c, Ctx::Cmd | Ctx::Backtick) {
            self.segs.push((Vec::new(), self.line));
            self.outer.push(self.word.take());
        }
        self.stack.push(c);
    }

    fn pop(&mut self) {
        if self.in_cmd() && self.stack.len() > 1 {
            self.flush();
            self.segs.pop();
            self.word = self.outer.pop().flatten();
        }
        if self.stack.len() > 1 {
            self.stack.pop();
        }
        // What follows a substitution is still part of the outer word.
        if self.in_cmd() {
            self.word_mut().quoted = true;
        }
    }

    fn newline(&mut self) {
        if std::mem::take(&mut self.continued) {
            self.end_word();
            return;
        }
        match self.top() {
            Ctx::Cmd | Ctx::Backtick => self.flush(),
            _ => {}
        }
    }

    fn scan(&mut self, b: &[char]) {
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let next = b.get(i + 1).copied();
            match self.top() {
                Ctx::Sq => {
                    if c == '\'' {
                        self.stack.pop();
                    }
                }
                Ctx::Dq => match (c, next) {
                    ('\\', _) => i += 1,
                    ('"', _) => {
                        self.stack.pop();
                    }
                    ('$', Some('(')) if b.get(i + 2) == Some(&'(') => {
                        self.push(Ctx::Arith(0));
                        i += 2;
                    }
                    ('$', Some('(')) => {
                        self.push(Ctx::Cmd);
                        i += 1;
                    }
                    ('$', Some('{')) => {
                        self.push(Ctx::Param(0));
                        i += 1;
                    }
                    ('`', _) => self.push(Ctx::Backtick),
                    _ => {}
                },
                Ctx::Arith(d) => match c {
                    '(' => *self.stack.last_mut().unwrap() = Ctx::Arith(d + 1),
                    ')' if d > 0 => *self.stack.last_mut().unwrap() = Ctx::Arith(d - 1),
                    ')' => {
                        // The first of the closing `))`.
                        i += 1;
                        self.stack.pop();
                        if self.in_cmd() {
                            self.word_mut().quoted = true;
                        }
                    }
                    _ => {}
                },
                Ctx::Param(d) => match c {
                    '$' if next == Some('(') => {
                        self.push(Ctx::Cmd);
                        i += 1;
                    }
                    '{' => *self.stack.last_mut().unwrap() = Ctx::Param(d + 1),
                    '}' if d > 0 => *self.stack.last_mut().unwrap() = Ctx::Param(d - 1),
                    '}' => self.pop(),
                    _ => {}
                },
                Ctx::Cmd | Ctx::Backtick => {
                    let at_word_start = self.word.is_none();
                    match (c, next) {
                        ('#', _) if at_word_start => return,
                        ('\\', None) => self.continued = true,
                        ('\\', _) => {
                            i += 1;
                            self.word_mut().quoted = true;
                        }
                        ('\'', _) => {
                            self.word_mut().quoted = true;
                            self.stack.push(Ctx::Sq);
                        }
                        ('"', _) => {
                            self.word_mut().quoted = true;
                            self.stack.push(Ctx::Dq);
                        }
                        ('$', Some('(')) if b.get(i + 2) == Some(&'(') => {
                            self.word_mut().quoted = true;
                            self.stack.push(Ctx::Arith(0));
                            i += 2;
                        }
                        ('$', Some('(')) | ('<' | '>', Some('(')) => {
                            self.word_mut().quoted = true;
                            self.push(Ctx::Cmd);
                            i += 1;
                        }
                        ('$', Some('{')) => {
                            self.word_mut().quoted = true;
                            self.stack.push(Ctx::Param(0));
                            i += 1;
                        }
                        ('(', Some('(')) if at_word_start => {
                            self.flush();
                            self.stack.push(Ctx::Arith(0));
                            i += 1;
                        }
                        ('(', _) => {
                            self.flush();
                            self.push(Ctx::Cmd);
                        }
                        (')', _) => {
                            if self.pattern || self.stack.len() == 1 {
                                // A case pattern's end: what came before was no command.
                                self.word = None;
                                if let Some((w, _)) = self.segs.last_mut() {
                                    w.clear();
                                }
                                self.pattern = false;
                            } else {
                                self.pop();
                            }
                        }
                        ('`', _) if self.top() == Ctx::Backtick => self.pop(),
                        ('`', _) => self.push(Ctx::Backtick),
                        (';', Some(';')) => {
                            self.flush();
                            self.pattern = true;
                            i += 1;
                        }
                        (';' | '&' | '|', _) => self.flush(),
                        ('<', Some('<')) if b.get(i + 2) != Some(&'<') => {
                            self.end_word();
                            let rest: String = b[i + 2..].iter().collect();
                            let tag: String = rest
                                .trim_start_matches('-')
                                .trim_start()
                                .trim_start_matches(['\'', '"'])
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            if !tag.is_empty() {
                                self.heredocs.push(tag);
                            }
                            i += 1;
                        }
                        ('{' | '}', _) if at_word_start && next.is_none_or(char::is_whitespace) => {
                            self.flush();
                        }
                        (c, _) if c.is_whitespace() => self.end_word(),
                        (c, _) => self.word_mut().text.push(c),
                    }
                }
            }
            i += 1;
        }
    }
}

/// The programs a simple command runs: its first word, and the wrappers before it.
fn command_words(words: &[Word]) -> Vec<String> {
    let mut found = Vec::new();
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let t = w.text.as_str();
        if t.contains('=') && !t.starts_with(['=', '-']) {
            continue; // VAR=value, also VAR=$(...)
        }
        if w.quoted {
            break;
        }
        match t {
            "then" | "do" | "else" | "elif" | "if" | "while" | "until" | "!" | "exec" | "time"
            | "command" | "in" => {}
            "taskset" if it.peek().is_some_and(|a| a.text == "-c") => {
                found.push(t.to_string());
                it.next();
                it.next();
            }
            "timeout" => {
                found.push(t.to_string());
                while it.peek().is_some_and(|a| a.text.starts_with('-')) {
                    it.next();
                }
                it.next();
            }
            "ip" => {
                found.push(t.to_string());
                let rest: Vec<&str> = it.clone().take(2).map(|w| w.text.as_str()).collect();
                if rest != ["netns", "exec"] {
                    break;
                }
                it.next();
                it.next();
                it.next();
            }
            _ => {
                if is_program_name(t) {
                    found.push(t.to_string());
                }
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_in_command_position_only() {
        let script = r#"#!/bin/bash
set -e
foo() { bar; }
X=1 ip link add a type veth # comment tcpdump
ip netns exec NS taskset -c 0 nft list ruleset | grep -q x && ethtool -K a tx off
echo 'not; acmd' "$(bpftool prog)" "run as root (the lab needs it); see"
cat <<'EOF'
heredoc-tool arg
EOF
foo
x=$(ip -j link) y=2 tc qdisc
case $1 in
up | down) ping -c 1 x ;;
*) echo "bad (usage)" ;;
esac
for ((i = 0; i < 3; i++)); do sleep "$((i + 1))"; done
python3 -c 'import os
print(os.getpid())'
read -r a b < <(awk '{print}' f)
echo "${x:-$(hostname)} and ${#y}"
"#;
        let got: Vec<String> = shell_commands(script).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            got,
            [
                "bar", "ip", "ip", "taskset", "nft", "grep", "ethtool", "bpftool", "cat", "ip",
                "tc", "ping", "sleep", "python3", "awk", "hostname"
            ]
        );
    }
}
