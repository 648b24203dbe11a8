//! The `--root-of-trust` options `serve` takes: which root of trust seals the
//! master key versions, and how to reach it.

use std::path::PathBuf;

use anyhow::Context;

use crate::app::RootOfTrustChoice;
use crate::crypto::KeyFileAccess;
use crate::root_of_trust::aws_kms::AwsKmsConfig;
use crate::root_of_trust::pkcs11::Pkcs11Config;
use crate::root_of_trust::transit::{TransitConfig, TransitToken};

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
    /// The root of trust that seals the keyring now, while the vault moves to
    /// another kind (--root-of-trust): transit, pkcs11 or aws-kms, reached
    /// with that kind's own options below. The vault opens the keyring with
    /// it until `pii-vault keys migrate-root-of-trust`; afterwards start
    /// without it and destroy its material. (A root key file that seals the
    /// keyring now is --previous-root-key-file.)
    #[arg(long, env = "PII_VAULT_PREVIOUS_ROOT_OF_TRUST", value_enum)]
    pub previous_root_of_trust: Option<RootOfTrustKind>,
    /// The OpenBao or Vault server (with --root-of-trust transit), e.g.
    /// https://bao.example:8200.
    #[arg(long, env = "PII_VAULT_TRANSIT_ADDR")]
    pub transit_addr: Option<String>,
    /// Where the Transit engine is mounted.
    #[arg(long, env = "PII_VAULT_TRANSIT_MOUNT", default_value = "transit")]
    pub transit_mount: String,
    /// The Transit key (aes256-gcm96) that seals the master versions, one
    /// key version each; created when missing.
    #[arg(long, env = "PII_VAULT_TRANSIT_KEY")]
    pub transit_key: Option<String>,
    /// A file holding the token, read again at every call (a rotated
    /// Kubernetes Secret is picked up); else BAO_TOKEN or VAULT_TOKEN.
    #[arg(long, env = "PII_VAULT_TRANSIT_TOKEN_FILE")]
    pub transit_token_file: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for the Transit server's TLS, beside
    /// the system's roots.
    #[arg(long, env = "PII_VAULT_TRANSIT_CA")]
    pub transit_ca: Option<PathBuf>,
    /// The PKCS#11 module (shared library) of the HSM (with --root-of-trust pkcs11).
    #[arg(long, env = "PII_VAULT_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the HSM token that holds the vault's key objects.
    #[arg(long, env = "PII_VAULT_PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// A file holding the token's user PIN (mode 0600).
    #[arg(long, env = "PII_VAULT_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Days a retired master version's KMS key stays pending deletion (7 to
    /// 30) before AWS deletes it: erasures it covered become cryptographic
    /// then. Region, endpoint and credentials come from the AWS SDK's
    /// standard environment (AWS_REGION, AWS_ENDPOINT_URL, IRSA...).
    #[arg(long, env = "PII_VAULT_AWS_KMS_PENDING_WINDOW_DAYS", default_value_t = 7, value_parser = clap::value_parser!(i32).range(7..=30))]
    pub aws_kms_pending_window_days: i32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootOfTrustKind {
    /// The root key file (--root-key-file) seals the keyring.
    File,
    /// OpenBao or HashiCorp Vault Transit.
    Transit,
    /// An HSM, or any PKCS#11 token.
    Pkcs11,
    /// AWS KMS.
    AwsKms,
}

impl RootOfTrustArgs {
    /// The root of trust these options choose; `key_access` says whether
    /// its credential files may be group-readable.
    pub fn choice(&self, key_access: KeyFileAccess) -> anyhow::Result<RootOfTrustChoice> {
        self.choice_of(self.root_of_trust, "--root-of-trust", key_access)
    }

    /// The root of trust that seals the keyring now, when the vault moves
    /// off it to another kind; refuses a kind it cannot move between.
    pub fn previous_choice(
        &self,
        key_access: KeyFileAccess,
    ) -> anyhow::Result<Option<RootOfTrustChoice>> {
        let Some(previous) = self.previous_root_of_trust else {
            return Ok(None);
        };
        if previous == RootOfTrustKind::File {
            anyhow::bail!(
                "--previous-root-of-trust file: give the root key file that seals the keyring \
                 now as --previous-root-key-file instead"
            );
        }
        if previous == self.root_of_trust {
            anyhow::bail!(
                "--previous-root-of-trust {} is the kind the vault runs on: both would read the \
                 same options. To rotate the root of trust in use, run `pii-vault keys \
                 migrate-root-of-trust --renew-material`",
                kind_name(previous)
            );
        }
        self.choice_of(previous, "--previous-root-of-trust", key_access)
            .map(Some)
    }

