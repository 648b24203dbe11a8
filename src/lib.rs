//! pii-vault: a gRPC vault for personal data. The layers, top to bottom (see
//! docs/architecture.md): `cli` -> `server` -> `vault` -> `policy`, `crypto`, `store`,
//! `root_of_trust`.

pub mod app;
pub mod cli;
pub mod crypto;
pub mod policy;
pub mod root_of_trust;
pub mod server;
pub mod store;
pub mod vault;

/// Code generated from `proto/piivault/v1/vault.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("piivault.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("piivault_descriptor");
}
