//! The delegable AAT vectors, checked by an independent biscuit implementation (the
//! biscuit-python bindings): signatures, signers, the facts of every block, revocation ids.
//!
//! Needs `python3` with `biscuit_auth` (`python3 -m pip install -r tests/python/requirements.txt`).
//! Under `CI` a missing interpreter or library fails the test; elsewhere the test reports
//! itself skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn independent_biscuit_library_agrees_with_the_delegation_vectors() {
    let Some(python) = common::python_with(
        "biscuit_auth",
        "independent_biscuit_library_agrees_with_the_delegation_vectors",
    ) else {
        return;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let out = Command::new(&python)
        .arg(here.join("interop/check_delegation.py"))
        .arg(here.join("vectors"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "biscuit-python disagrees with the vectors:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(", 0 disagreements"), "{stdout}");
    // Not vacuous: the summary names how many tokens were read and how many refused.
    let count = |after: &str| -> usize {
        stdout
            .split(after)
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count("agrees on ") >= 7, "{stdout}");
    assert!(count(" delegated tokens and ") >= 2, "{stdout}");
}
