//! The committed vectors, checked by an independent JOSE implementation (Python joserfc).
//!
//! Needs `python3` with `joserfc` (`python3 -m pip install -r tests/python/requirements.txt`). Under `CI` a missing
//! interpreter or library fails the test; elsewhere the test reports itself skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn independent_jose_library_agrees_with_the_vectors() {
    let Some(python) = common::python_with("joserfc", "independent_jose_library_agrees_with_the_vectors") else {
        return;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let out = Command::new(&python)
        .arg(here.join("interop/check_vectors.py"))
        .arg(here.join("vectors"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "joserfc disagrees with the vectors:\n{stdout}\n{stderr}"
    );
    // The summary line names how much was checked; make sure it was not vacuous.
    assert!(stdout.contains("0 disagreements"), "{stdout}");
    let aats: usize = stdout
        .split("agrees on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(aats >= 10, "only {aats} AAT vectors were checked independently");
    let lists: usize = stdout
        .split(" proof vectors and ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        lists >= 5,
        "only {lists} signed revocation lists were checked independently"
    );
}
