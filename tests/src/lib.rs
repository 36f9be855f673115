//! Helpers for end-to-end tests: the `aip-ca` and `aip-agent` binaries, authority processes,
//! test databases, and a reader of the Prometheus text format ([`exposition`]).
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod exposition;

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_ENV: &str = "AIP_TEST_POSTGRES_URL";

/// Path of the `aip-ca` binary, built (once per test process) from this workspace.
pub fn aip_ca() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("aip-cli", "aip-ca"))
}

/// Path of the `aip-agent` binary, built (once per test process) from this workspace.
pub fn aip_agent() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("aip-cli", "aip-agent"))
}

/// Path of the `aip-proxy` binary, built (once per test process) from this workspace.
pub fn aip_proxy() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("aip-proxy-verifier", "aip-proxy"))
}

/// Builds the binary `name` of `package` in the profile of the running test or bench (the
/// `target/<profile>` directory it runs from); its path.
fn build_binary(package: &str, name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--locked", "-p", package, "--bin", name]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("cargo build");
    assert!(status.success(), "building {name} ({profile}) failed");
    dir.join(name)
}

/// A command running `aip-ca` with no inherited authority settings.
pub fn command() -> Command {
    let mut cmd = isolated(aip_ca());
    cmd.stdin(Stdio::null());
    cmd
}

/// A command running `program` without the `AIP_*` settings of the environment the tests run
/// in (authority, passphrase, user credential, TLS roots).
pub fn isolated(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "AIP_PASSPHRASE",
        "AIP_TOKEN",
        "AIP_URL",
        "AIP_DIR",
        "AIP_DATABASE_URL",
        "AIP_LISTEN",
        "AIP_PUBLIC_URL",
        "AIP_USER_API_KEY",
        "AIP_CA_CERT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The stdout of a command that must have succeeded (else a panic showing both streams).
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("stdout is not UTF-8: {e}"))
}

/// A child with piped stdin and stdout (stderr inherited), its stdout read line by line on a
/// thread of its own.
pub struct Piped {
    /// The process.
    pub child: Child,
    /// Its stdin.
    pub stdin: std::process::ChildStdin,
    /// Its stdout, one line at a time.
    pub lines: mpsc::Receiver<String>,
}

/// Starts `cmd` as a [`Piped`] child.
pub fn piped(cmd: &mut Command) -> Piped {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Piped { child, stdin, lines }
}

