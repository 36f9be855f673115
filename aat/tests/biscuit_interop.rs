//! The delegable AAT vectors, checked by an independent biscuit implementation (the
//! biscuit-python bindings): signatures, signers, the facts of every block, revocation ids.
//!
//! Needs `python3` with `biscuit_auth` (`python3 -m pip install -r tests/python/requirements.txt`).
//! Under `CI` a missing interpreter or library fails the test; elsewhere the test reports
//! itself skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn independent_biscuit_library_agrees_with_the_delegation_vectors() {
    let Some(python) = common::python_with(
        "biscuit_auth",
        "independent_biscuit_library_agrees_with_the_delegation_vectors",
    ) else {
        return;
    };
    let stdout = common::run_interop(&python, "check_delegation.py", "biscuit-python");
    assert!(stdout.contains(", 0 disagreements"), "{stdout}");
    // Not vacuous: the summary names how many tokens were read and how many refused.
    assert!(common::count_after(&stdout, "agrees on ") >= 7, "{stdout}");
    assert!(common::count_after(&stdout, " delegated tokens and ") >= 2, "{stdout}");
}
