//! The integration suite, one test binary: each module starts real vaults
//! (in process on 127.0.0.1:0, or the real binary) with temporary data
//! directories and talks to them with real tonic clients. `common/` is the
//! harness they share. Run one area with `cargo test --test integration
//! rotation::`; `PII_VAULT_TEST_STORE=postgres` runs the suite on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod access;
mod audit;
mod audit_archive;
mod binding;
mod certificate_identity;
mod ci_checks;
mod cli;
mod cli_scripting;
mod connections;
mod consent;
mod crash;
mod dependencies;
mod disk_full;
mod durability;
mod erasure;
mod error_details;
mod export;
mod health_listener;
mod hostile;
mod idempotency;
mod identifiers;
mod leaks;
mod limits;
mod notices;
mod postgres;
mod postgres_sessions;
mod refusals;
mod reload;
mod root_of_trust;
mod rotation;
mod store_conformance;
mod tokens;
mod transport;
mod upgrades;
mod values;
