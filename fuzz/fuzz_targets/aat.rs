//! AAT parsing and verification (steps 1–6) on arbitrary text, against a real issuer key, so
//! that inputs reaching signature checks are exercised too.
#![no_main]

use std::sync::LazyLock;

use aip_aat::clock::FixedClock;
use aip_aat::keys::{JwkSet, KeyPair};
use aip_aat::token::{UnverifiedAat, Validation};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<JwkSet> = LazyLock::new(|| {
    let issuer = KeyPair::ed25519_from_seed(&[7; 32]);
    JwkSet::from_keys([issuer.public_key()])
});

fuzz_target!(|token: &str| {
    if let Ok(aat) = UnverifiedAat::parse(token) {
        let result = aat.verify(&*KEYS, &FixedClock::new(1_770_000_000), &Validation::new("files-proxy"));
        if let Err(e) = result {
            let _ = e.aat_error();
        }
    }
});
