//! One customer's key: RotateCustomerKey (a new DEK, every value re-encrypted
//! under it in one commit, the old DEK gone) and GetKeyStatus.

use crate::crypto::{Binding, DataCipher};
use crate::policy::Scope;
use crate::store::{AuditEntry, CustomerChange, CustomerRecord, TokenTarget, BINDING_BOUND};

use crate::vault::fields::integrity_failure;
use crate::vault::sealing::Sealing;
use crate::vault::{Attempt, AuditedAnswer, Call, CustomerId, PrivacyLedger, Vault, VaultError};

/// What GetKeyStatus reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStatus {
    pub active_master_version: u32,
    pub master_versions: Vec<u32>,
    pub customers: u64,
    pub last_master_rotation_ms: i64,
    /// Set when a customer was asked about.
    pub customer_key: Option<CustomerKeyStatus>,
    /// Set while a master rotation has started and not finished.
    pub master_rotation: Option<MasterRotationStatus>,
    pub root_of_trust: RootOfTrustStatus,
}

/// What seals the master versions, and what retiring one destroys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootOfTrustStatus {
    /// `file`, `transit`, `pkcs11` or `aws-kms`.
    pub kind: &'static str,
    /// Where it is; never a credential.
    pub location: String,
    /// What retiring a master version destroys, in plain words.
    pub guarantee: &'static str,
    /// Whether it answered its last check.
    pub reachable: bool,
    /// Retired master versions whose material it has not destroyed yet.
    pub awaiting_destruction: Vec<u32>,
    /// Versions whose material from before a root-of-trust rotation it has
    /// not destroyed yet.
    pub superseded_awaiting_destruction: Vec<u32>,
    /// The root of trust the keyring moves to on MigrateRootOfTrust, while
    /// the root key file still seals it.
    pub migration_target: Option<&'static str>,
}

/// A master rotation started and not finished: running, or cut short (by a
/// crash or an error) and waiting to be resumed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterRotationStatus {
    pub target_version: u32,
    pub retire_previous: bool,
    pub started_at_ms: i64,
    /// Known only to the process running it; `None` elsewhere.
    pub rewrapped: Option<u64>,
    pub total: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerKeyStatus {
    pub version: u32,
    pub created_at_ms: i64,
    pub encryptions: u64,
}

impl crate::vault::Keys<'_> {
    /// Gives a customer a new DEK; returns its version and how many values were
    /// re-encrypted under it.
    pub async fn rotate_customer_key(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
    ) -> Result<(u32, u64), VaultError> {
        call.caller.require_scope(Scope::KeysAdmin)?;
        self.retry_commit(|| self.try_rekey(customer, Some(&call.event)))
            .await
    }

    /// The vault's keys, and `customer`'s when named.
    pub async fn key_status(
        &self,
        call: &Call<'_>,
        customer: Option<&CustomerId>,
    ) -> Result<KeyStatus, VaultError> {
        call.caller.require_scope(Scope::KeysAdmin)?;
        let customer_key = match customer {
            None => None,
            Some(customer) => {
                let record = self.existing_customer(customer.as_str()).await?;
                Some(CustomerKeyStatus {
                    version: record.dek.version,
                    created_at_ms: record.dek.created_at_ms,
                    encryptions: record.encryptions,
                })
            }
        };
        Ok(KeyStatus {
            active_master_version: self.keys.active_master_version(),
            master_versions: self.keys.master_versions(),
            customers: self.store.customer_count().await?,
            last_master_rotation_ms: self.keys.last_rotation_ms(),
            customer_key,
            master_rotation: self.master_rotation_status().await?,
            root_of_trust: self.root_of_trust_status(),
        })
    }

    pub fn root_of_trust_status(&self) -> RootOfTrustStatus {
        let root = self.keys.root_of_trust();
        RootOfTrustStatus {
            kind: root.kind().name(),
            location: root.location(),
            guarantee: root.kind().guarantee(),
            reachable: self.keys.root_of_trust_reachable(),
            awaiting_destruction: self.keys.versions_awaiting_destruction(),
            superseded_awaiting_destruction: self.keys.superseded_awaiting_destruction(),
            migration_target: self.keys.migration_target().map(|root| root.kind().name()),
        }
    }
}

