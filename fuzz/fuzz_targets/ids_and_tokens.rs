//! `cargo +nightly fuzz run ids_and_tokens`; the checks live in `pii_vault_fuzz::ids_and_tokens`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pii_vault_fuzz::ids_and_tokens(data));
