//! README.md's "A first tour", run as written. The test reads README.md when it runs, takes
//! the `serve` command of its first `sh` block and every `sh` block of the tour, and runs each
//! command line with `bash` in a temporary directory laid out like a clone (README.md,
//! .gitignore, docs/, examples/ copied in), top to bottom, against `aip-ca serve` on the
//! README's address (127.0.0.1:8443).
//!
//! What it changes, and nothing else:
//! * the `<placeholders>` take the values earlier commands printed (admin token, agent id, her
//!   API key, the AAT, the reader token);
//! * instead of the `cargo run` alias and the tour's `cargo build` and `export PATH=…` lines,
//!   the binaries this test built are on `PATH` (no cargo runs inside the test);
//! * `serve` runs on a pseudo-terminal (`script`), where the test answers its passphrase
//!   prompt twice and reads the admin token it prints; the other programs' passphrase prompts
//!   are answered the way they read a passphrase off a terminal, `AIP_PASSPHRASE`;
//! * the `aip-agent` line gets the tour's `json` lines on its standard input, as the reader
//!   pastes them, and its answers are checked;
//! * the clone's `node_modules` is the MCP test peers' (`npm ci --prefix tests/mcp`), so the
//!   tour's `npx` finds the filesystem server without the network.
//!
//! Lines whose comment says `refused` must fail, naming a revocation. After the tour, every
//! file the tour wrote must be ignored by git.
//!
//! Needs Node.js, the MCP test peers, `openssl`, `git`, `script` and the address
//! 127.0.0.1:8443 free; under `CI` they are required, elsewhere the test is reported skipped
//! without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aip_tests::{aip_agent, aip_ca, aip_proxy, http_get};
use serde_json::Value;

/// The address the README's authority listens on.
const README_URL: &str = "http://127.0.0.1:8443";
/// The passphrase every prompt of the tour is answered with.
const PASSPHRASE: &str = "a tour passphrase";
/// The README's `cargo run` prefix for `aip-ca`, which the binary on `PATH` replaces.
const CARGO_RUN_AIP_CA: &str = "cargo run --release -p aip-cli --bin aip-ca --";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The fenced blocks of `language` in `text`, each as its lines.
fn fenced(text: &str, language: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) if lang.trim() == language => current = Some(Vec::new()),
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some(block), _) => block.push(line.to_owned()),
            _ => {}
        }
    }
    blocks
}

/// The command lines of a block: continuation lines joined, blank lines dropped.
fn commands(block: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in block {
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        if !pending.trim().is_empty() {
            out.push(pending.trim().to_owned());
        }
        pending.clear();
    }
    assert!(pending.is_empty(), "a block ends with a continuation: {pending}");
    out
}

/// The text of `readme` between `## heading` and the next second-level heading.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |at| at + 3);
    &rest[..end]
}

/// The first word of `text` that starts with `prefix`.
fn word_with(text: &str, prefix: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ','))
        .find(|w| w.starts_with(prefix))
        .map(str::to_owned)
}

