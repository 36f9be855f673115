//! The authorization-code flow end to end: the real `aip-ca serve` and a real
//! OpenID provider run locally (npm `oidc-provider`, `tests/oauth/idp.mjs`, with its
//! development sign-in pages), and a browser played by curl with a cookie jar that follows
//! redirects and submits the forms it is shown.
//!
//! Covered: redirect URIs set with `aip-ca agents set-redirect-uris` and shown by
//! `agents show`; sign-in at the provider → consent → code at the registered redirect URI
//! (read from the `Location` header; nothing listens there) with `state` and `iss`; consent
//! bounded by the user's delegatable tools; the code redeemed at `POST /oauth/token` by the
//! agent (`private_key_jwt`, PKCE) for a user-bound AAT and a refresh token, and refused when
//! reused, with a wrong PKCE verifier, another redirect URI, or by another agent; the pages' security headers and browser binding;
//! API-key sign-in when enabled (a wrong key refused with 401) and refused when not; an
//! unregistered redirect URI (a page, no redirect); a missing `state`; `plain` PKCE; a missing
//! `resource`; an unknown and a revoked agent; Deny → `access_denied`; nothing grantable →
//! `invalid_scope`; the flow off by default. The flow runs on SQLite and on PostgreSQL.
//!
//! The provider needs Node.js and `npm ci --prefix tests/oauth`; under `CI` they are required,
//! elsewhere the tests are reported skipped without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aip_tests::{PostgresDb, Server, free_port, init_authority, ok, query_text, run};
use base64::Engine as _;
use regex::Regex;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const CLIENT_SECRET: &str = "a-test-only-client-secret";
const RESOURCE: &str = "https://mcp.example/mcp";
const APP: &str = "https://app.example/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

// ---------------------------------------------------------------------------------------------
// The OpenID provider
// ---------------------------------------------------------------------------------------------

/// `tests/oauth` with its packages installed, or `None` (reported skipped; a failure under CI).
fn oauth_peers() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("oauth");
    let installed = dir.join("node_modules/oidc-provider/package.json").is_file();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && node {
        return Some(dir);
    }
    let why = "Node.js with `npm ci --prefix tests/oauth` is required for the authorization-code tests";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// The provider process; it exits when its standard input closes.
struct Idp {
    child: Child,
    issuer: String,
}

