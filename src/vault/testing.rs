//! A vault for the domain's unit tests: the real store (sled, in a temporary
//! directory), the real keys and the real policy parser, opened as `serve`
//! opens them, with a clock the test moves instead of sleeping. Operations
//! are called directly, inside the same audited scope the edge opens.

use std::sync::Arc;
use std::time::Duration;

use crate::app::{self, VaultOptions, VaultPaths};
use crate::crypto::RootKey;
use crate::policy::{api_key_sha256_hex, dev_policy_toml, Policy};

use super::{
    Action, AuditedCall, CallNames, Caller, CustomerId, FieldInput, FieldKind, FieldsRead,
    FieldsWritten, ManualClock, TokenFormat, Vault, VaultError,
};

/// The key of the one principal of `serve --dev`'s policy, `dev`, who may
/// call everything, for every purpose, and sees plaintext.
const DEV_KEY: &str = "dev-key";

/// A vault, its clock, and the directory it lives in (removed on drop).
pub(crate) struct TestVault {
    pub vault: Vault,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl TestVault {
    /// A vault with the default options and a manual clock at the time it
    /// opened.
    pub async fn open() -> TestVault {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let paths = VaultPaths {
            data_dir: dir.path().join("data"),
            keyring_file: dir.path().join("keyring"),
            root_key_file: dir.path().join("root.key"),
            policy_file: dir.path().join("policy.toml"),
        };
        RootKey::generate_file(&paths.root_key_file).expect("a root key");
        let policy = dev_policy_toml(&api_key_sha256_hex(DEV_KEY));
        std::fs::write(&paths.policy_file, policy).expect("the policy file");
        let clock = Arc::new(ManualClock::starting_now());
        let options = VaultOptions {
            clock: Arc::clone(&clock) as _,
            ..VaultOptions::default()
        };
        let vault = app::open_vault(&paths, &options)
            .await
            .expect("the vault opens");
        TestVault {
            vault,
            clock,
            _dir: dir,
        }
    }

    /// The principal `dev`, as the edge would authenticate it.
    pub fn dev(&self) -> Caller {
        let policy: Arc<Policy> = self.vault.policy();
        let principal = policy
            .authenticate_api_key(DEV_KEY)
            .expect("dev is in the dev policy");
        Caller {
            principal,
            policy,
            request_id: "req-test".into(),
            source: None,
        }
    }

    /// Opens the audited scope of a call about `customer_id`, as the edge does.
    pub fn call<'a>(
        &'a self,
        caller: &'a Caller,
        action: Action,
        customer_id: &str,
    ) -> AuditedCall<'a> {
        self.vault
            .audited(caller, action, CallNames::customer(customer_id))
    }

    /// PutFields of one field for `billing`, as `dev`, through the edge's scope.
    pub async fn put(
        &self,
        customer_id: &str,
        (name, kind, value): (&str, FieldKind, &str),
    ) -> Result<FieldsWritten, VaultError> {
        let dev = self.dev();
        let fields = [name.to_owned()];
        let names = CallNames {
            customer_id,
            fields: &fields,
            purpose: "billing",
            ..CallNames::default()
        };
        let input = FieldInput {
            name: name.to_owned(),
            kind,
            value: value.to_owned(),
        };
        let call = self.vault.audited(&dev, Action::PutFields, names);
        call.run(|call| async move {
            let customer = CustomerId::parse(customer_id)?;
            let data = self.vault.data();
            (data.put_fields(
                &call,
                &customer,
                vec![input],
                "billing",
                TokenFormat::Random,
                None,
            ))
            .await
        })
        .await
    }

    /// GetFields of all of a customer's fields for `purpose`, as `dev`,
    /// through the edge's scope.
    pub async fn get(&self, customer_id: &str, purpose: &str) -> Result<FieldsRead, VaultError> {
        let dev = self.dev();
        let names = CallNames {
            customer_id,
            purpose,
            ..CallNames::default()
        };
        let call = self.vault.audited(&dev, Action::GetFields, names);
        call.read(|call| async move {
            let customer = CustomerId::parse(customer_id)?;
            let data = self.vault.data();
            data.get_fields(&call, &customer, &[], purpose).await
        })
        .await
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}
