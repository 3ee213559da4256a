//! The source tree's rules (docs/architecture.md, "Modules and what they may import"), checked
//! by reading `src/`:
//!
//! - data flows one way, config → dli → poll → store → metrics → web, and each subsystem imports
//!   only what the table in [`FORBIDDEN`] allows; the simulator imports only what it shares with
//!   the client ([`SIM_MAY_IMPORT`]);
//! - no two files import each other, directly or around a longer circle;
//! - `main.rs` uses only `app` and `cli`;
//! - every module opens with a `//!` doc, no comment points at a file outside the repository, and
//!   no file grows past [`MAX_LINES`] lines.
//!
//! It parses `use` trees and inline `crate::`/`super::` paths textually: enough for this code
//! base, which has no macros that build paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Subsystem -> subsystems it must not import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "config",
        &[
            "dli", "poll", "store", "metrics", "web", "app", "cli", "sim",
        ],
    ),
    (
        "dli",
        &["poll", "store", "metrics", "web", "app", "cli", "sim"],
    ),
    ("poll", &["metrics", "web", "app", "cli", "sim"]),
    ("store", &["poll", "metrics", "web", "app", "cli", "sim"]),
    ("metrics", &["poll", "web", "app", "cli", "sim"]),
    ("web", &["dli", "poll", "app", "cli", "sim"]),
    (
        "cli",
        &["dli", "poll", "store", "metrics", "web", "app", "sim"],
    ),
    (
        "secret",
        &[
            "config", "dli", "poll", "store", "metrics", "web", "app", "cli", "sim",
        ],
    ),
    (
        "version",
        &[
            "config", "secret", "dli", "poll", "store", "metrics", "web", "app", "cli", "sim",
        ],
    ),
];

/// The only parts of the exporter the simulator may use: what it shares with the client (the
/// signer, the state vocabulary, the shared `Secret` type and version).
const SIM_MAY_IMPORT: &[&str] = &["sim", "secret", "version", "dli::auth::aksk", "dli::states"];

/// Longest source file, in lines.
const MAX_LINES: usize = 650;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, with its module path (`dli::paging`, `app`, `` for lib.rs).
fn modules() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src/")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let root = src_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).expect("under src/");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            (p, parts.join("::"))
        })
        .collect()
}

