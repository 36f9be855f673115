//! Audit checkpoints and the trusted-key files `audit verify` reads, on arbitrary text. The
//! trusted key is fixed, so the fuzzer reaches the signature check only with a checkpoint
//! whose header carries that key.
#![no_main]

use aip_aat::checkpoint::{Checkpoint, TrustedKeys};
use aip_aat::keys::KeyPair;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let key = KeyPair::ed25519_from_seed(&[7; 32]);
    let _ = Checkpoint::verify(text, &TrustedKeys::of(key.key_id().clone()));
    let _ = TrustedKeys::from_text(text);
});
