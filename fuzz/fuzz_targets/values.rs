//! `cargo +nightly fuzz run values`; the checks live in `pii_vault_fuzz::values`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pii_vault_fuzz::values(data));