    fn choice_of(
        &self,
        kind: RootOfTrustKind,
        flag: &str,
        key_access: KeyFileAccess,
    ) -> anyhow::Result<RootOfTrustChoice> {
        let needs = |option: &str| format!("{flag} {} needs {option}", kind_name(kind));
        Ok(match kind {
            RootOfTrustKind::File => RootOfTrustChoice::File,
            RootOfTrustKind::Transit => RootOfTrustChoice::Transit(TransitConfig {
                addr: self
                    .transit_addr
                    .clone()
                    .with_context(|| needs("--transit-addr"))?,
                mount: self.transit_mount.clone(),
                key: self
                    .transit_key
                    .clone()
                    .with_context(|| needs("--transit-key"))?,
                token: self
                    .transit_token()
                    .with_context(|| needs("--transit-token-file, or BAO_TOKEN or VAULT_TOKEN"))?,
                ca_file: self.transit_ca.clone(),
            }),
            RootOfTrustKind::AwsKms => RootOfTrustChoice::AwsKms(AwsKmsConfig {
                pending_window_days: self.aws_kms_pending_window_days,
            }),
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

    /// The token file, else the token from BAO_TOKEN or VAULT_TOKEN.
    fn transit_token(&self) -> Option<TransitToken> {
        if let Some(file) = &self.transit_token_file {
            return Some(TransitToken::File(file.clone()));
        }
        ["BAO_TOKEN", "VAULT_TOKEN"]
            .into_iter()
            .find_map(|name| std::env::var(name).ok().filter(|token| !token.is_empty()))
            .map(|token| TransitToken::Value(zeroize::Zeroizing::new(token)))
    }
}

fn kind_name(kind: RootOfTrustKind) -> &'static str {
    match kind {
        RootOfTrustKind::File => "file",
        RootOfTrustKind::Transit => "transit",
        RootOfTrustKind::Pkcs11 => "pkcs11",
        RootOfTrustKind::AwsKms => "aws-kms",
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        root: RootOfTrustArgs,
    }

    fn choice(flags: &[&str]) -> anyhow::Result<RootOfTrustChoice> {
        let args = Args::try_parse_from(["pii-vault"].iter().chain(flags)).expect("parses");
        args.root.choice(KeyFileAccess::OwnerOnly)
    }

    #[test]
    fn each_kind_names_the_flag_it_is_missing() {
        assert!(matches!(choice(&[]), Ok(RootOfTrustChoice::File)));
        let pkcs11 = choice(&["--root-of-trust", "pkcs11", "--pkcs11-module", "m.so"]);
        let missing = pkcs11.expect_err("no token label").to_string();
        assert!(missing.contains("--pkcs11-token-label"), "{missing}");
        let transit = choice(&["--root-of-trust", "transit", "--transit-key", "k"]);
        let missing = transit.expect_err("no address").to_string();
        assert!(missing.contains("--transit-addr"), "{missing}");
        let complete = choice(&[
            "--root-of-trust",
            "transit",
            "--transit-addr",
            "https://bao:8200",
            "--transit-key",
            "k",
            "--transit-token-file",
            "token",
        ]);
        assert!(matches!(complete, Ok(RootOfTrustChoice::Transit(_))));
        let kms = choice(&["--root-of-trust", "aws-kms"]);
        assert!(matches!(kms, Ok(RootOfTrustChoice::AwsKms(c)) if c.pending_window_days == 7));
    }

    #[test]
    fn a_previous_root_of_trust_must_be_another_kind_than_a_file() {
        let parse = |flags: &[&str]| {
            let args = Args::try_parse_from(["pii-vault"].iter().chain(flags)).expect("parses");
            args.root.previous_choice(KeyFileAccess::OwnerOnly)
        };
        assert!(matches!(parse(&[]), Ok(None)));
        let moving = parse(&[
            "--root-of-trust",
            "aws-kms",
            "--previous-root-of-trust",
            "pkcs11",
            "--pkcs11-module",
            "m.so",
            "--pkcs11-token-label",
            "t",
            "--pkcs11-pin-file",
            "pin",
        ]);
        assert!(matches!(moving, Ok(Some(RootOfTrustChoice::Pkcs11(_)))));
        let same = parse(&[
            "--root-of-trust",
            "aws-kms",
            "--previous-root-of-trust",
            "aws-kms",
        ]);
        let refused = same.expect_err("the same kind").to_string();
        assert!(refused.contains("--renew-material"), "{refused}");
        let file = parse(&["--previous-root-of-trust", "file"]);
        let refused = file.expect_err("a file").to_string();
        assert!(refused.contains("--previous-root-key-file"), "{refused}");
        let incomplete = parse(&[
            "--root-of-trust",
            "file",
            "--previous-root-of-trust",
            "transit",
        ]);
        let missing = incomplete.expect_err("no address").to_string();
        assert!(
            missing.contains("--previous-root-of-trust transit needs --transit-addr"),
            "{missing}"
        );
    }

    #[test]
    fn a_kms_pending_window_outside_7_to_30_days_is_refused() {
        for days in ["6", "31"] {
            let parsed = Args::try_parse_from([
                "pii-vault",
                "--root-of-trust",
                "aws-kms",
                "--aws-kms-pending-window-days",
                days,
            ]);
            assert!(parsed.is_err(), "{days} days accepted");
        }
    }
}
