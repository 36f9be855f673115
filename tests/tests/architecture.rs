//! The architecture holds: the crates depend on each other as docs/architecture.md draws
//! them, the crates checked here are the workspace's members, every source file is a module its
//! crate declares, no module of any crate imports (directly or through others) a module that
//! imports it, no function takes so many parameters that clippy's allowance (or a raised
//! threshold) was needed, and what the code cites of the design is in the repository.
//!
//! Each concept has one home: the agent directory, the store, database and registry errors, the
//! audit chain's genesis hash and verifier, and the JSON-RPC error table are each defined once,
//! the genesis value is written in the code only in `aat/src/chain.rs` (and seeded by the
//! migrations with the same value), and JSON-RPC error codes appear as numbers only in
//! `aat/src/jsonrpc.rs`. Wall-clock time is read only through the injected clock. No build
//! script, `build` key or linker argument in cargo's configuration changes the default build.
//! The top-level layout is the one the product was specified with, docs/architecture.md has
//! the sections the design requires, and the README links it and the AIP specification.
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

/// The library crates and the folders of their sources: the workspace's members.
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
    files_below(dir, "rs")
}

/// Every file below `dir` whose name ends in `.extension`.
fn files_below(dir: &Path, extension: &str) -> Vec<PathBuf> {
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
            } else if path.extension().is_some_and(|e| e == extension) {
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

/// The text of a file up to its unit tests (`#[cfg(test)] mod tests`); clippy's
/// `items_after_test_module` keeps any other item from following them.
fn without_unit_tests(text: &str) -> &str {
    let tests = Regex::new(r"#\[cfg\([^\n]*\btest\b[^\n]*\)\]\s*mod tests").unwrap();
    match tests.find(text) {
        Some(at) => &text[..at.start()],
        None => text,
    }
}

/// The code of a file without comments, string and character literals, and its unit tests.
fn code(text: &str) -> String {
    let text = without_unit_tests(text);
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

    /// The references between siblings: parent → (from, to), where `from`/`to` are child
    /// names or "(self)" for the parent's own file.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeSet<(String, String)>> {
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
        edges
    }

    /// The circles among the modules of each folder (and the folder's own file).
    fn circles(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (parent, edges) in self.edges() {
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

/// Every crate of [`CRATES`], each with its library root and at least one module read, so that
/// a wrong folder cannot pass the module checks for want of files.
fn read_crates() -> Vec<Crate> {
    CRATES
        .iter()
        .map(|dir| {
            let krate = Crate::read(dir);
            assert!(
                krate.modules.contains_key(&Vec::new()),
                "{dir}: no src/lib.rs read; modules found: {:?}",
                krate.modules.keys().collect::<Vec<_>>()
            );
            krate
        })
        .collect()
}

/// The `members` of the workspace, as the root Cargo.toml lists them.
fn workspace_members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = Regex::new(r"(?s)\bmembers\s*=\s*\[([^\]]*)\]").unwrap();
    let list = &members.captures(&manifest).expect("no `members = [...]` in Cargo.toml")[1];
    let quoted = Regex::new(r#""([^"]*)""#).unwrap();
    quoted.captures_iter(list).map(|c| c[1].to_owned()).collect()
}

#[test]
fn the_crates_checked_are_the_workspace_members() {
    let mut members = workspace_members();
    members.sort();
    let mut checked: Vec<String> = CRATES.iter().map(|c| (*c).to_owned()).collect();
    checked.sort();
    assert!(!members.is_empty(), "no workspace members read from Cargo.toml");
    assert_eq!(checked, members, "CRATES differs from the workspace members");
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let crates = read_crates();
    // The references are found at all: a resolver that finds none would see no circle.
    let edges: usize = crates.iter().flat_map(Crate::edges).map(|(_, e)| e.len()).sum();
    assert!(edges > 0, "no references between modules found");
    let circles: Vec<String> = crates.iter().flat_map(Crate::circles).collect();
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn every_source_file_is_a_declared_module() {
    let undeclared: Vec<String> = read_crates().iter().flat_map(Crate::undeclared).collect();
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
    let lint = ["too_many", "_arguments"].concat();
    let mut found = Vec::new();
    for dir in CRATES {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.contains(&lint) {
                found.push(file.display().to_string());
            }
        }
    }
    // Nor is the lint allowed in a manifest's `[lints]`, or its threshold raised in clippy's
    // configuration (`too-many-arguments-threshold`).
    let folders = std::iter::once(root()).chain(CRATES.iter().map(|dir| root().join(dir)));
    for folder in folders {
        for name in ["Cargo.toml", "clippy.toml", ".clippy.toml"] {
            let Ok(text) = std::fs::read_to_string(folder.join(name)) else {
                continue;
            };
            if text.replace('-', "_").contains(&lint) {
                found.push(folder.join(name).display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn the_performance_tooling_is_out_of_the_default_build() {
    let members = workspace_members();
    assert!(!members.is_empty());
    let build_key = Regex::new(r"(?m)^\s*build\s*=").unwrap();
    let mut found = Vec::new();
    let folders: Vec<PathBuf> = std::iter::once(root())
        .chain(members.iter().map(|m| root().join(m)))
        .collect();
    for folder in &folders {
        if folder.join("build.rs").exists() {
            found.push(format!("{}: a build script", folder.join("build.rs").display()));
        }
        let manifest = folder.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        if build_key.is_match(&text) {
            found.push(format!("{}: a `build` key", manifest.display()));
        }
        // Cargo reads `.cargo/config.toml` (or `config`) of the folder it runs in and above.
        let Ok(entries) = std::fs::read_dir(folder.join(".cargo")) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let is_config = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("config"));
            if is_config && std::fs::read_to_string(&path).unwrap_or_default().contains("link-arg") {
                found.push(format!("{}: linker arguments", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the default build is changed (the packaging scripts pass such flags explicitly):\n{}",
        found.join("\n")
    );
}

/// Every source file of the crates' `src` folders (binaries included): its path from the
/// workspace root, and its text.
fn source_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in CRATES {
        let src = rust_files(&root().join(dir).join("src"));
        assert!(!src.is_empty(), "{dir}/src has no source files");
        for file in src {
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            files.push((name, std::fs::read_to_string(&file).unwrap()));
        }
    }
    files
}

/// The files and lines of `files` whose code (per `text_of`) matches `pattern`.
fn matches(files: &[(String, String)], text_of: fn(&str) -> String, pattern: &Regex) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, text) in files {
        let text = text_of(text);
        for line in text.lines().filter(|line| pattern.is_match(line)) {
            found.push((name.clone(), line.trim().to_owned()));
        }
    }
    found
}

fn listed(found: &[(String, String)]) -> String {
    found
        .iter()
        .map(|(file, line)| format!("{file}: {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn each_concept_is_defined_once() {
    let files = source_files();
    let mut problems = Vec::new();
    for concept in [
        "trait AgentDirectory",
        "enum StoreError",
        "enum DbError",
        "enum RegistryError",
        "const GENESIS_HASH",
        "enum ErrorCode",
        "struct ChainVerifier",
    ] {
        let (kind, name) = concept.split_once(' ').unwrap();
        let pattern = Regex::new(&format!(r"\b{kind}\s+{name}\b")).unwrap();
        let found = matches(&files, code, &pattern);
        if found.len() != 1 {
            problems.push(format!(
                "`{concept}` defined {} times:\n{}",
                found.len(),
                listed(&found)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The genesis hash of the audit chain, as `aat/src/chain.rs` defines it.
fn genesis_hash() -> String {
    let chain = std::fs::read_to_string(root().join("aat/src/chain.rs")).unwrap();
    let defined = Regex::new(r#"const GENESIS_HASH: &str = "([^"]*)""#).unwrap();
    defined.captures(&chain).expect("no GENESIS_HASH in aat/src/chain.rs")[1].to_owned()
}

#[test]
fn the_genesis_hash_is_written_once() {
    let zeros = "0".repeat(64);
    assert_eq!(genesis_hash(), zeros);
    let pattern = Regex::new(&zeros).unwrap();
    let found = matches(&source_files(), |text| without_unit_tests(text).to_owned(), &pattern);
    let chain: Vec<&(String, String)> = found.iter().filter(|(file, _)| file == "aat/src/chain.rs").collect();
    assert!(
        chain.len() == 1 && found.len() == 1,
        "the genesis hash is written outside aat::chain::GENESIS_HASH:\n{}",
        listed(&found)
    );

    // The migrations seed the chain's head with the same value, each database's folder once.
    let insert = Regex::new(r"(?is)INSERT\s+INTO\s+registry_state\s*\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)").unwrap();
    let mut seeded: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("migrations")).unwrap() {
        let folder = entry.unwrap().path();
        if folder.is_dir() {
            seeded.insert(folder, 0);
        }
    }
    for file in files_below(&root().join("migrations"), "sql") {
        let text = std::fs::read_to_string(&file).unwrap();
        for seed in insert.captures_iter(&text) {
            let columns: Vec<&str> = seed[1].split(',').map(str::trim).collect();
            let values: Vec<&str> = seed[2].split(',').map(str::trim).collect();
            let at = columns.iter().position(|c| *c == "audit_head").unwrap();
            assert_eq!(
                values[at].trim_matches('\''),
                zeros,
                "{}: the audit head is not seeded with the genesis hash",
                file.display()
            );
            *seeded.entry(file.parent().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert!(!seeded.is_empty(), "no migration folders");
    for (folder, count) in seeded {
        assert_eq!(count, 1, "{}: the audit head seeded {count} times", folder.display());
    }
}

#[test]
fn json_rpc_error_codes_are_numbers_in_one_place() {
    // An integer literal -32000 … -32999 (with `_` separators or a type suffix).
    let pattern = Regex::new(r"-\s*32_*\d_*\d_*\d(?:_*[iu](?:8|16|32|64|128|size))?\b").unwrap();
    let found = matches(&source_files(), code, &pattern);
    let (table, elsewhere): (Vec<_>, Vec<_>) = found.into_iter().partition(|(file, _)| file == "aat/src/jsonrpc.rs");
    assert!(!table.is_empty(), "no codes found in aat/src/jsonrpc.rs");
    assert!(
        elsewhere.is_empty(),
        "JSON-RPC error codes outside aip_aat::jsonrpc::ErrorCode:\n{}",
        listed(&elsewhere)
    );
}

#[test]
fn the_wall_clock_is_read_only_through_the_injected_clock() {
    let pattern = Regex::new(
        r"\b(?:SystemTime\s*::\s*now|OffsetDateTime\s*::\s*now_(?:utc|local)|UtcDateTime\s*::\s*now|(?:Utc|Local)\s*::\s*now)\b",
    )
    .unwrap();
    // The files that may read the wall clock, and why.
    let allowed: BTreeMap<&str, &str> = BTreeMap::from([
        ("aat/src/clock.rs", "the clock itself: SystemClock"),
        (
            "tests/src/lib.rs",
            "a unique name for a throw-away test database, not a time anything checks",
        ),
    ]);
    let found = matches(&source_files(), code, &pattern);
    let outside: Vec<(String, String)> = found
        .iter()
        .filter(|(file, _)| !allowed.contains_key(file.as_str()))
        .cloned()
        .collect();
    assert!(
        outside.is_empty(),
        "wall-clock reads outside the injected clock (aip_aat::clock::Clock):\n{}",
        listed(&outside)
    );
    for file in allowed.keys() {
        assert!(
            found.iter().any(|(f, _)| f == file),
            "{file} no longer reads the wall clock: drop it from the allowed files"
        );
    }
}

#[test]
fn the_architecture_document_has_its_sections_and_the_readme_links_it() {
    let architecture = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let headings = headings(&architecture);
    for section in [
        "Crate map",
        "Tables and who owns them",
        "The authority lock and the audit chain",
        "Registration",
        "Token request",
        "Tool call",
    ] {
        assert!(
            headings.contains(section),
            "docs/architecture.md has no section {section:?}"
        );
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for link in [
        "](docs/architecture.md)",
        "](https://agentidentityprotocol.io/specs/aip-",
    ] {
        assert!(readme.contains(link), "README.md has no link {link:?}");
    }
}

#[test]
fn the_top_level_layout_is_as_specified() {
    for file in ["Cargo.toml", "README.md"] {
        assert!(root().join(file).is_file(), "no {file}");
    }
    for folder in [
        "registry",
        "issuer",
        "aat",
        "cli",
        "proxy-verifier",
        "migrations",
        "tests",
    ] {
        assert!(root().join(folder).is_dir(), "no {folder}/");
    }
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
    let headings = headings(&architecture);
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

/// The headings of a Markdown document, without their `#`s.
fn headings(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| heading.trim_start_matches('#').trim().to_owned())
        .collect()
}
