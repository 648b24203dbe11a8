//! `cargo +nightly fuzz run ciphertexts`; the checks live in `pii_vault_fuzz::ciphertexts`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pii_vault_fuzz::ciphertexts(data));
