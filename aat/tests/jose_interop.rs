//! The committed vectors, checked by an independent JOSE implementation (Python joserfc).
//!
//! Needs `python3` with `joserfc` (`python3 -m pip install -r tests/python/requirements.txt`). Under `CI` a missing
//! interpreter or library fails the test; elsewhere the test reports itself skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn independent_jose_library_agrees_with_the_vectors() {
    let Some(python) = common::python_with("joserfc", "independent_jose_library_agrees_with_the_vectors") else {
        return;
    };
    let stdout = common::run_interop(&python, "check_vectors.py", "joserfc");
    // The summary line names how much was checked; make sure it was not vacuous.
    assert!(stdout.contains("0 disagreements"), "{stdout}");
    let aats = common::count_after(&stdout, "agrees on ");
    assert!(aats >= 10, "only {aats} AAT vectors were checked independently");
    let lists = common::count_after(&stdout, " proof vectors and ");
    assert!(
        lists >= 5,
        "only {lists} signed revocation lists were checked independently"
    );
}
