//! The architecture holds: the crates depend on each other as docs/architecture.md draws
//! them, every source file is a module its crate declares, no module of any crate imports (directly or through others) a module that imports
//! it, no function takes so many parameters that clippy's allowance was needed, and what the
//! code cites of the design is in the repository.
//!
//! Modules are read from the source files as rustc finds them (`lib.rs`, `x.rs`,
//! `x/mod.rs`). A reference is a path starting with `crate::`, `super::` or a child
//! module's name; a path through a re-export (`pub use x::Item` in a `mod.rs`) counts as a
//! reference to the module that defines the item. Between the modules of one folder, and
//! the folder's own file (its `mod.rs` or `lib.rs`), references must form no circle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The library crates and the folders of their sources.
const CRATES: &[&str] = &[
    "aat",
    "api",
    "db",
    "http",
    "registry",
    "issuer",
    "authority",
    "proxy-verifier",
    "cli",
    "tests",
];

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target" && n != "node_modules") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module path of a source file of a library (`a::b`; the crate root is empty), or `None`
/// for binaries.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    Some(parts)
}

/// The code of a file without comments, string and character literals, and its unit tests.
fn code(text: &str) -> String {
    let tests = Regex::new(r"#\[cfg\([^\n]*\btest\b[^\n]*\)\]\s*mod tests").unwrap();
    let text = match tests.find(text) {
        Some(at) => &text[..at.start()],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && at(i + 1) == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && !word_before && (at(i + 1) == '"' || (at(i + 1) == '#' && at(i + 2) != '[')) {
            // A raw string: r"…", r#"…"#, ….
            let mut hashes = 0;
            i += 1;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < chars.len() && !(chars[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#')) {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && at(i + 1) == '\\' {
            // An escaped character literal: '\n', '\'', '\u{…}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && at(i + 2) == '\'' {
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The paths a piece of code names, each as its segments (`use a::{b, c::d}` gives `a::b`
/// and `a::c::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // Paths in `use` trees: expand the braces.
    let uses = Regex::new(r"(?s)\buse\s+([^;]+);").unwrap();
    for tree in uses.captures_iter(code) {
        expand(&tidy(&tree[1]), &mut Vec::new(), &mut out);
    }
    // Paths elsewhere: `a::b::c`.
    let plain = Regex::new(r"\b([a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let without_uses = uses.replace_all(code, "");
    for path in plain.captures_iter(&without_uses) {
        out.push(path[1].split("::").map(str::to_owned).collect());
    }
    out
}

/// A `use` tree on one line, without spaces but those around `as`.
fn tidy(tree: &str) -> String {
    let mut tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    for (from, to) in [
        (" ::", "::"),
        (":: ", "::"),
        ("{ ", "{"),
        (" }", "}"),
        (" ,", ","),
        (", ", ","),
    ] {
        tree = tree.replace(from, to);
    }
    tree
}

/// Expands a `use` tree into its paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let depth = prefix.len();
        prefix.extend(head);
        let mut level = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    expand(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], prefix, out);
        prefix.truncate(depth);
    } else if !tree.is_empty() {
        let name = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix.clone();
        path.extend(name.split("::").filter(|s| !s.is_empty()).map(str::to_owned));
        out.push(path);
    }
}

/// One crate's modules and their references.
struct Crate {
    name: String,
    /// Module path → the modules it declares.
    modules: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// Module path → the paths its code names.
    paths: BTreeMap<Vec<String>, Vec<Vec<String>>>,
    /// (module, name) → the module a `pub use` takes the name from.
    reexports: HashMap<(Vec<String>, String), Vec<String>>,
}

impl Crate {
    fn read(dir: &str) -> Self {
        let src = root().join(dir).join("src");
        let mut modules: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        let mut paths_of = BTreeMap::new();
        let mut texts = BTreeMap::new();
        let declared = Regex::new(r"(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;").unwrap();
        for file in rust_files(&src) {
            let Some(module) = module_of(&src, &file) else {
                continue;
            };
            let text = code(&std::fs::read_to_string(&file).unwrap());
            let children: BTreeSet<String> = declared.captures_iter(&text).map(|c| c[1].to_owned()).collect();
            modules.entry(module.clone()).or_default().extend(children);
            texts.insert(module, text);
        }
        let mut reexports = HashMap::new();
        let reexport = Regex::new(r"(?s)\bpub\s+use\s+([^;]+);").unwrap();
        for (module, text) in &texts {
            paths_of.insert(module.clone(), paths(text));
            for tree in reexport.captures_iter(text) {
                let mut found = Vec::new();
                expand(&tidy(&tree[1]), &mut Vec::new(), &mut found);
                for path in found {
                    if let Some((name, from)) = path.split_last() {
                        reexports.insert((module.clone(), name.clone()), from.to_vec());
                    }
                }
            }
        }
        Self {
            name: dir.to_owned(),
            modules,
            paths: paths_of,
            reexports,
        }
    }

    /// The module a path names from `module`, if it is one of this crate's: the longest
    /// prefix that is a module, followed through re-exports.
    fn resolve(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let (mut at, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &path[1..]),
            Some("self") => (module.to_vec(), &path[1..]),
            Some("super") => {
                let mut at = module.to_vec();
                let mut rest = path;
                while rest.first().is_some_and(|s| s == "super") {
                    at.pop();
                    rest = &rest[1..];
                }
                (at, rest)
            }
            Some(first) if self.modules.get(module).is_some_and(|c| c.contains(first)) => (module.to_vec(), path),
            _ => return None,
        };
        let mut rest = rest.iter();
        for segment in rest.by_ref() {
            let is_child = self.modules.get(&at).is_some_and(|c| c.contains(segment));
            if is_child {
                at.push(segment.clone());
                continue;
            }
            // An item of `at`, perhaps re-exported from elsewhere.
            let mut seen = 0;
            while let Some(from) = self.reexports.get(&(at.clone(), segment.clone())) {
                let resolved = self.resolve(&at, &[from.clone(), vec![segment.clone()]].concat());
                match resolved {
                    Some(target) if target != at && seen < 8 => {
                        at = target;
                        seen += 1;
                    }
                    _ => break,
                }
            }
            break;
        }
        Some(at)
    }

    /// The source files no module declares: code nobody compiles, which rots unseen.
    fn undeclared(&self) -> Vec<String> {
        self.modules
            .keys()
            .filter_map(|module| {
                let (name, parent) = module.split_last()?;
                let declared = self.modules.get(parent).is_some_and(|c| c.contains(name));
                (!declared).then(|| format!("{}::{}", self.name, module.join("::")))
            })
            .collect()
    }

    /// The circles among the modules of each folder (and the folder's own file).
    fn circles(&self) -> Vec<String> {
        // Edges between siblings: (parent, from, to), where `from`/`to` are child names or
        // "(self)" for the parent's own file.
        let mut edges: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
        for (module, paths) in &self.paths {
            for path in paths {
                let Some(target) = self.resolve(module, path) else {
                    continue;
                };
                if &target == module {
                    continue;
                }
                let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
                let parent = module[..common].to_vec();
                let node = |m: &Vec<String>| m.get(common).cloned().unwrap_or_else(|| "(self)".to_owned());
                let (from, to) = (node(module), node(&target));
                if from != to {
                    edges.entry(parent).or_default().insert((from, to));
                }
            }
        }
        let mut found = Vec::new();
        for (parent, edges) in edges {
            let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (from, to) in &edges {
                graph.entry(from).or_default().push(to);
            }
            for start in graph.keys() {
                if let Some(mut circle) = circle_from(&graph, start) {
                    // One report per circle: start it at its smallest node.
                    circle.pop();
                    let first = circle.iter().enumerate().min_by_key(|(_, n)| **n).map_or(0, |(i, _)| i);
                    circle.rotate_left(first);
                    circle.push(circle[0]);
                    found.push(format!("{}::{}: {}", self.name, parent.join("::"), circle.join(" -> ")));
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// A circle through `start`, if there is one (depth-first search).
fn circle_from<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>, start: &'a str) -> Option<Vec<&'a str>> {
    let mut stack = vec![(start, vec![start])];
    let mut seen = BTreeSet::new();
    while let Some((node, trail)) = stack.pop() {
        for next in graph.get(node).into_iter().flatten() {
            if *next == start {
                let mut circle = trail.clone();
                circle.push(start);
                return Some(circle);
            }
            if seen.insert(*next) {
                let mut trail = trail.clone();
                trail.push(next);
                stack.push((next, trail));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let circles: Vec<String> = CRATES.iter().flat_map(|dir| Crate::read(dir).circles()).collect();
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn every_source_file_is_a_declared_module() {
    let undeclared: Vec<String> = CRATES.iter().flat_map(|dir| Crate::read(dir).undeclared()).collect();
    assert!(
        undeclared.is_empty(),
        "files no module declares:\n{}",
        undeclared.join("\n")
    );
}

#[test]
fn the_undeclared_file_check_finds_them() {
    let krate = Crate {
        name: "example".into(),
        modules: BTreeMap::from([
            (vec![], BTreeSet::from(["a".to_owned()])),
            (vec!["a".into()], BTreeSet::new()),
            (vec!["stale".into()], BTreeSet::new()),
        ]),
        paths: BTreeMap::new(),
        reexports: HashMap::new(),
    };
    assert_eq!(krate.undeclared(), ["example::stale"]);
}

#[test]
fn the_circle_check_finds_circles() {
    let mut krate = Crate {
        name: "example".into(),
        modules: BTreeMap::from([(vec![], BTreeSet::from(["a".to_owned(), "b".to_owned()]))]),
        paths: BTreeMap::new(),
        reexports: HashMap::new(),
    };
    krate
        .paths
        .insert(vec!["a".into()], paths(&code("use crate::b::{Thing, other::More};")));
    krate
        .paths
        .insert(vec!["b".into()], paths(&code("fn f() { crate::a::g() }")));
    assert_eq!(krate.circles(), ["example::: a -> b -> a"]);
    krate
        .paths
        .insert(vec!["b".into()], paths(&code("// crate::a::g()\nfn f() {}")));
    assert!(krate.circles().is_empty());
}

#[test]
fn no_function_needs_the_long_parameter_list_allowance() {
    let mut found = Vec::new();
    for dir in CRATES {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.contains(&["too_many", "_arguments"].concat()) {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

/// `cargo tree` of `package` along `edges` (`normal,build,dev` is cargo's default), one package
/// per line.
fn tree_of(package: &str, edges: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root())
        .args(["tree", "--locked", "--offline", "--prefix", "none", "-e", edges, "-p"])
        .arg(package)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// `cargo tree -p package` as cargo shows it by default (dev-dependencies included).
fn tree(package: &str) -> String {
    tree_of(package, "normal,build,dev")
}

fn depends_on(tree: &str, name: &str) -> bool {
    tree.lines().any(|line| line.split_whitespace().next() == Some(name))
}

#[test]
fn crates_depend_on_each_other_as_drawn() {
    let issuer = tree("aip-issuer");
    assert!(
        !depends_on(&issuer, "aip-registry"),
        "aip-issuer depends on aip-registry"
    );
    let proxy = tree("aip-proxy-verifier");
    for crate_name in ["aip-registry", "aip-issuer", "aip-db", "sqlx"] {
        assert!(
            !depends_on(&proxy, crate_name),
            "aip-proxy-verifier depends on {crate_name}"
        );
    }
    let registry = tree("aip-registry");
    assert!(
        !depends_on(&registry, "aip-issuer"),
        "aip-registry depends on aip-issuer"
    );
    // What the toolkit and the API client bring into any program that uses them.
    for pure in ["aip-aat", "aip-api"] {
        let tree = tree_of(pure, "normal,build");
        for crate_name in ["sqlx", "axum", "aip-db"] {
            assert!(!depends_on(&tree, crate_name), "{pure} depends on {crate_name}");
        }
    }
}

/// Files of the repository that git tracks (and new ones it does not ignore).
fn repository_files() -> Vec<PathBuf> {
    let output = Command::new("git")
        .current_dir(root())
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| root().join(line))
        .filter(|path| path.is_file())
        .collect()
}

#[test]
fn what_the_code_cites_of_the_design_is_in_the_repository() {
    let architecture = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let headings: BTreeSet<String> = architecture
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| heading.trim_start_matches('#').trim().to_owned())
        .collect();
    let citation = Regex::new(r#"docs/architecture\.md,?\s+(?://[/!]?\s*)?"([^"]+)""#).unwrap();
    let continued = Regex::new(r"\s*\n\s*(?://[/!]?)?\s*").unwrap();
    let anchor = Regex::new(r"architecture\.md#([a-z0-9-]+)").unwrap();
    let anchors: BTreeSet<String> = headings.iter().map(|h| slug(h)).collect();
    let outside = ["../", "shared/"].concat();
    let design = ["DESIGN", " §"].concat();
    let mut problems = Vec::new();
    for file in repository_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        if text.contains(&design) {
            problems.push(format!("{name}: cites a design document that is not in the repository"));
        }
        if text.contains(&outside) && !name.ends_with("architecture.rs") {
            problems.push(format!("{name}: points outside the repository"));
        }
        for cited in citation.captures_iter(&text) {
            let section = continued.replace_all(&cited[1], " ");
            if !headings.contains(section.as_ref()) {
                problems.push(format!("{name}: docs/architecture.md has no section {section:?}"));
            }
        }
        for linked in anchor.captures_iter(&text) {
            if !anchors.contains(&linked[1]) {
                problems.push(format!("{name}: docs/architecture.md has no heading #{}", &linked[1]));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A heading's anchor as Markdown renderers make it: lower case, spaces to hyphens, most
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}