impl Idp {
    fn start(dir: &Path, callback: &str) -> Self {
        let child = Command::new("node")
            .arg(dir.join("idp.mjs"))
            .args([callback, CLIENT_SECRET])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // From here on the guard reaps the process, whatever happens.
        let mut idp = Self {
            child,
            issuer: String::new(),
        };
        let stdout = idp.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the OpenID provider did not start");
            if let Some(issuer) = line.strip_prefix("issuer=") {
                idp.issuer = issuer.to_owned();
                return idp;
            }
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------------

/// What one request got.
#[derive(Debug)]
struct Answer {
    url: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Location`, resolved against the request's URL.
    fn location(&self) -> Option<String> {
        self.header("location").map(|l| resolve(&self.url, l))
    }

    fn forms(&self) -> Vec<Form> {
        forms(&self.url, &self.body)
    }

    /// The only form with an input or button named `name`.
    fn form_with(&self, name: &str) -> Form {
        let mut found: Vec<Form> = self
            .forms()
            .into_iter()
            .filter(|f| f.fields.iter().chain(&f.buttons).any(|(k, _)| k == name))
            .collect();
        assert_eq!(found.len(), 1, "one form with {name} expected in: {}", self.body);
        found.remove(0)
    }
}

/// `reference` resolved against `base` (absolute, or an absolute path).
fn resolve(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_owned();
    }
    let scheme_end = base.find("://").unwrap() + 3;
    let origin_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    assert!(reference.starts_with('/'), "relative reference {reference:?}");
    format!("{}{reference}", &base[..origin_end])
}

/// A form on a page: where it goes, its fields, and its named buttons.
#[derive(Clone, Debug)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
    buttons: Vec<(String, String)>,
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

fn attributes(tag: &str) -> HashMap<String, String> {
    let re = Regex::new(r#"([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*"([^"]*)""#).unwrap();
    re.captures_iter(tag)
        .map(|c| (c[1].to_ascii_lowercase(), unescape(&c[2])))
        .collect()
}

fn forms(url: &str, html: &str) -> Vec<Form> {
    let form_re = Regex::new(r"(?s)<form\b([^>]*)>(.*?)</form>").unwrap();
    let input_re = Regex::new(r"(?s)<input\b([^>]*)>").unwrap();
    let button_re = Regex::new(r"(?s)<button\b([^>]*)>").unwrap();
    form_re
        .captures_iter(html)
        .map(|c| {
            let attrs = attributes(&c[1]);
            let fields = input_re
                .captures_iter(&c[2])
                .filter_map(|i| {
                    let a = attributes(&i[1]);
                    Some((a.get("name")?.clone(), a.get("value").cloned().unwrap_or_default()))
                })
                .collect();
            let buttons = button_re
                .captures_iter(&c[2])
                .filter_map(|b| {
                    let a = attributes(&b[1]);
                    Some((a.get("name")?.clone(), a.get("value").cloned().unwrap_or_default()))
                })
                .collect();
            Form {
                action: resolve(url, attrs.get("action").map_or(url, String::as_str)),
                fields,
                buttons,
            }
        })
        .collect()
}

/// A browser: curl with a cookie jar of its own, following redirects by hand.
struct Browser {
    dir: tempfile::TempDir,
}

impl Browser {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jar"), "").unwrap();
        Self { dir }
    }

    fn request(&self, url: &str, form: Option<&[(String, String)]>) -> Answer {
        let jar = self.dir.path().join("jar");
        let headers = self.dir.path().join("headers");
        let body = self.dir.path().join("body");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-w", "%{http_code}"])
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body);
        for (name, value) in form.unwrap_or_default() {
            cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
        }
        let out = cmd.arg(url).output().unwrap();
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
        let headers = std::fs::read_to_string(&headers)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Answer {
            url: url.to_owned(),
            status,
            headers,
            body: std::fs::read_to_string(&body).unwrap_or_default(),
        }
    }

    fn get(&self, url: &str) -> Answer {
        self.request(url, None)
    }

    /// Submits `form`, with `extra` fields (e.g. the button pressed) and `replace`d values.
    fn submit(&self, form: &Form, extra: &[(&str, &str)]) -> Answer {
        let mut fields: Vec<(String, String)> = form
            .fields
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .cloned()
            .collect();
        fields.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.request(&form.action, Some(&fields))
    }

    /// Follows redirects from `answer`, stopping at a page or at a redirect into `stop`.
    fn follow(&self, mut answer: Answer, stop: &str) -> Answer {
        for _ in 0..20 {
            if !(300..400).contains(&answer.status) {
                return answer;
            }
            let next = answer.location().expect("a redirect without Location");
            if next.starts_with(stop) {
                return answer;
            }
            answer = self.get(&next);
        }
        panic!("too many redirects");
    }

    /// Signs in at the provider as `login` (its development pages: a login form, then a
    /// consent form), from the authority's redirect to it until the provider sends the browser
    /// back to the authority; then follows the authority's answer to its page.
    fn sign_in_at_provider(&self, answer: Answer, authority: &str, login: &str) -> Answer {
        let mut answer = self.follow(answer, authority);
        for _ in 0..5 {
            if (300..400).contains(&answer.status) {
                // Back at the authority's callback.
                let back = self.get(&answer.location().unwrap());
                return back;
            }
            assert_eq!(answer.status, 200, "at the provider: {answer:?}");
            let form = answer.forms().into_iter().next().expect("a form at the provider");
            let submitted = if form.fields.iter().any(|(k, _)| k == "login") {
                self.submit(&form, &[("login", login), ("password", "any password")])
            } else {
                self.submit(&form, &[])
            };
            answer = self.follow(submitted, authority);
        }
        panic!("the provider did not send the browser back");
    }
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The query parameters of `url`.
fn query(url: &str) -> HashMap<String, String> {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_url(base: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{base}/oauth/authorize?{}", query.join("&"))
}

/// A complete, valid request's parameters for `agent`, with `changes` applied (a value of
/// `None` drops the parameter).
fn params<'a>(agent: &'a str, challenge: &'a str, changes: &[(&'a str, Option<&'a str>)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", agent),
        ("redirect_uri", APP),
        ("state", "state with spaces & symbols"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("resource", RESOURCE),
    ];
    for (name, value) in changes {
        params.retain(|(k, _)| k != name);
        if let Some(value) = value {
            params.push((name, value));
        }
    }
    params
}

// ---------------------------------------------------------------------------------------------
// The authority
// ---------------------------------------------------------------------------------------------

/// An authority whose public URL is known before it starts, with `config` appended to its
/// `aip.toml` (`{idp}` is replaced by the provider's issuer), and a provider if `with_idp`.
struct Env {
    server: Server,
    url: String,
    admin: String,
    idp: Option<Idp>,
    dir: tempfile::TempDir,
}

impl Env {
    fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name.replace(' ', "-"))
    }

    /// The key of the agent registered as `name`, read as a standard client reads it: exported
    /// with `aip-ca agents export-key`.
    fn agent_key(&self, name: &str) -> aip_aat::keys::KeyPair {
        let dir = self.agent_dir(name);
        let pem = self.dir.path().join(format!("{}.pem", name.replace(' ', "-")));
        aip_tests::export_key(&dir, &pem);
        aip_aat::keys::KeyPair::from_pkcs8_pem(&std::fs::read_to_string(pem).unwrap()).unwrap()
    }

    /// `POST /oauth/token` with `params` and a client assertion by `agent` with `key`: the
    /// status and the JSON answer.
    fn token(&self, agent: &str, key: &aip_aat::keys::KeyPair, params: &[(&str, &str)]) -> (u16, Value) {
        use aip_aat::clock::{Clock as _, SystemClock};
        let assertion =
            aip_aat::client_assertion::create_client_assertion(key, agent, &self.url, SystemClock.now(), 60).unwrap();
        let mut form: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        form.push(format!(
            "client_assertion_type={}&client_assertion={assertion}",
            encode(aip_aat::client_assertion::CLIENT_ASSERTION_TYPE)
        ));
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-w",
                "\n%{http_code}",
                "--data",
                &form.join("&"),
            ])
            .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
            .arg(format!("{}/oauth/token", self.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), serde_json::from_str(body).unwrap())
    }

    fn start(peers: Option<&Path>, config: &str, database_url: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("authority");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let idp = peers.map(|peers| Idp::start(peers, &format!("{url}/oauth/callback")));
        let mut init = vec!["--public-url", url.as_str()];
        if let Some(db) = database_url {
            init.extend(["--database-url", db]);
        }
        let admin = init_authority(&home, &init);
        std::fs::write(home.join("idp-client-secret"), format!("{CLIENT_SECRET}\n")).unwrap();
        let issuer = idp.as_ref().map_or("", |i| i.issuer.as_str());
        let toml = home.join("aip.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, format!("{text}\n{}\n", config.replace("{idp}", issuer))).unwrap();
        let mut serve = vec!["--dir", home.to_str().unwrap(), "--insecure-no-passphrase"];
        if let Some(db) = database_url {
            serve.extend(["--database-url", db]);
        }
        let server = Server::start_at(&format!("127.0.0.1:{port}"), &serve);
        assert_eq!(server.url, url);
        Self {
            server,
            url,
            admin,
            idp,
            dir,
        }
    }

    fn ca(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--registry", &self.server.url, "--token", &self.admin]);
        ok(run(&all))
    }

    fn ca_json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ca(args)).unwrap()
    }

    /// Registers an agent with `capabilities` and the redirect URIs `uris` (its directory
    /// under the authority's temporary directory, named `name`); its id.
    fn agent(&self, name: &str, capabilities: &str, uris: &[&str]) -> String {
        let dir = self.agent_dir(name);
        let registered = self.ca_json(&[
            "register-agent",
            "--name",
            name,
            "--capabilities",
            capabilities,
            "--out-dir",
            dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ]);
        let id = registered["agent_id"].as_str().unwrap().to_owned();
        let mut args = vec!["agents", "set-redirect-uris", id.as_str()];
        args.extend(uris);
        args.push("--json");
        let set = self.ca_json(&args);
        assert_eq!(set["redirect_uris"], serde_json::json!(uris));
        id
    }
}

const OIDC_LOGIN: &str = r#"
[issuer.authorize]
enabled = true
api_key_login = API_KEY_LOGIN

[[issuer.oidc]]
issuer = "{idp}"
audience = "aip-agents"
jwks_url = "{idp}/jwks"
delegatable_tools = ["read_file", "write_file"]

[issuer.oidc.login]
client_id = "aip-authority"
client_secret_file = "idp-client-secret"
display_name = "Test IdP"
"#;

fn oidc_config(api_key_login: bool) -> String {
    OIDC_LOGIN.replace("API_KEY_LOGIN", if api_key_login { "true" } else { "false" })
}

fn assert_security_headers(answer: &Answer) {
    let csp = answer.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
    assert!(!answer.body.contains("<script"), "{}", answer.body);
}

/// The redirect back to the client: its query, after checking it goes to `redirect_uri` and
/// carries `iss`.
fn back_at(answer: &Answer, redirect_uri: &str, issuer: &str) -> HashMap<String, String> {
    assert_eq!(answer.status, 303, "{answer:?}");
    let location = answer.location().unwrap();
    assert!(
        location.starts_with(&format!("{redirect_uri}?")),
        "{location} is not at {redirect_uri}"
    );
    let query = query(&location);
    assert_eq!(query.get("iss").map(String::as_str), Some(issuer), "{location}");
    query
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Sign-in at the provider → consent bounded by the user's tools → a code at the redirect URI.
fn sign_in_through_the_provider(database_url: Option<&str>) {
    let Some(peers) = oauth_peers() else { return };
    let env = Env::start(Some(&peers), &oidc_config(false), database_url);
    let agent = env.agent(
        "report writer",
        "read_file,write_file,exec",
        &[APP, "http://127.0.0.1/cb"],
    );
    let shown = env.ca_json(&["agents", "show", &agent, "--json"]);
    assert_eq!(shown["redirect_uris"], serde_json::json!([APP, "http://127.0.0.1/cb"]));
    assert!(
        env.ca(&["agents", "show", &agent])
            .contains(&format!("redirect uri: {APP}"))
    );

    let challenge = s256(VERIFIER);
    let browser = Browser::new();
    let request = params(&agent, &challenge, &[("scope", Some("read_file exec"))]);
    let sign_in = browser.get(&authorize_url(&env.url, &request));
    assert_eq!(sign_in.status, 200, "{sign_in:?}");
    assert_security_headers(&sign_in);
    let cookie = sign_in.header("set-cookie").expect("the browser cookie");
    assert!(cookie.starts_with("aip_browser="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(sign_in.body.contains("report writer") && sign_in.body.contains(&agent));
    assert!(sign_in.body.contains("Sign in with Test IdP"), "{}", sign_in.body);
    assert!(!sign_in.body.contains("api_key"), "no API-key form unless enabled");
    let idp_origin = env.idp.as_ref().unwrap().issuer.clone();
    let csp = sign_in.header("content-security-policy").unwrap();
    assert!(csp.contains(&idp_origin), "the provider is a form target: {csp}");
    assert!(csp.contains("https://app.example"), "so is the client: {csp}");

    // To the provider (state, nonce, PKCE), sign in as alice, and back.
    let to_idp = browser.submit(&sign_in.form_with("provider"), &[]);
    assert_eq!(to_idp.status, 303);
    let at_idp = to_idp.location().unwrap();
    assert!(at_idp.starts_with(&idp_origin), "{at_idp}");
    let sent = query(&at_idp);
    assert_eq!(sent["client_id"], "aip-authority");
    assert_eq!(sent["redirect_uri"], format!("{}/oauth/callback", env.url));
    assert_eq!(sent["code_challenge_method"], "S256");
    assert!(!sent["nonce"].is_empty() && !sent["state"].is_empty());
    assert!(!at_idp.contains(&agent), "the request travels sealed: {at_idp}");
    let consent = browser.sign_in_at_provider(to_idp, &env.url, "alice");

    // The consent page: the agent, the user, the audience; read_file granted, exec (the agent
    // holds it, alice may not delegate it) shown as not grantable.
    assert_eq!(consent.status, 200, "{consent:?}");
    assert_security_headers(&consent);
    let body = &consent.body;
    assert!(body.contains("report writer") && body.contains(&agent), "{body}");
    assert!(body.contains("alice") && body.contains(RESOURCE), "{body}");
    let (granted, denied) = body.split_once("cannot be granted").expect("a not-grantable list");
    assert!(
        granted.contains("<code>read_file</code>") && !granted.contains("<code>exec</code>"),
        "{body}"
    );
    assert!(denied.contains("<code>exec</code>"), "{body}");
    assert!(!body.contains("write_file"), "not asked for: {body}");
    let csp = consent.header("content-security-policy").unwrap();
    assert!(
        csp.contains("https://app.example"),
        "the client is a form target: {csp}"
    );

    // The consent form is bound to this browser.
    let form = consent.form_with("decision");
    let elsewhere = Browser::new().submit(&form, &[("decision", "approve")]);
    assert_eq!(elsewhere.status, 403, "{elsewhere:?}");
    assert!(elsewhere.header("location").is_none());

    // Approve: the code, the state and the issuer at the registered redirect URI.
    let approved = browser.submit(&form, &[("decision", "approve")]);
    let back = back_at(&approved, APP, &env.url);
    assert_eq!(back["state"], "state with spaces & symbols");
    assert!(back["code"].starts_with("ac1."), "{back:?}");
    assert!(!back.contains_key("error"));
    assert!(!back["code"].contains("alice"), "codes are sealed");

    // The agent redeems the code at the token endpoint, authenticated by its own key.
    let key = env.agent_key("report writer");
    let other = env.agent("other agent", "read_file", &[APP]);
    let other_key = env.agent_key("other agent");
    let code = back["code"].as_str();
    let redeem = |agent: &str, key, verifier: &str, redirect_uri: &str| {
        env.token(
            agent,
            key,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
    };
    let refused = |(status, body): (u16, Value)| {
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    };
    refused(redeem(&other, &other_key, VERIFIER, APP));
    refused(redeem(
        &agent,
        &key,
        "wrong-verifier-wrong-verifier-wrong-verifier-0",
        APP,
    ));
    refused(redeem(&agent, &key, VERIFIER, "https://app.example/other"));
    let (status, issued) = redeem(&agent, &key, VERIFIER, APP);
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["scope"], "read_file");
    let refresh = issued["refresh_token"].as_str().expect("a refresh token").to_owned();
    let payload = issued["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], agent.as_str());
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["user_binding"]["user_id"], "alice");
    assert_eq!(claims["user_binding"]["auth_method"], "oidc");
    assert_eq!(claims["capabilities"]["tools"], serde_json::json!(["read_file"]));
    // A code is used once.
    refused(redeem(&agent, &key, VERIFIER, APP));
    // The session it started refreshes (and the refresh token rotates).
    let (status, next) = env.token(
        &agent,
        &key,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    );
    assert_eq!(status, 200, "{next}");
    assert_ne!(next["refresh_token"], issued["refresh_token"]);

    // A loopback redirect URI is matched on any port (RFC 8252 §7.3).
    let native = params(
        &agent,
        &challenge,
        &[("redirect_uri", Some("http://127.0.0.1:49152/cb"))],
    );
    let sign_in = browser.get(&authorize_url(&env.url, &native));
    assert_eq!(sign_in.status, 200, "{sign_in:?}");
    assert!(sign_in.header("set-cookie").is_none(), "the browser keeps its cookie");

    // The consent was audited, and the chain holds.
    let home = env.dir.path().join("authority");
    let db = database_url.map_or_else(|| format!("sqlite://{}", home.join("aip.db").display()), str::to_owned);
    let audited = query_text(
        &db,
        "SELECT actor, subject, details FROM audit_log WHERE action = 'authorization.consent'",
    );
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0][0], "user:alice");
    assert_eq!(audited[0][1], agent);
    assert!(
        audited[0][2].contains("read_file") && !audited[0][2].contains("ac1."),
        "{audited:?}"
    );
    let mut verify = vec![
        "audit",
        "verify",
        "--dir",
        home.to_str().unwrap(),
        "--allow-unsigned-tail",
    ];
    if let Some(db) = database_url {
        verify.extend(["--database-url", db]);
    }
    ok(run(&verify));
}

#[test]
fn sign_in_through_the_provider_on_sqlite() {
    sign_in_through_the_provider(None);
}

#[test]
fn sign_in_through_the_provider_on_postgres() {
    let Some(db) = PostgresDb::create() else { return };
    sign_in_through_the_provider(Some(&db.url));
}

/// The refusals: pages before the client is known good, redirects after.
#[test]
fn refusals_and_api_key_sign_in() {
    let Some(peers) = oauth_peers() else { return };
    let env = Env::start(Some(&peers), &oidc_config(true), None);
    let agent = env.agent(
        "mail sorter",
        "read_file,write_file,exec",
        &[APP, "http://127.0.0.1/cb"],
    );
    let bob = env.ca_json(&["users", "create", "--id", "bob", "--delegatable", "read_file", "--json"]);
    let bob_key = bob["api_key"].as_str().unwrap().to_owned();
    let challenge = s256(VERIFIER);
    let browser = Browser::new();
    let get =
        |changes: &[(&str, Option<&str>)]| browser.get(&authorize_url(&env.url, &params(&agent, &challenge, changes)));

    // An unregistered redirect URI: a page, never a redirect.
    for uri in [
        "https://evil.example/cb",
        "https://app.example/cb/other",
        "http://127.0.0.1:5000/other",
    ] {
        let page = get(&[("redirect_uri", Some(uri))]);
        assert_eq!(page.status, 400, "{page:?}");
        assert!(page.header("location").is_none());
        assert!(page.body.contains("redirect_uri is not registered"), "{}", page.body);
        assert_security_headers(&page);
    }
    let page = get(&[("redirect_uri", None)]);
    assert_eq!((page.status, page.header("location")), (400, None));
    // An unknown agent, a malformed client_id, a missing one.
    let unknown = "ag_550e8400-e29b-41d4-a716-446655440000";
    for client in [Some(unknown), Some("not-an-agent"), None] {
        let page = get(&[("client_id", client)]);
        assert_eq!((page.status, page.header("location")), (400, None), "{page:?}");
    }
    // A revoked agent.
    let revoked = env.agent("old helper", "read_file", &[APP]);
    env.ca(&["agents", "revoke", &revoked, "--reason", "retired"]);
    let page = browser.get(&authorize_url(&env.url, &params(&revoked, &challenge, &[])));
    assert_eq!((page.status, page.header("location")), (400, None), "{page:?}");
    assert!(page.body.contains("revoked"), "{}", page.body);
    // Redirect URIs are checked when set, and a revoked agent's cannot change.
    let set = |args: &[&str]| {
        let mut all = vec!["agents", "set-redirect-uris"];
        all.extend(args);
        all.extend(["--registry", &env.url, "--token", &env.admin]);
        run(&all)
    };
    for bad in ["http://app.example/cb", "https://app.example/cb#frag", "/cb"] {
        let out = set(&[&agent, bad]);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("redirect_uris"),
            "{out:?}"
        );
    }
    let out = set(&[&revoked, APP]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"), "{out:?}");
    let unchanged = env.ca_json(&["agents", "show", &agent, "--json"]);
    assert_eq!(
        unchanged["redirect_uris"],
        serde_json::json!([APP, "http://127.0.0.1/cb"])
    );

    // After the client is known good: back to it with the error, the state and iss.
    let missing_state = back_at(&get(&[("state", None)]), APP, &env.url);
    assert_eq!(missing_state["error"], "invalid_request");
    assert!(missing_state["error_description"].contains("state"));
    assert!(!missing_state.contains_key("state"));
    let plain = back_at(
        &get(&[
            ("code_challenge_method", Some("plain")),
            ("code_challenge", Some(VERIFIER)),
        ]),
        APP,
        &env.url,
    );
    assert_eq!(plain["error"], "invalid_request");
    assert!(plain["error_description"].contains("S256"), "{plain:?}");
    assert_eq!(plain["state"], "state with spaces & symbols");
    let no_pkce = back_at(
        &get(&[("code_challenge", None), ("code_challenge_method", None)]),
        APP,
        &env.url,
    );
    assert_eq!(no_pkce["error"], "invalid_request");
    let no_resource = back_at(&get(&[("resource", None)]), APP, &env.url);
    assert_eq!(no_resource["error"], "invalid_target");
    let token = back_at(&get(&[("response_type", Some("token"))]), APP, &env.url);
    assert_eq!(token["error"], "unsupported_response_type");
    let twice = format!(
        "{}&state=again",
        authorize_url(&env.url, &params(&agent, &challenge, &[]))
    );
    assert_eq!(back_at(&browser.get(&twice), APP, &env.url)["error"], "invalid_request");

    // API-key sign-in: a wrong key is refused (401, counted as a failed authentication).
    let sign_in = get(&[]);
    assert_eq!(sign_in.status, 200);
    let key_form = sign_in.form_with("api_key");
    let wrong = browser.submit(&key_form, &[("api_key", "aip_uk_wrong")]);
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(wrong.body.contains("Sign-in failed"), "{}", wrong.body);
    assert!(!wrong.body.contains("aip_uk_wrong"), "the key is never echoed");
    // The right key: no scope asks for the agent's capabilities; bob may delegate read_file.
    let consent = browser.submit(&key_form, &[("api_key", &bob_key)]);
    assert_eq!(consent.status, 200, "{consent:?}");
    let (granted, denied) = consent.body.split_once("cannot be granted").unwrap();
    assert!(granted.contains("<code>read_file</code>") && !granted.contains("write_file"));
    assert!(denied.contains("<code>write_file</code>") && denied.contains("<code>exec</code>"));
    // Deny → access_denied.
    let denied = browser.submit(&consent.form_with("decision"), &[("decision", "deny")]);
    let denied = back_at(&denied, APP, &env.url);
    assert_eq!(denied["error"], "access_denied");
    assert_eq!(denied["state"], "state with spaces & symbols");
    assert!(!denied.contains_key("code"));

    // Nothing grantable: bob may not delegate write_file → invalid_scope, no consent page.
    let sign_in = get(&[("scope", Some("write_file"))]);
    let nothing = browser.submit(&sign_in.form_with("api_key"), &[("api_key", &bob_key)]);
    let nothing = back_at(&nothing, APP, &env.url);
    assert_eq!(nothing["error"], "invalid_scope");

    // A sign-in form from another browser is refused.
    let sign_in = get(&[]);
    let stolen = Browser::new().submit(&sign_in.form_with("api_key"), &[("api_key", &bob_key)]);
    assert_eq!(stolen.status, 403, "{stolen:?}");
}

/// API-key sign-in is refused unless enabled, even when the form is made up.
#[test]
fn api_key_sign_in_refused_when_not_enabled() {
    let Some(peers) = oauth_peers() else { return };
    let env = Env::start(Some(&peers), &oidc_config(false), None);
    let agent = env.agent("viewer", "read_file", &[APP]);
    let bob = env.ca_json(&["users", "create", "--id", "bob", "--delegatable", "read_file", "--json"]);
    let challenge = s256(VERIFIER);
    let browser = Browser::new();
    let sign_in = browser.get(&authorize_url(&env.url, &params(&agent, &challenge, &[])));
    assert_eq!(sign_in.status, 200);
    assert!(!sign_in.body.contains("api_key"));
    let mut form = sign_in.form_with("provider");
    form.fields.retain(|(k, _)| k != "provider");
    let refused = browser.submit(&form, &[("api_key", bob["api_key"].as_str().unwrap())]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.contains("not enabled"), "{}", refused.body);
}

/// Off by default, and a configuration without any way to sign in is refused at start.
#[test]
fn off_by_default() {
    let env = Env::start(None, "", None);
    let (status, _) = aip_tests::http_get(&format!("{}/oauth/authorize?client_id=x", env.url), None);
    assert_eq!(status, 404);
    drop(env);

    let dir = tempfile::tempdir().unwrap();
    init_authority(dir.path(), &[]);
    let toml = dir.path().join("aip.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n[issuer.authorize]\nenabled = true\n")).unwrap();
    let out = aip_tests::command()
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-passphrase", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("issuer.authorize.enabled"), "{stderr}");
}
