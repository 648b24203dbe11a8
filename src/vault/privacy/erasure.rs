//! DeleteCustomer and deletion receipts: crypto-shredding of one customer, and
//! the erasure journal that keeps an erasure erased when an old copy of the
//! store is restored.

use crate::vault::Reason;
use crate::vault::{Action, AuditedAnswer, Call};
use std::sync::Arc;

use crate::policy::Scope;
use crate::store::{
    hex, AuditEntry, CustomerRemoval, Erasure, ErasureJournal, IndexEntry, ReceiptRecord,
};

use crate::vault::{Attempt, Caller, CustomerId, Vault, VaultError};

/// How final an erasure is (docs/architecture.md, "Erasure").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasureState {
    /// The customer's records, wrapped keys and index entries are gone from
    /// the live store; keys that could still open copies of them exist.
    Logical,
    /// Every master version that wrapped the customer's keys or indexed their
    /// values is destroyed, with its index key, and the backup retention has
    /// passed since: no key that exists can open anything of the customer.
    Cryptographic,
}

#[derive(Clone, Debug)]
pub struct DeletionReceipt {
    pub receipt_id: String,
    pub customer_id: String,
    pub deleted_at_ms: i64,
    pub fields_erased: u32,
    pub tokens_erased: u32,
    pub data_keys_destroyed: Vec<String>,
    pub state: ErasureState,
    /// While the erasure is logical: when the next scheduled master rotation
    /// (with retirement) makes it cryptographic.
    pub cryptographic_erasure_due_ms: Option<i64>,
    pub audit_hash: String,
}

impl crate::vault::Privacy<'_> {
    /// Erases a customer: data keys, fields, tokens and index entries in one commit.
    /// Idempotent: erasing an erased customer returns the original receipt.
    pub async fn delete_customer(
        &self,
        call: &Call<'_>,
        customer_id: &str,
        reason: &str,
    ) -> Result<DeletionReceipt, VaultError> {
        self.erase(call.caller, customer_id, reason, &call.event)
            .await
    }

    /// The current state of an erasure, by receipt id.
    pub async fn deletion_status(
        &self,
        call: &Call<'_>,
        receipt_id: &str,
    ) -> Result<DeletionReceipt, VaultError> {
        call.caller.require_scope(Scope::PrivacyAdmin)?;
        if receipt_id.is_empty() || receipt_id.len() > 64 {
            return Err(VaultError::invalid_field(
                "receipt_id",
                "receipt_id must be 1-64 bytes",
            ));
        }
        let receipt = self.store.receipt(receipt_id).await?.ok_or_else(|| {
            VaultError::new(Reason::ReceiptNotFound, "no erasure has this receipt id")
        })?;
        Ok(self.receipt_view(receipt))
    }
}

/// A receipt's event names the customer it belongs to.
impl AuditedAnswer for DeletionReceipt {
    fn note_in(&self, event: &mut AuditEntry) {
        event.customer_id = self.customer_id.clone();
    }
}

