//! The shared harness: a real vault on 127.0.0.1:0 with a temporary data
//! directory, and real tonic clients that authenticate as the test principals.
//! One file a theme; everything is re-exported here, so a test names it
//! `common::spawn_vault`, `common::PutFields` and so on. What other crates'
//! tests use too (the test policy and its keys, raw gRPC calls, the
//! in-process server) is in the pii-vault-testkit crate (testkit/).
#![allow(dead_code)]

mod database;
mod inspect;
mod keys;
mod old_formats;
pub mod pg_tls_proxy;
mod privacy;
mod process;
mod requests;
pub mod tls;
mod vault;

pub use database::*;
pub use inspect::*;
pub use keys::*;
pub use old_formats::*;
pub use privacy::*;
pub use process::*;
pub use requests::*;
pub use vault::*;

pub use pii_vault_testkit::policy::*;
pub use pii_vault_testkit::raw_grpc;
pub use pii_vault_testkit::vault::prepare_dir;