/// The key status names its customer, if any, as the request did.
impl AuditedAnswer for KeyStatus {
    fn note_in(&self, _event: &mut AuditEntry) {}
}

impl Vault {
    /// Re-keys a customer whose DEK has done its share of encryptions.
    pub(in crate::vault) async fn rekey_if_worn(&self, customer: &CustomerId, encryptions: u64) {
        if encryptions < self.rotation_policy.dek_max_encryptions {
            return;
        }
        match self.retry_commit(|| self.try_rekey(customer, None)).await {
            Ok((version, _)) => {
                tracing::info!(customer = %customer, version, "data key rotated after its encryption limit")
            }
            Err(error) => {
                tracing::error!(customer = %customer, %error, "automatic data key rotation failed")
            }
        }
    }

    /// Migrates a customer written before the bound layout: a re-key, which
    /// opens every value with the unbound layout their record names and seals
    /// it again in the bound one. Returns their record as it is now.
    pub(in crate::vault) async fn migrate_binding(
        &self,
        customer: &CustomerId,
    ) -> Result<CustomerRecord, Attempt> {
        self.try_rekey(customer, None).await?;
        tracing::info!(customer = %customer, "customer migrated to the bound associated data");
        Ok(self.existing_customer(customer.as_str()).await?)
    }

    /// A new DEK, every value re-encrypted under it, in the bound layout
    /// whichever layout the values were read with.
    async fn try_rekey(
        &self,
        customer: &CustomerId,
        audit: Option<&AuditEntry>,
    ) -> Result<(u32, u64), Attempt> {
        let id = customer.as_str();
        let mut record = self.existing_customer(id).await?;
        let old = self.keys.cipher(customer, &record).await?;
        let (dek, new) = self
            .keys
            .new_dek(customer, record.dek.version + 1, self.now_ms());
        let mut change = CustomerChange {
            customer_id: id.to_owned(),
            expected_revision: Some(record.revision),
            audit: audit.cloned(),
            ..CustomerChange::default()
        };
        let sealing = Sealing::of(&record)?;
        let mut reencrypted = 0;
        for (name, mut field) in self.store.fields(id).await? {
            let from = sealing.field(id, &name, &field.kind, &field.token);
            let to = Sealing::Bound.field(id, &name, &field.kind, &field.token);
            field.ciphertext = reencrypt((&old, &from), (&new, &to), &field.ciphertext)
                .map_err(|error| integrity_failure(&name, error))?;
            change.put_fields.push((name, field));
            reencrypted += 1;
        }
        for token in self.store.customer_tokens(id).await? {
            // Field tokens point at their field, re-encrypted above.
            let Some(mut token_record) = self.store.token(&token).await? else {
                continue;
            };
            let TokenTarget::Value(ciphertext) = &token_record.target else {
                continue;
            };
            let kind = &token_record.kind;
            let format = &token_record.format;
            let from = sealing.token(id, &token, kind, format);
            let to = Sealing::Bound.token(id, &token, kind, format);
            let value = reencrypt((&old, &from), (&new, &to), ciphertext)
                .map_err(|error| integrity_failure(kind, error))?;
            token_record.target = TokenTarget::Value(value);
            change.put_tokens.push((token, token_record));
            reencrypted += 1;
        }
        let ledger = match record.privacy {
            Some(_) => Some(PrivacyLedger::open(customer, &record, &old)?),
            None => None,
        };
        record.binding_version = BINDING_BOUND;
        record.revision += 1;
        if let Some(ledger) = ledger {
            ledger.seal_into(customer, &mut record, &new)?;
            reencrypted += 1;
        }
        let version = dek.version;
        record.wrapped_under.insert(dek.master_version);
        record.dek = dek;
        record.encryptions = reencrypted;
        change.customer = Some(record);
        self.store.commit(change).await?;
        self.stats.customer_rotated();
        Ok((version, reencrypted))
    }
}

fn reencrypt(
    (old, from): (&DataCipher, &Binding),
    (new, to): (&DataCipher, &Binding),
    ciphertext: &[u8],
) -> Result<Vec<u8>, crate::crypto::CryptoError> {
    let plaintext = old.decrypt(from, ciphertext)?;
    Ok(new.encrypt(to, &plaintext))
}