/// The code of a file without comments and string contents (so neither can fake an import).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut in_str = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
                out.push('"');
            }
            i += 1;
            continue;
        }
        if c == '/' && bytes.get(i + 1) == Some(&'/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '"' {
            // Raw strings (r"..", r#".."#) in this code base hold no quotes that would matter.
            in_str = true;
        }
        if c == '\'' {
            // A char literal such as '"' must not open a string.
            if bytes.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
                continue;
            }
            if bytes.get(i + 1) == Some(&'\\') && bytes.get(i + 3) == Some(&'\'') {
                out.push_str("' '");
                i += 4;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, self}}`) into full paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, tree: &str, out: &mut Vec<String>) {
        match tree.find('{') {
            None => {
                let path = tree.split("as").next().unwrap_or(tree);
                let path = path.strip_suffix("::self").unwrap_or(path);
                out.push(format!("{prefix}{path}"));
            }
            Some(open) => {
                let head = &tree[..open];
                let inner = &tree[open + 1..tree.rfind('}').expect("balanced braces")];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            let part = &inner[start..i];
                            if !part.is_empty() {
                                go(&format!("{prefix}{head}"), part, out);
                            }
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                let part = &inner[start..];
                if !part.is_empty() {
                    go(&format!("{prefix}{head}"), part, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    for p in &mut out {
        if let Some(stripped) = p.strip_suffix("::self") {
            *p = stripped.to_string();
        }
        if p == "self" {
            p.clear();
        }
    }
    out
}

/// Byte ranges of inline modules (`mod tests { .. }`) in `code`.
fn inline_mods(code: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("mod ") {
        let at = from + i;
        from = at + 4;
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[at + 4..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = at + 4 + name_len + (rest[name_len..].len() - after.len());
        let mut depth = 0usize;
        for (k, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((open, open + k));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Every path a file names that starts at `crate`, `super` or `self`, with the number of inline
/// modules (`mod tests { .. }`) it stands in.
fn referenced_paths(code: &str) -> Vec<(String, usize)> {
    let mods = inline_mods(code);
    let depth = |at: usize| mods.iter().filter(|(a, b)| *a < at && at < *b).count();
    let mut out = Vec::new();
    let mut in_use = Vec::new();
    // `use` statements, possibly over several lines.
    let mut offset = 0;
    while let Some(at) = find_use(&code[offset..]) {
        let start = offset + at;
        let Some(end) = code[start..].find(';') else {
            break;
        };
        in_use.push((start, start + end));
        let tree = code[start..start + end]
            .trim_start()
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("use ");
        for p in expand_use(tree) {
            if p.starts_with("crate::") || p.starts_with("super::") || p.starts_with("self::") {
                out.push((p, depth(start)));
            }
        }
        offset = start + end + 1;
    }
    // Inline paths: `crate::a::b::f(..)`, `super::x::y`.
    for word in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(word) {
            let start = from + i;
            from = start + word.len();
            let before = code[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                || in_use.iter().any(|(a, b)| *a <= start && start < *b)
            {
                continue;
            }
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push((path.trim_end_matches(':').to_string(), depth(start)));
        }
    }
    out
}

/// The offset of the next `use` statement (optionally `pub`) that starts a line.
fn find_use(s: &str) -> Option<usize> {
    let mut from = 0;
    loop {
        let i = s[from..].find("use ")? + from;
        from = i + 4;
        let line_start = s[..i].rfind('\n').map_or(0, |j| j + 1);
        let lead = s[line_start..i].trim_start();
        if lead.is_empty() || ["pub ", "pub(crate) ", "pub(super) "].contains(&lead) {
            return Some(i - lead.len());
        }
    }
}

/// The module a path names, resolved against `module` (the file's module path) and cut to the
/// longest prefix that is a file of `src/`.
fn resolve(
    path: &str,
    module: &str,
    inline_depth: usize,
    known: &BTreeSet<String>,
) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    match segs.first().copied() {
        Some("crate") => {
            base.clear();
            segs.remove(0);
        }
        Some("self") => {
            segs.remove(0);
        }
        Some("super") => {
            // Inside inline modules (`mod tests`), the first `super`s climb out of them.
            let mut inline = inline_depth;
            while segs.first() == Some(&"super") {
                segs.remove(0);
                if inline > 0 {
                    inline -= 1;
                } else {
                    base.pop();
                }
            }
        }
        _ => return None,
    }
    base.extend(segs);
    while !base.is_empty() {
        let candidate = base.join("::");
        if known.contains(&candidate) {
            return Some(candidate);
        }
        base.pop();
    }
    None
}

fn subsystem(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

struct Graph {
    /// File module -> modules it imports (other files only).
    edges: BTreeMap<String, BTreeSet<String>>,
    files: BTreeMap<String, PathBuf>,
}

fn graph() -> Graph {
    let mods = modules();
    let known: BTreeSet<String> = mods.iter().map(|(_, m)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (path, module) in &mods {
        if path.ends_with("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read source");
        let code = code_of(&text);
        let mut targets = BTreeSet::new();
        for (p, depth) in referenced_paths(&code) {
            if let Some(target) = resolve(&p, module, depth, &known)
                && &target != module
            {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
        files.insert(module.clone(), path.clone());
    }
    Graph { edges, files }
}

#[test]
fn imports_follow_the_data_flow() {
    let g = graph();
    let mut broken = Vec::new();
    for (from, targets) in &g.edges {
        let sub = subsystem(from);
        for to in targets {
            let to_sub = subsystem(to);
            if to_sub == sub {
                continue;
            }
            let forbidden = FORBIDDEN
                .iter()
                .find(|(s, _)| *s == sub)
                .is_some_and(|(_, f)| f.contains(&to_sub));
            let sim_breach = sub == "sim"
                && !SIM_MAY_IMPORT
                    .iter()
                    .any(|allowed| to == allowed || to.starts_with(&format!("{allowed}::")));
            if forbidden || sim_breach {
                broken.push(format!("{} ({from}) imports {to}", g.files[from].display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the data flow (docs/architecture.md):\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_checker_sees_imports() {
    // The checker itself: a rule it cannot see would pass silently.
    let g = graph();
    let app = &g.edges["app"];
    for expected in ["config", "metrics", "store"] {
        assert!(
            app.iter().any(|t| subsystem(t) == expected),
            "app imports {expected}: {app:?}"
        );
    }
    assert!(g.edges["poll::scheduler"].contains("store"));
    assert!(g.edges["dli::client"].contains("dli::http"));
    let known: BTreeSet<String> = ["a", "a::b", "c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        resolve("super::c::X", "a::b", 0, &known).as_deref(),
        Some("a")
    );
    assert_eq!(
        resolve("super::X", "a::b", 1, &known).as_deref(),
        Some("a::b")
    );
    assert_eq!(resolve("crate::c::f", "a", 0, &known).as_deref(), Some("c"));
    assert_eq!(
        expand_use("crate::{a::{self, B}, c::D as E}"),
        vec!["crate::a", "crate::a::B", "crate::c::D"]
    );
    let code = code_of(
        "// use crate::web;\nlet s = \"crate::web\";\nuse crate::store::X;\nmod tests {\n    use super::Y;\n}\n",
    );
    assert_eq!(
        referenced_paths(&code),
        vec![
            ("crate::store::X".to_string(), 0),
            ("super::Y".to_string(), 1)
        ]
    );
}

#[test]
fn no_two_files_import_each_other() {
    let g = graph();
    // Edges to a file's own ancestors (a folder's mod.rs, which declares it) are how Rust
    // modules work, not a circle.
    let is_ancestor = |a: &str, b: &str| b.is_empty() || a.starts_with(&format!("{b}::"));
    let edges: BTreeMap<&str, Vec<&str>> = g
        .edges
        .iter()
        .map(|(from, tos)| {
            (
                from.as_str(),
                tos.iter()
                    .map(String::as_str)
                    .filter(|to| !is_ancestor(from, to) && !is_ancestor(to, from))
                    .collect(),
            )
        })
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(n, 1);
        stack.push(n);
        for &m in edges.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match state.get(m).copied().unwrap_or(0) {
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                1 => {
                    let at = stack.iter().position(|s| *s == m).unwrap_or(0);
                    let mut circle: Vec<String> =
                        stack[at..].iter().map(|s| s.to_string()).collect();
                    circle.push(m.to_string());
                    return Some(circle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n).copied().unwrap_or(0) == 0
            && let Some(circle) = visit(n, &edges, &mut state, &mut Vec::new())
        {
            panic!("files import each other: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn main_only_picks_a_mode() {
    let text = std::fs::read_to_string(src_dir().join("main.rs")).expect("main.rs");
    let code = code_of(&text);
    for line in code.lines().filter(|l| l.contains("dli_exporter::")) {
        let ok = ["dli_exporter::app", "dli_exporter::cli"]
            .iter()
            .any(|m| line.contains(m));
        assert!(ok, "main.rs uses more than app and cli: {line}");
    }
    assert!(text.lines().count() <= 60, "main.rs stays thin");
}

#[test]
fn every_module_says_what_it_owns_and_files_stay_readable() {
    let mut problems = Vec::new();
    for (path, _) in modules() {
        let text = std::fs::read_to_string(&path).expect("read source");
        let shown = path.strip_prefix(src_dir()).unwrap_or(&path).display();
        if !text.starts_with("//!") {
            problems.push(format!("src/{shown}: does not open with a //! module doc"));
        }
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!("src/{shown}: {lines} lines (limit {MAX_LINES})"));
        }
        for (n, line) in text.lines().enumerate() {
            let comment = line.split_once("//").map(|(_, c)| c).unwrap_or("");
            let outside = comment.contains("design.md")
                || (comment.contains("dli-api.md") && !comment.contains("docs/dli-api.md"))
                || comment.contains("../shared")
                || comment.contains("issue ");
            if outside {
                problems.push(format!(
                    "src/{shown}:{}: points outside the repository: {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