impl Vault {
    async fn erase(
        &self,
        caller: &Caller,
        customer_id: &str,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<DeletionReceipt, VaultError> {
        caller.require_scope(Scope::PrivacyAdmin)?;
        let customer = self.erasable_id(customer_id).await?;
        if reason.len() > self.limits.max_reason_len || reason.chars().any(char::is_control) {
            return Err(VaultError::invalid(format!(
                "reason must be at most {} bytes of text without control characters",
                self.limits.max_reason_len
            )));
        }
        let receipt = self
            .retry_commit(|| self.try_delete_customer(&customer, reason, audit))
            .await?;
        self.keys.forget(&customer);
        // Before the answer: an acknowledged erasure survives a restore.
        // (Again for an earlier receipt: its first journaling may have been cut short.)
        self.journal_erasure(&receipt).await?;
        self.stats.erased();
        Ok(self.receipt_view(receipt))
    }

    /// The id of a customer to erase. A customer stored before ids shaped like
    /// personal data were refused can still be erased by that id.
    async fn erasable_id(&self, customer_id: &str) -> Result<CustomerId, VaultError> {
        let refusal = match CustomerId::parse(customer_id) {
            Ok(customer) => return Ok(customer),
            Err(refusal) => refusal,
        };
        if let Ok(stored) = CustomerId::from_stored(customer_id) {
            if self.store.customer(stored.as_str()).await?.is_some() {
                return Ok(stored);
            }
        }
        Err(refusal)
    }

    async fn journal_erasure(&self, receipt: &ReceiptRecord) -> Result<(), VaultError> {
        let Some(journal) = &self.erasure_journal else {
            return Ok(());
        };
        let journal = Arc::clone(journal);
        let receipt = receipt.clone();
        tokio::task::spawn_blocking(move || journal.append(&receipt))
            .await
            .map_err(|_| VaultError::internal("the erasure journal writer stopped"))??;
        Ok(())
    }

    /// Keeps an erasure journal, and erases again every customer it names
    /// whose receipt the store lacks (the store is older than the journal: a
    /// restored backup). Returns how many were erased again.
    pub async fn use_erasure_journal(
        &mut self,
        journal: ErasureJournal,
        receipts: Vec<ReceiptRecord>,
    ) -> Result<usize, VaultError> {
        let mut reapplied = 0;
        for receipt in receipts {
            if self.store.receipt(&receipt.receipt_id).await?.is_some() {
                continue;
            }
            let customer = CustomerId::from_stored(&receipt.customer_id)
                .map_err(|_| VaultError::internal("the erasure journal names a bad customer id"))?;
            self.retry_commit(|| self.try_erase_again(&customer, &receipt))
                .await?;
            self.keys.forget(&customer);
            reapplied += 1;
        }
        if reapplied > 0 {
            tracing::warn!(
                customers = reapplied,
                "the store is older than the erasure journal (restored from a backup?): erased those customers again"
            );
        }
        self.erasure_journal = Some(Arc::new(journal));
        Ok(reapplied)
    }

    async fn try_erase_again(
        &self,
        customer: &CustomerId,
        receipt: &ReceiptRecord,
    ) -> Result<(), Attempt> {
        let audit = self.system_entry(Action::DeleteCustomer, customer.as_str(), "erasure-journal");
        let record = self.store.customer(customer.as_str()).await?;
        let removal = self
            .erasure_change(customer, record.map(|r| r.revision))
            .await?;
        let erasure = Erasure {
            removal,
            receipt: receipt.clone(),
            audit,
        };
        self.store.erase(erasure).await?;
        Ok(())
    }

    /// The change that removes everything of a customer at `revision`
    /// (`None`: nothing is stored for them; only the receipt is recorded).
    async fn erasure_change(
        &self,
        customer: &CustomerId,
        revision: Option<u64>,
    ) -> Result<CustomerRemoval, VaultError> {
        let id = customer.as_str();
        let fields = self.store.fields(id).await?;
        let tokens = self.store.customer_tokens(id).await?;
        Ok(CustomerRemoval {
            customer_id: id.to_owned(),
            expected_revision: revision,
            delete_index: fields
                .iter()
                .filter_map(|(name, field)| {
                    field.blind_index.map(|blind_index| IndexEntry {
                        field_name: name.clone(),
                        blind_index,
                    })
                })
                .collect(),
            delete_fields: fields.into_iter().map(|(name, _)| name).collect(),
            delete_tokens: tokens,
        })
    }

    async fn try_delete_customer(
        &self,
        customer: &CustomerId,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<ReceiptRecord, Attempt> {
        let id = customer.as_str();
        let Some(record) = self.store.customer(id).await? else {
            let receipt = self.earlier_receipt(customer).await?;
            self.store.append_audit(vec![audit.clone()]).await?;
            return Ok(receipt);
        };
        let change = self.erasure_change(customer, Some(record.revision)).await?;
        let receipt = ReceiptRecord {
            receipt_id: crate::vault::tokens::random_id("rcpt"),
            customer_id: id.to_owned(),
            deleted_at_ms: self.now_ms(),
            reason: reason.to_owned(),
            fields_erased: change.delete_fields.len() as u32,
            tokens_erased: change.delete_tokens.len() as u32,
            data_keys_destroyed: vec![format!("{id}/dek-v{}", record.dek.version)],
            wrapped_under: record.wrapped_under.clone(),
            audit_hash: String::new(),
        };
        let erasure = Erasure {
            removal: change,
            receipt: receipt.clone(),
            audit: audit.clone(),
        };
        let audit_hash = self.store.erase(erasure).await?;
        Ok(ReceiptRecord {
            audit_hash: hex(&audit_hash),
            ..receipt
        })
    }

    /// The receipt of a customer erased before, or NOT_FOUND for one never held.
    async fn earlier_receipt(&self, customer: &CustomerId) -> Result<ReceiptRecord, VaultError> {
        let receipt_id = self
            .store
            .erasure_of(customer.as_str())
            .await?
            .ok_or_else(VaultError::customer_not_found)?;
        self.store
            .receipt(&receipt_id)
            .await?
            .ok_or_else(|| VaultError::internal("erasure marker without a receipt"))
    }

    fn receipt_view(&self, receipt: ReceiptRecord) -> DeletionReceipt {
        let now = self.now_ms();
        let next_rotation_ms = self
            .keys
            .last_rotation_ms()
            .saturating_add(self.rotation_policy.master_interval_ms())
            .max(receipt.deleted_at_ms)
            .max(now);
        let due = self.keys.cryptographic_erasure(
            &receipt.wrapped_under,
            next_rotation_ms,
            self.rotation_policy.backup_retention,
        );
        let state = if due.keys_destroyed && due.at_ms <= now {
            ErasureState::Cryptographic
        } else {
            ErasureState::Logical
        };
        DeletionReceipt {
            cryptographic_erasure_due_ms: (state == ErasureState::Logical).then_some(due.at_ms),
            receipt_id: receipt.receipt_id,
            customer_id: receipt.customer_id,
            deleted_at_ms: receipt.deleted_at_ms,
            fields_erased: receipt.fields_erased,
            tokens_erased: receipt.tokens_erased,
            data_keys_destroyed: receipt.data_keys_destroyed,
            state,
            audit_hash: receipt.audit_hash,
        }
    }
}
