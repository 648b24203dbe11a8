//! What the tests of more than one crate share: the vault's integration
//! suite (`tests/integration/`), the load generator's tests (`bench/tests/`)
//! and the fuzz targets (`fuzz/`). What only one suite uses stays in it.
#![forbid(unsafe_code)]

pub mod cli;
pub mod moto;
pub mod openbao;
pub mod policy;
pub mod raw_grpc;
pub mod softhsm;
pub mod vault;