/// Whether the tools the tour needs are here; `false` (reported skipped) outside CI.
fn tools_present() -> bool {
    let peers = workspace().join("tests/mcp/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let works = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let present = peers.is_file()
        && works("node", "--version")
        && works("openssl", "version")
        && works("git", "--version")
        && works("script", "--version");
    if !present {
        let why =
            "the README tour needs Node.js with `npm ci --prefix tests/mcp`, openssl, git and script (util-linux)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
    }
    present
}

/// Copies the directory `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The shell the tour's lines run in: the clone as working directory, the built binaries
/// first on `PATH`, the variables the tour exported, and no other `AIP_*` setting.
struct Shell {
    clone: PathBuf,
    path: String,
    env: HashMap<String, String>,
}

impl Shell {
    fn command(&self, line: &str) -> Command {
        let mut cmd = self.environment(Command::new("bash"));
        cmd.args(["-c", line]).env("AIP_PASSPHRASE", PASSPHRASE);
        cmd
    }

    /// `line` on a pseudo-terminal of its own (`script`), where a prompt asks the reader: no
    /// `AIP_PASSPHRASE` there.
    fn on_a_terminal(&self, line: &str) -> Command {
        let mut cmd = self.environment(Command::new("script"));
        cmd.args(["-qec", line, "/dev/null"]);
        cmd
    }

    /// The clone as working directory, the built binaries first on `PATH`, the variables the
    /// tour exported, and no other `AIP_*` setting.
    fn environment(&self, mut cmd: Command) -> Command {
        cmd.current_dir(&self.clone).stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("AIP_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PATH", &self.path).envs(&self.env);
        cmd
    }

    fn run(&self, line: &str) -> Output {
        self.command(line).output().unwrap()
    }
}

/// `aip-ca serve`, stopped (SIGTERM) when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The values the placeholders take, as the tour prints them.
#[derive(Default)]
struct Values(HashMap<&'static str, String>);

impl Values {
    fn substitute(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for (placeholder, value) in &self.0 {
            out = out.replace(placeholder, value);
        }
        if let Some(at) = out.find('<')
            && let Some(end) = out[at..].find('>')
        {
            panic!("no value for {} in: {line}", &out[at..=at + end]);
        }
        out
    }

    fn set(&mut self, placeholder: &'static str, value: String) {
        self.0.insert(placeholder, value);
    }
}

/// Runs the `aip-agent` line with the tour's JSON lines on its standard input: every request
/// must be answered, the tool call with the text of the file it names.
fn play_the_client(shell: &Shell, line: &str, messages: &[String]) {
    let mut child = shell
        .command(line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut calls = 0;
    for message in messages {
        let request: Value = serde_json::from_str(message).unwrap_or_else(|e| panic!("{e}: {message}"));
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        let Some(id) = request.get("id") else { continue };
        let answer: Value = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no answer to {message}: {e}"));
            let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if answer.get("id") == Some(id) {
                break answer;
            }
        };
        let result = answer
            .get("result")
            .unwrap_or_else(|| panic!("{message} was refused: {answer}"));
        if request["method"] == "tools/call" {
            assert_ne!(result["isError"], true, "{answer}");
            let path = request["params"]["arguments"]["path"].as_str().unwrap();
            let file = std::fs::read_to_string(shell.clone.join("docs").join(path)).unwrap();
            let text = result["content"][0]["text"].as_str().unwrap_or_default();
            let first = file.lines().next().unwrap();
            assert!(text.starts_with(first), "{text:?} is not the start of docs/{path}");
            calls += 1;
        }
    }
    assert!(calls > 0, "the tour makes no tool call through aip-agent and aip-proxy");
    drop(stdin);
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "aip-agent did not exit after its input ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "aip-agent exited with {status:?}");
}

#[test]
fn the_readme_tour_runs_as_written() {
    if !tools_present() {
        return;
    }
    if std::net::TcpStream::connect("127.0.0.1:8443").is_ok() {
        // An authority a reader left running, for instance: the tour needs its address.
        let why = format!("something already listens on {README_URL}, the address the tour uses");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();

    // The first screen holds the two commands: run the authority, run the tests.
    let top: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    let first = commands(
        &fenced(&top, "sh")
            .first()
            .cloned()
            .expect("no sh block on the first screen"),
    );
    assert!(first.iter().any(|l| l.contains("-- serve")), "{first:?}");
    assert!(
        first.iter().any(|l| l.starts_with("cargo test --workspace --locked")),
        "{first:?}"
    );
    let serve_line = first.iter().find(|l| l.contains("-- serve")).unwrap();
    let serve_line = serve_line.split('#').next().unwrap().trim();
    let serve_args = serve_line
        .strip_prefix(CARGO_RUN_AIP_CA)
        .unwrap_or_else(|| panic!("the serve line does not start with {CARGO_RUN_AIP_CA:?}: {serve_line}"));
    assert!(readme[..readme.find("## A first tour").unwrap()].contains("twice"));

    let tour = section(&readme, "A first tour");
    let blocks = fenced(tour, "sh");
    assert!(blocks.len() >= 3, "{blocks:?}");
    let messages: Vec<String> = fenced(tour, "json").concat();

    // A clone: what the tour reads, under git, and the binaries on PATH.
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    std::fs::create_dir(&clone).unwrap();
    for file in ["README.md", ".gitignore"] {
        std::fs::copy(workspace().join(file), clone.join(file)).unwrap();
    }
    for dir in ["docs", "examples"] {
        copy_dir(&workspace().join(dir), &clone.join(dir));
    }
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for program in [aip_ca(), aip_agent(), aip_proxy()] {
        std::os::unix::fs::symlink(program, bin.join(program.file_name().unwrap())).unwrap();
    }
    let mut shell = Shell {
        clone: clone.clone(),
        path: format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        env: HashMap::new(),
    };
    for line in ["git init -q", "git add -A"] {
        let out = shell.run(line);
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::os::unix::fs::symlink(workspace().join("tests/mcp/node_modules"), clone.join("node_modules")).unwrap();

    // The first terminal.
    // `script` gives serve a terminal of its own: it prompts, and prints the admin token.
    let mut serve = Serve(
        shell
            .on_a_terminal(&format!("exec aip-ca{serve_args}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut terminal = serve.0.stdin.take().unwrap();
    let mut screen = serve.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut screen, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let wait_for = |needle: &str, printed: &mut String| {
        eprintln!("[tour] serve: waiting for {needle:?}");
        let until = Instant::now() + Duration::from_secs(60);
        while !printed.contains(needle) {
            let left = until.saturating_duration_since(Instant::now());
            let chunk = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("serve did not print {needle:?} ({e}): {printed}"));
            printed.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    // Typed as a person types: after the prompt has turned echo off.
    wait_for("Passphrase: ", &mut printed);
    std::thread::sleep(Duration::from_millis(300));
    writeln!(terminal, "{PASSPHRASE}").unwrap();
    wait_for("Repeat passphrase: ", &mut printed);
    std::thread::sleep(Duration::from_millis(300));
    writeln!(terminal, "{PASSPHRASE}").unwrap();
    wait_for("export AIP_TOKEN", &mut printed);
    // The first-start prompt says what the passphrase protects and that it is asked twice.
    let explained = printed.split("Passphrase: ").next().unwrap();
    for said in ["CA and registry keys", "asked twice", "every start"] {
        assert!(
            explained.contains(said),
            "the prompt does not say {said:?}: {explained}"
        );
    }
    assert!(!printed.contains(PASSPHRASE), "the passphrase is echoed: {printed}");
    let admin = word_with(&printed, "aip_at_").unwrap_or_else(|| panic!("no admin token printed: {printed}"));
    assert!(
        !clone.join("aip-data/admin-token").exists(),
        "on a terminal the token is printed, not filed"
    );
    let until = Instant::now() + Duration::from_secs(60);
    while http_get(&format!("{README_URL}/v1/jwks"), None).0 != 200 {
        assert!(Instant::now() < until, "aip-ca serve did not answer on {README_URL}");
        assert!(serve.0.try_wait().unwrap().is_none(), "aip-ca serve exited: {printed}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut values = Values::default();
    values.set("<the admin token serve printed>", admin);

    // The second terminal, line by line.
    let mut ran = Vec::new();
    for line in blocks.iter().flat_map(|b| commands(b)) {
        if line.starts_with("alias aip-ca=") || line.starts_with("cargo ") || line.starts_with("export PATH=") {
            continue;
        }
        let line = values.substitute(&line);
        eprintln!("[tour] {line}");
        if let Some(assignment) = line.strip_prefix("export ") {
            let (name, value) = assignment.split_once('=').unwrap();
            shell.env.insert(name.to_owned(), value.trim_matches('"').to_owned());
            continue;
        }
        if line.starts_with("aip-agent ") {
            play_the_client(&shell, &line, &messages);
            ran.push(line);
            continue;
        }
        let output = shell.run(&line);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let both = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        if line.contains("# refused") {
            assert!(!output.status.success(), "{line} was accepted: {both}");
            assert!(both.contains("revoked"), "{line}: {both}");
        } else {
            assert!(output.status.success(), "{line} failed ({:?}): {both}", output.status);
        }
        if line.starts_with("aip-ca register-agent") {
            values.set("<agent id>", word_with(&stdout, "ag_").expect(&stdout));
        } else if line.starts_with("aip-ca users create") {
            values.set("<her key>", word_with(&stdout, "aip_uk_").expect(&stdout));
        } else if line.starts_with("aip-ca access-token create") {
            values.set("<the reader token>", word_with(&stdout, "aip_at_").expect(&stdout));
        } else if line.starts_with("aip-ca token ") {
            let answer: Value = serde_json::from_str(&stdout).unwrap();
            values.set("<the AAT>", answer["aat"].as_str().expect(&stdout).to_owned());
        } else if line.starts_with("aip-ca revocations") {
            assert!(stdout.contains("alice@example.com"), "{stdout}");
        } else if line.starts_with("openssl verify") && !line.contains("# refused") {
            assert!(stdout.contains(": OK"), "{stdout}");
        }
        ran.push(line);
    }
    for needed in [
        "aip-ca register-agent",
        "aip-ca token ",
        "aip-agent ",
        "aip-ca users revoke",
        "aip-ca revocations",
        "aip-ca agents revoke",
    ] {
        assert!(ran.iter().any(|l| l.starts_with(needed)), "the tour runs no {needed:?}");
    }
    let verified = ran.iter().filter(|l| l.contains("--check-revocation")).count();
    assert!(verified >= 2, "the AAT is checked against revocation before and after");

    // Everything the tour wrote is ignored by git (the test's own node_modules link aside).
    let status = shell.run("git status --porcelain --untracked-files=all");
    let untracked: Vec<String> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter(|l| l.starts_with("??") && l.trim_end() != "?? node_modules")
        .map(str::to_owned)
        .collect();
    assert!(
        untracked.is_empty(),
        "the tour leaves files git does not ignore: {untracked:?}"
    );
    for written in ["aip-data", "code-reviewer", "crl.pem", "aip-audit.jsonl"] {
        assert!(clone.join(written).exists(), "the tour did not write {written}");
        assert!(
            shell.run(&format!("git check-ignore -q {written}")).status.success(),
            "{written}"
        );
    }
    drop(serve);
}
