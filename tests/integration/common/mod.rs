//! The shared harness: a real vault on 127.0.0.1:0 with a temporary data
//! directory, and real tonic clients that authenticate as the test principals.
//! One file a theme; everything is re-exported here, so a test names it
//! `common::spawn_vault`, `common::PutFields` and so on.
#![allow(dead_code)]

mod database;
mod inspect;
pub mod pg_tls_proxy;
mod policy;
mod privacy;
mod process;
pub mod raw_grpc;
mod requests;
pub mod tls;
mod vault;

pub use database::*;
pub use inspect::*;
pub use policy::*;
pub use privacy::*;
pub use process::*;
pub use requests::*;
pub use vault::*;
