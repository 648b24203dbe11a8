//! `cargo +nightly fuzz run policy`; the checks live in `pii_vault_fuzz::policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pii_vault_fuzz::policy(data));
