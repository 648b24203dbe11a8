//! The `--root-of-trust` options `serve` takes: which root of trust seals the
//! master key versions, and how to reach it.

use std::path::PathBuf;

use anyhow::Context;

use crate::app::RootOfTrustChoice;
use crate::crypto::KeyFileAccess;
use crate::root_of_trust::pkcs11::Pkcs11Config;

#[derive(clap::Args, Debug, Clone)]
pub struct RootOfTrustArgs {
    /// What seals the master key versions: the root key file (file), OpenBao
    /// or HashiCorp Vault Transit (transit), an HSM through PKCS#11 (pkcs11)
    /// or AWS KMS (aws-kms). Every kind but file destroys a retired version's
    /// material, so backups taken before stop opening it (README, "Root of trust").
    #[arg(
        long,
        env = "PII_VAULT_ROOT_OF_TRUST",
        value_enum,
        default_value = "file"
    )]
    pub root_of_trust: RootOfTrustKind,
    /// The PKCS#11 module (shared library) of the HSM (with --root-of-trust pkcs11).
    #[arg(long, env = "PII_VAULT_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the HSM token that holds the vault's key objects.
    #[arg(long, env = "PII_VAULT_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// A file holding the token's user PIN (mode 0600).
    #[arg(long, env = "PII_VAULT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootOfTrustKind {
    /// The root key file (--root-key-file) seals the keyring.
    File,
    /// An HSM, or any PKCS#11 token.
    Pkcs11,
}

impl RootOfTrustArgs {
    /// The root of trust these options choose; `key_access` says whether
    /// its credential files may be group-readable.
    pub fn choice(&self, key_access: KeyFileAccess) -> anyhow::Result<RootOfTrustChoice> {
        let needs = |flag: &str| format!("--root-of-trust {} needs {flag}", self.kind_name());
        Ok(match self.root_of_trust {
            RootOfTrustKind::File => RootOfTrustChoice::File,
            RootOfTrustKind::Pkcs11 => RootOfTrustChoice::Pkcs11(Pkcs11Config {
                module: self
                    .pkcs11_module
                    .clone()
                    .with_context(|| needs("--pkcs11-module"))?,
                token_label: self
                    .pkcs11_token_label
                    .clone()
                    .with_context(|| needs("--pkcs11-token-label"))?,
                pin_file: self
                    .pkcs11_pin_file
                    .clone()
                    .with_context(|| needs("--pkcs11-pin-file"))?,
                pin_access: key_access,
            }),
        })
    }

    pub fn uses_root_key_file(&self) -> bool {
        self.root_of_trust == RootOfTrustKind::File
    }

    fn kind_name(&self) -> &'static str {
        match self.root_of_trust {
            RootOfTrustKind::File => "file",
            RootOfTrustKind::Pkcs11 => "pkcs11",
        }
    }
}
