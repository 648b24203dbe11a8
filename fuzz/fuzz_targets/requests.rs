//! `cargo +nightly fuzz run requests`; the checks live in `pii_vault_fuzz::requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pii_vault_fuzz::requests(data));
