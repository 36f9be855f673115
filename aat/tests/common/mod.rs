//! Helpers shared by the integration tests: deterministic keys and identifiers from labels, and
//! the Python interpreter the independent checks run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use aip_aat::ids::AgentId;
use aip_aat::keys::KeyPair;
use sha2::{Digest, Sha256};

/// Key material derived from labels within a namespace, so every test file (and the vector
/// generator) gets its own stable keys.
pub(crate) struct Seeds(pub(crate) &'static str);

impl Seeds {
    /// SHA-256 of `namespace/label`.
    pub(crate) fn bytes(&self, label: &str) -> [u8; 32] {
        Sha256::digest(format!("{}/{label}", self.0).as_bytes()).into()
    }

    pub(crate) fn ed25519(&self, label: &str) -> KeyPair {
        KeyPair::ed25519_from_seed(&self.bytes(label))
    }

    pub(crate) fn p256(&self, label: &str) -> KeyPair {
        KeyPair::p256_from_scalar(&self.bytes(label)).expect("seed is a valid P-256 scalar")
    }

    /// A UUID v4 (lowercase, hyphenated) derived from the label.
    pub(crate) fn uuid(&self, label: &str) -> String {
        let mut b: [u8; 16] = self.bytes(label)[..16].try_into().unwrap();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    pub(crate) fn agent_id(&self, label: &str) -> AgentId {
        format!("ag_{}", self.uuid(label)).parse().unwrap()
    }
}

/// The Python interpreter (`AIP_PYTHON`, else `python3`) when it can import `module`; `None`
/// when it cannot, after reporting `test` skipped — which fails under `CI`, where the
/// independent peers are required.
pub(crate) fn python_with(module: &str, test: &str) -> Option<String> {
    let python = std::env::var("AIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if available {
        return Some(python);
    }
    let why =
        format!("`{python}` with {module} is not available (python3 -m pip install -r tests/python/requirements.txt)");
    assert!(std::env::var_os("CI").is_none(), "required under CI: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// Runs `tests/interop/{script}` with `python` on the committed vectors and returns what it
/// printed, once it has succeeded (`peer` names the independent library when it has not).
pub(crate) fn run_interop(python: &str, script: &str, peer: &str) -> String {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let out = std::process::Command::new(python)
        .arg(here.join("interop").join(script))
        .arg(here.join("vectors"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{peer} disagrees with the vectors:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number a summary line prints right after `after`.
pub(crate) fn count_after(summary: &str, after: &str) -> usize {
    summary
        .split(after)
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {after:?} in {summary}"))
}
