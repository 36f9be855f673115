//! The strict JSON parser and RFC 8785 canonicalization: whatever parses must canonicalize,
//! and the canonical form must be a fixed point.
#![no_main]

use aip_aat::jcs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(canonical) = jcs::canonicalize(text) {
        match jcs::canonicalize(&canonical) {
            Ok(again) if again == canonical => {}
            _ => panic!("canonical form is not a fixed point: {canonical:?}"),
        }
    }
});
