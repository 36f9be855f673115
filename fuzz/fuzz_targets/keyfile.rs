//! Key-file decoding on arbitrary text. A fixed passphrase reaches the Argon2 path only for
//! files that pass the checksum, which the fuzzer must construct; parameters are bounded.
#![no_main]

use aip_aat::keyfile::{Passphrase, decode, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = inspect(text);
    let _ = decode(text, None);
    if text.len() < 4096 {
        let _ = decode(text, Some(&Passphrase::new("fuzz")));
    }
});
