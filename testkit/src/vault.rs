//! A vault in this process: its files in a directory of the caller's, its
//! server on 127.0.0.1:0.

use std::path::Path;
use std::sync::Arc;

use pii_vault::app::{self, VaultOptions, VaultPaths};
use pii_vault::crypto::RootKey;
use pii_vault::server::{RunningServer, ServerOptions};
use pii_vault::vault::Vault;

/// Writes a root key (unless one is there) and the policy into `dir`; the
/// store and keyring are created by the vault on first start.
pub fn prepare_dir(dir: &Path, policy: &str) -> VaultPaths {
    let paths = VaultPaths {
        data_dir: dir.join("data"),
        keyring_file: dir.join("keyring"),
        root_key_file: dir.join("root.key"),
        policy_file: dir.join("policy.toml"),
    };
    if !paths.root_key_file.exists() {
        RootKey::generate_file(&paths.root_key_file).expect("a root key is written");
    }
    std::fs::write(&paths.policy_file, policy).expect("the policy is written");
    paths
}

/// Opens the vault on `paths` and serves it.
pub async fn start(paths: &VaultPaths, options: &VaultOptions) -> RunningServer {
    let vault = app::open_vault(paths, options)
        .await
        .expect("the vault opens");
    serve(vault).await
}

/// Serves an opened vault in plain gRPC on a free loopback port.
pub async fn serve(vault: Vault) -> RunningServer {
    let listen = "127.0.0.1:0".parse().expect("a loopback address");
    pii_vault::server::start(Arc::new(vault), ServerOptions::plain(listen))
        .await
        .expect("the server starts")
}
