//! `cargo +nightly fuzz run grpc`; the checks live in `pii_vault_fuzz::grpc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pii_vault_fuzz::grpc(data));