/// Runs `aip-ca args…` to completion.
pub fn run(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// `GET url` with curl, with `bearer` as the bearer token: (status, body); status 0 when
/// nothing answers.
pub fn http_get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if let Some(token) = bearer {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// A running `aip-ca serve`.
pub struct Server {
    child: Child,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// What it printed on stdout (where the admin token is, when it created the authority).
    pub stdout: String,
}

impl Server {
    /// Starts `aip-ca serve --listen 127.0.0.1:0 extra…` and waits until it listens.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", extra)
    }

    /// Starts `aip-ca serve --listen listen extra…` and waits until it listens.
    pub fn start_at(listen: &str, extra: &[&str]) -> Self {
        let child = command()
            .args(["serve", "--listen", listen])
            .args(extra)
            .env("AIP_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // From here on the guard reaps the process, whatever happens.
        let mut server = Self {
            child,
            url: String::new(),
            stdout: String::new(),
        };
        let stdout = server.child.stdout.take().unwrap();
        let stderr = server.child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let out_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(Line::Out(line));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[aip-ca serve] {line}");
                let _ = tx.send(Line::Err(line));
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Line::Err(line)) => {
                    if let Some(at) = line.find("address=") {
                        server.url = line[at + "address=".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap()
                            .to_owned();
                        return server;
                    }
                    if line.starts_with("error:") {
                        panic!("aip-ca serve failed: {line}");
                    }
                }
                Ok(Line::Out(line)) => {
                    server.stdout.push_str(&line);
                    server.stdout.push('\n');
                }
                Err(e) => panic!("aip-ca serve did not start listening: {e}"),
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin token of the authority it created: written to a file (stdout is not a
    /// terminal), whose path it printed.
    pub fn admin_token(&self) -> String {
        let path = self
            .stdout
            .lines()
            .find_map(|line| {
                line.strip_prefix("admin token file ")?
                    .split_once("): ")
                    .map(|(_, p)| p)
            })
            .unwrap_or_else(|| panic!("no admin token file named in: {}", self.stdout));
        assert!(
            !self.stdout.contains("aip_at_"),
            "the admin token was printed: {}",
            self.stdout
        );
        std::fs::read_to_string(path).unwrap().trim_end().to_owned()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("aip-ca serve did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Line {
    Out(String),
    Err(String),
}

/// A PostgreSQL database for one test, dropped afterwards; `None` (reported as skipped)
/// without [`POSTGRES_ENV`], which `CI` requires.
pub struct PostgresDb {
    admin_url: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl PostgresDb {
    /// Creates a fresh database.
    pub fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            assert!(std::env::var_os("CI").is_none(), "{POSTGRES_ENV} must be set under CI");
            eprintln!("SKIPPED: {POSTGRES_ENV} is not set; the PostgreSQL end-to-end test did not run");
            return None;
        };
        let name = format!(
            "aip_e2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        execute_sql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let server = base[scheme_end..]
            .find('/')
            .map_or(base, |slash| &base[..scheme_end + slash]);
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Some(Self { admin_url, name, url })
    }
}

impl PostgresDb {
    /// Drops the database now, closing every connection to it (a server using it loses its
    /// database).
    pub fn drop_now(&self) {
        execute_sql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `work` with a one-connection pool to the database at `url`, on a runtime of its own.
fn on_database<T, F, Fut>(url: &str, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(sqlx::AnyPool) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            let out = work(pool.clone()).await;
            pool.close().await;
            out
        })
    })
    .join()
    .unwrap()
}

/// Runs one SQL statement against the database at `url` (test setup and tampering).
pub fn execute_sql(url: &str, sql: &str) {
    let sql = sql.to_owned();
    on_database(url, move |pool| async move {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    });
}

/// The rows `sql` selects from the database at `url`, every column read as text.
pub fn query_text(url: &str, sql: &str) -> Vec<Vec<String>> {
    let sql = sql.to_owned();
    on_database(url, move |pool| async move {
        use sqlx::Row as _;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.unwrap();
        rows.iter()
            .map(|row| (0..row.len()).map(|i| row.try_get::<String, _>(i).unwrap()).collect())
            .collect()
    })
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        execute_sql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A loopback port free when asked (for a server whose URL must be known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces the body of `[section]` in `dir`'s `aip.toml` with `body`.
pub fn set_config_section(dir: &Path, section: &str, body: &str) {
    let path = dir.join("aip.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let header = format!("[{section}]");
    let at = config
        .find(&header)
        .unwrap_or_else(|| panic!("no {header} in {config}"));
    let end = config[at + 1..].find("\n[").map_or(config.len(), |e| at + 1 + e);
    let config = format!("{}{header}\n{body}\n{}", &config[..at], &config[end..]);
    std::fs::write(&path, config).unwrap();
}

/// Creates an authority in `dir` with `aip-ca init --insecure-no-passphrase --json` and the
/// `extra` arguments (e.g. `--database-url URL`); the admin token it printed.
pub fn init_authority(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--json",
    ];
    args.extend_from_slice(extra);
    let init: serde_json::Value = serde_json::from_str(&ok(run(&args))).unwrap();
    init["admin_token"]
        .as_str()
        .expect("init printed an admin token")
        .to_owned()
}

/// Two `aip-ca serve` processes of one authority over one PostgreSQL database, made with
/// `init`: `b` runs from a copy of `a`'s directory (the same keys and configuration).
pub struct Replicas {
    /// The first replica.
    pub a: Server,
    /// The second replica.
    pub b: Server,
    /// The admin token `a` printed when it created the authority.
    pub admin_token: String,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// Starts both replicas over the database at `url`, without rate limits: the tests that
    /// use them request tokens in tight loops.
    pub fn start(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        let admin_token = init_authority(&first, &["--database-url", url]);
        set_config_section(&first, "rate_limits", "enabled = false");
        let serve = |path: &Path| {
            Server::start(&[
                "--dir",
                path.to_str().unwrap(),
                "--insecure-no-passphrase",
                "--database-url",
                url,
            ])
        };
        let a = serve(&first);
        let copied = Command::new("cp").arg("-R").arg(&first).arg(&second).status().unwrap();
        assert!(copied.success(), "copying the authority directory failed");
        let b = serve(&second);
        Self {
            a,
            b,
            admin_token,
            _dir: dir,
        }
    }
}

/// `python3` (or `$AIP_PYTHON`) with joserfc, the independent JOSE library the tests check
/// against; `None` outside CI when it is missing, after printing that `skipped` did not run.
/// Under `CI` a missing joserfc fails the test.
pub fn joserfc_python(skipped: &str) -> Option<String> {
    let python = std::env::var("AIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = Command::new(&python)
        .args(["-c", "import joserfc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if available {
        return Some(python);
    }
    let why =
        format!("`{python}` with joserfc is not available (python3 -m pip install -r tests/python/requirements.txt)");
    assert!(std::env::var_os("CI").is_none(), "required under CI: {why}");
    eprintln!("SKIPPED: {skipped}: {why}");
    None
}

/// `aip-ca agents export-key --agent-dir DIR --out OUT --json` (the agent's key unencrypted, as
/// `register-agent --insecure-no-passphrase` writes it): checks that the file is a PKCS#8 PEM
/// only its owner can read, and returns the command's JSON.
pub fn export_key(agent_dir: &Path, out: &Path) -> serde_json::Value {
    use std::os::unix::fs::PermissionsExt as _;
    let exported: serde_json::Value = serde_json::from_str(&ok(run(&[
        "agents",
        "export-key",
        "--agent-dir",
        agent_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--json",
    ])))
    .unwrap();
    assert_eq!(exported["path"], out.to_str().unwrap(), "{exported}");
    let mode = std::fs::metadata(out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the exported key is readable by others");
    let pem = std::fs::read_to_string(out).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "not a PKCS#8 PEM");
    exported
}

/// Polls `done` every 20 ms for up to `limit`; whether it happened.
pub fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directory of this crate (`tests/`), where the independent peers live.
pub fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `python3`, or `$AIP_PYTHON`: the interpreter of the Python peers.
pub fn python() -> String {
    std::env::var("AIP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// An independent client or server a test needs.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// Python with the pinned MCP SDK, authlib and joserfc (`tests/python/requirements.txt`).
    Python,
    /// Node with the official TypeScript SDK installed in `tests/mcp`.
    Node,
    /// Python with openapi-spec-validator (`tests/python/requirements.txt`).
    OpenapiValidator,
}

impl Peer {
    /// Why it cannot run here, if it cannot.
    pub fn missing(self) -> Option<String> {
        match self {
            Self::Python => {
                let python = python();
                let ready = Command::new(&python)
                    .args(["-c", "import mcp, authlib, joserfc, requests, uvicorn"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                (!ready).then(|| {
                    format!(
                        "`{python}` with the MCP SDK, authlib and joserfc is not available \
                         (python3 -m pip install -r tests/python/requirements.txt)"
                    )
                })
            }
            Self::OpenapiValidator => {
                let python = python();
                let ready = Command::new(&python)
                    .args(["-c", "import openapi_spec_validator"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                (!ready).then(|| {
                    format!(
                        "`{python}` with openapi-spec-validator is not available \
                         (python3 -m pip install -r tests/python/requirements.txt)"
                    )
                })
            }
            Self::Node => {
                let node = Command::new("node")
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                let sdk = tests_dir().join("mcp/node_modules/@modelcontextprotocol/sdk/package.json");
                (!node || !sdk.is_file())
                    .then(|| "node with the MCP TypeScript SDK is not available (npm ci --prefix tests/mcp)".to_owned())
            }
        }
    }
}

/// Whether `test` can run: every peer present. A missing one is a failure under `CI`, a loud
/// skip elsewhere.
pub fn peers_ready(test: &str, peers: &[Peer]) -> bool {
    let missing: Vec<String> = peers.iter().filter_map(|p| p.missing()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    assert!(std::env::var_os("CI").is_none(), "required under CI: {why}");
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// A registered agent: its id, directory, key thumbprint, JOSE algorithm and exported PEM key.
pub struct Agent {
    /// Its id (`ag_…`).
    pub id: String,
    /// The directory `register-agent` wrote (`agent.key` and the AID).
    pub dir: PathBuf,
    /// Its key's thumbprint, the `cnf.jkt` of its AATs.
    pub key_id: String,
    /// `EdDSA` or `ES256`.
    pub alg: &'static str,
    /// Its key as `aip-ca agents export-key` wrote it (PKCS#8 PEM, unencrypted).
    pub pem: PathBuf,
}

/// An authority created with `aip-ca init --listen` on a free loopback port (so its issuer
/// identifier is its real URL) and served from its directory by `aip-ca serve`, with a reader
/// access token; on SQLite, or on the PostgreSQL database a URL names.
pub struct Authority {
    tmp: tempfile::TempDir,
    /// Its URL, which is also its issuer identifier.
    pub url: String,
    /// The admin token `init` printed.
    pub admin: String,
    /// A reader access token (what a proxy's registry link uses).
    pub reader: String,
    serve: Child,
}

impl Authority {
    /// Creates and serves an authority, on the PostgreSQL database `database_url` names or on
    /// SQLite; returns once it answers `/health`.
    pub fn start(database_url: Option<&str>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("aip");
        let listen = format!("127.0.0.1:{}", free_port());
        let database: Vec<&str> = database_url.map(|url| vec!["--database-url", url]).unwrap_or_default();
        let mut init = vec!["--listen", listen.as_str()];
        init.extend(&database);
        let admin = init_authority(&dir, &init);
        let log = tmp.path().join("serve.log");
        let serve = command()
            .args(["serve", "--dir", dir.to_str().unwrap()])
            .args(&database)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut authority = Self {
            tmp,
            url: format!("http://{listen}"),
            admin,
            reader: String::new(),
            serve,
        };
        let up = within(Duration::from_secs(60), || {
            if let Some(status) = authority.serve.try_wait().unwrap() {
                panic!(
                    "aip-ca serve exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            http_get(&format!("{}/health", authority.url), None).0 == 200
        });
        assert!(up, "aip-ca serve did not answer on {}", authority.url);
        let reader = authority.remote(&["access-token", "create", "--role", "reader", "--json"]);
        authority.reader = reader["token"].as_str().unwrap().to_owned();
        authority
    }

    /// A temporary directory that lives as long as the authority, for the test's files.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `aip-ca args… --registry URL --token ADMIN`, its JSON output.
    pub fn remote(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--registry", &self.url, "--token", &self.admin]);
        serde_json::from_str(&ok(run(&all))).unwrap()
    }

    /// Registers an autonomous agent `name` with `alg` (`ed25519` or `p256`) for the tools of
    /// `capabilities` (comma-separated), and exports its key with `aip-ca agents export-key`.
    pub fn register(&self, name: &str, alg: &str, capabilities: &str) -> Agent {
        let dir = self.dir().join(name);
        let registered = self.remote(&[
            "register-agent",
            "--name",
            name,
            "--alg",
            alg,
            "--capabilities",
            capabilities,
            "--autonomous",
            "--out-dir",
            dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ]);
        let pem = self.dir().join(format!("{name}.pem"));
        let exported = export_key(&dir, &pem);
        let alg = match alg {
            "p256" => "ES256",
            _ => "EdDSA",
        };
        assert_eq!(exported["algorithm"], alg, "{exported}");
        Agent {
            id: registered["agent_id"].as_str().unwrap().to_owned(),
            dir,
            key_id: registered["key_id"].as_str().unwrap().to_owned(),
            alg,
            pem,
        }
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

/// A server run as a child process that prints `listening <URL>` on stdout once it listens
/// (the Python peers' servers); killed when dropped.
pub struct Listening {
    child: Child,
    /// The URL it printed.
    pub url: String,
}

impl Listening {
    /// Runs `cmd` (stdout piped, stderr inherited) and waits up to 60 s for its line.
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // From here on the guard reaps the process, whatever happens.
        let mut server = Self {
            child,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
        server.url = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{cmd:?} printed {line:?}"))
            .to_owned();
        server
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `aip-proxy --serve …`: the Streamable HTTP front door. What it logs is copied to
/// the test's stderr.
pub struct FrontDoor {
    child: Child,
    /// The canonical resource URI it announced (`MCP front door at <URL>`).
    pub url: String,
}

impl FrontDoor {
    /// Runs `aip-proxy args…` and waits up to 60 s for the line announcing its URL.
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(isolated(aip_proxy()).args(args))
    }

    /// Runs `cmd` (an `aip-proxy --serve …` command) and waits up to 60 s for the line
    /// announcing its URL.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[aip-proxy] {line}");
                let _ = tx.send(line);
            }
        });
        // From here on the guard reaps the process, whatever happens.
        let mut proxy = Self {
            child,
            url: String::new(),
        };
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once("MCP front door at ") {
                        proxy.url = rest.split_whitespace().next().unwrap_or_default().to_owned();
                        return proxy;
                    }
                    seen.push(line);
                }
                Err(e) => {
                    let status = proxy.child.try_wait().unwrap();
                    panic!(
                        "{cmd:?} did not announce its front door ({e}; exit status {status:?}):\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    /// The address it listens on (from its plain-http URL).
    pub fn addr(&self) -> std::net::SocketAddr {
        let authority = self.url.split("://").nth(1).and_then(|rest| rest.split('/').next());
        authority
            .and_then(|a| a.parse().ok())
            .expect("a front door URL with an IP address")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits up to 10 s for the exit: its status, or `None` when it had to
    /// be killed.
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let exited = within(Duration::from_secs(10), || self.child.try_wait().unwrap().is_some());
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().unwrap();
        exited.then_some(status)
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
